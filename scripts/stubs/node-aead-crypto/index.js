'use strict';
// node-dtls-client requires this module only on Node < 10; coap-edge needs Node 20.
throw new Error(
  'node-aead-crypto stub: not available (node-dtls-client uses node:crypto on Node >= 10)',
);
