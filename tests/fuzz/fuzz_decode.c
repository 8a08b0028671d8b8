/* libFuzzer harness for the frame and message decoders: codec_check,
 * codec_msg_decode and every msg_*_parse, over the input taken as one frame
 * payload.
 *
 * Beyond "no crash, no leak", it checks that the canonical form is a fixed
 * point: when a parse succeeds, packing the parsed values, decoding and
 * parsing that, and packing again must give the same bytes.
 *
 * Seed it with the payloads of proto/vectors/ (the hex after the 4-byte
 * length, as binary files): fuzz_decode -max_len=8192 corpus/ */
#include "codec.h"
#include "compress.h"
#include "msg.h"
#include "rmem_error.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_OBJECTS 65536

/* Parses `o` as one kind of message and, on success, packs it into a frame
 * in `b`. Returns the parse result. */
typedef int (*repack_fn)(const msgpack_object *o, codec_buf *b);

static int hello_req(const msgpack_object *o, codec_buf *b) {
  msg_hello_req req;
  codec_err err;
  int rc = msg_hello_req_parse(o, &req, &err);
  if (rc == 0) {
    msgpack_packer pk;
    codec_frame_begin(b, &pk);
    msg_hello_req_pack(&pk, 1, &req);
  }
  return rc;
}

static int hello_res(const msgpack_object *o, codec_buf *b) {
  rmem_agent_info info;
  codec_err err;
  int rc = msg_hello_res_parse(o, &info, &err);
  if (rc == 0) {
    msgpack_packer pk;
    codec_frame_begin(b, &pk);
    msg_hello_res_pack(&pk, 1, &info);
  }
  return rc;
}

static int ps_res(const msgpack_object *o, codec_buf *b) {
  rmem_proc_list l = {0};
  codec_err err;
  int has_next;
  uint32_t next;
  int rc = msg_ps_res_parse(o, &l, &has_next, &next, &err);
  if (rc == 0) {
    msgpack_packer pk;
    codec_frame_begin(b, &pk);
    msg_ps_res_pack(&pk, 1, l.procs, l.n, has_next, next);
  }
  rmem_proc_list_free(&l);
  return rc;
}

static int map_req(const msgpack_object *o, codec_buf *b) {
  msg_map_req req;
  codec_err err;
  int rc = msg_map_req_parse(o, &req, &err);
  if (rc == 0) {
    msgpack_packer pk;
    codec_frame_begin(b, &pk);
    msg_map_req_pack(&pk, 1, &req);
  }
  return rc;
}

static int map_res(const msgpack_object *o, codec_buf *b) {
  rmem_memmap map = {0};
  int has_next;
  uint64_t next;
  codec_err err;
  int rc = msg_map_res_parse(o, &map, &has_next, &next, &err);
  if (rc == 0) {
    msgpack_packer pk;
    codec_frame_begin(b, &pk);
    msg_map_res_pack(&pk, 1, map.pid, map.regions, map.n, has_next, next);
  }
  for (size_t i = 0; i < map.n; i++)
    free(map.regions[i].path);
  free(map.regions);
  return rc;
}

static int read_req(const msgpack_object *o, codec_buf *b) {
  msg_read_req req;
  codec_err err;
  int rc = msg_read_req_parse(o, &req, &err);
  if (rc == 0) {
    msgpack_packer pk;
    codec_frame_begin(b, &pk);
    msg_read_req_pack(&pk, 1, &req);
  }
  return rc;
}

static int read_res(const msgpack_object *o, codec_buf *b) {
  const char *data;
  size_t len;
  rmem_ranges holes = {0};
  codec_err err;
  uint64_t cached, lz4_len;
  int rc = msg_read_res_parse(o, &data, &len, &lz4_len, &holes, &cached, &err);
  /* A block is decompressed as librmem does it, into exactly lz4_len bytes. */
  if (rc == 0 && lz4_len > 0 && lz4_len <= (1u << 20)) {
    char *out = malloc(lz4_len);
    if (out == NULL ||
        (compress_lz4_unpack(data, len, out, lz4_len, &err) != 0 && err.code != RMEM_EPROTO))
      abort();
    free(out);
  }
  if (rc == 0) {
    msgpack_packer pk;
    size_t start = b->len;
    codec_frame_begin(b, &pk);
    msg_read_res_pack(&pk, 1, data, len, lz4_len, holes.v, holes.n, cached);
    /* The zero-copy path must give the same bytes. */
    codec_buf split = {0};
    codec_frame_begin(&split, &pk);
    if (lz4_len)
      msg_read_res_lz4_head(&pk, 1, lz4_len, len);
    else
      msg_read_res_head(&pk, 1, len);
    codec_buf_write(&split, data, len);
    msg_read_res_tail(&pk, holes.v, holes.n, cached);
    if (split.len != b->len - start || memcmp(split.data, b->data + start, split.len) != 0)
      abort();
    codec_buf_free(&split);
  }
  free(holes.v);
  return rc;
}

static int write_req(const msgpack_object *o, codec_buf *b) {
  msg_write_req req;
  codec_err err;
  int rc = msg_write_req_parse(o, &req, &err);
  if (rc == 0) {
    msgpack_packer pk;
    codec_frame_begin(b, &pk);
    msg_write_req_pack(&pk, 1, &req);
  }
  return rc;
}

static int write_res(const msgpack_object *o, codec_buf *b) {
  uint64_t written;
  rmem_ranges failed = {0};
  codec_err err;
  int rc = msg_write_res_parse(o, &written, &failed, &err);
  if (rc == 0) {
    msgpack_packer pk;
    codec_frame_begin(b, &pk);
    msg_write_res_pack(&pk, 1, written, failed.v, failed.n);
  }
  free(failed.v);
  return rc;
}

static int error_obj(const msgpack_object *o, codec_buf *b) {
  int code;
  char msg[256];
  int rc = msg_error_parse(o, &code, msg, sizeof(msg));
  if (rc == 0) {
    uint32_t id = 1;
    msgpack_packer pk;
    codec_frame_begin(b, &pk);
    codec_pack_error_response(&pk, &id, code, msg);
  }
  return rc;
}

static int cache_req(const msgpack_object *o, codec_buf *b) {
  msg_cache_req req;
  codec_err err;
  int rc = msg_cache_req_parse(o, &req, &err);
  if (rc == 0) {
    msgpack_packer pk;
    codec_frame_begin(b, &pk);
    msg_cache_req_pack(&pk, 1, &req);
  }
  return rc;
}

static int cache_res(const msgpack_object *o, codec_buf *b) {
  rmem_cache_info info;
  codec_err err;
  int rc = msg_cache_res_parse(o, &info, &err);
  if (rc == 0) {
    msgpack_packer pk;
    codec_frame_begin(b, &pk);
    msg_cache_res_pack(&pk, 1, &info);
  }
  return rc;
}

static int readv_req(const msgpack_object *o, codec_buf *b) {
  msg_readv_req req;
  codec_err err;
  int rc = msg_readv_req_parse(o, &req, &err);
  if (rc == 0) {
    msgpack_packer pk;
    codec_frame_begin(b, &pk);
    msg_readv_req_pack(&pk, 1, req.pid, req.ranges, req.n);
  }
  msg_readv_req_free(&req);
  return rc;
}

static int readv_res(const msgpack_object *o, codec_buf *b) {
  static msg_readv_entry e[MAX_OBJECTS];
  rmem_ranges holes = {0};
  size_t n;
  codec_err err;
  int rc = msg_readv_res_parse(o, e, MAX_OBJECTS, &n, &holes, &err);
  if (rc == 0) {
    msgpack_packer pk;
    codec_frame_begin(b, &pk);
    msg_readv_res_pack(&pk, 1, e, n);
  }
  rmem_ranges_free(&holes);
  return rc;
}

static int deref_req(const msgpack_object *o, codec_buf *b) {
  msg_deref_req req;
  codec_err err;
  int rc = msg_deref_req_parse(o, &req, &err);
  if (rc == 0) {
    msgpack_packer pk;
    codec_frame_begin(b, &pk);
    msg_deref_req_pack(&pk, 1, req.pid, req.addr, req.offsets, req.n, req.len);
  }
  msg_deref_req_free(&req);
  return rc;
}

static int deref_res(const msgpack_object *o, codec_buf *b) {
  msg_deref_res r;
  rmem_ranges holes = {0};
  codec_err err;
  int rc = msg_deref_res_parse(o, &r, &holes, &err);
  if (rc == 0) {
    msgpack_packer pk;
    codec_frame_begin(b, &pk);
    msg_deref_res_pack(&pk, 1, &r, holes.v, holes.n);
    free(r.pointers);
  }
  rmem_ranges_free(&holes);
  return rc;
}

static int string_req(const msgpack_object *o, codec_buf *b) {
  msg_string_req req;
  codec_err err;
  int rc = msg_string_req_parse(o, &req, &err);
  if (rc == 0) {
    msgpack_packer pk;
    codec_frame_begin(b, &pk);
    msg_string_req_pack(&pk, 1, &req);
  }
  return rc;
}

static int string_res(const msgpack_object *o, codec_buf *b) {
  msg_string_res r;
  codec_err err;
  int rc = msg_string_res_parse(o, &r, &err);
  if (rc == 0) {
    msgpack_packer pk;
    codec_frame_begin(b, &pk);
    msg_string_res_pack(&pk, 1, &r);
  }
  return rc;
}

static int fill_req(const msgpack_object *o, codec_buf *b) {
  msg_fill_req req;
  codec_err err;
  int rc = msg_fill_req_parse(o, &req, &err);
  if (rc == 0) {
    msgpack_packer pk;
    codec_frame_begin(b, &pk);
    msg_fill_req_pack(&pk, 1, &req);
  }
  return rc;
}

static const repack_fn parsers[] = {
    readv_req, readv_res, deref_req, deref_res, string_req, string_res, fill_req,
    cache_req, cache_res, hello_req, hello_res, ps_res,     map_req,    map_res,
    read_req,  read_res,  write_req, write_res, error_obj,
};

/* Decodes a frame that we packed: it must be valid, and must parse again to
 * the same bytes. */
static void check_fixed_point(repack_fn f, const codec_buf *first) {
  if (first->oom || codec_frame_len(first->data) != first->len - CODEC_FRAME_HDR)
    abort();
  msgpack_unpacked up;
  msgpack_unpacked_init(&up);
  codec_msg m;
  if (codec_msg_decode(first->data + CODEC_FRAME_HDR, first->len - CODEC_FRAME_HDR, SIZE_MAX, &up,
                       &m, NULL, 0) != 0)
    abort();
  const msgpack_object *o = m.type == CODEC_REQUEST ? m.params : m.error ? m.error : m.result;
  codec_buf second = {0};
  if (f(o, &second) != 0)
    abort();
  codec_frame_end(&second, 0);
  if (second.len != first->len || memcmp(second.data, first->data, first->len) != 0)
    abort();
  codec_buf_free(&second);
  msgpack_unpacked_destroy(&up);
}

static void run_parsers(const msgpack_object *o) {
  for (size_t i = 0; i < sizeof(parsers) / sizeof(parsers[0]); i++) {
    codec_buf b = {0};
    if (parsers[i](o, &b) == 0) {
      codec_frame_end(&b, 0);
      check_fixed_point(parsers[i], &b);
    }
    codec_buf_free(&b);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  codec_check(data, size, MAX_OBJECTS);
  msgpack_unpacked up;
  msgpack_unpacked_init(&up);
  codec_msg m;
  char why[128];
  if (codec_msg_decode((const char *)data, size, MAX_OBJECTS, &up, &m, why, sizeof(why)) == 0) {
    run_parsers(m.params);
    run_parsers(m.error);
    run_parsers(m.result);
  }
  msgpack_unpacked_destroy(&up);
  return 0;
}
