/* hello: version check and the agent's description of itself. */
#include "methods.h"
#include "msg.h"
#include "rmem_error.h"

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
  return 0;
}

/* Runs on the loop: uname and sysconf do not block. */
static void hello_run(dispatch_job *j) {
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
  for (size_t i = 0; i < dispatch_nmethods && i < sizeof(info.methods) / sizeof(info.methods[0]);
       i++)
    snprintf(info.methods[info.nmethods++], sizeof(info.methods[0]), "%s",
             dispatch_methods[i]->name);
  msgpack_packer pk;
  codec_frame_begin(&j->out, &pk);
  msg_hello_res_pack(&pk, j->msgid, &info);
  j->session->hello_done = 1;
}

const dispatch_method method_hello = {
    .name = "hello",
    .flags = DISPATCH_BEFORE_HELLO | DISPATCH_INLINE,
    .priv_size = sizeof(hello_job),
    .parse = hello_parse,
    .run = hello_run,
};
