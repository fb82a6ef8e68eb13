// One sampled trace as otlp-export-ir.mjs and otlp-trace-ir.mjs make it: a datagram's root
// and four children with the attributes an uplink's spans carry (plain Node, not compiled).
// `api` is the build's @opentelemetry/api module, `tracer` its setupTracing's tracer.
export function oneTrace(api, tracer, i) {
  const root = tracer.startSpan('coap.datagram', {
    attributes: {
      'net.peer.ip': '127.0.0.1',
      'net.peer.port': 40000 + (i % 1000),
      'dtls.epoch': 1,
    },
  });
  const ctx = api.trace.setSpan(api.context.active(), root);
  for (const name of ['coap.request', 'enos.route', 'mqtt.publish', 'platform.reply']) {
    tracer
      .startSpan(
        name,
        {
          attributes: {
            'coap.method': 'POST',
            'coap.mid': i & 0xffff,
            'messaging.destination': '/sys/benchPK/dev0001/thing/measurepoint/post',
            'enos.product_key': 'benchPK',
            'enos.device_key': 'dev0001',
          },
        },
        ctx,
      )
      .end();
  }
  root.end();
}
