/*
 * Bench-only native prototypes for bench/history/native.md "What a native path would gain". Never
 * part
 * of the product: nothing in src/ loads this, npm ci / npm test / CI never build it (build on
 * demand: `npm run bench:native`, see bench/native/binding.gyp).
 *
 *  - CCM_8 (AES-128-CCM, 8-byte tag, 12-byte nonce) seal / open on one long-lived EVP context
 *    per key and direction, one N-API call per record, the cipher fetched once. The node binary
 *    exports OpenSSL's symbols, so this links against nothing.
 *  - HMAC-SHA256 with the digest fetched once (EVP_MAC "HMAC" + "SHA256"), one call per MAC.
 *  - A UDP socket read with recvmmsg into one preallocated arena, one JavaScript call per batch
 *    (a uv_poll on the fd), answers queued into a second arena and sent with one sendmmsg
 *    after the batch: what Node's dgram costs per datagram above the kernel.
 *
 * Lengths from JavaScript are checked against the buffers they index; anything out of range
 * throws (a prototype: no attacker bytes are parsed here, only copied and encrypted).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <node_api.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <uv.h>

#define CHECK(env, call)                                                                     \
  do {                                                                                       \
    if ((call) != napi_ok) {                                                                 \
      napi_throw_error((env), NULL, #call " failed");                                        \
      return NULL;                                                                           \
    }                                                                                        \
  } while (0)

#define THROW(env, msg)                                                                      \
  do {                                                                                       \
    napi_throw_error((env), NULL, (msg));                                                    \
    return NULL;                                                                             \
  } while (0)

static EVP_CIPHER *aes128ccm;
static EVP_MAC *hmac;

/* ---------------------------------------------------------------- CCM_8 ------------ */

static void ctx_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  EVP_CIPHER_CTX_free((EVP_CIPHER_CTX *)data);
}

/* ccmNew(key: Buffer(16), encrypt: boolean): External */
static napi_value ccm_new(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *key;
  size_t keylen;
  bool enc;
  CHECK(env, napi_get_buffer_info(env, argv[0], &key, &keylen));
  CHECK(env, napi_get_value_bool(env, argv[1], &enc));
  if (keylen != 16) THROW(env, "key must be 16 bytes");
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (ctx == NULL || !EVP_CipherInit_ex(ctx, aes128ccm, NULL, NULL, NULL, enc ? 1 : 0) ||
      !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL) ||
      !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 8, NULL) ||
      !EVP_CipherInit_ex(ctx, NULL, NULL, key, NULL, enc ? 1 : 0)) {
    EVP_CIPHER_CTX_free(ctx);
    THROW(env, "EVP CCM init failed");
  }
  napi_value out;
  CHECK(env, napi_create_external(env, ctx, ctx_finalize, NULL, &out));
  return out;
}

/* ccmSeal(ctx, nonce(12), aad(13), plain, out, at): ciphertext ‖ tag at out[at]. */
static napi_value ccm_seal(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  EVP_CIPHER_CTX *ctx;
  void *nonce, *aad, *plain, *out;
  size_t nlen, alen, plen, olen;
  uint32_t at;
  CHECK(env, napi_get_value_external(env, argv[0], (void **)&ctx));
  CHECK(env, napi_get_buffer_info(env, argv[1], &nonce, &nlen));
  CHECK(env, napi_get_buffer_info(env, argv[2], &aad, &alen));
  CHECK(env, napi_get_buffer_info(env, argv[3], &plain, &plen));
  CHECK(env, napi_get_buffer_info(env, argv[4], &out, &olen));
  CHECK(env, napi_get_value_uint32(env, argv[5], &at));
  if (nlen != 12 || (size_t)at + plen + 8 > olen) THROW(env, "ccmSeal: bad lengths");
  unsigned char *o = (unsigned char *)out + at;
  int n;
  if (!EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) ||
      !EVP_EncryptUpdate(ctx, NULL, &n, NULL, (int)plen) ||
      !EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)alen) ||
      !EVP_EncryptUpdate(ctx, o, &n, plain, (int)plen) || !EVP_EncryptFinal_ex(ctx, o + plen, &n) ||
      !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 8, o + plen))
    THROW(env, "ccmSeal failed");
  return NULL;
}

/*
 * ccmOpen(ctx, nonce(12), aad(13), ciphertext, tag(8), pt): the plaintext into
 * pt[0, ciphertext.length). true when the tag verifies.
 */
static napi_value ccm_open(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  EVP_CIPHER_CTX *ctx;
  void *nonce, *aad, *ct, *tag, *pt;
  size_t nlen, alen, len, tlen, ptlen;
  CHECK(env, napi_get_value_external(env, argv[0], (void **)&ctx));
  CHECK(env, napi_get_buffer_info(env, argv[1], &nonce, &nlen));
  CHECK(env, napi_get_buffer_info(env, argv[2], &aad, &alen));
  CHECK(env, napi_get_buffer_info(env, argv[3], &ct, &len));
  CHECK(env, napi_get_buffer_info(env, argv[4], &tag, &tlen));
  CHECK(env, napi_get_buffer_info(env, argv[5], &pt, &ptlen));
  if (nlen != 12 || tlen != 8 || len > ptlen) THROW(env, "ccmOpen: bad lengths");
  int n;
  int ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 8, tag) &&
           EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce) &&
           EVP_DecryptUpdate(ctx, NULL, &n, NULL, (int)len) &&
           EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)alen) &&
           EVP_DecryptUpdate(ctx, pt, &n, ct, (int)len) > 0;
  napi_value r;
  CHECK(env, napi_get_boolean(env, ok, &r));
  return r;
}

/* ---------------------------------------------------------------- HMAC-SHA256 ------ */

static void mac_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  EVP_MAC_CTX_free((EVP_MAC_CTX *)data);
}

/* hmacNew(): External, an EVP_MAC_CTX with the digest set (fetched once), no key yet. */
static napi_value hmac_new(napi_env env, napi_callback_info info) {
  (void)info;
  EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(hmac);
  OSSL_PARAM params[2] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                          OSSL_PARAM_construct_end()};
  if (ctx == NULL || !EVP_MAC_CTX_set_params(ctx, params)) {
    EVP_MAC_CTX_free(ctx);
    THROW(env, "EVP_MAC init failed");
  }
  napi_value out;
  CHECK(env, napi_create_external(env, ctx, mac_finalize, NULL, &out));
  return out;
}

/* hmacSha256(ctx, key, a, b, out, at): HMAC-SHA256(key, a ‖ b) at out[at]. */
static napi_value hmac_sha256(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  EVP_MAC_CTX *ctx;
  void *key, *a, *b, *out;
  size_t klen, alen, blen, olen, n;
  uint32_t at;
  CHECK(env, napi_get_value_external(env, argv[0], (void **)&ctx));
  CHECK(env, napi_get_buffer_info(env, argv[1], &key, &klen));
  CHECK(env, napi_get_buffer_info(env, argv[2], &a, &alen));
  CHECK(env, napi_get_buffer_info(env, argv[3], &b, &blen));
  CHECK(env, napi_get_buffer_info(env, argv[4], &out, &olen));
  CHECK(env, napi_get_value_uint32(env, argv[5], &at));
  if ((size_t)at + 32 > olen) THROW(env, "hmacSha256: bad lengths");
  if (!EVP_MAC_init(ctx, key, klen, NULL) || !EVP_MAC_update(ctx, a, alen) ||
      !EVP_MAC_update(ctx, b, blen) || !EVP_MAC_final(ctx, (unsigned char *)out + at, &n, 32))
    THROW(env, "hmacSha256 failed");
  return NULL;
}

/* ---------------------------------------------------------------- UDP, batched ----- */

#define SLOT 2048
#define MAX_BATCH 64

typedef struct {
  int fd;
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_ref rx_ref, meta_ref, tx_ref;
  unsigned char *rx; /* MAX_BATCH × SLOT */
  uint32_t *meta;    /* per datagram: length, IPv4 (host order), port */
  unsigned char *tx; /* MAX_BATCH × SLOT */
  uint32_t batch;
  struct mmsghdr rmsg[MAX_BATCH];
  struct iovec riov[MAX_BATCH];
  struct sockaddr_in raddr[MAX_BATCH];
  struct mmsghdr tmsg[MAX_BATCH];
  struct iovec tiov[MAX_BATCH];
  struct sockaddr_in taddr[MAX_BATCH];
  uint32_t queued;
  uint64_t batches, datagrams, sendCalls;
} udp_t;

static udp_t *the_udp; /* one per process: enough for a bench floor */

static void udp_flush(udp_t *u) {
  uint32_t off = 0;
  while (off < u->queued) {
    int r = sendmmsg(u->fd, u->tmsg + off, u->queued - off, 0);
    u->sendCalls++;
    if (r <= 0) {
      if (r < 0 && errno == EINTR) continue;
      break; /* EAGAIN / error: the rest is dropped, as UDP may */
    }
    off += (uint32_t)r;
  }
  u->queued = 0;
}

static void udp_readable(uv_poll_t *handle, int status, int events) {
  (void)events;
  udp_t *u = (udp_t *)handle->data;
  if (status < 0) return;
  napi_env env = u->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, global, count;
  napi_get_reference_value(env, u->callback, &cb);
  napi_get_global(env, &global);
  for (;;) {
    for (uint32_t i = 0; i < u->batch; i++) u->rmsg[i].msg_hdr.msg_namelen = sizeof(u->raddr[i]);
    int n = recvmmsg(u->fd, u->rmsg, u->batch, MSG_DONTWAIT, NULL);
    if (n <= 0) break;
    for (int i = 0; i < n; i++) {
      u->meta[3 * i] = u->rmsg[i].msg_len;
      u->meta[3 * i + 1] = ntohl(u->raddr[i].sin_addr.s_addr);
      u->meta[3 * i + 2] = ntohs(u->raddr[i].sin_port);
    }
    u->batches++;
    u->datagrams += (uint32_t)n;
    napi_create_uint32(env, (uint32_t)n, &count);
    napi_value result;
    /* a plain call: the floor needs no async context; microtasks run when libuv's turn ends */
    if (napi_call_function(env, global, cb, 1, &count, &result) != napi_ok) {
      napi_value exc;
      napi_get_and_clear_last_exception(env, &exc);
      napi_fatal_exception(env, exc);
      break;
    }
    udp_flush(u);
    if ((uint32_t)n < u->batch) break;
  }
  napi_close_handle_scope(env, scope);
}

/*
 * udpOpen(port, batch, rx: Buffer(MAX_BATCH × SLOT), meta: Uint32Array-backed Buffer,
 * tx: Buffer(MAX_BATCH × SLOT), onBatch(count)): binds 127.0.0.1:port.
 */
static napi_value udp_open(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (the_udp != NULL) THROW(env, "udpOpen: one socket per process");
  uint32_t port, batch;
  void *rx, *meta, *tx;
  size_t rxlen, metalen, txlen;
  CHECK(env, napi_get_value_uint32(env, argv[0], &port));
  CHECK(env, napi_get_value_uint32(env, argv[1], &batch));
  CHECK(env, napi_get_buffer_info(env, argv[2], &rx, &rxlen));
  CHECK(env, napi_get_buffer_info(env, argv[3], &meta, &metalen));
  CHECK(env, napi_get_buffer_info(env, argv[4], &tx, &txlen));
  if (batch < 1 || batch > MAX_BATCH || rxlen < (size_t)MAX_BATCH * SLOT ||
      txlen < (size_t)MAX_BATCH * SLOT || metalen < (size_t)MAX_BATCH * 12 ||
      ((uintptr_t)meta & 3) != 0)
    THROW(env, "udpOpen: bad arguments");
  udp_t *u = calloc(1, sizeof(udp_t));
  if (u == NULL) THROW(env, "udpOpen: out of memory");
  u->env = env;
  u->rx = rx;
  u->meta = meta;
  u->tx = tx;
  u->batch = batch;
  CHECK(env, napi_create_reference(env, argv[2], 1, &u->rx_ref));
  CHECK(env, napi_create_reference(env, argv[3], 1, &u->meta_ref));
  CHECK(env, napi_create_reference(env, argv[4], 1, &u->tx_ref));
  CHECK(env, napi_create_reference(env, argv[5], 1, &u->callback));
  for (uint32_t i = 0; i < MAX_BATCH; i++) {
    u->riov[i].iov_base = u->rx + (size_t)i * SLOT;
    u->riov[i].iov_len = SLOT;
    u->rmsg[i].msg_hdr.msg_iov = &u->riov[i];
    u->rmsg[i].msg_hdr.msg_iovlen = 1;
    u->rmsg[i].msg_hdr.msg_name = &u->raddr[i];
    u->tiov[i].iov_base = u->tx + (size_t)i * SLOT;
    u->tmsg[i].msg_hdr.msg_iov = &u->tiov[i];
    u->tmsg[i].msg_hdr.msg_iovlen = 1;
    u->tmsg[i].msg_hdr.msg_name = &u->taddr[i];
    u->tmsg[i].msg_hdr.msg_namelen = sizeof(u->taddr[i]);
  }
  u->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (u->fd < 0 || bind(u->fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
    if (u->fd >= 0) close(u->fd);
    free(u);
    THROW(env, "udpOpen: socket/bind failed");
  }
  uv_loop_t *loop;
  CHECK(env, napi_get_uv_event_loop(env, &loop));
  if (uv_poll_init(loop, &u->poll, u->fd) != 0) THROW(env, "uv_poll_init failed");
  u->poll.data = u;
  if (uv_poll_start(&u->poll, UV_READABLE, udp_readable) != 0) THROW(env, "uv_poll_start failed");
  the_udp = u;
  return NULL;
}

static void fill_addr(struct sockaddr_in *s, uint32_t ip, uint32_t port) {
  s->sin_family = AF_INET;
  s->sin_port = htons((uint16_t)port);
  s->sin_addr.s_addr = htonl(ip);
}

/*
 * udpQueue(data: Buffer, ip, port): copies the datagram into the tx arena, sent with one
 * sendmmsg after the current batch (or at once with udpFlush outside a batch).
 */
static napi_value udp_queue(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  udp_t *u = the_udp;
  if (u == NULL) THROW(env, "udpQueue: no socket");
  void *data;
  size_t len;
  uint32_t ip, port;
  CHECK(env, napi_get_buffer_info(env, argv[0], &data, &len));
  CHECK(env, napi_get_value_uint32(env, argv[1], &ip));
  CHECK(env, napi_get_value_uint32(env, argv[2], &port));
  if (len > SLOT) THROW(env, "udpQueue: datagram too large");
  if (u->queued == MAX_BATCH) udp_flush(u);
  uint32_t i = u->queued++;
  memcpy(u->tx + (size_t)i * SLOT, data, len);
  u->tiov[i].iov_len = len;
  fill_addr(&u->taddr[i], ip, port);
  return NULL;
}

static napi_value udp_flush_js(napi_env env, napi_callback_info info) {
  (void)info;
  if (the_udp == NULL) THROW(env, "udpFlush: no socket");
  udp_flush(the_udp);
  return NULL;
}

/* udpStats(): [batches, datagrams, sendmmsg calls] */
static napi_value udp_stats(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value arr, v;
  CHECK(env, napi_create_array_with_length(env, 3, &arr));
  uint64_t s[3] = {0, 0, 0};
  if (the_udp != NULL) {
    s[0] = the_udp->batches;
    s[1] = the_udp->datagrams;
    s[2] = the_udp->sendCalls;
  }
  for (uint32_t i = 0; i < 3; i++) {
    CHECK(env, napi_create_double(env, (double)s[i], &v));
    CHECK(env, napi_set_element(env, arr, i, v));
  }
  return arr;
}

static void udp_closed(uv_handle_t *h) {
  udp_t *u = (udp_t *)h->data;
  close(u->fd);
  free(u);
}

static napi_value udp_close(napi_env env, napi_callback_info info) {
  (void)info;
  udp_t *u = the_udp;
  if (u == NULL) return NULL;
  the_udp = NULL;
  napi_delete_reference(env, u->callback);
  napi_delete_reference(env, u->rx_ref);
  napi_delete_reference(env, u->meta_ref);
  napi_delete_reference(env, u->tx_ref);
  uv_poll_stop(&u->poll);
  uv_close((uv_handle_t *)&u->poll, udp_closed);
  return NULL;
}

/* ---------------------------------------------------------------- module ----------- */

static napi_value init(napi_env env, napi_value exports) {
  aes128ccm = EVP_CIPHER_fetch(NULL, "AES-128-CCM", NULL);
  hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
  if (aes128ccm == NULL || hmac == NULL) THROW(env, "EVP fetch failed");
  napi_property_descriptor d[] = {
      {"ccmNew", NULL, ccm_new, NULL, NULL, NULL, napi_default, NULL},
      {"ccmSeal", NULL, ccm_seal, NULL, NULL, NULL, napi_default, NULL},
      {"ccmOpen", NULL, ccm_open, NULL, NULL, NULL, napi_default, NULL},
      {"hmacNew", NULL, hmac_new, NULL, NULL, NULL, napi_default, NULL},
      {"hmacSha256", NULL, hmac_sha256, NULL, NULL, NULL, napi_default, NULL},
      {"udpOpen", NULL, udp_open, NULL, NULL, NULL, napi_default, NULL},
      {"udpQueue", NULL, udp_queue, NULL, NULL, NULL, napi_default, NULL},
      {"udpFlush", NULL, udp_flush_js, NULL, NULL, NULL, napi_default, NULL},
      {"udpStats", NULL, udp_stats, NULL, NULL, NULL, napi_default, NULL},
      {"udpClose", NULL, udp_close, NULL, NULL, NULL, napi_default, NULL},
  };
  CHECK(env, napi_define_properties(env, exports, sizeof(d) / sizeof(d[0]), d));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
