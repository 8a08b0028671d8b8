/* hello: version check, authentication by token, and the agent's
 * description of itself. */
#include "compress.h"
#include "methods.h"
#include "msg.h"
#include "rmem_error.h"

#include <mbedtls/platform_util.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

typedef struct {
  msg_hello_req req;
} hello_job;

static int hello_parse(dispatch_job *j, const msgpack_object *params) {
  hello_job *h = j->priv;
  if (msg_hello_req_parse(params, &h->req, &j->err) != 0)
    return -1;
  if (h->req.version != CODEC_PROTOCOL_VERSION)
    return dispatch_fail(j, RMEM_EVERSION, "protocol version %u not supported (agent speaks %u)",
                         h->req.version, CODEC_PROTOCOL_VERSION);
  /* Whoever can see plaintext off this machine has the secret now: refuse
   * it even when it is right, so that the mistake shows. */
  if (h->req.has_token && !j->session->tls && !j->session->loopback)
    return dispatch_fail(j, RMEM_EPERM,
                         "token refused: sent in the clear over a non-loopback connection "
                         "(use TLS, and consider the token disclosed)");
  return 0;
}

/* Checks the token, if one was sent. Returns 0 or fails the job. */
static int hello_auth(dispatch_job *j, hello_job *h) {
  dispatch_session *s = j->session;
  if (!h->req.has_token || !s->auth->has_token)
    return 0; /* A token the agent does not ask for is ignored. */
  if (!auth_token_check(s->auth, h->req.token, h->req.token_len)) {
    s->auth_event = -1;
    return dispatch_fail(j, RMEM_EPERM, "wrong token");
  }
  s->authenticated = 1;
  s->auth_event = 1;
  return 0;
}

/* Runs on the loop: uname and sysconf do not block. */
static void hello_run(dispatch_job *j) {
  hello_job *h = j->priv;
  int rc = hello_auth(j, h);
  mbedtls_platform_zeroize(h->req.token, sizeof(h->req.token));
  if (rc != 0)
    return;
  rmem_agent_info info;
  memset(&info, 0, sizeof(info));
  info.version = CODEC_PROTOCOL_VERSION;
  snprintf(info.agent, sizeof(info.agent), "rmemd/%s", RMEM_VERSION);
  snprintf(info.os, sizeof(info.os), "linux");
  struct utsname u;
  /* Machine names are short ("x86_64"); cut anything longer. */
  const char *arch = uname(&u) == 0 ? u.machine : "unknown";
  snprintf(info.arch, sizeof(info.arch), "%.15s", arch);
  info.page_size = (uint32_t)sysconf(_SC_PAGESIZE);
  info.pointer_size = sizeof(void *);
  info.max_frame = j->limits->max_frame;
  info.max_read = j->limits->max_read;
  info.max_write = j->limits->max_write;
  info.max_inflight = j->limits->max_inflight;
  info.tls = j->session->tls;
  snprintf(info.auth, sizeof(info.auth), "%s", auth_required(j->session->auth));
  /* Every hello decides anew; reads take the choice in force when they arrive. */
  j->session->lz4 = (h->req.compress & MSG_COMPRESS_LZ4) && !j->limits->no_compress;
  if (j->session->lz4)
    snprintf(info.compress, sizeof(info.compress), "%s", COMPRESS_LZ4_NAME);
  for (size_t i = 0; i < dispatch_nmethods && i < sizeof(info.methods) / sizeof(info.methods[0]);
       i++)
    snprintf(info.methods[info.nmethods++], sizeof(info.methods[0]), "%s",
             dispatch_methods[i]->name);
  msgpack_packer pk;
  codec_frame_begin(&j->out, &pk);
  msg_hello_res_pack(&pk, j->msgid, &info);
  j->session->hello_done = 1;
}

static void hello_cleanup(dispatch_job *j) {
  hello_job *h = j->priv;
  mbedtls_platform_zeroize(h->req.token, sizeof(h->req.token));
}

const dispatch_method method_hello = {
    .name = "hello",
    .flags = DISPATCH_BEFORE_HELLO | DISPATCH_BEFORE_AUTH | DISPATCH_INLINE,
    .priv_size = sizeof(hello_job),
    .parse = hello_parse,
    .run = hello_run,
    .cleanup = hello_cleanup,
};
