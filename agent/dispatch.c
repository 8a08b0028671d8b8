#include "dispatch.h"

#include "log.h"
#include "methods.h"
#include "rmem_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Sorted by name for bsearch. */
const dispatch_method *const dispatch_methods[] = {
    &method_cache, &method_deref, &method_fill,        &method_hello, &method_map,
    &method_ps,    &method_read,  &method_read_string, &method_readv, &method_write,
};
const size_t dispatch_nmethods = sizeof(dispatch_methods) / sizeof(dispatch_methods[0]);

/* Requests never need more objects than this; see PROTOCOL.md, Framing. */
#define DISPATCH_MAX_OBJECTS 65536

typedef struct {
  const char *p;
  size_t n;
} name_key;

static int method_cmp(const void *key, const void *elem) {
  const name_key *k = key;
  const char *name = (*(const dispatch_method *const *)elem)->name;
  size_t len = strlen(name), n = k->n < len ? k->n : len;
  /* msgpack-c hands out NULL for an empty string: never memcmp through it. */
  int c = n ? memcmp(k->p, name, n) : 0;
  if (c != 0)
    return c;
  return k->n < len ? -1 : k->n > len;
}

static const dispatch_method *lookup(const char *p, size_t n) {
  name_key k = {p, n};
  const dispatch_method *const *m =
      bsearch(&k, dispatch_methods, dispatch_nmethods, sizeof(dispatch_methods[0]), method_cmp);
  return m ? *m : NULL;
}

int dispatch_fail(dispatch_job *j, int code, const char *fmt, ...) {
  j->err.code = code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(j->err.msg, sizeof(j->err.msg), fmt, ap);
  va_end(ap);
  return code;
}

int dispatch_check_range(dispatch_job *j, const char *what, uint64_t addr, uint64_t len) {
  if (len == 0 || addr + (len - 1) >= addr)
    return 0;
  return dispatch_fail(j, RMEM_EPARAM, "%s: addr 0x%llx + len 0x%llx wraps around", what,
                       (unsigned long long)addr, (unsigned long long)len);
}

static void reply_error(dispatch_session *s, dispatch_result *out, const uint32_t *msgid, int code,
                        const char *msg) {
  codec_buf b;
  codec_buf_init(&b);
  if (codec_error_frame(&b, msgid, code, msg) != 0) {
    codec_buf_free(&b);
    return;
  }
  out->reply = codec_buf_steal(&b, &out->reply_len);
}

void dispatch_job_free(dispatch_job *j) {
  if (j == NULL)
    return;
  if (j->method->cleanup)
    j->method->cleanup(j);
  codec_buf_free(&j->out);
  free(j);
}

void dispatch_job_run(dispatch_job *j) {
  j->method->run(j);
  if (j->err.code == 0 && j->out.oom)
    dispatch_fail(j, RMEM_ENOMEM, "%s: out of memory building the reply", j->method->name);
  if (j->err.code == 0 && codec_frame_end(&j->out, 0) != 0)
    dispatch_fail(j, RMEM_ETOOBIG, "%s: reply too large", j->method->name);
  if (j->err.code == 0 && j->out.len - CODEC_FRAME_HDR > j->limits->max_frame)
    dispatch_fail(j, RMEM_ETOOBIG, "%s: reply of %zu bytes exceeds max_frame", j->method->name,
                  j->out.len - CODEC_FRAME_HDR);
  if (j->err.code != 0) {
    codec_buf_free(&j->out);
    codec_error_frame(&j->out, &j->msgid, j->err.code, j->err.msg);
  }
}

char *dispatch_job_finish(dispatch_job *j, size_t *len) {
  char *p = codec_buf_steal(&j->out, len);
  dispatch_job_free(j);
  return p;
}

void dispatch_frame(dispatch_session *s, const char *p, size_t n, dispatch_result *out) {
  memset(out, 0, sizeof(*out));
  msgpack_unpacked up;
  msgpack_unpacked_init(&up);
  codec_msg msg;
  char why[128];
  int rc = codec_msg_decode(p, n, DISPATCH_MAX_OBJECTS, &up, &msg, why, sizeof(why));
  if (rc == 0 && msg.type != CODEC_REQUEST) {
    if (msg.type == CODEC_NOTIFY)
      goto exit; /* None are defined yet: ignored, as the spec says. */
    rc = RMEM_EMALFORMED;
    snprintf(why, sizeof(why), "expected a request, got a response");
  }
  if (rc != 0) {
    log_warn("conn %llu %s: %s: %s", (unsigned long long)s->id, s->peer, rmem_err_name(rc), why);
    reply_error(s, out, msg.has_msgid ? &msg.msgid : NULL, rc, why);
    goto exit;
  }
  const dispatch_method *m = lookup(msg.method, msg.method_len);
  if (m == NULL) {
    snprintf(why, sizeof(why), "unknown method '%.*s'",
             (int)(msg.method_len > 64 ? 64 : msg.method_len), msg.method);
    log_warn("conn %llu %s: %s", (unsigned long long)s->id, s->peer, why);
    reply_error(s, out, &msg.msgid, RMEM_ENOMETHOD, why);
    goto exit;
  }
  if (!s->hello_done && !(m->flags & DISPATCH_BEFORE_HELLO)) {
    snprintf(why, sizeof(why), "'%s' before hello", m->name);
    log_warn("conn %llu %s: %s", (unsigned long long)s->id, s->peer, why);
    reply_error(s, out, &msg.msgid, RMEM_ENOHELLO, why);
    goto exit;
  }
  if (!s->authenticated && !(m->flags & DISPATCH_BEFORE_AUTH)) {
    snprintf(why, sizeof(why), "authentication required: '%s' needs a valid token in hello first",
             m->name);
    log_warn("conn %llu %s: %s", (unsigned long long)s->id, s->peer, why);
    reply_error(s, out, &msg.msgid, RMEM_EPERM, why);
    goto exit;
  }
  dispatch_job *j = calloc(1, sizeof(*j) + m->priv_size);
  if (j == NULL) {
    reply_error(s, out, &msg.msgid, RMEM_ENOMEM, "out of memory");
    goto exit;
  }
  j->msgid = msg.msgid;
  j->method = m;
  j->session = s;
  j->limits = s->limits;
  j->priv = j + 1;
  static const msgpack_object empty = {.type = MSGPACK_OBJECT_MAP};
  if (m->parse(j, msg.params ? msg.params : &empty) != 0 || (m->flags & DISPATCH_INLINE)) {
    if (j->err.code == 0)
      dispatch_job_run(j);
    else
      log_warn("conn %llu %s: %s #%u: %s: %s", (unsigned long long)s->id, s->peer, m->name,
               j->msgid, rmem_err_name(j->err.code), j->err.msg);
    if (j->err.code != 0 && j->out.len == 0)
      codec_error_frame(&j->out, &j->msgid, j->err.code, j->err.msg);
    out->reply = dispatch_job_finish(j, &out->reply_len);
    out->auth_event = s->auth_event;
    s->auth_event = 0;
    goto exit;
  }
  j->session = NULL;
  out->job = j;
exit:
  msgpack_unpacked_destroy(&up);
}
