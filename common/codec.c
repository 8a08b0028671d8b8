#include "codec.h"

#include "rmem_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void codec_buf_init(codec_buf *b) {
  memset(b, 0, sizeof(*b));
}

void codec_buf_free(codec_buf *b) {
  free(b->data);
  memset(b, 0, sizeof(*b));
}

int codec_buf_reserve(codec_buf *b, size_t extra) {
  if (b->oom)
    return RMEM_ENOMEM;
  if (b->cap - b->len >= extra)
    return 0;
  if (extra > SIZE_MAX / 2 - b->len) {
    b->oom = 1;
    return RMEM_ENOMEM;
  }
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->len < extra)
    cap *= 2;
  char *p = realloc(b->data, cap);
  if (p == NULL) {
    b->oom = 1;
    return RMEM_ENOMEM;
  }
  b->data = p;
  b->cap = cap;
  return 0;
}

int codec_buf_write(void *data, const char *buf, size_t len) {
  codec_buf *b = data;
  if (len == 0)
    return 0;
  if (codec_buf_reserve(b, len) != 0)
    return -1;
  memcpy(b->data + b->len, buf, len);
  b->len += len;
  return 0;
}

char *codec_buf_steal(codec_buf *b, size_t *len) {
  char *p = b->data;
  *len = b->len;
  memset(b, 0, sizeof(*b));
  return p;
}

uint32_t codec_frame_len(const void *hdr4) {
  const unsigned char *p = hdr4;
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void codec_frame_put_len(void *hdr4, uint32_t len) {
  unsigned char *p = hdr4;
  p[0] = len >> 24;
  p[1] = len >> 16;
  p[2] = len >> 8;
  p[3] = len;
}

void codec_frame_begin(codec_buf *b, msgpack_packer *pk) {
  static const char zero[CODEC_FRAME_HDR];
  codec_buf_write(b, zero, sizeof(zero));
  msgpack_packer_init(pk, b, codec_buf_write);
}

int codec_frame_end(codec_buf *b, size_t start) {
  if (b->oom)
    return RMEM_ENOMEM;
  size_t n = b->len - start - CODEC_FRAME_HDR;
  if (n > UINT32_MAX)
    return RMEM_EFRAME;
  codec_frame_put_len(b->data + start, (uint32_t)n);
  return 0;
}

/* Big-endian reads of 1, 2 or 4 bytes. */
static uint64_t be(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++)
    v = v << 8 | p[i];
  return v;
}

int codec_check(const void *buf, size_t n, size_t max_objects) {
  const unsigned char *p = buf;
  size_t pos = 0;
  /* Objects still owed by the containers seen so far. Each needs at least one
   * byte, so `need` can never exceed the bytes left. */
  uint64_t need = 1;
  uint64_t total = 1;
  while (need > 0) {
    if (pos >= n)
      return RMEM_EMALFORMED;
    unsigned c = p[pos++];
    need--;
    size_t left = n - pos;
    uint64_t skip = 0;  /* Payload bytes after the header. */
    uint64_t items = 0; /* Child objects owed by a container. */
    int lenbytes = 0;
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
      /* fixint, negative fixint, nil, false, true. */
    } else if (c >= 0x80 && c <= 0x8f) {
      items = 2 * (uint64_t)(c & 0x0f);
    } else if (c >= 0x90 && c <= 0x9f) {
      items = c & 0x0f;
    } else if (c >= 0xa0 && c <= 0xbf) {
      skip = c & 0x1f;
    } else {
      switch (c) {
      case 0xc4:
      case 0xd9:
        lenbytes = 1;
        break; /* bin8, str8 */
      case 0xc5:
      case 0xda:
        lenbytes = 2;
        break; /* bin16, str16 */
      case 0xc6:
      case 0xdb:
        lenbytes = 4;
        break; /* bin32, str32 */
      case 0xc7:
        lenbytes = 1;
        skip = 1;
        break; /* ext8: type byte */
      case 0xc8:
        lenbytes = 2;
        skip = 1;
        break; /* ext16 */
      case 0xc9:
        lenbytes = 4;
        skip = 1;
        break; /* ext32 */
      case 0xca:
        skip = 4;
        break; /* float32 */
      case 0xcb:
        skip = 8;
        break; /* float64 */
      case 0xcc:
      case 0xd0:
        skip = 1;
        break;
      case 0xcd:
      case 0xd1:
        skip = 2;
        break;
      case 0xce:
      case 0xd2:
        skip = 4;
        break;
      case 0xcf:
      case 0xd3:
        skip = 8;
        break;
      case 0xd4:
        skip = 2;
        break; /* fixext1 */
      case 0xd5:
        skip = 3;
        break;
      case 0xd6:
        skip = 5;
        break;
      case 0xd7:
        skip = 9;
        break;
      case 0xd8:
        skip = 17;
        break;
      case 0xdc:
      case 0xdd: { /* array16/32 */
        int w = c == 0xdc ? 2 : 4;
        if (left < (size_t)w)
          return RMEM_EMALFORMED;
        items = be(p + pos, w);
        pos += w;
        break;
      }
      case 0xde:
      case 0xdf: { /* map16/32 */
        int w = c == 0xde ? 2 : 4;
        if (left < (size_t)w)
          return RMEM_EMALFORMED;
        items = 2 * be(p + pos, w);
        pos += w;
        break;
      }
      default: /* 0xc1: never used. */
        return RMEM_EMALFORMED;
      }
    }
    if (lenbytes) {
      if (n - pos < (size_t)lenbytes)
        return RMEM_EMALFORMED;
      skip += be(p + pos, lenbytes);
      pos += lenbytes;
    }
    if (skip > n - pos)
      return RMEM_EMALFORMED;
    pos += skip;
    if (items) {
      if (items > n - pos || need + items > n - pos)
        return RMEM_EMALFORMED;
      need += items;
      total += items;
      if (total > max_objects)
        return RMEM_ETOOBIG;
    }
  }
  return pos == n ? 0 : RMEM_EMALFORMED;
}

static int why_set(char *why, size_t whylen, int code, const char *msg) {
  if (why && whylen)
    snprintf(why, whylen, "%s", msg);
  return code;
}

int codec_msg_decode(const char *p, size_t n, size_t max_objects, msgpack_unpacked *up,
                     codec_msg *out, char *why, size_t whylen) {
  memset(out, 0, sizeof(*out));
  if (n == 0)
    return why_set(why, whylen, RMEM_EMALFORMED, "empty frame");
  int rc = codec_check(p, n, max_objects);
  if (rc == RMEM_ETOOBIG)
    return why_set(why, whylen, rc, "message has too many objects");
  if (rc != 0)
    return why_set(why, whylen, rc, "frame is not exactly one msgpack object");
  size_t off = 0;
  if (msgpack_unpack_next(up, p, n, &off) != MSGPACK_UNPACK_SUCCESS || off != n)
    return why_set(why, whylen, RMEM_EMALFORMED, "frame is not exactly one msgpack object");
  const msgpack_object *o = &up->data;
  if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 3)
    return why_set(why, whylen, RMEM_EMALFORMED, "message is not a msgpack-rpc array");
  const msgpack_object *a = o->via.array.ptr;
  uint32_t size = o->via.array.size;
  if (a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[0].via.u64 > CODEC_NOTIFY)
    return why_set(why, whylen, RMEM_EMALFORMED, "message type must be 0, 1 or 2");
  out->type = (int)a[0].via.u64;
  if (out->type == CODEC_NOTIFY) {
    if (size != 3 || a[1].type != MSGPACK_OBJECT_STR)
      return why_set(why, whylen, RMEM_EMALFORMED, "notification must be [2, method, params]");
    out->method = a[1].via.str.ptr;
    out->method_len = a[1].via.str.size;
    out->params = a[2].type == MSGPACK_OBJECT_MAP ? &a[2] : NULL;
    if (a[2].type != MSGPACK_OBJECT_MAP && a[2].type != MSGPACK_OBJECT_NIL)
      return why_set(why, whylen, RMEM_EMALFORMED, "params must be a map");
    return 0;
  }
  if (a[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER && a[1].via.u64 <= UINT32_MAX) {
    out->has_msgid = 1;
    out->msgid = (uint32_t)a[1].via.u64;
  } else if (!(out->type == CODEC_RESPONSE && a[1].type == MSGPACK_OBJECT_NIL)) {
    return why_set(why, whylen, RMEM_EMALFORMED, "msgid must be an unsigned 32-bit integer");
  }
  if (size != 4)
    return why_set(why, whylen, RMEM_EMALFORMED, "message must have 4 elements");
  if (out->type == CODEC_REQUEST) {
    if (a[2].type != MSGPACK_OBJECT_STR)
      return why_set(why, whylen, RMEM_EMALFORMED, "method must be a string");
    out->method = a[2].via.str.ptr;
    out->method_len = a[2].via.str.size;
    if (a[3].type == MSGPACK_OBJECT_MAP)
      out->params = &a[3];
    else if (a[3].type != MSGPACK_OBJECT_NIL)
      return why_set(why, whylen, RMEM_EMALFORMED, "params must be a map");
    return 0;
  }
  if (a[2].type != MSGPACK_OBJECT_NIL) {
    if (a[2].type != MSGPACK_OBJECT_MAP)
      return why_set(why, whylen, RMEM_EMALFORMED, "error must be nil or a map");
    out->error = &a[2];
  }
  if (a[3].type != MSGPACK_OBJECT_NIL)
    out->result = &a[3];
  return 0;
}

void codec_pack_strn(msgpack_packer *pk, const char *s, size_t n) {
  msgpack_pack_str(pk, n);
  msgpack_pack_str_body(pk, s, n);
}

void codec_pack_str(msgpack_packer *pk, const char *s) {
  codec_pack_strn(pk, s, strlen(s));
}

void codec_pack_request_head(msgpack_packer *pk, uint32_t msgid, const char *method,
                             uint32_t nparams) {
  msgpack_pack_array(pk, 4);
  msgpack_pack_uint8(pk, CODEC_REQUEST);
  msgpack_pack_uint32(pk, msgid);
  codec_pack_str(pk, method);
  msgpack_pack_map(pk, nparams);
}

void codec_pack_result_head(msgpack_packer *pk, uint32_t msgid) {
  msgpack_pack_array(pk, 4);
  msgpack_pack_uint8(pk, CODEC_RESPONSE);
  msgpack_pack_uint32(pk, msgid);
  msgpack_pack_nil(pk);
}

void codec_pack_error_response(msgpack_packer *pk, const uint32_t *msgid, int code,
                               const char *message) {
  msgpack_pack_array(pk, 4);
  msgpack_pack_uint8(pk, CODEC_RESPONSE);
  if (msgid)
    msgpack_pack_uint32(pk, *msgid);
  else
    msgpack_pack_nil(pk);
  msgpack_pack_map(pk, 3);
  codec_pack_str(pk, "code");
  msgpack_pack_int(pk, code);
  codec_pack_str(pk, "name");
  codec_pack_str(pk, rmem_err_name(code));
  codec_pack_str(pk, "message");
  codec_pack_str(pk, message && *message ? message : rmem_strerror(code));
  msgpack_pack_nil(pk);
}

int codec_error_frame(codec_buf *b, const uint32_t *msgid, int code, const char *message) {
  size_t start = b->len;
  msgpack_packer pk;
  codec_frame_begin(b, &pk);
  codec_pack_error_response(&pk, msgid, code, message);
  return codec_frame_end(b, start);
}

int codec_str_eq(const msgpack_object *o, const char *s) {
  size_t n = strlen(s);
  return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
         (n == 0 || memcmp(o->via.str.ptr, s, n) == 0);
}

const msgpack_object *codec_map_get(const msgpack_object *map, const char *key) {
  /* Parsers ask for fields in the order encoders write them, so start where
   * the last lookup in the same map stopped: a whole parse then costs about
   * one comparison per field instead of a scan each. */
  static _Thread_local const msgpack_object *last_map;
  static _Thread_local uint32_t last_next;
  if (map == NULL || map->type != MSGPACK_OBJECT_MAP)
    return NULL;
  uint32_t n = map->via.map.size;
  uint32_t start = map == last_map && last_next < n ? last_next : 0;
  size_t len = strlen(key);
  for (uint32_t k = 0; k < n; k++) {
    uint32_t i = start + k < n ? start + k : start + k - n;
    const msgpack_object *o = &map->via.map.ptr[i].key;
    if (o->type == MSGPACK_OBJECT_STR && o->via.str.size == len &&
        (len == 0 || memcmp(o->via.str.ptr, key, len) == 0)) {
      last_map = map;
      last_next = i + 1;
      return &map->via.map.ptr[i].val;
    }
  }
  return NULL;
}

int codec_fail(codec_err *err, int code, const char *fmt, ...) {
  if (err) {
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
  }
  return code;
}

/* Finds `key`; returns 1 when absent and optional, or RMEM_EPARAM when absent
 * and required. Nil counts as absent. */
static int lookup(const msgpack_object *map, const char *key, int required,
                  const msgpack_object **o, codec_err *err) {
  *o = codec_map_get(map, key);
  if (*o && (*o)->type != MSGPACK_OBJECT_NIL)
    return 0;
  *o = NULL;
  if (required)
    return codec_fail(err, RMEM_EPARAM, "missing parameter '%s'", key);
  return 1;
}

int codec_get_u64(const msgpack_object *map, const char *key, int required, uint64_t *out,
                  codec_err *err) {
  const msgpack_object *o;
  int rc = lookup(map, key, required, &o, err);
  if (rc != 0)
    return rc;
  if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
    return codec_fail(err, RMEM_EPARAM, "parameter '%s' must not be negative", key);
  if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
    return codec_fail(err, RMEM_EPARAM, "parameter '%s' must be an unsigned integer", key);
  *out = o->via.u64;
  return 0;
}

int codec_get_u32(const msgpack_object *map, const char *key, int required, uint32_t *out,
                  codec_err *err) {
  uint64_t v = 0;
  int rc = codec_get_u64(map, key, required, &v, err);
  if (rc != 0)
    return rc;
  if (v > UINT32_MAX)
    return codec_fail(err, RMEM_EPARAM, "parameter '%s' does not fit 32 bits", key);
  *out = (uint32_t)v;
  return 0;
}

int codec_get_bool(const msgpack_object *map, const char *key, int required, int *out,
                   codec_err *err) {
  const msgpack_object *o;
  int rc = lookup(map, key, required, &o, err);
  if (rc != 0)
    return rc;
  if (o->type != MSGPACK_OBJECT_BOOLEAN)
    return codec_fail(err, RMEM_EPARAM, "parameter '%s' must be a boolean", key);
  *out = o->via.boolean;
  return 0;
}

int codec_get_str(const msgpack_object *map, const char *key, int required, const char **s,
                  size_t *n, codec_err *err) {
  const msgpack_object *o;
  int rc = lookup(map, key, required, &o, err);
  if (rc != 0)
    return rc;
  if (o->type != MSGPACK_OBJECT_STR)
    return codec_fail(err, RMEM_EPARAM, "parameter '%s' must be a string", key);
  *s = o->via.str.ptr;
  *n = o->via.str.size;
  return 0;
}

int codec_get_bin(const msgpack_object *map, const char *key, int required, const char **p,
                  size_t *n, codec_err *err) {
  const msgpack_object *o;
  int rc = lookup(map, key, required, &o, err);
  if (rc != 0)
    return rc;
  if (o->type != MSGPACK_OBJECT_BIN)
    return codec_fail(err, RMEM_EPARAM, "parameter '%s' must be bin", key);
  *p = o->via.bin.ptr;
  *n = o->via.bin.size;
  return 0;
}
