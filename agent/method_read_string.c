/* read_string: a NUL-terminated (or UTF-16 0x0000-terminated) string, read
 * a page at a time so that a string near the end of a mapping is found even
 * when max_len reaches into the unreadable page after it. */
#include "methods.h"
#include "msg.h"
#include "rmem_error.h"
#include "target.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Reads grow from the rest of the first page up to this many bytes. */
#define STRING_CHUNK_MAX (64u << 10)

typedef struct {
  msg_string_req req;
} string_job;

static int string_parse(dispatch_job *j, const msgpack_object *params) {
  string_job *s = j->priv;
  if (msg_string_req_parse(params, &s->req, &j->err) != 0)
    return -1;
  if (s->req.max_len == 0)
    s->req.max_len = RMEM_STRING_DEFAULT;
  const msg_string_req *q = &s->req;
  if (q->max_len > RMEM_STRING_MAX || q->max_len > j->limits->max_read)
    return dispatch_fail(
        j, RMEM_ETOOBIG, "max_len %llu exceeds the limit of %llu", (unsigned long long)q->max_len,
        (unsigned long long)(j->limits->max_read < RMEM_STRING_MAX ? j->limits->max_read
                                                                   : RMEM_STRING_MAX));
  if (dispatch_check_range(j, "read_string", q->addr, q->max_len) != 0)
    return -1;
  /* UTF-16 to UTF-8 takes at most 3 bytes per 2. */
  j->cost = q->max_len + q->max_len / 2 + 128;
  return 0;
}

/* Appends code point `c` as UTF-8. */
static size_t put_utf8(char *out, uint32_t c) {
  if (c < 0x80) {
    out[0] = (char)c;
    return 1;
  }
  if (c < 0x800) {
    out[0] = (char)(0xc0 | c >> 6);
    out[1] = (char)(0x80 | (c & 0x3f));
    return 2;
  }
  if (c < 0x10000) {
    out[0] = (char)(0xe0 | c >> 12);
    out[1] = (char)(0x80 | (c >> 6 & 0x3f));
    out[2] = (char)(0x80 | (c & 0x3f));
    return 3;
  }
  out[0] = (char)(0xf0 | c >> 18);
  out[1] = (char)(0x80 | (c >> 12 & 0x3f));
  out[2] = (char)(0x80 | (c >> 6 & 0x3f));
  out[3] = (char)(0x80 | (c & 0x3f));
  return 4;
}

/* Converts `n` UTF-16LE units to UTF-8 in `out` (room for 3 bytes per unit);
 * unpaired surrogates become U+FFFD. Returns the UTF-8 length. */
static size_t utf16_to_utf8(const unsigned char *p, size_t n, char *out) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t u = (uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8;
    if (u >= 0xd800 && u <= 0xdbff && i + 1 < n) {
      uint32_t lo = (uint32_t)p[2 * i + 2] | (uint32_t)p[2 * i + 3] << 8;
      if (lo >= 0xdc00 && lo <= 0xdfff) {
        o += put_utf8(out + o, 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00));
        i++;
        continue;
      }
    }
    if (u >= 0xd800 && u <= 0xdfff)
      u = 0xfffd;
    o += put_utf8(out + o, u);
  }
  return o;
}

static void string_run(dispatch_job *j) {
  string_job *s = j->priv;
  const msg_string_req *q = &s->req;
  size_t unit = q->encoding == MSG_ENC_UTF16 ? 2 : 1;
  size_t limit = (size_t)q->max_len / unit * unit;
  uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
  unsigned char *raw = malloc(limit ? limit : 1);
  char *text = NULL;
  rmem_ranges holes = {0};
  msg_string_res res = {0};
  if (raw == NULL) {
    dispatch_fail(j, RMEM_ENOMEM, "read_string: out of memory");
    goto exit;
  }
  size_t done = 0, scanned = 0, end = 0;
  /* The first read goes to the end of the page; later ones double. */
  uint64_t chunk = page - (q->addr & (page - 1));
  while (done < limit) {
    size_t want = chunk < limit - done ? (size_t)chunk : limit - done;
    holes.n = 0;
    ssize_t n = target_read(q->pid, q->addr + done, raw + done, want, &holes, &j->err);
    if (n < 0 && n != RMEM_EFAULT)
      goto exit;
    j->err.code = 0;
    /* Holes come in address order: the bytes before the first are good. */
    size_t good = holes.n > 0 ? (size_t)(holes.v[0].addr - (q->addr + done)) : want;
    done += good;
    /* Look for the terminator among the whole units that are in. */
    for (; scanned + unit <= done; scanned += unit) {
      if (raw[scanned] == 0 && (unit == 1 || raw[scanned + 1] == 0)) {
        res.terminated = 1;
        break;
      }
    }
    if (res.terminated)
      break;
    if (good < want) {
      res.has_hole = 1;
      res.hole_addr = q->addr + done;
      res.hole_code = holes.v[0].code;
      break;
    }
    chunk = chunk * 2 < STRING_CHUNK_MAX ? chunk * 2 : STRING_CHUNK_MAX;
    if (chunk < page)
      chunk = page;
  }
  end = scanned;
  if (done == 0 && res.has_hole) {
    /* Not one byte: the error says where and why, as read's does. */
    msgpack_packer pk;
    codec_fail(&j->err, RMEM_EFAULT, "read_string pid %u 0x%llx: %s", q->pid,
               (unsigned long long)q->addr, msg_hole_reason(res.hole_code));
    codec_frame_begin(&j->out, &pk);
    msg_fault_pack(&pk, j->msgid, j->err.msg, holes.v, holes.n);
    j->err.code = 0;
    goto exit;
  }
  res.len = end;
  if (unit == 1) {
    res.text = (const char *)raw;
    res.text_len = end;
  } else {
    text = malloc(end / 2 * 3 + 1);
    if (text == NULL) {
      dispatch_fail(j, RMEM_ENOMEM, "read_string: out of memory");
      goto exit;
    }
    res.text = text;
    res.text_len = utf16_to_utf8(raw, end / 2, text);
  }
  msgpack_packer pk;
  codec_frame_begin(&j->out, &pk);
  msg_string_res_pack(&pk, j->msgid, &res);
exit:
  free(raw);
  free(text);
  rmem_ranges_free(&holes);
}

const dispatch_method method_read_string = {
    .name = "read_string",
    .priv_size = sizeof(string_job),
    .parse = string_parse,
    .run = string_run,
};
