/* deref: follows a pointer chain in the target, as a Cheat Engine pointer
 * path, and reads the bytes at its end: one round trip instead of one per
 * pointer. */
#include "methods.h"
#include "msg.h"
#include "rmem_error.h"
#include "target.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
  msg_deref_req req; /* Owns the offsets: the frame's buffer is reused. */
} deref_job;

static int deref_parse(dispatch_job *j, const msgpack_object *params) {
  deref_job *d = j->priv;
  if (msg_deref_req_parse(params, &d->req, &j->err) != 0)
    return -1;
  if (d->req.len > j->limits->max_read)
    return dispatch_fail(j, RMEM_ETOOBIG, "len %llu exceeds max_read %llu",
                         (unsigned long long)d->req.len, (unsigned long long)j->limits->max_read);
  j->cost = d->req.len + d->req.n * 9 + 128;
  return 0;
}

/* Reads `w` bytes at `at`. Returns 0, 1 when they are not all readable (with
 * the reason in *code), or a negative code for the whole request. */
static int read_exact(uint32_t pid, uint64_t at, void *buf, size_t w, rmem_ranges *holes, int *code,
                      codec_err *err) {
  holes->n = 0;
  ssize_t n = target_read(pid, at, buf, w, holes, err);
  if (n == (ssize_t)w)
    return 0;
  if (n >= 0 || n == RMEM_EFAULT) {
    err->code = 0;
    *code = holes->n > 0 ? holes->v[0].code : RMEM_EUNMAPPED;
    return 1;
  }
  return (int)n;
}

static void deref_run(dispatch_job *j) {
  deref_job *d = j->priv;
  const msg_deref_req *q = &d->req;
  rmem_ranges holes = {0};
  msg_deref_res res = {0};
  char *data = NULL;
  int w = target_ptr_size(q->pid, &j->err);
  if (w < 0)
    return;
  /* Arithmetic wraps at the target's width: 2^32 for 32-bit processes. */
  uint64_t mask = w == 8 ? UINT64_MAX : UINT32_MAX;
  if (q->addr > mask) {
    dispatch_fail(j, RMEM_EPARAM, "addr 0x%llx is beyond a 32-bit process's address space",
                  (unsigned long long)q->addr);
    return;
  }
  res.pointers = malloc((q->n ? q->n : 1) * sizeof(*res.pointers));
  data = malloc(q->len ? q->len : 1);
  if (res.pointers == NULL || data == NULL) {
    dispatch_fail(j, RMEM_ENOMEM, "deref: out of memory");
    goto exit;
  }
  uint64_t p = q->addr;
  int rc = 0;
  for (size_t i = 0; i < q->n; i++) {
    /* A pointer that would straddle 2^64 cannot be read: that is kernel space. */
    if (p > UINT64_MAX - (uint64_t)(w - 1)) {
      res.code = RMEM_EUNMAPPED;
      rc = 1;
    } else {
      unsigned char raw[8];
      rc = read_exact(q->pid, p, raw, (size_t)w, &holes, &res.code, &j->err);
      if (rc == 0) {
        /* The target runs on this machine: same byte order. */
        uint64_t v;
        if (w == 8) {
          memcpy(&v, raw, 8);
        } else {
          uint32_t v32;
          memcpy(&v32, raw, 4);
          v = v32;
        }
        res.pointers[res.npointers++] = v;
        p = (v + (uint64_t)q->offsets[i]) & mask;
        continue;
      }
    }
    if (rc < 0)
      goto exit;
    res.broken = 1;
    res.step = (uint32_t)i;
    res.addr = p;
    break;
  }
  if (!res.broken && q->len > 0) {
    holes.n = 0;
    ssize_t n = RMEM_EFAULT;
    if (p + (q->len - 1) >= p)
      n = target_read(q->pid, p, data, (size_t)q->len, &holes, &j->err);
    if (n == RMEM_EFAULT) {
      j->err.code = 0;
      res.broken = 1;
      res.step = (uint32_t)q->n;
      res.code = holes.n > 0 ? holes.v[0].code : RMEM_EUNMAPPED;
    } else if (n < 0) {
      goto exit;
    }
  }
  res.addr = p;
  res.data = data;
  res.len = (size_t)q->len;
  msgpack_packer pk;
  codec_frame_begin(&j->out, &pk);
  msg_deref_res_pack(&pk, j->msgid, &res, holes.v, holes.n);
exit:
  free(res.pointers);
  free(data);
  rmem_ranges_free(&holes);
}

static void deref_cleanup(dispatch_job *j) {
  deref_job *d = j->priv;
  msg_deref_req_free(&d->req);
}

const dispatch_method method_deref = {
    .name = "deref",
    .priv_size = sizeof(deref_job),
    .parse = deref_parse,
    .run = deref_run,
    .cleanup = deref_cleanup,
};
