/* Golden frames (proto/vectors/): each frame is decoded, parsed by the side
 * that receives it (the agent for requests, librmem for responses), compared
 * with the values below, and packed again from the parsed values, which must
 * give the same bytes. The values are also listed in proto/vectors/README.md.
 *
 * The second half checks msg.c's parse errors by breaking decoded vectors in
 * place. */
#include "codec.h"
#include "compress.h"
#include "msg.h"
#include "rmem_error.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_OBJECTS 65536

/* The values the vectors hold. */

static const msg_hello_req hello_req = {.version = 1, .client = "rmem/0.1.0"};

static const rmem_agent_info hello_info = {
    .version = 1,
    .agent = "rmemd/0.1.0",
    .os = "linux",
    .arch = "x86_64",
    .page_size = 4096,
    .pointer_size = 8,
    .max_frame = 16777216,
    .max_read = 4194304,
    .max_write = 4194304,
    .max_inflight = 64,
    .nmethods = 5,
    .methods = {"hello", "map", "ps", "read", "write"},
    .tls = 1,
    .auth = "token",
};

static char *argv_init[] = {"/sbin/init", "splash", NULL};
static char *argv_kthreadd[] = {NULL};
static char *argv_fixture[] = {"fixture_target", "--threads", "2", NULL};

static const rmem_proc ps_procs[] = {
    {.pid = 1,
     .ppid = 0,
     .uid = 0,
     .threads = 1,
     .state = 'S',
     .rss = 13107200,
     .name = "systemd",
     .exe = "/usr/lib/systemd/systemd",
     .argv = argv_init,
     .argc = 2},
    {.pid = 2,
     .ppid = 0,
     .uid = 0,
     .threads = 1,
     .state = 'S',
     .rss = 0,
     .name = "kthreadd",
     .exe = "",
     .argv = argv_kthreadd,
     .argc = 0},
    {.pid = 4242,
     .ppid = 4100,
     .uid = 1000,
     .threads = 3,
     .state = 'R',
     .rss = 2097152,
     .name = "fixture_target",
     .exe = "/usr/local/bin/fixture_target",
     .argv = argv_fixture,
     .argc = 3},
};

static const msg_map_req map_req = {.pid = 4242, .free = 1, .detail = 1};
static const msg_map_req map_req_next = {.pid = 4242, .free = 1, .start = 0x7ffff7810000};

#define EXE "/usr/local/bin/fixture_target"

static const rmem_region map_regions[] = {
    /* The main executable: its first two segments. */
    {.base = 0x555555554000,
     .size = 0x1000,
     .prot = RMEM_PROT_R,
     .state = RMEM_STATE_COMMIT,
     .type = RMEM_TYPE_IMAGE,
     .alloc_base = 0x555555554000,
     .offset = 0,
     .dev_major = 8,
     .dev_minor = 1,
     .inode = 1311768,
     .path = EXE,
     .usage = RMEM_USAGE_MODULE,
     .main_exe = 1},
    {.base = 0x555555555000,
     .size = 0x2000,
     .prot = RMEM_PROT_R | RMEM_PROT_X,
     .state = RMEM_STATE_COMMIT,
     .type = RMEM_TYPE_IMAGE,
     .alloc_base = 0x555555554000,
     .offset = 0x1000,
     .dev_major = 8,
     .dev_minor = 1,
     .inode = 1311768,
     .path = EXE,
     .usage = RMEM_USAGE_MODULE,
     .main_exe = 1},
    /* The heap, with smaps figures. */
    {.base = 0x555555559000,
     .size = 0x21000,
     .prot = RMEM_PROT_R | RMEM_PROT_W,
     .state = RMEM_STATE_COMMIT,
     .type = RMEM_TYPE_PRIVATE,
     .alloc_base = 0x555555559000,
     .path = "[heap]",
     .usage = RMEM_USAGE_HEAP,
     .has_smaps = 1,
     .smaps = {.rss = 12288,
               .pss = 12288,
               .private_dirty = 12288,
               .referenced = 12288,
               .anonymous = 12288,
               .vmflags = "rd wr mr mw me ac"}},
    /* A free gap. */
    {.base = 0x55555557a000,
     .size = 0x2aaaa1a85000,
     .state = RMEM_STATE_FREE,
     .alloc_base = 0x55555557a000},
    /* A thread stack and its guard page below it. */
    {.base = 0x7ffff6fff000,
     .size = 0x1000,
     .state = RMEM_STATE_RESERVE,
     .type = RMEM_TYPE_PRIVATE,
     .alloc_base = 0x7ffff6fff000},
    {.base = 0x7ffff7000000,
     .size = 0x800000,
     .prot = RMEM_PROT_R | RMEM_PROT_W,
     .state = RMEM_STATE_COMMIT,
     .type = RMEM_TYPE_PRIVATE,
     .alloc_base = 0x7ffff6fff000,
     .usage = RMEM_USAGE_THREAD_STACK,
     .tid = 4244},
    /* A shared mapping of a deleted file (a memfd). */
    {.base = 0x7ffff7800000,
     .size = 0x10000,
     .prot = RMEM_PROT_R | RMEM_PROT_W,
     .shared = 1,
     .state = RMEM_STATE_COMMIT,
     .type = RMEM_TYPE_MAPPED,
     .alloc_base = 0x7ffff7800000,
     .offset = 0,
     .dev_major = 0,
     .dev_minor = 1,
     .inode = 2048,
     .path = "/memfd:fixture",
     .deleted = 1},
};

static const rmem_region map_regions_next[] = {
    {.base = 0x7ffff7810000,
     .size = 0x87ce000,
     .state = RMEM_STATE_FREE,
     .alloc_base = 0x7ffff7810000},
    {.base = 0x7ffffffde000,
     .size = 0x21000,
     .prot = RMEM_PROT_R | RMEM_PROT_W,
     .state = RMEM_STATE_COMMIT,
     .type = RMEM_TYPE_PRIVATE,
     .alloc_base = 0x7ffffffde000,
     .path = "[stack]",
     .usage = RMEM_USAGE_STACK,
     .tid = 4242},
};
static const uint64_t map_next = 0x7ffffffff000;

static const msg_read_req read_req = {.pid = 4242, .addr = 0x555555579ff8, .len = 16};
static const unsigned char read_data[16] = "rmem-ok!"; /* Then 8 zero bytes. */
static const rmem_range read_holes[] = {{.addr = 0x55555557a000, .len = 8, .code = RMEM_EUNMAPPED}};
static const uint64_t read_cached = 8;
static const msg_read_req read_req_cache = {
    .pid = 4242, .addr = 0x555555579ff8, .len = 16, .max_age_ms = 250, .uncached = 1};
/* read.response.lz4.hex holds "rmem-ok!" 512 times, then a 4096-byte hole. */
#define READ_LZ4_LEN 8192
static const rmem_range read_lz4_holes[] = {
    {.addr = 0x55555557a000, .len = 4096, .code = RMEM_EUNMAPPED}};

static const msg_cache_req cache_req = {0};
static const msg_cache_req cache_req_flush = {.flush = 1, .pid = 4242};
static const rmem_cache_info cache_info = {.size_limit = 67108864,
                                           .bytes = 1228800,
                                           .pages = 300,
                                           .hits = 70000,
                                           .misses = 1234,
                                           .evictions = 0,
                                           .invalidations = 56};

static const unsigned char write_data[16] = {0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4,
                                             0xca, 0xfe, 0xba, 0xbe, 5, 6, 7, 8};
static const msg_write_req write_req = {
    .pid = 4242, .addr = 0x555555579ff8, .data = (const char *)write_data, .len = 16};
static const uint64_t write_written = 8;
static const rmem_range write_failed[] = {
    {.addr = 0x55555557a000, .len = 8, .code = RMEM_EUNMAPPED}};

static const char error_message[] = "no such process: pid 99999";
static const char error_nomsgid_message[] = "frame length 4294967295 over max_frame 16777216";

enum {
  ID_HELLO = 1,
  ID_PS = 2,
  ID_MAP = 3,
  ID_MAP_NEXT = 4,
  ID_ERROR = 7,
  ID_CACHE = 9,
  ID_CACHE_FLUSH = 10,
  ID_READ = 300,
  ID_READ_CACHE = 301,
  ID_READ_LZ4 = 302,
  ID_WRITE = 70000,
};

/* Helpers. */

typedef struct {
  unsigned char *p;
  size_t n;
} vec;

/* Parses hex text: whitespace is skipped, lines starting with '#' are comments. */
static int hex_parse(const char *text, vec *v) {
  size_t cap = strlen(text) / 2 + 1, n = 0;
  unsigned char *p = malloc(cap);
  int hi = -1, bol = 1;
  assert_non_null(p);
  for (const char *s = text; *s; s++) {
    if (bol && *s == '#') {
      while (*s && *s != '\n')
        s++;
      if (!*s)
        break;
    }
    bol = *s == '\n';
    if (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
      continue;
    int d;
    if (*s >= '0' && *s <= '9')
      d = *s - '0';
    else if (*s >= 'a' && *s <= 'f')
      d = *s - 'a' + 10;
    else if (*s >= 'A' && *s <= 'F')
      d = *s - 'A' + 10;
    else
      goto fail;
    if (hi < 0) {
      hi = d;
    } else {
      p[n++] = (unsigned char)(hi << 4 | d);
      hi = -1;
    }
  }
  if (hi >= 0)
    goto fail;
  v->p = p;
  v->n = n;
  return 0;
fail:
  free(p);
  return -1;
}

static vec vec_load(const char *name) {
  char path[512];
  snprintf(path, sizeof(path), "%s/%s", RMEM_VECTORS_DIR, name);
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    fail_msg("cannot open %s", path);
  char *text = NULL;
  size_t len = 0;
  char chunk[4096];
  size_t got;
  while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0) {
    text = realloc(text, len + got + 1);
    assert_non_null(text);
    memcpy(text + len, chunk, got);
    len += got;
  }
  fclose(f);
  assert_non_null(text);
  text[len] = '\0';
  vec v;
  if (hex_parse(text, &v) != 0)
    fail_msg("%s is not hex text", path);
  free(text);
  return v;
}

/* Checks the length prefix and decodes the payload; `method` is NULL for responses. */
static void decode(const vec *v, msgpack_unpacked *up, codec_msg *m, int type, uint32_t msgid,
                   const char *method) {
  char why[128] = "";
  assert_true(v->n > CODEC_FRAME_HDR);
  assert_int_equal(codec_frame_len(v->p), v->n - CODEC_FRAME_HDR);
  msgpack_unpacked_init(up);
  int rc = codec_msg_decode((const char *)v->p + CODEC_FRAME_HDR, v->n - CODEC_FRAME_HDR,
                            MAX_OBJECTS, up, m, why, sizeof(why));
  if (rc != 0)
    fail_msg("decode: %s", why);
  assert_int_equal(m->type, type);
  assert_true(m->has_msgid);
  assert_int_equal(m->msgid, msgid);
  if (method) {
    assert_int_equal(m->method_len, strlen(method));
    assert_memory_equal(m->method, method, m->method_len);
  } else if (m->error == NULL) {
    assert_non_null(m->result);
  }
}

static void frame_begin(codec_buf *b, msgpack_packer *pk) {
  codec_buf_init(b);
  codec_frame_begin(b, pk);
}

/* Ends the frame in `b`, compares it with the vector and frees it. */
static void frame_check(codec_buf *b, const vec *v) {
  assert_int_equal(codec_frame_end(b, 0), 0);
  assert_int_equal(b->len, v->n);
  assert_memory_equal(b->data, v->p, v->n);
  codec_buf_free(b);
}

static void vec_done(vec *v, msgpack_unpacked *up) {
  msgpack_unpacked_destroy(up);
  free(v->p);
}

static void ranges_check(const rmem_ranges *got, const rmem_range *want, size_t n) {
  assert_int_equal(got->n, n);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(got->v[i].addr, want[i].addr);
    assert_int_equal(got->v[i].len, want[i].len);
    assert_int_equal(got->v[i].code, want[i].code);
  }
}

static void region_check(const rmem_region *a, const rmem_region *b) {
  assert_int_equal(a->base, b->base);
  assert_int_equal(a->size, b->size);
  assert_int_equal(a->prot, b->prot);
  assert_int_equal(a->shared, b->shared);
  assert_int_equal(a->state, b->state);
  assert_int_equal(a->type, b->type);
  assert_int_equal(a->alloc_base, b->alloc_base);
  assert_int_equal(a->offset, b->offset);
  assert_int_equal(a->dev_major, b->dev_major);
  assert_int_equal(a->dev_minor, b->dev_minor);
  assert_int_equal(a->inode, b->inode);
  if (a->path == NULL || b->path == NULL)
    assert_ptr_equal(a->path, b->path);
  else
    assert_string_equal(a->path, b->path);
  assert_int_equal(a->deleted, b->deleted);
  assert_int_equal(a->usage, b->usage);
  assert_int_equal(a->tid, b->tid);
  assert_int_equal(a->main_exe, b->main_exe);
  assert_int_equal(a->has_smaps, b->has_smaps);
  assert_memory_equal(&a->smaps, &b->smaps, offsetof(rmem_smaps, vmflags));
  assert_string_equal(a->smaps.vmflags, b->smaps.vmflags);
}

/* The parsed lists belong to librmem's free functions, which live in
 * client/rmem.c; these tests link only rmem_common, so they free by hand. */
static void memmap_clear(rmem_memmap *m) {
  for (size_t i = 0; i < m->n; i++)
    free(m->regions[i].path);
  free(m->regions);
  memset(m, 0, sizeof(*m));
}

static void proc_list_clear(rmem_proc_list *l) {
  for (size_t i = 0; i < l->n; i++) {
    free(l->procs[i].name);
    free(l->procs[i].exe);
    for (size_t j = 0; j < l->procs[i].argc; j++)
      free(l->procs[i].argv[j]);
    free(l->procs[i].argv);
  }
  free(l->procs);
  memset(l, 0, sizeof(*l));
}

static void ranges_clear(rmem_ranges *r) {
  free(r->v);
  memset(r, 0, sizeof(*r));
}

/* One test per vector. */

/* The continuation fields of the last ps parse. */
static int ps_has_next;
static uint32_t ps_next;

static void test_hello_request(void **state) {
  vec v = vec_load("hello.request.hex");
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_REQUEST, ID_HELLO, "hello");
  msg_hello_req req;
  codec_err err;
  assert_int_equal(msg_hello_req_parse(m.params, &req, &err), 0);
  assert_int_equal(req.version, hello_req.version);
  assert_string_equal(req.client, hello_req.client);
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_hello_req_pack(&pk, m.msgid, &req);
  frame_check(&b, &v);
  vec_done(&v, &up);
}

static void test_hello_request_token(void **state) {
  vec v = vec_load("hello.request.token.hex");
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_REQUEST, ID_HELLO, "hello");
  msg_hello_req req;
  codec_err err;
  assert_int_equal(msg_hello_req_parse(m.params, &req, &err), 0);
  assert_int_equal(req.version, hello_req.version);
  assert_string_equal(req.client, hello_req.client);
  assert_int_equal(req.has_token, 1);
  assert_int_equal(req.token_len, strlen("s3cret-t0ken"));
  assert_memory_equal(req.token, "s3cret-t0ken", req.token_len);
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_hello_req_pack(&pk, m.msgid, &req);
  frame_check(&b, &v);
  vec_done(&v, &up);
}

/* A token is never cut: over RMEM_TOKEN_MAX bytes is a parameter error. */
static void test_hello_token_limits(void **state) {
  msg_hello_req req = {.version = 1, .has_token = 1, .token_len = RMEM_TOKEN_MAX};
  memset(req.token, 'x', RMEM_TOKEN_MAX);
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_hello_req_pack(&pk, 1, &req);
  assert_int_equal(codec_frame_end(&b, 0), 0);
  msgpack_unpacked up;
  msgpack_unpacked_init(&up);
  codec_msg m;
  char why[128];
  assert_int_equal(codec_msg_decode(b.data + CODEC_FRAME_HDR, b.len - CODEC_FRAME_HDR, MAX_OBJECTS,
                                    &up, &m, why, sizeof(why)),
                   0);
  msg_hello_req got;
  codec_err err;
  assert_int_equal(msg_hello_req_parse(m.params, &got, &err), 0);
  assert_int_equal(got.token_len, RMEM_TOKEN_MAX);
  msgpack_unpacked_destroy(&up);
  codec_buf_free(&b);

  /* One byte more. */
  char big[RMEM_TOKEN_MAX + 1];
  memset(big, 'x', sizeof(big));
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer p2;
  msgpack_packer_init(&p2, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&p2, 2);
  msgpack_pack_str_with_body(&p2, "version", 7);
  msgpack_pack_uint32(&p2, 1);
  msgpack_pack_str_with_body(&p2, "token", 5);
  msgpack_pack_str_with_body(&p2, big, sizeof(big));
  msgpack_unpacked_init(&up);
  assert_int_equal(msgpack_unpack_next(&up, sb.data, sb.size, NULL), MSGPACK_UNPACK_SUCCESS);
  assert_int_equal(msg_hello_req_parse(&up.data, &got, &err), RMEM_EPARAM);
  assert_non_null(strstr(err.msg, "token"));
  /* A token that is not a string. */
  msgpack_sbuffer_clear(&sb);
  msgpack_pack_map(&p2, 2);
  msgpack_pack_str_with_body(&p2, "version", 7);
  msgpack_pack_uint32(&p2, 1);
  msgpack_pack_str_with_body(&p2, "token", 5);
  msgpack_pack_uint32(&p2, 7);
  msgpack_unpacked_destroy(&up);
  msgpack_unpacked_init(&up);
  assert_int_equal(msgpack_unpack_next(&up, sb.data, sb.size, NULL), MSGPACK_UNPACK_SUCCESS);
  assert_int_equal(msg_hello_req_parse(&up.data, &got, &err), RMEM_EPARAM);
  msgpack_unpacked_destroy(&up);
  msgpack_sbuffer_destroy(&sb);
}

static void hello_response_check(const char *file, const rmem_agent_info *want) {
  vec v = vec_load(file);
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_RESPONSE, ID_HELLO, NULL);
  rmem_agent_info info;
  codec_err err;
  assert_int_equal(msg_hello_res_parse(m.result, &info, &err), 0);
  assert_memory_equal(&info, want, sizeof(info));
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_hello_res_pack(&pk, m.msgid, &info);
  frame_check(&b, &v);
  vec_done(&v, &up);
}

static void test_hello_response(void **state) {
  hello_response_check("hello.response.hex", &hello_info);
}

/* Offering lz4 (compress: ["lz4"]) and the agent accepting it. */
static void test_hello_request_compress(void **state) {
  vec v = vec_load("hello.request.compress.hex");
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_REQUEST, ID_HELLO, "hello");
  msg_hello_req req;
  codec_err err;
  assert_int_equal(msg_hello_req_parse(m.params, &req, &err), 0);
  assert_int_equal(req.version, hello_req.version);
  assert_string_equal(req.client, hello_req.client);
  assert_int_equal(req.has_token, 0);
  assert_int_equal(req.compress, MSG_COMPRESS_LZ4);
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_hello_req_pack(&pk, m.msgid, &req);
  frame_check(&b, &v);
  vec_done(&v, &up);
}

static void test_hello_response_compress(void **state) {
  rmem_agent_info want = hello_info;
  snprintf(want.compress, sizeof(want.compress), "lz4");
  hello_response_check("hello.response.compress.hex", &want);
}

static void test_ps_request(void **state) {
  vec v = vec_load("ps.request.hex");
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_REQUEST, ID_PS, "ps");
  assert_non_null(m.params);
  assert_int_equal(m.params->via.map.size, 0);
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_ps_req_pack(&pk, m.msgid, 0);
  frame_check(&b, &v);
  vec_done(&v, &up);
}

static void test_ps_response(void **state) {
  vec v = vec_load("ps.response.hex");
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_RESPONSE, ID_PS, NULL);
  rmem_proc_list l = {0};
  codec_err err;
  assert_int_equal(msg_ps_res_parse(m.result, &l, &ps_has_next, &ps_next, &err), 0);
  assert_int_equal(l.n, COUNT(ps_procs));
  for (size_t i = 0; i < l.n; i++) {
    const rmem_proc *a = &l.procs[i], *e = &ps_procs[i];
    assert_int_equal(a->pid, e->pid);
    assert_int_equal(a->ppid, e->ppid);
    assert_int_equal(a->uid, e->uid);
    assert_int_equal(a->threads, e->threads);
    assert_int_equal(a->state, e->state);
    assert_int_equal(a->rss, e->rss);
    assert_string_equal(a->name, e->name);
    assert_string_equal(a->exe, e->exe);
    assert_int_equal(a->argc, e->argc);
    for (size_t j = 0; j < a->argc; j++)
      assert_string_equal(a->argv[j], e->argv[j]);
    assert_null(a->argv[a->argc]);
  }
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_ps_res_pack(&pk, m.msgid, l.procs, l.n, ps_has_next, ps_next);
  frame_check(&b, &v);
  proc_list_clear(&l);
  vec_done(&v, &up);
}

static void map_request_check(const char *file, uint32_t msgid, const msg_map_req *want) {
  vec v = vec_load(file);
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_REQUEST, msgid, "map");
  msg_map_req req;
  codec_err err;
  assert_int_equal(msg_map_req_parse(m.params, &req, &err), 0);
  assert_int_equal(req.pid, want->pid);
  assert_int_equal(req.free, want->free);
  assert_int_equal(req.detail, want->detail);
  assert_int_equal(req.start, want->start);
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_map_req_pack(&pk, m.msgid, &req);
  frame_check(&b, &v);
  vec_done(&v, &up);
}

static void test_map_request(void **state) {
  map_request_check("map.request.hex", ID_MAP, &map_req);
}

static void test_map_request_next(void **state) {
  map_request_check("map.request.next.hex", ID_MAP_NEXT, &map_req_next);
}

static void map_response_check(const char *file, uint32_t msgid, const rmem_region *want, size_t n,
                               int want_next) {
  vec v = vec_load(file);
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_RESPONSE, msgid, NULL);
  rmem_memmap map = {0};
  int has_next = -1;
  uint64_t next = 1;
  codec_err err;
  assert_int_equal(msg_map_res_parse(m.result, &map, &has_next, &next, &err), 0);
  assert_int_equal(map.pid, 4242);
  assert_int_equal(has_next, want_next);
  assert_int_equal(next, want_next ? map_next : 0);
  assert_int_equal(map.n, n);
  for (size_t i = 0; i < n; i++)
    region_check(&map.regions[i], &want[i]);
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_map_res_pack(&pk, m.msgid, map.pid, map.regions, map.n, has_next, next);
  frame_check(&b, &v);
  memmap_clear(&map);
  vec_done(&v, &up);
}

static void test_map_response(void **state) {
  map_response_check("map.response.hex", ID_MAP, map_regions, COUNT(map_regions), 0);
}

static void test_map_response_next(void **state) {
  map_response_check("map.response.next.hex", ID_MAP_NEXT, map_regions_next,
                     COUNT(map_regions_next), 1);
}

static void read_request_check(const char *file, uint32_t msgid, const msg_read_req *want) {
  vec v = vec_load(file);
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_REQUEST, msgid, "read");
  msg_read_req req;
  codec_err err;
  assert_int_equal(msg_read_req_parse(m.params, &req, &err), 0);
  assert_int_equal(req.pid, want->pid);
  assert_int_equal(req.addr, want->addr);
  assert_int_equal(req.len, want->len);
  assert_int_equal(req.max_age_ms, want->max_age_ms);
  assert_int_equal(req.uncached, want->uncached);
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_read_req_pack(&pk, m.msgid, &req);
  frame_check(&b, &v);
  vec_done(&v, &up);
}

static void test_read_request(void **state) {
  read_request_check("read.request.hex", ID_READ, &read_req);
}

static void test_read_request_cache(void **state) {
  read_request_check("read.request.cache.hex", ID_READ_CACHE, &read_req_cache);
}

static void test_read_response(void **state) {
  vec v = vec_load("read.response.hex");
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_RESPONSE, ID_READ, NULL);
  const char *data;
  size_t len;
  rmem_ranges holes = {0};
  codec_err err;
  uint64_t cached = 0, lz4_len = 1;
  assert_int_equal(msg_read_res_parse(m.result, &data, &len, &lz4_len, &holes, &cached, &err), 0);
  assert_int_equal(lz4_len, 0);
  assert_int_equal(len, sizeof(read_data));
  assert_memory_equal(data, read_data, len);
  ranges_check(&holes, read_holes, COUNT(read_holes));
  assert_int_equal(cached, read_cached);

  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_read_res_pack(&pk, m.msgid, data, len, lz4_len, holes.v, holes.n, cached);
  frame_check(&b, &v);

  /* The agent's zero-copy path: head, raw bytes, tail. */
  frame_begin(&b, &pk);
  msg_read_res_head(&pk, m.msgid, len);
  assert_int_equal(codec_buf_write(&b, data, len), 0);
  msg_read_res_tail(&pk, holes.v, holes.n, cached);
  frame_check(&b, &v);

  ranges_clear(&holes);
  vec_done(&v, &up);
}

/* The compressed form: lz4_len, then the block; the same tail as raw data. */
static void test_read_response_lz4(void **state) {
  vec v = vec_load("read.response.lz4.hex");
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_RESPONSE, ID_READ_LZ4, NULL);
  const char *data;
  size_t len;
  rmem_ranges holes = {0};
  codec_err err;
  uint64_t cached = 1, lz4_len = 0;
  assert_int_equal(msg_read_res_parse(m.result, &data, &len, &lz4_len, &holes, &cached, &err), 0);
  assert_int_equal(lz4_len, READ_LZ4_LEN);
  assert_true(len < READ_LZ4_LEN / 8);
  ranges_check(&holes, read_lz4_holes, COUNT(read_lz4_holes));
  assert_int_equal(cached, 0);

  /* It expands to exactly the bytes announced, as librmem decompresses it. */
  char *out = malloc(READ_LZ4_LEN);
  assert_non_null(out);
  assert_int_equal(compress_lz4_unpack(data, len, out, READ_LZ4_LEN, &err), 0);
  for (size_t i = 0; i < READ_LZ4_LEN / 2; i += 8)
    assert_memory_equal(out + i, "rmem-ok!", 8);
  for (size_t i = READ_LZ4_LEN / 2; i < READ_LZ4_LEN; i++)
    assert_int_equal(out[i], 0);
  free(out);

  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_read_res_pack(&pk, m.msgid, data, len, lz4_len, holes.v, holes.n, cached);
  frame_check(&b, &v);
  /* The agent's path: the compressed head, the block, the tail. */
  frame_begin(&b, &pk);
  msg_read_res_lz4_head(&pk, m.msgid, lz4_len, len);
  assert_int_equal(codec_buf_write(&b, data, len), 0);
  msg_read_res_tail(&pk, holes.v, holes.n, cached);
  frame_check(&b, &v);
  ranges_clear(&holes);
  vec_done(&v, &up);
}

static void test_write_request(void **state) {
  vec v = vec_load("write.request.hex");
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_REQUEST, ID_WRITE, "write");
  msg_write_req req;
  codec_err err;
  assert_int_equal(msg_write_req_parse(m.params, &req, &err), 0);
  assert_int_equal(req.pid, write_req.pid);
  assert_int_equal(req.addr, write_req.addr);
  assert_int_equal(req.len, write_req.len);
  assert_memory_equal(req.data, write_req.data, req.len);
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_write_req_pack(&pk, m.msgid, &req);
  frame_check(&b, &v);
  vec_done(&v, &up);
}

static void test_write_response(void **state) {
  vec v = vec_load("write.response.hex");
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_RESPONSE, ID_WRITE, NULL);
  uint64_t written;
  rmem_ranges failed = {0};
  codec_err err;
  assert_int_equal(msg_write_res_parse(m.result, &written, &failed, &err), 0);
  assert_int_equal(written, write_written);
  ranges_check(&failed, write_failed, COUNT(write_failed));
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_write_res_pack(&pk, m.msgid, written, failed.v, failed.n);
  frame_check(&b, &v);
  ranges_clear(&failed);
  vec_done(&v, &up);
}

static void test_error_response(void **state) {
  vec v = vec_load("error.response.hex");
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_RESPONSE, ID_ERROR, NULL);
  assert_non_null(m.error);
  assert_null(m.result);
  assert_true(codec_str_eq(codec_map_get(m.error, "name"), "RMEM_ENOPROC"));
  int code;
  char msg[256];
  assert_int_equal(msg_error_parse(m.error, &code, msg, sizeof(msg)), 0);
  assert_int_equal(code, RMEM_ENOPROC);
  assert_string_equal(msg, error_message);
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  codec_pack_error_response(&pk, &m.msgid, code, msg);
  frame_check(&b, &v);
  vec_done(&v, &up);
}

static void test_error_nomsgid(void **state) {
  vec v = vec_load("error.nomsgid.hex");
  assert_int_equal(codec_frame_len(v.p), v.n - CODEC_FRAME_HDR);
  msgpack_unpacked up;
  msgpack_unpacked_init(&up);
  codec_msg m;
  assert_int_equal(codec_msg_decode((const char *)v.p + CODEC_FRAME_HDR, v.n - CODEC_FRAME_HDR,
                                    MAX_OBJECTS, &up, &m, NULL, 0),
                   0);
  assert_int_equal(m.type, CODEC_RESPONSE);
  assert_false(m.has_msgid);
  assert_non_null(m.error);
  assert_true(codec_str_eq(codec_map_get(m.error, "name"), "RMEM_EFRAME"));
  int code;
  char msg[256];
  assert_int_equal(msg_error_parse(m.error, &code, msg, sizeof(msg)), 0);
  assert_int_equal(code, RMEM_EFRAME);
  assert_string_equal(msg, error_nomsgid_message);
  codec_buf b;
  codec_buf_init(&b);
  assert_int_equal(codec_error_frame(&b, NULL, code, msg), 0);
  assert_int_equal(b.len, v.n);
  assert_memory_equal(b.data, v.p, v.n);
  codec_buf_free(&b);
  vec_done(&v, &up);
}

static void test_error_fault(void **state) {
  vec v = vec_load("error.fault.hex");
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_RESPONSE, 8, NULL);
  assert_non_null(m.error);
  assert_null(m.result);
  int code;
  char msg[256];
  assert_int_equal(msg_error_parse(m.error, &code, msg, sizeof(msg)), 0);
  assert_int_equal(code, RMEM_EFAULT);
  assert_string_equal(msg, "read pid 4242 0x10000+0x2000: not mapped");
  rmem_ranges holes = {0};
  codec_err err;
  assert_int_equal(msg_fault_parse(m.error, &holes, &err), 0);
  static const rmem_range want[] = {{0x10000, 0x1000, RMEM_EUNMAPPED},
                                    {0x11000, 0x1000, RMEM_EPROT}};
  ranges_check(&holes, want, COUNT(want));
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_fault_pack(&pk, m.msgid, msg, holes.v, holes.n);
  frame_check(&b, &v);
  ranges_clear(&holes);
  /* An error without holes says so, and adds nothing. */
  vec e = vec_load("error.response.hex");
  msgpack_unpacked up2;
  codec_msg m2;
  decode(&e, &up2, &m2, CODEC_RESPONSE, ID_ERROR, NULL);
  assert_int_equal(msg_fault_parse(m2.error, &holes, &err), 1);
  assert_int_equal(holes.n, 0);
  vec_done(&e, &up2);
  vec_done(&v, &up);
}

static void test_ps_next(void **state) {
  vec q = vec_load("ps.request.next.hex");
  msgpack_unpacked uq;
  codec_msg mq;
  decode(&q, &uq, &mq, CODEC_REQUEST, 5, "ps");
  uint32_t start;
  codec_err err;
  assert_int_equal(msg_ps_req_parse(mq.params, &start, &err), 0);
  assert_int_equal(start, 4000);
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_ps_req_pack(&pk, mq.msgid, start);
  frame_check(&b, &q);
  vec_done(&q, &uq);

  vec v = vec_load("ps.response.next.hex");
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_RESPONSE, 5, NULL);
  rmem_proc_list l = {0};
  assert_int_equal(msg_ps_res_parse(m.result, &l, &ps_has_next, &ps_next, &err), 0);
  assert_int_equal(l.n, 1);
  assert_true(ps_has_next);
  assert_int_equal(ps_next, 4243);
  assert_int_equal(l.procs[0].pid, 4242);
  assert_int_equal(l.procs[0].argc, 2);
  assert_true(l.procs[0].cmdline_truncated);
  frame_begin(&b, &pk);
  msg_ps_res_pack(&pk, m.msgid, l.procs, l.n, ps_has_next, ps_next);
  frame_check(&b, &v);
  rmem_proc_list_free(&l);
  vec_done(&v, &up);
}

static void cache_request_check(const char *file, uint32_t msgid, const msg_cache_req *want) {
  vec v = vec_load(file);
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_REQUEST, msgid, "cache");
  msg_cache_req req;
  codec_err err;
  assert_int_equal(msg_cache_req_parse(m.params, &req, &err), 0);
  assert_int_equal(req.flush, want->flush);
  assert_int_equal(req.pid, want->pid);
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_cache_req_pack(&pk, m.msgid, &req);
  frame_check(&b, &v);
  vec_done(&v, &up);
}

static void test_cache_request(void **state) {
  cache_request_check("cache.request.hex", ID_CACHE, &cache_req);
}

static void test_cache_request_flush(void **state) {
  cache_request_check("cache.request.flush.hex", ID_CACHE_FLUSH, &cache_req_flush);
}

static void test_cache_response(void **state) {
  vec v = vec_load("cache.response.hex");
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_RESPONSE, ID_CACHE_FLUSH, NULL);
  rmem_cache_info info;
  codec_err err;
  assert_int_equal(msg_cache_res_parse(m.result, &info, &err), 0);
  assert_memory_equal(&info, &cache_info, sizeof(info));
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_cache_res_pack(&pk, m.msgid, &info);
  frame_check(&b, &v);
  vec_done(&v, &up);
}

/* The slow-link methods: readv, deref, read_string, fill. */

enum {
  ID_READV = 400,
  ID_DEREF = 401,
  ID_DEREF_BROKEN = 402,
  ID_STRING = 403,
  ID_STRING_DEFAULT = 404,
  ID_FILL = 405,
};

static const msg_span readv_ranges[] = {{0x555555579ff8, 16}, {0x7ffff7800000, 4}};
static const unsigned char readv_data1[4] = {0xde, 0xad, 0xbe, 0xef};
static const int64_t deref_offsets[] = {0x10, -8, 0x1000, -200};
static const uint64_t deref_pointers[] = {0x7ffff7a01000, 0x555555559000, 0x7ffff7b00000,
                                          0x7ffff7c01000};
static const unsigned char deref_data[8] = {0x2a, 0, 0, 0, 0xff, 0xff, 0xff, 0xff};
static const unsigned char fill_pattern[3] = {0x90, 0x90, 0xcc};
static const rmem_range fill_failed[] = {{0x7ffff7810000, 0x10000, RMEM_EUNMAPPED}};

static void test_readv_request(void **state) {
  vec v = vec_load("readv.request.hex");
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_REQUEST, ID_READV, "readv");
  msg_readv_req req;
  codec_err err;
  assert_int_equal(msg_readv_req_parse(m.params, &req, &err), 0);
  assert_int_equal(req.pid, 4242);
  assert_int_equal(req.n, COUNT(readv_ranges));
  for (size_t i = 0; i < req.n; i++) {
    assert_int_equal(req.ranges[i].addr, readv_ranges[i].addr);
    assert_int_equal(req.ranges[i].len, readv_ranges[i].len);
  }
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_readv_req_pack(&pk, m.msgid, req.pid, req.ranges, req.n);
  frame_check(&b, &v);
  msg_readv_req_free(&req);
  msg_readv_req_free(&req); /* Safe twice. */
  vec_done(&v, &up);
}

static void test_readv_response(void **state) {
  vec v = vec_load("readv.response.hex");
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_RESPONSE, ID_READV, NULL);
  msg_readv_entry e[3];
  size_t n = 0;
  rmem_ranges holes = {0};
  codec_err err;
  assert_int_equal(msg_readv_res_parse(m.result, e, 3, &n, &holes, &err), 0);
  assert_int_equal(n, 2);
  assert_int_equal(e[0].len, sizeof(read_data));
  assert_memory_equal(e[0].data, read_data, e[0].len);
  assert_int_equal(e[0].nholes, 1);
  assert_ptr_equal(e[0].holes, holes.v);
  ranges_check(&holes, read_holes, COUNT(read_holes));
  assert_int_equal(e[1].len, sizeof(readv_data1));
  assert_memory_equal(e[1].data, readv_data1, e[1].len);
  assert_int_equal(e[1].nholes, 0);

  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_readv_res_pack(&pk, m.msgid, e, n);
  frame_check(&b, &v);

  /* The agent's zero-copy path: head, then per range entry head, bytes, tail. */
  frame_begin(&b, &pk);
  msg_readv_res_head(&pk, m.msgid, n);
  for (size_t i = 0; i < n; i++) {
    msg_readv_entry_head(&pk, e[i].len);
    assert_int_equal(codec_buf_write(&b, e[i].data, e[i].len), 0);
    msg_readv_entry_tail(&pk, e[i].holes, e[i].nholes);
  }
  frame_check(&b, &v);

  /* More results than ranges asked for is the agent's fault. */
  assert_int_equal(msg_readv_res_parse(m.result, e, 1, &n, &holes, &err), RMEM_EPROTO);
  assert_int_equal(n, 0);
  assert_int_equal(holes.n, 1);
  ranges_clear(&holes);
  vec_done(&v, &up);
}

static void test_deref_request(void **state) {
  vec v = vec_load("deref.request.hex");
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_REQUEST, ID_DEREF, "deref");
  msg_deref_req req;
  codec_err err;
  assert_int_equal(msg_deref_req_parse(m.params, &req, &err), 0);
  assert_int_equal(req.pid, 4242);
  assert_int_equal(req.addr, 0x555555558010);
  assert_int_equal(req.len, 8);
  assert_int_equal(req.n, COUNT(deref_offsets));
  for (size_t i = 0; i < req.n; i++)
    assert_int_equal(req.offsets[i], deref_offsets[i]);
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_deref_req_pack(&pk, m.msgid, req.pid, req.addr, req.offsets, req.n, req.len);
  frame_check(&b, &v);
  msg_deref_req_free(&req);
  vec_done(&v, &up);
}

static void test_deref_response(void **state) {
  vec v = vec_load("deref.response.hex");
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_RESPONSE, ID_DEREF, NULL);
  msg_deref_res r;
  rmem_ranges holes = {0};
  codec_err err;
  assert_int_equal(msg_deref_res_parse(m.result, &r, &holes, &err), 0);
  assert_false(r.broken);
  assert_int_equal(r.npointers, COUNT(deref_pointers));
  for (size_t i = 0; i < r.npointers; i++)
    assert_int_equal(r.pointers[i], deref_pointers[i]);
  assert_int_equal(r.addr, 0x7ffff7c00f38);
  assert_int_equal(r.len, sizeof(deref_data));
  assert_memory_equal(r.data, deref_data, r.len);
  assert_int_equal(holes.n, 0);
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_deref_res_pack(&pk, m.msgid, &r, holes.v, holes.n);
  frame_check(&b, &v);
  free(r.pointers);
  vec_done(&v, &up);
}

static void test_deref_response_broken(void **state) {
  vec v = vec_load("deref.response.broken.hex");
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_RESPONSE, ID_DEREF_BROKEN, NULL);
  msg_deref_res r;
  codec_err err;
  assert_int_equal(msg_deref_res_parse(m.result, &r, NULL, &err), 0);
  assert_true(r.broken);
  assert_int_equal(r.npointers, 1);
  assert_int_equal(r.pointers[0], deref_pointers[0]);
  assert_int_equal(r.step, 1);
  assert_int_equal(r.addr, 0x7ffff7a01010);
  assert_int_equal(r.code, RMEM_EUNMAPPED);
  assert_null(r.data);
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_deref_res_pack(&pk, m.msgid, &r, NULL, 0);
  frame_check(&b, &v);
  free(r.pointers);
  vec_done(&v, &up);
}

static void string_request_check(const char *file, uint32_t msgid, const msg_string_req *want) {
  vec v = vec_load(file);
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_REQUEST, msgid, "read_string");
  msg_string_req req;
  codec_err err;
  assert_int_equal(msg_string_req_parse(m.params, &req, &err), 0);
  assert_int_equal(req.pid, want->pid);
  assert_int_equal(req.addr, want->addr);
  assert_int_equal(req.max_len, want->max_len);
  assert_int_equal(req.encoding, want->encoding);
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_string_req_pack(&pk, m.msgid, &req);
  frame_check(&b, &v);
  vec_done(&v, &up);
}

static void test_string_request(void **state) {
  static const msg_string_req want = {
      .pid = 4242, .addr = 0x555555556004, .max_len = 256, .encoding = MSG_ENC_UTF16};
  string_request_check("read_string.request.hex", ID_STRING, &want);
}

static void test_string_request_default(void **state) {
  static const msg_string_req want = {.pid = 4242, .addr = 0x555555579ffc};
  string_request_check("read_string.request.default.hex", ID_STRING_DEFAULT, &want);
}

static void string_response_check(const char *file, uint32_t msgid, const msg_string_res *want) {
  vec v = vec_load(file);
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_RESPONSE, msgid, NULL);
  msg_string_res r;
  codec_err err;
  assert_int_equal(msg_string_res_parse(m.result, &r, &err), 0);
  assert_int_equal(r.text_len, want->text_len);
  assert_memory_equal(r.text, want->text, r.text_len);
  assert_int_equal(r.len, want->len);
  assert_int_equal(r.terminated, want->terminated);
  assert_int_equal(r.has_hole, want->has_hole);
  assert_int_equal(r.hole_addr, want->hole_addr);
  assert_int_equal(r.hole_code, want->hole_code);
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_string_res_pack(&pk, m.msgid, &r);
  frame_check(&b, &v);
  vec_done(&v, &up);
}

static void test_string_response(void **state) {
  static const msg_string_res want = {.text = "Gr\xc3\xbc\xc3\x9f"
                                              "e",
                                      .text_len = 7,
                                      .len = 10,
                                      .terminated = 1};
  string_response_check("read_string.response.hex", ID_STRING, &want);
}

static void test_string_response_hole(void **state) {
  static const msg_string_res want = {.text = "xxxx",
                                      .text_len = 4,
                                      .len = 4,
                                      .has_hole = 1,
                                      .hole_addr = 0x55555557a000,
                                      .hole_code = RMEM_EPROT};
  string_response_check("read_string.response.hole.hex", ID_STRING_DEFAULT, &want);
}

static void test_fill_request(void **state) {
  vec v = vec_load("fill.request.hex");
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_REQUEST, ID_FILL, "fill");
  msg_fill_req req;
  codec_err err;
  assert_int_equal(msg_fill_req_parse(m.params, &req, &err), 0);
  assert_int_equal(req.pid, 4242);
  assert_int_equal(req.addr, 0x7ffff7800000);
  assert_int_equal(req.len, 0x20000);
  assert_int_equal(req.plen, sizeof(fill_pattern));
  assert_memory_equal(req.pattern, fill_pattern, req.plen);
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_fill_req_pack(&pk, m.msgid, &req);
  frame_check(&b, &v);
  vec_done(&v, &up);
}

static void test_fill_response(void **state) {
  vec v = vec_load("fill.response.hex");
  msgpack_unpacked up;
  codec_msg m;
  decode(&v, &up, &m, CODEC_RESPONSE, ID_FILL, NULL);
  uint64_t written;
  rmem_ranges failed = {0};
  codec_err err;
  assert_int_equal(msg_write_res_parse(m.result, &written, &failed, &err), 0);
  assert_int_equal(written, 0x10000);
  ranges_check(&failed, fill_failed, COUNT(fill_failed));
  codec_buf b;
  msgpack_packer pk;
  frame_begin(&b, &pk);
  msg_write_res_pack(&pk, m.msgid, written, failed.v, failed.n);
  frame_check(&b, &v);
  ranges_clear(&failed);
  vec_done(&v, &up);
}

/* Every file in proto/vectors/ has a test above. */
static const char *const vector_files[] = {
    "hello.request.hex",
    "hello.response.hex",
    "hello.request.token.hex",
    "hello.request.compress.hex",
    "hello.response.compress.hex",
    "read.response.lz4.hex",
    "ps.request.hex",
    "ps.request.next.hex",
    "ps.response.next.hex",
    "ps.response.hex",
    "map.request.hex",
    "map.request.next.hex",
    "map.response.hex",
    "map.response.next.hex",
    "read.request.hex",
    "read.response.hex",
    "write.request.hex",
    "write.response.hex",
    "error.response.hex",
    "error.nomsgid.hex",
    "error.fault.hex",
    "read.request.cache.hex",
    "cache.request.hex",
    "cache.request.flush.hex",
    "cache.response.hex",
    "readv.request.hex",
    "readv.response.hex",
    "deref.request.hex",
    "deref.response.hex",
    "deref.response.broken.hex",
    "read_string.request.hex",
    "read_string.request.default.hex",
    "read_string.response.hex",
    "read_string.response.hole.hex",
    "fill.request.hex",
    "fill.response.hex",
};

static void test_all_vectors_tested(void **state) {
  DIR *d = opendir(RMEM_VECTORS_DIR);
  assert_non_null(d);
  size_t found = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    size_t n = strlen(e->d_name);
    if (n < 4 || strcmp(e->d_name + n - 4, ".hex") != 0)
      continue;
    size_t i = 0;
    while (i < COUNT(vector_files) && strcmp(vector_files[i], e->d_name) != 0)
      i++;
    if (i == COUNT(vector_files))
      fail_msg("%s has no test", e->d_name);
    found++;
  }
  closedir(d);
  assert_int_equal(found, COUNT(vector_files));
}

/* Parse errors. Vectors are decoded and then broken in place. */

typedef struct {
  vec v;
  msgpack_unpacked up;
  codec_msg m;
  codec_err err;
} fixture;

static void fx_load(fixture *fx, const char *file) {
  fx->v = vec_load(file);
  msgpack_unpacked_init(&fx->up);
  assert_int_equal(codec_msg_decode((const char *)fx->v.p + CODEC_FRAME_HDR,
                                    fx->v.n - CODEC_FRAME_HDR, MAX_OBJECTS, &fx->up, &fx->m, NULL,
                                    0),
                   0);
  memset(&fx->err, 0, sizeof(fx->err));
}

static void fx_done(fixture *fx) {
  vec_done(&fx->v, &fx->up);
}

/* The payload of the message: params or result, writable. */
static msgpack_object *fx_body(fixture *fx) {
  return (msgpack_object *)(fx->m.type == CODEC_REQUEST ? fx->m.params : fx->m.result);
}

static msgpack_object *field_of(msgpack_object *map, const char *key) {
  msgpack_object *o = (msgpack_object *)codec_map_get(map, key);
  assert_non_null(o);
  return o;
}

static void set_str(msgpack_object *o, const char *s) {
  o->type = MSGPACK_OBJECT_STR;
  o->via.str.ptr = s;
  o->via.str.size = (uint32_t)strlen(s);
}

static void set_int(msgpack_object *o, int64_t v) {
  o->type = v < 0 ? MSGPACK_OBJECT_NEGATIVE_INTEGER : MSGPACK_OBJECT_POSITIVE_INTEGER;
  o->via.i64 = v;
}

/* Renames the key `from` so that the field reads as missing. */
static void drop_key(msgpack_object *map, const char *from) {
  for (uint32_t i = 0; i < map->via.map.size; i++)
    if (codec_str_eq(&map->via.map.ptr[i].key, from)) {
      set_str(&map->via.map.ptr[i].key, "x-dropped");
      return;
    }
  fail_msg("no key %s", from);
}

static void expect_err(const codec_err *err, int code, const char *needle) {
  assert_int_equal(err->code, code);
  if (strstr(err->msg, needle) == NULL)
    fail_msg("message '%s' lacks '%s'", err->msg, needle);
}

static void test_request_errors(void **state) {
  fixture fx;
  msg_hello_req hello;
  fx_load(&fx, "hello.request.hex");
  set_str(field_of(fx_body(&fx), "version"), "1");
  assert_int_equal(msg_hello_req_parse(fx_body(&fx), &hello, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "'version'");
  drop_key(fx_body(&fx), "version");
  assert_int_equal(msg_hello_req_parse(fx_body(&fx), &hello, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "missing parameter 'version'");
  assert_int_equal(msg_hello_req_parse(NULL, &hello, &fx.err), RMEM_EPARAM);
  fx_done(&fx);

  /* A long client name is truncated, not refused. */
  fx_load(&fx, "hello.request.hex");
  static const char long_name[] = "a-client-name-that-is-much-longer-than-sixty-three-bytes-"
                                  "of-storage";
  set_str(field_of(fx_body(&fx), "client"), long_name);
  assert_int_equal(msg_hello_req_parse(fx_body(&fx), &hello, &fx.err), 0);
  assert_int_equal(strlen(hello.client), sizeof(hello.client) - 1);
  assert_memory_equal(hello.client, long_name, sizeof(hello.client) - 1);
  fx_done(&fx);

  msg_map_req map;
  fx_load(&fx, "map.request.hex");
  set_int(field_of(fx_body(&fx), "pid"), -1);
  assert_int_equal(msg_map_req_parse(fx_body(&fx), &map, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "'pid' must not be negative");
  set_int(field_of(fx_body(&fx), "pid"), 0);
  assert_int_equal(msg_map_req_parse(fx_body(&fx), &map, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "'pid'");
  set_int(field_of(fx_body(&fx), "pid"), 1ll << 32);
  assert_int_equal(msg_map_req_parse(fx_body(&fx), &map, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "'pid' does not fit 32 bits");
  set_int(field_of(fx_body(&fx), "pid"), 5);
  set_int(field_of(fx_body(&fx), "free"), 1);
  assert_int_equal(msg_map_req_parse(fx_body(&fx), &map, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "'free' must be a boolean");
  /* Optional fields may be absent or nil. */
  drop_key(fx_body(&fx), "free");
  field_of(fx_body(&fx), "detail")->type = MSGPACK_OBJECT_NIL;
  assert_int_equal(msg_map_req_parse(fx_body(&fx), &map, &fx.err), 0);
  assert_int_equal(map.pid, 5);
  assert_false(map.free);
  assert_false(map.detail);
  fx_done(&fx);

  msg_read_req rd;
  fx_load(&fx, "read.request.hex");
  set_str(field_of(fx_body(&fx), "addr"), "0x1000");
  assert_int_equal(msg_read_req_parse(fx_body(&fx), &rd, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "'addr' must be an unsigned integer");
  fx_done(&fx);
  fx_load(&fx, "read.request.hex");
  drop_key(fx_body(&fx), "len");
  assert_int_equal(msg_read_req_parse(fx_body(&fx), &rd, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "missing parameter 'len'");
  fx_done(&fx);

  msg_write_req wr;
  fx_load(&fx, "write.request.hex");
  set_str(field_of(fx_body(&fx), "data"), "bytes");
  assert_int_equal(msg_write_req_parse(fx_body(&fx), &wr, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "'data' must be bin");
  fx_done(&fx);
}

static void test_hello_reply_errors(void **state) {
  fixture fx;
  rmem_agent_info info;
  fx_load(&fx, "hello.response.hex");
  assert_int_equal(msg_hello_res_parse(NULL, &info, &fx.err), RMEM_EPROTO);
  field_of(fx_body(&fx), "limits")->type = MSGPACK_OBJECT_NIL;
  assert_int_equal(msg_hello_res_parse(fx_body(&fx), &info, &fx.err), RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'limits'");
  fx_done(&fx);

  fx_load(&fx, "hello.response.hex");
  set_int(&field_of(fx_body(&fx), "methods")->via.array.ptr[1], 3);
  assert_int_equal(msg_hello_res_parse(fx_body(&fx), &info, &fx.err), RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'methods'");
  fx_done(&fx);

  fx_load(&fx, "hello.response.hex");
  set_int(field_of(fx_body(&fx), "page_size"), -4096);
  assert_int_equal(msg_hello_res_parse(fx_body(&fx), &info, &fx.err), RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'page_size'");
  fx_done(&fx);
}

static void test_ps_reply_errors(void **state) {
  fixture fx;
  rmem_proc_list l = {0};
  /* The third proc is bad: the first two are freed (ASan checks) and the list stays empty. */
  fx_load(&fx, "ps.response.hex");
  msgpack_object *procs = field_of(fx_body(&fx), "procs");
  set_int(field_of(&procs->via.array.ptr[2], "name"), 7);
  assert_int_equal(msg_ps_res_parse(fx_body(&fx), &l, &ps_has_next, &ps_next, &fx.err),
                   RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'name'");
  assert_int_equal(l.n, 0);
  rmem_proc_list_free(&l);
  fx_done(&fx);

  /* A bad argument after good ones. */
  fx_load(&fx, "ps.response.hex");
  procs = field_of(fx_body(&fx), "procs");
  set_int(&field_of(&procs->via.array.ptr[2], "cmdline")->via.array.ptr[2], 2);
  assert_int_equal(msg_ps_res_parse(fx_body(&fx), &l, &ps_has_next, &ps_next, &fx.err),
                   RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'cmdline'");
  assert_int_equal(l.n, 0);
  set_int(&procs->via.array.ptr[1], 2);
  assert_int_equal(msg_ps_res_parse(fx_body(&fx), &l, &ps_has_next, &ps_next, &fx.err),
                   RMEM_EPROTO);
  rmem_proc_list_free(&l);
  fx_done(&fx);
}

static void test_map_reply_errors(void **state) {
  fixture fx, next;
  rmem_memmap map = {0};
  int has_next;
  uint64_t nx;

  /* Continued maps join up. */
  fx_load(&fx, "map.response.hex");
  fx_load(&next, "map.response.next.hex");
  assert_int_equal(msg_map_res_parse(fx_body(&fx), &map, &has_next, &nx, &fx.err), 0);
  assert_int_equal(msg_map_res_parse(fx_body(&next), &map, &has_next, &nx, &fx.err), 0);
  assert_int_equal(map.n, COUNT(map_regions) + COUNT(map_regions_next));
  region_check(&map.regions[COUNT(map_regions)], &map_regions_next[0]);
  assert_true(has_next);

  /* A bad last region leaves the map as it was; the paths parsed before it are freed. */
  msgpack_object *regions = field_of(fx_body(&fx), "regions");
  msgpack_object *last = &regions->via.array.ptr[regions->via.array.size - 1];
  set_str(field_of(last, "state"), "bogus");
  assert_int_equal(msg_map_res_parse(fx_body(&fx), &map, &has_next, &nx, &fx.err), RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'state'");
  assert_int_equal(map.n, COUNT(map_regions) + COUNT(map_regions_next));
  set_str(field_of(last, "state"), "commit");
  set_str(field_of(last, "type"), "anonymous");
  assert_int_equal(msg_map_res_parse(fx_body(&fx), &map, &has_next, &nx, &fx.err), RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'type'");
  set_str(field_of(last, "type"), "mapped");
  set_str(field_of(last, "dev"), "00:zz");
  assert_int_equal(msg_map_res_parse(fx_body(&fx), &map, &has_next, &nx, &fx.err), RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'dev'");
  set_str(field_of(last, "dev"), "103:2f");
  set_int(field_of(last, "inode"), -2);
  assert_int_equal(msg_map_res_parse(fx_body(&fx), &map, &has_next, &nx, &fx.err), RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'inode'");
  set_int(field_of(last, "inode"), 2);
  memmap_clear(&map);

  /* Unknown usages read as none; dev is hex of any width. */
  msgpack_object *heap = &regions->via.array.ptr[2];
  set_str(field_of(heap, "usage"), "jit_code");
  assert_int_equal(msg_map_res_parse(fx_body(&fx), &map, &has_next, &nx, &fx.err), 0);
  assert_false(has_next);
  assert_int_equal(map.regions[2].usage, RMEM_USAGE_NONE);
  assert_int_equal(map.regions[6].dev_major, 0x103);
  assert_int_equal(map.regions[6].dev_minor, 0x2f);
  memmap_clear(&map);

  /* smaps must be whole. */
  drop_key(field_of(heap, "smaps"), "swap");
  assert_int_equal(msg_map_res_parse(fx_body(&fx), &map, &has_next, &nx, &fx.err), RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'swap'");
  assert_int_equal(map.n, 0);
  memmap_clear(&map);
  fx_done(&next);
  fx_done(&fx);
}

static void test_rw_reply_errors(void **state) {
  fixture fx;
  const char *data;
  size_t len;
  rmem_ranges holes = {0};
  assert_int_equal(msg_ranges_push(&holes, 1, 2, RMEM_EIO), 0);

  fx_load(&fx, "read.response.hex");
  msgpack_object *hole = &field_of(fx_body(&fx), "holes")->via.array.ptr[0];
  set_int(field_of(hole, "code"), 15);
  assert_int_equal(msg_read_res_parse(fx_body(&fx), &data, &len, NULL, &holes, NULL, &fx.err),
                   RMEM_EPROTO);
  assert_int_equal(holes.n, 1);
  set_int(field_of(hole, "code"), 1ll << 40);
  assert_int_equal(msg_read_res_parse(fx_body(&fx), &data, &len, NULL, &holes, NULL, &fx.err),
                   RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'code'");
  set_int(field_of(hole, "code"), RMEM_EPROT);
  /* Holes may be dropped by passing NULL. */
  assert_int_equal(msg_read_res_parse(fx_body(&fx), &data, &len, NULL, NULL, NULL, &fx.err), 0);
  assert_int_equal(msg_read_res_parse(fx_body(&fx), &data, &len, NULL, &holes, NULL, &fx.err), 0);
  assert_int_equal(holes.n, 2);
  assert_int_equal(holes.v[1].code, RMEM_EPROT);
  set_str(field_of(fx_body(&fx), "data"), "text");
  assert_int_equal(msg_read_res_parse(fx_body(&fx), &data, &len, NULL, &holes, NULL, &fx.err),
                   RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'data'");
  fx_done(&fx);

  uint64_t written;
  fx_load(&fx, "write.response.hex");
  set_int(field_of(fx_body(&fx), "written"), -8);
  assert_int_equal(msg_write_res_parse(fx_body(&fx), &written, &holes, &fx.err), RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'written'");
  set_int(field_of(fx_body(&fx), "written"), 8);
  field_of(fx_body(&fx), "failed")->type = MSGPACK_OBJECT_NIL;
  assert_int_equal(msg_write_res_parse(fx_body(&fx), &written, &holes, &fx.err), RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'failed'");
  assert_int_equal(holes.n, 2);
  fx_done(&fx);
  ranges_clear(&holes);
}

/* A lying or malformed compressed reply: librmem sees a protocol error and
 * lz4 never writes past the bytes announced (ASan watches the exact-size
 * buffers). */
static void test_lz4_errors(void **state) {
  fixture fx;
  const char *data;
  size_t len;
  uint64_t lz4_len;
  rmem_ranges holes = {0};
  fx_load(&fx, "read.response.lz4.hex");
  msgpack_object *body = fx_body(&fx);
  assert_int_equal(msg_read_res_parse(body, &data, &len, &lz4_len, &holes, NULL, &fx.err), 0);
  assert_int_equal(holes.n, 1);

  /* Compressed data where none was asked for. */
  assert_int_equal(msg_read_res_parse(body, &data, &len, NULL, &holes, NULL, &fx.err), RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "not asked for");
  /* lz4_len of nothing, negative, not a number. */
  set_int(field_of(body, "lz4_len"), 0);
  assert_int_equal(msg_read_res_parse(body, &data, &len, &lz4_len, &holes, NULL, &fx.err),
                   RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'lz4_len'");
  set_int(field_of(body, "lz4_len"), -8192);
  assert_int_equal(msg_read_res_parse(body, &data, &len, &lz4_len, &holes, NULL, &fx.err),
                   RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'lz4_len'");
  set_str(field_of(body, "lz4_len"), "8192");
  assert_int_equal(msg_read_res_parse(body, &data, &len, &lz4_len, &holes, NULL, &fx.err),
                   RMEM_EPROTO);
  assert_int_equal(holes.n, 1);
  set_int(field_of(body, "lz4_len"), READ_LZ4_LEN);

  /* The block holds 8192 bytes: announcing more or fewer fails, and a
   * smaller buffer is never overrun. */
  assert_int_equal(msg_read_res_parse(body, &data, &len, &lz4_len, NULL, NULL, &fx.err), 0);
  for (size_t want = 1; want <= 2 * READ_LZ4_LEN; want = want < 4096 ? want * 4 : want + 4096) {
    if (want == READ_LZ4_LEN)
      continue;
    char *out = malloc(want);
    assert_non_null(out);
    assert_int_equal(compress_lz4_unpack(data, len, out, want, &fx.err), RMEM_EPROTO);
    free(out);
  }
  char *out = malloc(READ_LZ4_LEN);
  assert_non_null(out);
  /* A cut block, and every single-byte corruption of the block. */
  assert_int_equal(compress_lz4_unpack(data, len - 1, out, READ_LZ4_LEN, &fx.err), RMEM_EPROTO);
  assert_int_equal(compress_lz4_unpack(data, 0, out, READ_LZ4_LEN, &fx.err), RMEM_EPROTO);
  char *bad = malloc(len);
  assert_non_null(bad);
  for (size_t i = 0; i < len; i++) {
    static const unsigned char flips[] = {0x00, 0xff, 0x80, 0x0f};
    for (size_t k = 0; k < COUNT(flips); k++) {
      memcpy(bad, data, len);
      bad[i] = (char)flips[k];
      int rc = compress_lz4_unpack(bad, len, out, READ_LZ4_LEN, &fx.err);
      assert_true(rc == 0 || rc == RMEM_EPROTO);
    }
  }
  /* Garbage that claims a huge literal run. */
  memset(bad, 0xff, len);
  assert_int_equal(compress_lz4_unpack(bad, len, out, READ_LZ4_LEN, &fx.err), RMEM_EPROTO);
  free(bad);
  free(out);
  fx_done(&fx);
  ranges_clear(&holes);

  /* hello: compress must be an array of strings; unknown names are skipped. */
  fx_load(&fx, "hello.request.compress.hex");
  msg_hello_req hello;
  msgpack_object *list = field_of(fx_body(&fx), "compress");
  set_str(&list->via.array.ptr[0], "zstd");
  assert_int_equal(msg_hello_req_parse(fx_body(&fx), &hello, &fx.err), 0);
  assert_int_equal(hello.compress, 0);
  set_int(&list->via.array.ptr[0], 4);
  assert_int_equal(msg_hello_req_parse(fx_body(&fx), &hello, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "'compress'");
  set_str(list, "lz4");
  assert_int_equal(msg_hello_req_parse(fx_body(&fx), &hello, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "'compress'");
  list->type = MSGPACK_OBJECT_NIL;
  assert_int_equal(msg_hello_req_parse(fx_body(&fx), &hello, &fx.err), 0);
  assert_int_equal(hello.compress, 0);
  fx_done(&fx);

  /* hello result: a compress that is not a string is the agent's fault. */
  fx_load(&fx, "hello.response.compress.hex");
  rmem_agent_info info;
  set_int(field_of(fx_body(&fx), "compress"), 1);
  assert_int_equal(msg_hello_res_parse(fx_body(&fx), &info, &fx.err), RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'compress'");
  fx_done(&fx);
}

/* The agent's side: short and incompressible data stay raw; the rest
 * round-trips. */
static void test_lz4_helpers(void **state) {
  enum { N = 64 << 10 };
  unsigned char *src = malloc(N), *out = malloc(N);
  size_t cap = compress_lz4_bound(N);
  char *block = malloc(cap);
  assert_true(src && out && block && cap >= N);
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < N; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    src[i] = (unsigned char)x;
  }
  assert_int_equal(compress_lz4(src, N, block, cap), 0); /* Random bytes. */
  for (size_t i = 0; i < N; i++)
    src[i] = (unsigned char)(i % 251 < 200 ? 0 : i);
  assert_int_equal(compress_lz4(src, COMPRESS_MIN - 1, block, cap), 0); /* Too short. */
  assert_int_equal(compress_lz4(src, N, block, cap - 1), 0);            /* No room. */
  size_t n = compress_lz4(src, N, block, cap);
  assert_true(n > 0 && n * 8 <= (size_t)N * 7);
  codec_err err;
  assert_int_equal(compress_lz4_unpack(block, n, out, N, &err), 0);
  assert_memory_equal(out, src, N);
  free(src);
  free(out);
  free(block);
}

static void test_cache_errors(void **state) {
  fixture fx;
  msg_cache_req req;
  fx_load(&fx, "cache.request.flush.hex");
  set_str(field_of(fx_body(&fx), "pid"), "4242");
  assert_int_equal(msg_cache_req_parse(fx_body(&fx), &req, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "'pid'");
  set_int(field_of(fx_body(&fx), "pid"), 0);
  assert_int_equal(msg_cache_req_parse(fx_body(&fx), &req, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "'pid' must not be 0");
  set_int(field_of(fx_body(&fx), "pid"), 7);
  set_int(field_of(fx_body(&fx), "flush"), 1);
  assert_int_equal(msg_cache_req_parse(fx_body(&fx), &req, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "'flush' must be a boolean");
  field_of(fx_body(&fx), "flush")->type = MSGPACK_OBJECT_BOOLEAN;
  field_of(fx_body(&fx), "flush")->via.boolean = false;
  assert_int_equal(msg_cache_req_parse(fx_body(&fx), &req, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "'pid' applies only with 'flush'");
  /* Optional fields may be nil. */
  field_of(fx_body(&fx), "pid")->type = MSGPACK_OBJECT_NIL;
  field_of(fx_body(&fx), "flush")->type = MSGPACK_OBJECT_NIL;
  assert_int_equal(msg_cache_req_parse(fx_body(&fx), &req, &fx.err), 0);
  assert_false(req.flush);
  assert_int_equal(req.pid, 0);
  fx_done(&fx);

  msg_read_req rd;
  fx_load(&fx, "read.request.cache.hex");
  set_int(field_of(fx_body(&fx), "max_age_ms"), -1);
  assert_int_equal(msg_read_req_parse(fx_body(&fx), &rd, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "'max_age_ms' must not be negative");
  set_int(field_of(fx_body(&fx), "max_age_ms"), 5);
  set_int(field_of(fx_body(&fx), "uncached"), 1);
  assert_int_equal(msg_read_req_parse(fx_body(&fx), &rd, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "'uncached' must be a boolean");
  fx_done(&fx);

  /* A bad `cached` is the agent's fault; holes are then left as they were. */
  const char *data;
  size_t len;
  uint64_t cached = 99;
  rmem_ranges holes = {0};
  fx_load(&fx, "read.response.hex");
  set_int(field_of(fx_body(&fx), "cached"), -8);
  assert_int_equal(msg_read_res_parse(fx_body(&fx), &data, &len, NULL, &holes, &cached, &fx.err),
                   RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'cached'");
  assert_int_equal(holes.n, 0);
  assert_int_equal(cached, 99);
  /* Agents before the cache leave it out. */
  drop_key(fx_body(&fx), "cached");
  assert_int_equal(msg_read_res_parse(fx_body(&fx), &data, &len, NULL, &holes, &cached, &fx.err),
                   0);
  assert_int_equal(cached, 0);
  assert_int_equal(holes.n, 1);
  fx_done(&fx);
  ranges_clear(&holes);

  rmem_cache_info info;
  fx_load(&fx, "cache.response.hex");
  assert_int_equal(msg_cache_res_parse(NULL, &info, &fx.err), RMEM_EPROTO);
  set_str(field_of(fx_body(&fx), "hits"), "many");
  assert_int_equal(msg_cache_res_parse(fx_body(&fx), &info, &fx.err), RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'hits'");
  drop_key(fx_body(&fx), "evictions");
  set_int(field_of(fx_body(&fx), "hits"), 1);
  assert_int_equal(msg_cache_res_parse(fx_body(&fx), &info, &fx.err), RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'evictions'");
  fx_done(&fx);
}

static void test_error_object(void **state) {
  fixture fx;
  int code;
  char msg[16];
  fx_load(&fx, "error.response.hex");
  msgpack_object *e = (msgpack_object *)fx.m.error;
  /* Truncated to the caller's buffer. */
  assert_int_equal(msg_error_parse(e, &code, msg, sizeof(msg)), 0);
  assert_string_equal(msg, "no such process");
  /* Without a message, the table's. */
  drop_key(e, "message");
  assert_int_equal(msg_error_parse(e, &code, msg, sizeof(msg)), 0);
  assert_int_equal(code, RMEM_ENOPROC);
  assert_string_equal(msg, "no such process");
  /* Without a code, the name. */
  drop_key(e, "code");
  set_str(field_of(e, "name"), "RMEM_EBUSY");
  assert_int_equal(msg_error_parse(e, &code, NULL, 0), 0);
  assert_int_equal(code, RMEM_EBUSY);
  /* Neither: a protocol error. */
  set_str(field_of(e, "name"), "RMEM_OK");
  assert_int_equal(msg_error_parse(e, &code, msg, sizeof(msg)), RMEM_EPROTO);
  assert_int_equal(code, RMEM_EPROTO);
  assert_int_equal(msg_error_parse(NULL, &code, msg, sizeof(msg)), RMEM_EPROTO);
  assert_int_equal(code, RMEM_EPROTO);
  fx_done(&fx);
}

static void test_ranges_push(void **state) {
  rmem_ranges r = {0};
  for (int i = 0; i < 1000; i++)
    assert_int_equal(msg_ranges_push(&r, (uint64_t)i << 12, 4096, RMEM_EIO), 0);
  assert_int_equal(r.n, 1000);
  assert_true(r.cap >= 1000);
  assert_int_equal(r.v[999].addr, 999u << 12);
  ranges_clear(&r);
}

static void test_names(void **state) {
  assert_string_equal(msg_state_name(RMEM_STATE_COMMIT), "commit");
  assert_string_equal(msg_state_name(RMEM_STATE_RESERVE), "reserve");
  assert_string_equal(msg_state_name(RMEM_STATE_FREE), "free");
  assert_null(msg_state_name(3));
  assert_null(msg_state_name(-1));
  assert_null(msg_type_name(RMEM_TYPE_NONE));
  assert_string_equal(msg_type_name(RMEM_TYPE_IMAGE), "image");
  assert_string_equal(msg_type_name(RMEM_TYPE_MAPPED), "mapped");
  assert_string_equal(msg_type_name(RMEM_TYPE_PRIVATE), "private");
  assert_null(msg_type_name(4));
  assert_null(msg_usage_name(RMEM_USAGE_NONE));
  static const char *const usages[] = {"heap", "stack",    "thread_stack", "vdso",
                                       "vvar", "vsyscall", "module"};
  for (int u = RMEM_USAGE_HEAP; u <= RMEM_USAGE_MODULE; u++)
    assert_string_equal(msg_usage_name(u), usages[u - RMEM_USAGE_HEAP]);
  assert_null(msg_usage_name(RMEM_USAGE_MODULE + 1));
}

/* Parse errors of the slow-link messages, by breaking decoded vectors. */
static void test_slow_errors(void **state) {
  fixture fx;
  msg_readv_req rv;
  fx_load(&fx, "readv.request.hex");
  msgpack_object *ranges = field_of(fx_body(&fx), "ranges");
  set_int(field_of(&ranges->via.array.ptr[1], "len"), -1);
  assert_int_equal(msg_readv_req_parse(fx_body(&fx), &rv, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "'len'");
  assert_null(rv.ranges);
  set_int(&ranges->via.array.ptr[1], 7);
  assert_int_equal(msg_readv_req_parse(fx_body(&fx), &rv, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "'ranges'");
  ranges->via.array.size = RMEM_READV_MAX_RANGES + 1; /* Checked before the elements. */
  assert_int_equal(msg_readv_req_parse(fx_body(&fx), &rv, &fx.err), RMEM_ETOOBIG);
  drop_key(fx_body(&fx), "ranges");
  assert_int_equal(msg_readv_req_parse(fx_body(&fx), &rv, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "'ranges'");
  fx_done(&fx);

  msg_deref_req dr;
  fx_load(&fx, "deref.request.hex");
  msgpack_object *offsets = field_of(fx_body(&fx), "offsets");
  set_str(&offsets->via.array.ptr[2], "16");
  assert_int_equal(msg_deref_req_parse(fx_body(&fx), &dr, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "'offsets'");
  assert_null(dr.offsets);
  offsets->via.array.ptr[2].type = MSGPACK_OBJECT_POSITIVE_INTEGER;
  offsets->via.array.ptr[2].via.u64 = (uint64_t)INT64_MAX + 1;
  assert_int_equal(msg_deref_req_parse(fx_body(&fx), &dr, &fx.err), RMEM_EPARAM);
  set_int(&offsets->via.array.ptr[2], INT64_MIN);
  assert_int_equal(msg_deref_req_parse(fx_body(&fx), &dr, &fx.err), 0);
  assert_int_equal(dr.offsets[2], INT64_MIN);
  msg_deref_req_free(&dr);
  set_int(field_of(fx_body(&fx), "pid"), 0);
  assert_int_equal(msg_deref_req_parse(fx_body(&fx), &dr, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "'pid'");
  fx_done(&fx);

  msg_string_req sr;
  fx_load(&fx, "read_string.request.hex");
  set_str(field_of(fx_body(&fx), "encoding"), "latin1");
  assert_int_equal(msg_string_req_parse(fx_body(&fx), &sr, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "'encoding'");
  set_str(field_of(fx_body(&fx), "encoding"), "utf8");
  set_int(field_of(fx_body(&fx), "max_len"), 0);
  assert_int_equal(msg_string_req_parse(fx_body(&fx), &sr, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "'max_len'");
  fx_done(&fx);

  msg_fill_req fr;
  fx_load(&fx, "fill.request.hex");
  set_str(field_of(fx_body(&fx), "pattern"), "90");
  assert_int_equal(msg_fill_req_parse(fx_body(&fx), &fr, &fx.err), RMEM_EPARAM);
  expect_err(&fx.err, RMEM_EPARAM, "'pattern'");
  fx_done(&fx);

  /* Replies. */
  msg_readv_entry e[2];
  size_t n;
  rmem_ranges holes = {0};
  fx_load(&fx, "readv.response.hex");
  msgpack_object *results = field_of(fx_body(&fx), "results");
  msgpack_object *hole = &field_of(&results->via.array.ptr[0], "holes")->via.array.ptr[0];
  set_int(field_of(hole, "code"), 15);
  assert_int_equal(msg_readv_res_parse(fx_body(&fx), e, 2, &n, &holes, &fx.err), RMEM_EPROTO);
  assert_int_equal(holes.n, 0);
  set_int(field_of(hole, "code"), RMEM_EIO);
  set_str(field_of(&results->via.array.ptr[1], "data"), "text");
  assert_int_equal(msg_readv_res_parse(fx_body(&fx), e, 2, &n, &holes, &fx.err), RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'data'");
  assert_int_equal(holes.n, 0);
  ranges_clear(&holes);
  fx_done(&fx);

  msg_deref_res dres;
  fx_load(&fx, "deref.response.broken.hex");
  msgpack_object *broken = field_of(fx_body(&fx), "broken");
  set_int(field_of(broken, "code"), 15);
  assert_int_equal(msg_deref_res_parse(fx_body(&fx), &dres, NULL, &fx.err), RMEM_EPROTO);
  set_int(field_of(broken, "code"), RMEM_EPROT);
  set_int(&field_of(fx_body(&fx), "pointers")->via.array.ptr[0], -1);
  assert_int_equal(msg_deref_res_parse(fx_body(&fx), &dres, NULL, &fx.err), RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'pointers'");
  fx_done(&fx);
  fx_load(&fx, "deref.response.hex");
  drop_key(fx_body(&fx), "data");
  assert_int_equal(msg_deref_res_parse(fx_body(&fx), &dres, NULL, &fx.err), RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'data'");
  fx_done(&fx);

  msg_string_res str;
  fx_load(&fx, "read_string.response.hole.hex");
  set_int(field_of(field_of(fx_body(&fx), "hole"), "code"), 16);
  assert_int_equal(msg_string_res_parse(fx_body(&fx), &str, &fx.err), RMEM_EPROTO);
  set_int(field_of(fx_body(&fx), "text"), 5);
  assert_int_equal(msg_string_res_parse(fx_body(&fx), &str, &fx.err), RMEM_EPROTO);
  expect_err(&fx.err, RMEM_EPROTO, "'text'");
  fx_done(&fx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hello_request),
      cmocka_unit_test(test_hello_response),
      cmocka_unit_test(test_hello_request_token),
      cmocka_unit_test(test_hello_token_limits),
      cmocka_unit_test(test_hello_request_compress),
      cmocka_unit_test(test_hello_response_compress),
      cmocka_unit_test(test_ps_request),
      cmocka_unit_test(test_ps_response),
      cmocka_unit_test(test_ps_next),
      cmocka_unit_test(test_map_request),
      cmocka_unit_test(test_map_request_next),
      cmocka_unit_test(test_map_response),
      cmocka_unit_test(test_map_response_next),
      cmocka_unit_test(test_read_request),
      cmocka_unit_test(test_read_request_cache),
      cmocka_unit_test(test_read_response),
      cmocka_unit_test(test_read_response_lz4),
      cmocka_unit_test(test_lz4_errors),
      cmocka_unit_test(test_lz4_helpers),
      cmocka_unit_test(test_cache_request),
      cmocka_unit_test(test_cache_request_flush),
      cmocka_unit_test(test_cache_response),
      cmocka_unit_test(test_cache_errors),
      cmocka_unit_test(test_write_request),
      cmocka_unit_test(test_write_response),
      cmocka_unit_test(test_error_response),
      cmocka_unit_test(test_error_nomsgid),
      cmocka_unit_test(test_error_fault),
      cmocka_unit_test(test_all_vectors_tested),
      cmocka_unit_test(test_request_errors),
      cmocka_unit_test(test_hello_reply_errors),
      cmocka_unit_test(test_ps_reply_errors),
      cmocka_unit_test(test_map_reply_errors),
      cmocka_unit_test(test_rw_reply_errors),
      cmocka_unit_test(test_error_object),
      cmocka_unit_test(test_ranges_push),
      cmocka_unit_test(test_names),
      cmocka_unit_test(test_readv_request),
      cmocka_unit_test(test_readv_response),
      cmocka_unit_test(test_deref_request),
      cmocka_unit_test(test_deref_response),
      cmocka_unit_test(test_deref_response_broken),
      cmocka_unit_test(test_string_request),
      cmocka_unit_test(test_string_request_default),
      cmocka_unit_test(test_string_response),
      cmocka_unit_test(test_string_response_hole),
      cmocka_unit_test(test_fill_request),
      cmocka_unit_test(test_fill_response),
      cmocka_unit_test(test_slow_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
