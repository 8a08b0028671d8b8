/* Message codecs for proto/PROTOCOL.md. Requests are parsed by the agent, so
 * their errors are RMEM_EPARAM; replies are parsed by librmem, where a bad
 * shape is the agent's fault, so their errors are RMEM_EPROTO. */
#include "msg.h"

#include "compress.h"
#include "rmem_error.h"

#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Wire names, indexed by the enums of rmem.h; NULL where nothing is sent. */
static const char *const state_names[] = {"commit", "reserve", "free"};
static const char *const type_names[] = {NULL, "image", "mapped", "private"};
static const char *const usage_names[] = {NULL,   "heap", "stack",    "thread_stack",
                                          "vdso", "vvar", "vsyscall", "module"};

static const char *name_of(const char *const *names, size_t n, int v) {
  return v >= 0 && (size_t)v < n ? names[v] : NULL;
}

/* Returns the index of the wire name `o` in `names`, or -1. */
static int name_find(const char *const *names, size_t n, const msgpack_object *o) {
  for (size_t i = 0; i < n; i++)
    if (names[i] && codec_str_eq(o, names[i]))
      return (int)i;
  return -1;
}

const char *msg_state_name(int state) {
  return name_of(state_names, COUNT(state_names), state);
}

const char *msg_type_name(int type) {
  return name_of(type_names, COUNT(type_names), type);
}

const char *msg_usage_name(int usage) {
  return name_of(usage_names, COUNT(usage_names), usage);
}

/* Packing. */

static void pack_u64(msgpack_packer *pk, const char *key, uint64_t v) {
  codec_pack_str(pk, key);
  msgpack_pack_uint64(pk, v);
}

static void pack_bool(msgpack_packer *pk, const char *key, int v) {
  codec_pack_str(pk, key);
  if (v)
    msgpack_pack_true(pk);
  else
    msgpack_pack_false(pk);
}

static void pack_str(msgpack_packer *pk, const char *key, const char *s) {
  codec_pack_str(pk, key);
  codec_pack_str(pk, s ? s : "");
}

/* A fixed-size char array that may lack its NUL. */
static void pack_chars(msgpack_packer *pk, const char *key, const char *s, size_t cap) {
  codec_pack_str(pk, key);
  codec_pack_strn(pk, s, strnlen(s, cap));
}

static void pack_ranges(msgpack_packer *pk, const char *key, const rmem_range *v, size_t n) {
  codec_pack_str(pk, key);
  msgpack_pack_array(pk, n);
  for (size_t i = 0; i < n; i++) {
    msgpack_pack_map(pk, 3);
    pack_u64(pk, "addr", v[i].addr);
    pack_u64(pk, "len", v[i].len);
    codec_pack_str(pk, "code");
    msgpack_pack_int(pk, v[i].code);
  }
}

/* Parsing. */

/* A reply that breaks the spec is the agent's fault, not the caller's. */
static int bad_reply(codec_err *err) {
  if (err) {
    char msg[sizeof(err->msg)];
    memcpy(msg, err->msg, sizeof(msg));
    msg[sizeof(msg) - 1] = '\0';
    codec_fail(err, RMEM_EPROTO, "bad reply: %s", msg);
  }
  return RMEM_EPROTO;
}

static int get_int(const msgpack_object *map, const char *key, int required, int *out,
                   codec_err *err) {
  const msgpack_object *o = codec_map_get(map, key);
  if (o == NULL || o->type == MSGPACK_OBJECT_NIL)
    return required ? codec_fail(err, RMEM_EPARAM, "missing parameter '%s'", key) : 1;
  if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && o->via.i64 >= INT_MIN)
    *out = (int)o->via.i64;
  else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT_MAX)
    *out = (int)o->via.u64;
  else
    return codec_fail(err, RMEM_EPARAM, "parameter '%s' must be a 32-bit integer", key);
  return 0;
}

/* Copies n bytes into dst[cap], truncating, always NUL-terminated. */
static void copy_chars(char *dst, size_t cap, const char *s, size_t n) {
  if (n >= cap)
    n = cap - 1;
  if (n)
    memcpy(dst, s, n);
  dst[n] = '\0';
}

static char *copy_str(const char *s, size_t n) {
  char *p = malloc(n + 1);
  if (p)
    copy_chars(p, n + 1, s, n);
  return p;
}

/* Scalar fields of a struct, described by a table so that one loop parses
 * them. Fields in a table are parsed in order; the first bad one fails. */
enum { F_U64, F_U32, F_BOOL, F_INT, F_CHARS };

typedef struct {
  const char *key;
  int kind;
  int required;
  size_t off;
  size_t size; /* F_CHARS: the array's size. */
} field;

#define FIELD(st, member, key, kind, req)                                                          \
  { key, kind, req, offsetof(st, member), sizeof(((st *)0)->member) }

/* Parses the fields into `base`. `reply` turns errors into RMEM_EPROTO. */
static int fields_parse(const msgpack_object *map, const field *f, size_t n, void *base, int reply,
                        codec_err *err) {
  for (size_t i = 0; i < n; i++) {
    char *p = (char *)base + f[i].off;
    int rc = 0;
    switch (f[i].kind) {
    case F_U64:
      rc = codec_get_u64(map, f[i].key, f[i].required, (uint64_t *)p, err);
      break;
    case F_U32:
      rc = codec_get_u32(map, f[i].key, f[i].required, (uint32_t *)p, err);
      break;
    case F_BOOL:
      rc = codec_get_bool(map, f[i].key, f[i].required, (int *)p, err);
      break;
    case F_INT:
      rc = get_int(map, f[i].key, f[i].required, (int *)p, err);
      break;
    case F_CHARS: {
      const char *s;
      size_t len;
      rc = codec_get_str(map, f[i].key, f[i].required, &s, &len, err);
      if (rc == 0)
        copy_chars(p, f[i].size, s, len);
      break;
    }
    }
    if (rc < 0)
      return reply ? bad_reply(err) : rc;
  }
  return 0;
}

static int reply_is_map(const msgpack_object *o, const char *what, codec_err *err) {
  if (o == NULL || o->type != MSGPACK_OBJECT_MAP)
    return codec_fail(err, RMEM_EPROTO, "bad reply: %s is not a map", what);
  return 0;
}

/* Finds a required array in a reply. */
static int reply_array(const msgpack_object *map, const char *key, const msgpack_object **out,
                       codec_err *err) {
  *out = codec_map_get(map, key);
  if (*out == NULL || (*out)->type != MSGPACK_OBJECT_ARRAY)
    return codec_fail(err, RMEM_EPROTO, "bad reply: '%s' must be an array", key);
  return 0;
}

static int nomem(codec_err *err) {
  return codec_fail(err, RMEM_ENOMEM, "out of memory");
}

/* Appends the ranges of the array `key` to `r` (which may be NULL: check only).
 * On failure `r` is left as it was. */
static int ranges_parse(const msgpack_object *map, const char *key, rmem_ranges *r,
                        codec_err *err) {
  static const field fields[] = {
      FIELD(rmem_range, addr, "addr", F_U64, 1),
      FIELD(rmem_range, len, "len", F_U64, 1),
      FIELD(rmem_range, code, "code", F_INT, 1),
  };
  const msgpack_object *a;
  int rc = reply_array(map, key, &a, err);
  size_t n0 = r ? r->n : 0;
  for (uint32_t i = 0; rc == 0 && i < a->via.array.size; i++) {
    rmem_range v = {0};
    rc = reply_is_map(&a->via.array.ptr[i], "a range", err);
    if (rc == 0)
      rc = fields_parse(&a->via.array.ptr[i], fields, COUNT(fields), &v, 1, err);
    if (rc == 0 && v.code >= 0)
      rc = codec_fail(err, RMEM_EPROTO, "bad reply: range code %d is not an error", v.code);
    if (rc == 0 && r && msg_ranges_push(r, v.addr, v.len, v.code) != 0)
      rc = nomem(err);
  }
  if (rc != 0 && r)
    r->n = n0;
  return rc;
}

int msg_ranges_add(rmem_ranges *r, uint64_t at, uint64_t n, int code) {
  if (r->n > 0) {
    rmem_range *last = &r->v[r->n - 1];
    if (last->addr + last->len == at && last->code == code) {
      last->len += n;
      return 0;
    }
  }
  return msg_ranges_push(r, at, n, code);
}

const char *msg_hole_reason(int code) {
  return code == RMEM_EPROT ? "no access" : code == RMEM_EIO ? "I/O error" : "not mapped";
}

int msg_ranges_push(rmem_ranges *r, uint64_t addr, uint64_t len, int code) {
  if (r->n == r->cap) {
    size_t cap = r->cap ? 2 * r->cap : 8;
    if (cap > SIZE_MAX / sizeof(*r->v))
      return RMEM_ENOMEM;
    rmem_range *v = realloc(r->v, cap * sizeof(*v));
    if (v == NULL)
      return RMEM_ENOMEM;
    r->v = v;
    r->cap = cap;
  }
  r->v[r->n++] = (rmem_range){.addr = addr, .len = len, .code = code};
  return 0;
}

/* hello */

void msg_hello_req_pack(msgpack_packer *pk, uint32_t msgid, const msg_hello_req *req) {
  size_t client = strnlen(req->client, sizeof(req->client));
  size_t token = req->token_len < sizeof(req->token) ? req->token_len : sizeof(req->token);
  int lz4 = (req->compress & MSG_COMPRESS_LZ4) != 0;
  codec_pack_request_head(pk, msgid, "hello",
                          1 + (client ? 1 : 0) + (req->has_token ? 1 : 0) + (lz4 ? 1 : 0));
  pack_u64(pk, "version", req->version);
  if (client)
    pack_chars(pk, "client", req->client, sizeof(req->client));
  if (req->has_token) {
    codec_pack_str(pk, "token");
    codec_pack_strn(pk, req->token, token);
  }
  if (lz4) {
    codec_pack_str(pk, "compress");
    msgpack_pack_array(pk, 1);
    codec_pack_str(pk, COMPRESS_LZ4_NAME);
  }
}

/* hello's optional `compress`: an array of algorithm names, in the client's
 * order of preference. Names we do not know are skipped. */
static int compress_parse(const msgpack_object *params, unsigned *out, codec_err *err) {
  const msgpack_object *a = codec_map_get(params, "compress");
  *out = 0;
  if (a == NULL || a->type == MSGPACK_OBJECT_NIL)
    return 0;
  if (a->type != MSGPACK_OBJECT_ARRAY)
    return codec_fail(err, RMEM_EPARAM, "parameter 'compress' must be an array of strings");
  for (uint32_t i = 0; i < a->via.array.size; i++) {
    const msgpack_object *o = &a->via.array.ptr[i];
    if (o->type != MSGPACK_OBJECT_STR)
      return codec_fail(err, RMEM_EPARAM, "parameter 'compress' must be an array of strings");
    if (codec_str_eq(o, COMPRESS_LZ4_NAME))
      *out |= MSG_COMPRESS_LZ4;
  }
  return 0;
}

int msg_hello_req_parse(const msgpack_object *params, msg_hello_req *req, codec_err *err) {
  static const field fields[] = {
      FIELD(msg_hello_req, version, "version", F_U32, 1),
      FIELD(msg_hello_req, client, "client", F_CHARS, 0),
  };
  memset(req, 0, sizeof(*req));
  int rc = fields_parse(params, fields, COUNT(fields), req, 0, err);
  if (rc != 0)
    return rc;
  /* The token is never truncated: a cut secret could match a shorter one. */
  const char *tok;
  size_t len;
  rc = codec_get_str(params, "token", 0, &tok, &len, err);
  if (rc < 0)
    return rc;
  if (rc == 0) {
    if (len > RMEM_TOKEN_MAX)
      return codec_fail(err, RMEM_EPARAM, "parameter 'token' is longer than %d bytes",
                        RMEM_TOKEN_MAX);
    if (len)
      memcpy(req->token, tok, len);
    req->token_len = len;
    req->has_token = 1;
  }
  return compress_parse(params, &req->compress, err);
}

void msg_hello_res_pack(msgpack_packer *pk, uint32_t msgid, const rmem_agent_info *info) {
  size_t nmethods = info->nmethods < COUNT(info->methods) ? info->nmethods : COUNT(info->methods);
  size_t compress = strnlen(info->compress, sizeof(info->compress));
  codec_pack_result_head(pk, msgid);
  msgpack_pack_map(pk, 10 + (compress ? 1 : 0));
  pack_u64(pk, "version", info->version);
  pack_chars(pk, "agent", info->agent, sizeof(info->agent));
  codec_pack_str(pk, "methods");
  msgpack_pack_array(pk, nmethods);
  for (size_t i = 0; i < nmethods; i++)
    codec_pack_strn(pk, info->methods[i], strnlen(info->methods[i], sizeof(info->methods[i])));
  codec_pack_str(pk, "limits");
  msgpack_pack_map(pk, 4);
  pack_u64(pk, "max_frame", info->max_frame);
  pack_u64(pk, "max_read", info->max_read);
  pack_u64(pk, "max_write", info->max_write);
  pack_u64(pk, "max_inflight", info->max_inflight);
  pack_chars(pk, "os", info->os, sizeof(info->os));
  pack_chars(pk, "arch", info->arch, sizeof(info->arch));
  pack_u64(pk, "page_size", info->page_size);
  pack_u64(pk, "pointer_size", info->pointer_size);
  pack_bool(pk, "tls", info->tls);
  pack_chars(pk, "auth", info->auth, sizeof(info->auth));
  if (compress)
    pack_chars(pk, "compress", info->compress, sizeof(info->compress));
}

int msg_hello_res_parse(const msgpack_object *result, rmem_agent_info *info, codec_err *err) {
  static const field fields[] = {
      FIELD(rmem_agent_info, version, "version", F_U32, 1),
      FIELD(rmem_agent_info, agent, "agent", F_CHARS, 1),
      FIELD(rmem_agent_info, os, "os", F_CHARS, 1),
      FIELD(rmem_agent_info, arch, "arch", F_CHARS, 1),
      FIELD(rmem_agent_info, page_size, "page_size", F_U32, 1),
      FIELD(rmem_agent_info, pointer_size, "pointer_size", F_U32, 1),
      /* Absent from agents that predate TLS: plaintext, no authentication. */
      FIELD(rmem_agent_info, tls, "tls", F_BOOL, 0),
      FIELD(rmem_agent_info, auth, "auth", F_CHARS, 0),
      /* Absent (or nil) when the agent compresses nothing for this client. */
      FIELD(rmem_agent_info, compress, "compress", F_CHARS, 0),
  };
  static const field limits[] = {
      FIELD(rmem_agent_info, max_frame, "max_frame", F_U64, 1),
      FIELD(rmem_agent_info, max_read, "max_read", F_U64, 1),
      FIELD(rmem_agent_info, max_write, "max_write", F_U64, 1),
      FIELD(rmem_agent_info, max_inflight, "max_inflight", F_U32, 1),
  };
  memset(info, 0, sizeof(*info));
  const msgpack_object *methods;
  int rc = reply_is_map(result, "hello result", err);
  if (rc == 0)
    rc = fields_parse(result, fields, COUNT(fields), info, 1, err);
  if (rc == 0)
    rc = reply_is_map(codec_map_get(result, "limits"), "'limits'", err);
  if (rc == 0)
    rc = fields_parse(codec_map_get(result, "limits"), limits, COUNT(limits), info, 1, err);
  if (rc == 0)
    rc = reply_array(result, "methods", &methods, err);
  if (rc != 0)
    return rc;
  /* Keep the names that fit; a longer one cannot be a method we call. */
  for (uint32_t i = 0; i < methods->via.array.size; i++) {
    const msgpack_object *m = &methods->via.array.ptr[i];
    if (m->type != MSGPACK_OBJECT_STR)
      return codec_fail(err, RMEM_EPROTO, "bad reply: 'methods' must hold strings");
    if (info->nmethods < COUNT(info->methods) && m->via.str.size < sizeof(info->methods[0]))
      copy_chars(info->methods[info->nmethods++], sizeof(info->methods[0]), m->via.str.ptr,
                 m->via.str.size);
  }
  return 0;
}

/* ps */

void msg_ps_req_pack(msgpack_packer *pk, uint32_t msgid, uint32_t start) {
  codec_pack_request_head(pk, msgid, "ps", start ? 1 : 0);
  if (start)
    pack_u64(pk, "start", start);
}

int msg_ps_req_parse(const msgpack_object *params, uint32_t *start, codec_err *err) {
  *start = 0;
  return codec_get_u32(params, "start", 0, start, err) < 0 ? RMEM_EPARAM : 0;
}

void msg_proc_pack(msgpack_packer *pk, const rmem_proc *p) {
  msgpack_pack_map(pk, p->cmdline_truncated ? 10 : 9);
  pack_u64(pk, "pid", p->pid);
  pack_u64(pk, "ppid", p->ppid);
  pack_u64(pk, "uid", p->uid);
  pack_str(pk, "name", p->name);
  codec_pack_str(pk, "state");
  codec_pack_strn(pk, &p->state, p->state ? 1 : 0);
  pack_u64(pk, "threads", p->threads);
  pack_u64(pk, "rss", p->rss);
  pack_str(pk, "exe", p->exe);
  codec_pack_str(pk, "cmdline");
  msgpack_pack_array(pk, p->argc);
  for (size_t j = 0; j < p->argc; j++)
    codec_pack_str(pk, p->argv[j] ? p->argv[j] : "");
  if (p->cmdline_truncated) {
    codec_pack_str(pk, "cmdline_truncated");
    msgpack_pack_true(pk);
  }
}

void msg_ps_res_head(msgpack_packer *pk, uint32_t msgid, size_t n, int has_next) {
  codec_pack_result_head(pk, msgid);
  msgpack_pack_map(pk, has_next ? 2 : 1);
  codec_pack_str(pk, "procs");
  msgpack_pack_array(pk, n);
}

void msg_ps_res_tail(msgpack_packer *pk, int has_next, uint32_t next) {
  if (has_next)
    pack_u64(pk, "next", next);
}

void msg_ps_res_pack(msgpack_packer *pk, uint32_t msgid, const rmem_proc *procs, size_t n,
                     int has_next, uint32_t next) {
  msg_ps_res_head(pk, msgid, n, has_next);
  for (size_t i = 0; i < n; i++)
    msg_proc_pack(pk, &procs[i]);
  msg_ps_res_tail(pk, has_next, next);
}

/* The result types are shared by agent and client, so their free functions
 * live here, beside the code that fills them. */
static void procs_clear(rmem_proc *procs, size_t n) {
  for (size_t i = 0; i < n; i++) {
    rmem_proc *p = &procs[i];
    free(p->name);
    free(p->exe);
    for (size_t j = 0; j < p->argc; j++)
      free(p->argv[j]);
    free(p->argv);
  }
}

void rmem_proc_list_free(rmem_proc_list *l) {
  if (l == NULL)
    return;
  procs_clear(l->procs, l->n);
  free(l->procs);
  memset(l, 0, sizeof(*l));
}

void rmem_memmap_free(rmem_memmap *m) {
  if (m == NULL)
    return;
  for (size_t i = 0; i < m->n; i++)
    free(m->regions[i].path);
  free(m->regions);
  memset(m, 0, sizeof(*m));
}

void rmem_ranges_free(rmem_ranges *r) {
  if (r == NULL)
    return;
  free(r->v);
  memset(r, 0, sizeof(*r));
}

/* Fills a zeroed `p`; on failure what was allocated stays in `p` for procs_clear. */
static int proc_parse(const msgpack_object *o, rmem_proc *p, codec_err *err) {
  static const field fields[] = {
      FIELD(rmem_proc, pid, "pid", F_U32, 1), FIELD(rmem_proc, ppid, "ppid", F_U32, 1),
      FIELD(rmem_proc, uid, "uid", F_U32, 1), FIELD(rmem_proc, threads, "threads", F_U32, 1),
      FIELD(rmem_proc, rss, "rss", F_U64, 1),
  };
  const char *name, *state, *exe;
  size_t name_len, state_len, exe_len;
  const msgpack_object *cmdline;
  int rc = reply_is_map(o, "a proc", err);
  if (rc == 0)
    rc = fields_parse(o, fields, COUNT(fields), p, 1, err);
  if (rc == 0 && (codec_get_str(o, "name", 1, &name, &name_len, err) != 0 ||
                  codec_get_str(o, "state", 1, &state, &state_len, err) != 0 ||
                  codec_get_str(o, "exe", 1, &exe, &exe_len, err) != 0))
    rc = bad_reply(err);
  if (rc == 0)
    rc = reply_array(o, "cmdline", &cmdline, err);
  if (rc != 0)
    return rc;
  if (codec_get_bool(o, "cmdline_truncated", 0, &p->cmdline_truncated, err) < 0)
    return bad_reply(err);
  p->state = state_len ? state[0] : '\0';
  p->name = copy_str(name, name_len);
  p->exe = copy_str(exe, exe_len);
  /* argv ends with a NULL, as main's does. */
  p->argv = calloc(cmdline->via.array.size + (size_t)1, sizeof(*p->argv));
  if (p->name == NULL || p->exe == NULL || p->argv == NULL)
    return nomem(err);
  for (uint32_t i = 0; i < cmdline->via.array.size; i++) {
    const msgpack_object *a = &cmdline->via.array.ptr[i];
    if (a->type != MSGPACK_OBJECT_STR)
      return codec_fail(err, RMEM_EPROTO, "bad reply: 'cmdline' must hold strings");
    p->argv[p->argc] = copy_str(a->via.str.ptr, a->via.str.size);
    if (p->argv[p->argc] == NULL)
      return nomem(err);
    p->argc++;
  }
  return 0;
}

int msg_ps_res_parse(const msgpack_object *result, rmem_proc_list *out, int *has_next,
                     uint32_t *next, codec_err *err) {
  const msgpack_object *a;
  int rc = reply_is_map(result, "ps result", err);
  if (rc == 0)
    rc = reply_array(result, "procs", &a, err);
  *has_next = 0;
  *next = 0;
  if (rc != 0)
    return rc;
  int got = codec_get_u32(result, "next", 0, next, err);
  if (got < 0)
    return bad_reply(err);
  *has_next = got == 0;
  size_t n = a->via.array.size;
  rmem_proc *procs = realloc(out->procs, (out->n + n + 1) * sizeof(*procs));
  if (procs == NULL)
    return nomem(err);
  out->procs = procs;
  memset(procs + out->n, 0, (n + 1) * sizeof(*procs));
  for (size_t i = 0; i < n; i++) {
    rc = proc_parse(&a->via.array.ptr[i], &procs[out->n + i], err);
    if (rc != 0) {
      /* Free what this call added; the list keeps what it had. */
      procs_clear(procs + out->n, i + 1);
      memset(procs + out->n, 0, (i + 1) * sizeof(*procs));
      return rc;
    }
  }
  out->n += n;
  return 0;
}

/* map */

void msg_map_req_pack(msgpack_packer *pk, uint32_t msgid, const msg_map_req *req) {
  codec_pack_request_head(pk, msgid, "map", 1 + !!req->free + !!req->detail + (req->start != 0));
  pack_u64(pk, "pid", req->pid);
  if (req->free)
    pack_bool(pk, "free", 1);
  if (req->detail)
    pack_bool(pk, "detail", 1);
  if (req->start)
    pack_u64(pk, "start", req->start);
}

/* A pid names a target; 0 never does. */
static int check_pid(uint32_t pid, codec_err *err) {
  return pid ? 0 : codec_fail(err, RMEM_EPARAM, "parameter 'pid' must not be 0");
}

int msg_map_req_parse(const msgpack_object *params, msg_map_req *req, codec_err *err) {
  static const field fields[] = {
      FIELD(msg_map_req, pid, "pid", F_U32, 1),
      FIELD(msg_map_req, free, "free", F_BOOL, 0),
      FIELD(msg_map_req, detail, "detail", F_BOOL, 0),
      FIELD(msg_map_req, start, "start", F_U64, 0),
  };
  memset(req, 0, sizeof(*req));
  int rc = fields_parse(params, fields, COUNT(fields), req, 0, err);
  return rc ? rc : check_pid(req->pid, err);
}

/* smaps figures, in wire order. */
static const field smaps_fields[] = {
    FIELD(rmem_smaps, rss, "rss", F_U64, 1),
    FIELD(rmem_smaps, pss, "pss", F_U64, 1),
    FIELD(rmem_smaps, shared_clean, "shared_clean", F_U64, 1),
    FIELD(rmem_smaps, shared_dirty, "shared_dirty", F_U64, 1),
    FIELD(rmem_smaps, private_clean, "private_clean", F_U64, 1),
    FIELD(rmem_smaps, private_dirty, "private_dirty", F_U64, 1),
    FIELD(rmem_smaps, referenced, "referenced", F_U64, 1),
    FIELD(rmem_smaps, anonymous, "anonymous", F_U64, 1),
    FIELD(rmem_smaps, swap, "swap", F_U64, 1),
    FIELD(rmem_smaps, swap_pss, "swap_pss", F_U64, 1),
    FIELD(rmem_smaps, anon_huge, "anon_huge", F_U64, 1),
    FIELD(rmem_smaps, locked, "locked", F_U64, 1),
    FIELD(rmem_smaps, vmflags, "vmflags", F_CHARS, 1),
};

void msg_region_pack(msgpack_packer *pk, const rmem_region *r) {
  const char *state = msg_state_name(r->state);
  const char *type = r->state == RMEM_STATE_FREE ? NULL : msg_type_name(r->type);
  const char *usage = msg_usage_name(r->usage);
  int file = r->inode != 0;
  int path = r->path && r->path[0];
  msgpack_pack_map(pk, 6 + (type != NULL) + 3 * file + path + !!r->deleted + (usage != NULL) +
                           (r->tid != 0) + !!r->main_exe + !!r->has_smaps);
  pack_u64(pk, "base", r->base);
  pack_u64(pk, "size", r->size);
  pack_u64(pk, "prot", r->prot);
  pack_bool(pk, "shared", r->shared);
  pack_str(pk, "state", state); /* An invalid state goes out as "", which peers reject. */
  if (type)
    pack_str(pk, "type", type);
  pack_u64(pk, "alloc_base", r->alloc_base);
  if (file) {
    char dev[24];
    snprintf(dev, sizeof(dev), "%02x:%02x", r->dev_major, r->dev_minor);
    pack_u64(pk, "offset", r->offset);
    pack_str(pk, "dev", dev);
    pack_u64(pk, "inode", r->inode);
  }
  if (path)
    pack_str(pk, "path", r->path);
  if (r->deleted)
    pack_bool(pk, "deleted", 1);
  if (usage)
    pack_str(pk, "usage", usage);
  if (r->tid)
    pack_u64(pk, "tid", r->tid);
  if (r->main_exe)
    pack_bool(pk, "main", 1);
  if (r->has_smaps) {
    const rmem_smaps *s = &r->smaps;
    codec_pack_str(pk, "smaps");
    msgpack_pack_map(pk, COUNT(smaps_fields));
    for (size_t i = 0; i < COUNT(smaps_fields) - 1; i++)
      pack_u64(pk, smaps_fields[i].key, *(const uint64_t *)((const char *)s + smaps_fields[i].off));
    pack_chars(pk, "vmflags", s->vmflags, sizeof(s->vmflags));
  }
}

void msg_map_res_head(msgpack_packer *pk, uint32_t msgid, uint32_t pid, size_t n, int has_next) {
  codec_pack_result_head(pk, msgid);
  msgpack_pack_map(pk, has_next ? 3 : 2);
  pack_u64(pk, "pid", pid);
  codec_pack_str(pk, "regions");
  msgpack_pack_array(pk, n);
}

void msg_map_res_tail(msgpack_packer *pk, int has_next, uint64_t next) {
  if (has_next)
    pack_u64(pk, "next", next);
}

void msg_map_res_pack(msgpack_packer *pk, uint32_t msgid, uint32_t pid, const rmem_region *r,
                      size_t n, int has_next, uint64_t next) {
  msg_map_res_head(pk, msgid, pid, n, has_next);
  for (size_t i = 0; i < n; i++)
    msg_region_pack(pk, &r[i]);
  msg_map_res_tail(pk, has_next, next);
}

/* Parses hex digits "major:minor" as in /proc/PID/maps. */
static int dev_parse(const char *s, size_t n, uint32_t *major, uint32_t *minor) {
  uint32_t v[2] = {0, 0};
  int part = 0, digits = 0;
  for (size_t i = 0; i < n; i++) {
    int c = (unsigned char)s[i], d;
    if (c == ':' && part == 0 && digits > 0) {
      part = 1;
      digits = 0;
      continue;
    }
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      d = c - 'A' + 10;
    else
      return -1;
    if (++digits > 8)
      return -1;
    v[part] = v[part] << 4 | (uint32_t)d;
  }
  if (part != 1 || digits == 0)
    return -1;
  *major = v[0];
  *minor = v[1];
  return 0;
}

/* Fills a zeroed `r`; on failure r->path may be set and must be freed. */
static int region_parse(const msgpack_object *o, rmem_region *r, codec_err *err) {
  static const field fields[] = {
      FIELD(rmem_region, base, "base", F_U64, 1),
      FIELD(rmem_region, size, "size", F_U64, 1),
      FIELD(rmem_region, prot, "prot", F_U32, 1),
      FIELD(rmem_region, shared, "shared", F_BOOL, 1),
      FIELD(rmem_region, alloc_base, "alloc_base", F_U64, 1),
      FIELD(rmem_region, offset, "offset", F_U64, 0),
      FIELD(rmem_region, inode, "inode", F_U64, 0),
      FIELD(rmem_region, deleted, "deleted", F_BOOL, 0),
      FIELD(rmem_region, tid, "tid", F_U32, 0),
      FIELD(rmem_region, main_exe, "main", F_BOOL, 0),
  };
  int rc = reply_is_map(o, "a region", err);
  if (rc == 0)
    rc = fields_parse(o, fields, COUNT(fields), r, 1, err);
  if (rc != 0)
    return rc;

  const msgpack_object *v = codec_map_get(o, "state");
  r->state = v ? name_find(state_names, COUNT(state_names), v) : -1;
  if (r->state < 0)
    return codec_fail(err, RMEM_EPROTO, "bad reply: region 'state' missing or unknown");
  /* Free gaps have no type; an unknown type is an error, since clients rely on it. */
  v = codec_map_get(o, "type");
  if (v && v->type != MSGPACK_OBJECT_NIL) {
    r->type = name_find(type_names, COUNT(type_names), v);
    if (r->type < 0)
      return codec_fail(err, RMEM_EPROTO, "bad reply: region 'type' unknown");
  }
  /* Usages may grow: one this side does not know reads as none. */
  v = codec_map_get(o, "usage");
  if (v && v->type != MSGPACK_OBJECT_NIL && v->type != MSGPACK_OBJECT_STR)
    return codec_fail(err, RMEM_EPROTO, "bad reply: region 'usage' must be a string");
  r->usage = v ? name_find(usage_names, COUNT(usage_names), v) : -1;
  if (r->usage < 0)
    r->usage = RMEM_USAGE_NONE;

  const char *s;
  size_t n;
  rc = codec_get_str(o, "dev", 0, &s, &n, err);
  if (rc < 0)
    return bad_reply(err);
  if (rc == 0 && dev_parse(s, n, &r->dev_major, &r->dev_minor) != 0)
    return codec_fail(err, RMEM_EPROTO, "bad reply: region 'dev' is not major:minor in hex");
  rc = codec_get_str(o, "path", 0, &s, &n, err);
  if (rc < 0)
    return bad_reply(err);
  if (rc == 0 && n > 0 && (r->path = copy_str(s, n)) == NULL)
    return nomem(err);

  v = codec_map_get(o, "smaps");
  if (v && v->type != MSGPACK_OBJECT_NIL) {
    rc = reply_is_map(v, "region 'smaps'", err);
    if (rc == 0)
      rc = fields_parse(v, smaps_fields, COUNT(smaps_fields), &r->smaps, 1, err);
    if (rc != 0)
      return rc;
    r->has_smaps = 1;
  }
  return 0;
}

int msg_map_res_parse(const msgpack_object *result, rmem_memmap *out, int *has_next, uint64_t *next,
                      codec_err *err) {
  static const field fields[] = {
      FIELD(rmem_memmap, pid, "pid", F_U32, 1),
  };
  rmem_memmap head = {0};
  const msgpack_object *a;
  uint64_t nx = 0;
  if (has_next)
    *has_next = 0;
  int rc = reply_is_map(result, "map result", err);
  if (rc == 0)
    rc = fields_parse(result, fields, COUNT(fields), &head, 1, err);
  if (rc == 0)
    rc = reply_array(result, "regions", &a, err);
  if (rc != 0)
    return rc;
  int got_next = codec_get_u64(result, "next", 0, &nx, err);
  if (got_next < 0)
    return bad_reply(err);

  size_t n = a->via.array.size;
  if (n > SIZE_MAX / sizeof(rmem_region) - out->n)
    return nomem(err);
  if (n > 0) {
    rmem_region *v = realloc(out->regions, (out->n + n) * sizeof(*v));
    if (v == NULL)
      return nomem(err);
    out->regions = v;
  }
  for (size_t i = 0; i < n; i++) {
    rmem_region *r = &out->regions[out->n + i];
    memset(r, 0, sizeof(*r));
    rc = region_parse(&a->via.array.ptr[i], r, err);
    if (rc != 0) {
      for (size_t j = 0; j <= i; j++)
        free(out->regions[out->n + j].path);
      return rc;
    }
  }
  out->pid = head.pid;
  out->n += n;
  if (has_next)
    *has_next = got_next == 0;
  if (next)
    *next = nx;
  return 0;
}

/* read */

void msg_read_req_pack(msgpack_packer *pk, uint32_t msgid, const msg_read_req *req) {
  codec_pack_request_head(pk, msgid, "read", 3 + (req->max_age_ms != 0) + !!req->uncached);
  pack_u64(pk, "pid", req->pid);
  pack_u64(pk, "addr", req->addr);
  pack_u64(pk, "len", req->len);
  if (req->max_age_ms)
    pack_u64(pk, "max_age_ms", req->max_age_ms);
  if (req->uncached)
    pack_bool(pk, "uncached", 1);
}

int msg_read_req_parse(const msgpack_object *params, msg_read_req *req, codec_err *err) {
  static const field fields[] = {
      FIELD(msg_read_req, pid, "pid", F_U32, 1),
      FIELD(msg_read_req, addr, "addr", F_U64, 1),
      FIELD(msg_read_req, len, "len", F_U64, 1),
      FIELD(msg_read_req, max_age_ms, "max_age_ms", F_U64, 0),
      FIELD(msg_read_req, uncached, "uncached", F_BOOL, 0),
  };
  memset(req, 0, sizeof(*req));
  int rc = fields_parse(params, fields, COUNT(fields), req, 0, err);
  return rc ? rc : check_pid(req->pid, err);
}

/* bin32 holds at most 4 GiB - 1, far above any max_read. */
void msg_read_res_head(msgpack_packer *pk, uint32_t msgid, uint64_t len) {
  codec_pack_result_head(pk, msgid);
  msgpack_pack_map(pk, 3);
  codec_pack_str(pk, "data");
  msgpack_pack_bin(pk, (size_t)len);
}

void msg_read_res_lz4_head(msgpack_packer *pk, uint32_t msgid, uint64_t lz4_len, size_t block_len) {
  codec_pack_result_head(pk, msgid);
  msgpack_pack_map(pk, 4);
  pack_u64(pk, "lz4_len", lz4_len);
  codec_pack_str(pk, "data");
  msgpack_pack_bin(pk, block_len);
}

void msg_read_res_tail(msgpack_packer *pk, const rmem_range *holes, size_t nholes,
                       uint64_t cached) {
  pack_ranges(pk, "holes", holes, nholes);
  pack_u64(pk, "cached", cached);
}

void msg_read_res_pack(msgpack_packer *pk, uint32_t msgid, const void *data, size_t len,
                       uint64_t lz4_len, const rmem_range *holes, size_t nholes, uint64_t cached) {
  if (lz4_len)
    msg_read_res_lz4_head(pk, msgid, lz4_len, len);
  else
    msg_read_res_head(pk, msgid, len);
  if (len)
    msgpack_pack_bin_body(pk, data, len);
  msg_read_res_tail(pk, holes, nholes, cached);
}

int msg_read_res_parse(const msgpack_object *result, const char **data, size_t *len,
                       uint64_t *lz4_len, rmem_ranges *holes, uint64_t *cached, codec_err *err) {
  uint64_t c = 0, lz4 = 0;
  int rc = reply_is_map(result, "read result", err);
  if (rc == 0 && codec_get_bin(result, "data", 1, data, len, err) != 0)
    rc = bad_reply(err);
  /* Agents before the page cache leave `cached` out. */
  if (rc == 0 && codec_get_u64(result, "cached", 0, &c, err) < 0)
    rc = bad_reply(err);
  /* Compressed data only where it was negotiated, and never of nothing. */
  int got = rc == 0 ? codec_get_u64(result, "lz4_len", 0, &lz4, err) : 1;
  if (got < 0)
    rc = bad_reply(err);
  else if (got == 0 && lz4_len == NULL)
    rc = codec_fail(err, RMEM_EPROTO, "bad reply: compressed data ('lz4_len') not asked for");
  else if (got == 0 && (lz4 == 0 || *len == 0))
    rc = codec_fail(err, RMEM_EPROTO, "bad reply: 'lz4_len' %llu with a %zu-byte block",
                    (unsigned long long)lz4, *len);
  if (rc == 0)
    rc = ranges_parse(result, "holes", holes, err);
  if (rc == 0 && cached)
    *cached = c;
  if (rc == 0 && lz4_len)
    *lz4_len = lz4;
  return rc;
}

/* write */

void msg_write_req_head(msgpack_packer *pk, uint32_t msgid, uint32_t pid, uint64_t addr,
                        size_t len) {
  codec_pack_request_head(pk, msgid, "write", 3);
  pack_u64(pk, "pid", pid);
  pack_u64(pk, "addr", addr);
  codec_pack_str(pk, "data");
  msgpack_pack_bin(pk, len);
}

void msg_write_req_pack(msgpack_packer *pk, uint32_t msgid, const msg_write_req *req) {
  msg_write_req_head(pk, msgid, req->pid, req->addr, req->len);
  if (req->len)
    msgpack_pack_bin_body(pk, req->data, req->len);
}

int msg_write_req_parse(const msgpack_object *params, msg_write_req *req, codec_err *err) {
  static const field fields[] = {
      FIELD(msg_write_req, pid, "pid", F_U32, 1),
      FIELD(msg_write_req, addr, "addr", F_U64, 1),
  };
  memset(req, 0, sizeof(*req));
  int rc = fields_parse(params, fields, COUNT(fields), req, 0, err);
  if (rc == 0)
    rc = codec_get_bin(params, "data", 1, &req->data, &req->len, err);
  return rc ? rc : check_pid(req->pid, err);
}

void msg_write_res_pack(msgpack_packer *pk, uint32_t msgid, uint64_t written,
                        const rmem_range *failed, size_t nfailed) {
  codec_pack_result_head(pk, msgid);
  msgpack_pack_map(pk, 2);
  pack_u64(pk, "written", written);
  pack_ranges(pk, "failed", failed, nfailed);
}

int msg_write_res_parse(const msgpack_object *result, uint64_t *written, rmem_ranges *failed,
                        codec_err *err) {
  int rc = reply_is_map(result, "write result", err);
  if (rc == 0 && codec_get_u64(result, "written", 1, written, err) != 0)
    rc = bad_reply(err);
  if (rc == 0)
    rc = ranges_parse(result, "failed", failed, err);
  return rc;
}

/* errors */

void msg_fault_pack(msgpack_packer *pk, uint32_t msgid, const char *message,
                    const rmem_range *holes, size_t nholes) {
  msgpack_pack_array(pk, 4);
  msgpack_pack_uint8(pk, CODEC_RESPONSE);
  msgpack_pack_uint32(pk, msgid);
  msgpack_pack_map(pk, 4);
  codec_pack_str(pk, "code");
  msgpack_pack_int(pk, RMEM_EFAULT);
  codec_pack_str(pk, "name");
  codec_pack_str(pk, rmem_err_name(RMEM_EFAULT));
  codec_pack_str(pk, "message");
  codec_pack_str(pk, message);
  pack_ranges(pk, "holes", holes, nholes);
  msgpack_pack_nil(pk);
}

int msg_fault_parse(const msgpack_object *error, rmem_ranges *holes, codec_err *err) {
  if (codec_map_get(error, "holes") == NULL)
    return 1;
  return ranges_parse(error, "holes", holes, err);
}

int msg_error_parse(const msgpack_object *error, int *code, char *msg, size_t msglen) {
  int c = 0;
  if (get_int(error, "code", 1, &c, NULL) != 0)
    c = 0;
  /* Without a usable code, the name may still say what happened. */
  const msgpack_object *name = codec_map_get(error, "name");
  if (c >= 0 && name && name->type == MSGPACK_OBJECT_STR) {
    char buf[32];
    if (name->via.str.size < sizeof(buf)) {
      copy_chars(buf, sizeof(buf), name->via.str.ptr, name->via.str.size);
      c = rmem_err_from_name(buf);
    }
  }
  if (c >= 0) {
    static const char bad[] = "bad reply: malformed error object";
    *code = RMEM_EPROTO;
    if (msg && msglen)
      copy_chars(msg, msglen, bad, sizeof(bad) - 1);
    return RMEM_EPROTO;
  }
  *code = c;
  if (msg && msglen) {
    const msgpack_object *m = codec_map_get(error, "message");
    if (m && m->type == MSGPACK_OBJECT_STR && m->via.str.size > 0)
      copy_chars(msg, msglen, m->via.str.ptr, m->via.str.size);
    else
      copy_chars(msg, msglen, rmem_strerror(c), strlen(rmem_strerror(c)));
  }
  return 0;
}

/* readv */

void msg_readv_req_pack(msgpack_packer *pk, uint32_t msgid, uint32_t pid, const msg_span *ranges,
                        size_t n) {
  codec_pack_request_head(pk, msgid, "readv", 2);
  pack_u64(pk, "pid", pid);
  codec_pack_str(pk, "ranges");
  msgpack_pack_array(pk, n);
  for (size_t i = 0; i < n; i++) {
    msgpack_pack_map(pk, 2);
    pack_u64(pk, "addr", ranges[i].addr);
    pack_u64(pk, "len", ranges[i].len);
  }
}

/* Finds a required array parameter of at most `max` elements (checked
 * before anything is allocated for them). */
static int param_array(const msgpack_object *params, const char *key, uint32_t max,
                       const msgpack_object **out, codec_err *err) {
  *out = codec_map_get(params, key);
  if (*out == NULL || (*out)->type == MSGPACK_OBJECT_NIL)
    return codec_fail(err, RMEM_EPARAM, "missing parameter '%s'", key);
  if ((*out)->type != MSGPACK_OBJECT_ARRAY)
    return codec_fail(err, RMEM_EPARAM, "parameter '%s' must be an array", key);
  if ((*out)->via.array.size > max)
    return codec_fail(err, RMEM_ETOOBIG, "%u %s exceed the limit of %u", (*out)->via.array.size,
                      key, max);
  return 0;
}

int msg_readv_req_parse(const msgpack_object *params, msg_readv_req *req, codec_err *err) {
  static const field fields[] = {
      FIELD(msg_readv_req, pid, "pid", F_U32, 1),
  };
  static const field span_fields[] = {
      FIELD(msg_span, addr, "addr", F_U64, 1),
      FIELD(msg_span, len, "len", F_U64, 1),
  };
  memset(req, 0, sizeof(*req));
  const msgpack_object *a;
  int rc = fields_parse(params, fields, COUNT(fields), req, 0, err);
  if (rc == 0)
    rc = check_pid(req->pid, err);
  if (rc == 0)
    rc = param_array(params, "ranges", RMEM_READV_MAX_RANGES, &a, err);
  if (rc != 0)
    return rc;
  size_t n = a->via.array.size;
  req->ranges = calloc(n ? n : 1, sizeof(*req->ranges));
  if (req->ranges == NULL)
    return nomem(err);
  for (size_t i = 0; i < n; i++) {
    const msgpack_object *o = &a->via.array.ptr[i];
    if (o->type != MSGPACK_OBJECT_MAP)
      rc = codec_fail(err, RMEM_EPARAM, "parameter 'ranges' must hold maps {addr, len}");
    else
      rc = fields_parse(o, span_fields, COUNT(span_fields), &req->ranges[i], 0, err);
    if (rc != 0) {
      msg_readv_req_free(req);
      return rc;
    }
  }
  req->n = n;
  return 0;
}

void msg_readv_req_free(msg_readv_req *req) {
  if (req == NULL)
    return;
  free(req->ranges);
  req->ranges = NULL;
  req->n = 0;
}

void msg_readv_res_head(msgpack_packer *pk, uint32_t msgid, size_t n) {
  codec_pack_result_head(pk, msgid);
  msgpack_pack_map(pk, 1);
  codec_pack_str(pk, "results");
  msgpack_pack_array(pk, n);
}

void msg_readv_entry_head(msgpack_packer *pk, uint64_t len) {
  msgpack_pack_map(pk, 2);
  codec_pack_str(pk, "data");
  msgpack_pack_bin(pk, (size_t)len);
}

void msg_readv_entry_tail(msgpack_packer *pk, const rmem_range *holes, size_t nholes) {
  pack_ranges(pk, "holes", holes, nholes);
}

void msg_readv_res_pack(msgpack_packer *pk, uint32_t msgid, const msg_readv_entry *e, size_t n) {
  msg_readv_res_head(pk, msgid, n);
  for (size_t i = 0; i < n; i++) {
    msg_readv_entry_head(pk, e[i].len);
    if (e[i].len)
      msgpack_pack_bin_body(pk, e[i].data, e[i].len);
    msg_readv_entry_tail(pk, e[i].holes, e[i].nholes);
  }
}

int msg_readv_res_parse(const msgpack_object *result, msg_readv_entry *e, size_t cap, size_t *n,
                        rmem_ranges *holes, codec_err *err) {
  *n = 0;
  const msgpack_object *a;
  int rc = reply_is_map(result, "readv result", err);
  if (rc == 0)
    rc = reply_array(result, "results", &a, err);
  if (rc != 0)
    return rc;
  size_t count = a->via.array.size;
  if (count > cap)
    return codec_fail(err, RMEM_EPROTO, "bad reply: %zu results for %zu ranges", count, cap);
  size_t n0 = holes->n;
  for (size_t i = 0; rc == 0 && i < count; i++) {
    const msgpack_object *o = &a->via.array.ptr[i];
    size_t before = holes->n;
    rc = reply_is_map(o, "a readv result", err);
    if (rc == 0 && codec_get_bin(o, "data", 1, &e[i].data, &e[i].len, err) != 0)
      rc = bad_reply(err);
    if (rc == 0)
      rc = ranges_parse(o, "holes", holes, err);
    e[i].nholes = holes->n - before;
  }
  if (rc != 0) {
    holes->n = n0;
    return rc;
  }
  /* Pointers only now: the list may have moved while it grew. */
  for (size_t i = 0, at = n0; i < count; at += e[i].nholes, i++)
    e[i].holes = e[i].nholes ? holes->v + at : NULL;
  *n = count;
  return 0;
}

/* deref */

void msg_deref_req_pack(msgpack_packer *pk, uint32_t msgid, uint32_t pid, uint64_t addr,
                        const int64_t *offsets, size_t n, uint64_t len) {
  codec_pack_request_head(pk, msgid, "deref", 4);
  pack_u64(pk, "pid", pid);
  pack_u64(pk, "addr", addr);
  codec_pack_str(pk, "offsets");
  msgpack_pack_array(pk, n);
  for (size_t i = 0; i < n; i++)
    msgpack_pack_int64(pk, offsets[i]);
  pack_u64(pk, "len", len);
}

int msg_deref_req_parse(const msgpack_object *params, msg_deref_req *req, codec_err *err) {
  static const field fields[] = {
      FIELD(msg_deref_req, pid, "pid", F_U32, 1),
      FIELD(msg_deref_req, addr, "addr", F_U64, 1),
      FIELD(msg_deref_req, len, "len", F_U64, 1),
  };
  memset(req, 0, sizeof(*req));
  const msgpack_object *a;
  int rc = fields_parse(params, fields, COUNT(fields), req, 0, err);
  if (rc == 0)
    rc = check_pid(req->pid, err);
  if (rc == 0)
    rc = param_array(params, "offsets", RMEM_DEREF_MAX_OFFSETS, &a, err);
  if (rc != 0)
    return rc;
  size_t n = a->via.array.size;
  req->offsets = calloc(n ? n : 1, sizeof(*req->offsets));
  if (req->offsets == NULL)
    return nomem(err);
  for (size_t i = 0; i < n; i++) {
    const msgpack_object *o = &a->via.array.ptr[i];
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
      req->offsets[i] = o->via.i64;
    } else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) {
      req->offsets[i] = (int64_t)o->via.u64;
    } else {
      msg_deref_req_free(req);
      return codec_fail(err, RMEM_EPARAM,
                        "parameter 'offsets' must hold 64-bit signed integers (index %zu)", i);
    }
  }
  req->n = n;
  return 0;
}

void msg_deref_req_free(msg_deref_req *req) {
  if (req == NULL)
    return;
  free(req->offsets);
  req->offsets = NULL;
  req->n = 0;
}

void msg_deref_res_pack(msgpack_packer *pk, uint32_t msgid, const msg_deref_res *r,
                        const rmem_range *holes, size_t nholes) {
  codec_pack_result_head(pk, msgid);
  msgpack_pack_map(pk, r->broken ? 2 : 4);
  codec_pack_str(pk, "pointers");
  msgpack_pack_array(pk, r->npointers);
  for (size_t i = 0; i < r->npointers; i++)
    msgpack_pack_uint64(pk, r->pointers[i]);
  if (r->broken) {
    codec_pack_str(pk, "broken");
    msgpack_pack_map(pk, 3);
    pack_u64(pk, "step", r->step);
    pack_u64(pk, "addr", r->addr);
    codec_pack_str(pk, "code");
    msgpack_pack_int(pk, r->code);
    return;
  }
  pack_u64(pk, "addr", r->addr);
  codec_pack_str(pk, "data");
  msgpack_pack_bin(pk, r->len);
  if (r->len)
    msgpack_pack_bin_body(pk, r->data, r->len);
  pack_ranges(pk, "holes", holes, nholes);
}

int msg_deref_res_parse(const msgpack_object *result, msg_deref_res *r, rmem_ranges *holes,
                        codec_err *err) {
  static const field broken_fields[] = {
      FIELD(msg_deref_res, step, "step", F_U32, 1),
      FIELD(msg_deref_res, addr, "addr", F_U64, 1),
      FIELD(msg_deref_res, code, "code", F_INT, 1),
  };
  memset(r, 0, sizeof(*r));
  const msgpack_object *a;
  int rc = reply_is_map(result, "deref result", err);
  if (rc == 0)
    rc = reply_array(result, "pointers", &a, err);
  if (rc != 0)
    return rc;
  size_t n = a->via.array.size;
  for (size_t i = 0; i < n; i++)
    if (a->via.array.ptr[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
      return codec_fail(err, RMEM_EPROTO, "bad reply: 'pointers' must hold unsigned integers");
  const msgpack_object *b = codec_map_get(result, "broken");
  if (b && b->type != MSGPACK_OBJECT_NIL) {
    rc = reply_is_map(b, "'broken'", err);
    if (rc == 0)
      rc = fields_parse(b, broken_fields, COUNT(broken_fields), r, 1, err);
    if (rc == 0 && r->code >= 0)
      rc = codec_fail(err, RMEM_EPROTO, "bad reply: broken code %d is not an error", r->code);
    if (rc != 0)
      return rc;
    r->broken = 1;
  } else {
    if (codec_get_u64(result, "addr", 1, &r->addr, err) != 0 ||
        codec_get_bin(result, "data", 1, &r->data, &r->len, err) != 0)
      return bad_reply(err);
    rc = ranges_parse(result, "holes", holes, err);
    if (rc != 0)
      return rc;
  }
  if (n > 0) {
    r->pointers = malloc(n * sizeof(*r->pointers));
    if (r->pointers == NULL)
      return nomem(err);
    for (size_t i = 0; i < n; i++)
      r->pointers[i] = a->via.array.ptr[i].via.u64;
  }
  r->npointers = n;
  return 0;
}

/* read_string */

static const char *const encoding_names[] = {"utf8", "utf16"};

void msg_string_req_pack(msgpack_packer *pk, uint32_t msgid, const msg_string_req *req) {
  int enc = req->encoding == MSG_ENC_UTF16;
  codec_pack_request_head(pk, msgid, "read_string", 2 + (req->max_len != 0) + enc);
  pack_u64(pk, "pid", req->pid);
  pack_u64(pk, "addr", req->addr);
  if (req->max_len)
    pack_u64(pk, "max_len", req->max_len);
  if (enc)
    pack_str(pk, "encoding", encoding_names[MSG_ENC_UTF16]);
}

int msg_string_req_parse(const msgpack_object *params, msg_string_req *req, codec_err *err) {
  static const field fields[] = {
      FIELD(msg_string_req, pid, "pid", F_U32, 1),
      FIELD(msg_string_req, addr, "addr", F_U64, 1),
      FIELD(msg_string_req, max_len, "max_len", F_U64, 0),
  };
  memset(req, 0, sizeof(*req));
  int rc = fields_parse(params, fields, COUNT(fields), req, 0, err);
  if (rc == 0)
    rc = check_pid(req->pid, err);
  if (rc != 0)
    return rc;
  const msgpack_object *m = codec_map_get(params, "max_len");
  if (m && m->type != MSGPACK_OBJECT_NIL && req->max_len == 0)
    return codec_fail(err, RMEM_EPARAM, "parameter 'max_len' must be at least 1");
  const msgpack_object *e = codec_map_get(params, "encoding");
  if (e && e->type != MSGPACK_OBJECT_NIL) {
    int enc = name_find(encoding_names, COUNT(encoding_names), e);
    if (enc < 0)
      return codec_fail(err, RMEM_EPARAM, "parameter 'encoding' must be \"utf8\" or \"utf16\"");
    req->encoding = enc;
  }
  return 0;
}

void msg_string_res_pack(msgpack_packer *pk, uint32_t msgid, const msg_string_res *r) {
  codec_pack_result_head(pk, msgid);
  msgpack_pack_map(pk, 3 + !!r->has_hole);
  codec_pack_str(pk, "text");
  codec_pack_strn(pk, r->text, r->text_len);
  pack_u64(pk, "len", r->len);
  pack_bool(pk, "terminated", r->terminated);
  if (r->has_hole) {
    codec_pack_str(pk, "hole");
    msgpack_pack_map(pk, 2);
    pack_u64(pk, "addr", r->hole_addr);
    codec_pack_str(pk, "code");
    msgpack_pack_int(pk, r->hole_code);
  }
}

int msg_string_res_parse(const msgpack_object *result, msg_string_res *r, codec_err *err) {
  static const field fields[] = {
      FIELD(msg_string_res, len, "len", F_U64, 1),
      FIELD(msg_string_res, terminated, "terminated", F_BOOL, 1),
  };
  static const field hole_fields[] = {
      FIELD(msg_string_res, hole_addr, "addr", F_U64, 1),
      FIELD(msg_string_res, hole_code, "code", F_INT, 1),
  };
  memset(r, 0, sizeof(*r));
  int rc = reply_is_map(result, "read_string result", err);
  if (rc == 0 && codec_get_str(result, "text", 1, &r->text, &r->text_len, err) != 0)
    rc = bad_reply(err);
  if (rc == 0)
    rc = fields_parse(result, fields, COUNT(fields), r, 1, err);
  if (rc != 0)
    return rc;
  const msgpack_object *h = codec_map_get(result, "hole");
  if (h && h->type != MSGPACK_OBJECT_NIL) {
    rc = reply_is_map(h, "'hole'", err);
    if (rc == 0)
      rc = fields_parse(h, hole_fields, COUNT(hole_fields), r, 1, err);
    if (rc == 0 && r->hole_code >= 0)
      rc = codec_fail(err, RMEM_EPROTO, "bad reply: hole code %d is not an error", r->hole_code);
    if (rc != 0)
      return rc;
    r->has_hole = 1;
  }
  return 0;
}

/* fill */

void msg_fill_req_pack(msgpack_packer *pk, uint32_t msgid, const msg_fill_req *req) {
  codec_pack_request_head(pk, msgid, "fill", 4);
  pack_u64(pk, "pid", req->pid);
  pack_u64(pk, "addr", req->addr);
  pack_u64(pk, "len", req->len);
  codec_pack_str(pk, "pattern");
  msgpack_pack_bin(pk, req->plen);
  if (req->plen)
    msgpack_pack_bin_body(pk, req->pattern, req->plen);
}

int msg_fill_req_parse(const msgpack_object *params, msg_fill_req *req, codec_err *err) {
  static const field fields[] = {
      FIELD(msg_fill_req, pid, "pid", F_U32, 1),
      FIELD(msg_fill_req, addr, "addr", F_U64, 1),
      FIELD(msg_fill_req, len, "len", F_U64, 1),
  };
  memset(req, 0, sizeof(*req));
  int rc = fields_parse(params, fields, COUNT(fields), req, 0, err);
  if (rc == 0)
    rc = codec_get_bin(params, "pattern", 1, &req->pattern, &req->plen, err);
  return rc ? rc : check_pid(req->pid, err);
}

/* cache */

void msg_cache_req_pack(msgpack_packer *pk, uint32_t msgid, const msg_cache_req *req) {
  codec_pack_request_head(pk, msgid, "cache", !!req->flush + (req->pid != 0));
  if (req->flush)
    pack_bool(pk, "flush", 1);
  if (req->pid)
    pack_u64(pk, "pid", req->pid);
}

int msg_cache_req_parse(const msgpack_object *params, msg_cache_req *req, codec_err *err) {
  static const field fields[] = {
      FIELD(msg_cache_req, flush, "flush", F_BOOL, 0),
  };
  memset(req, 0, sizeof(*req));
  int rc = fields_parse(params, fields, COUNT(fields), req, 0, err);
  if (rc != 0)
    return rc;
  rc = codec_get_u32(params, "pid", 0, &req->pid, err);
  if (rc < 0)
    return rc;
  if (rc == 0 && check_pid(req->pid, err) != 0)
    return RMEM_EPARAM;
  if (rc == 0 && !req->flush)
    return codec_fail(err, RMEM_EPARAM, "parameter 'pid' applies only with 'flush'");
  return 0;
}

/* Cache figures, in wire order. */
static const field cache_fields[] = {
    FIELD(rmem_cache_info, size_limit, "size_limit", F_U64, 1),
    FIELD(rmem_cache_info, bytes, "bytes", F_U64, 1),
    FIELD(rmem_cache_info, pages, "pages", F_U64, 1),
    FIELD(rmem_cache_info, hits, "hits", F_U64, 1),
    FIELD(rmem_cache_info, misses, "misses", F_U64, 1),
    FIELD(rmem_cache_info, evictions, "evictions", F_U64, 1),
    FIELD(rmem_cache_info, invalidations, "invalidations", F_U64, 1),
};

void msg_cache_res_pack(msgpack_packer *pk, uint32_t msgid, const rmem_cache_info *info) {
  codec_pack_result_head(pk, msgid);
  msgpack_pack_map(pk, COUNT(cache_fields));
  for (size_t i = 0; i < COUNT(cache_fields); i++)
    pack_u64(pk, cache_fields[i].key,
             *(const uint64_t *)((const char *)info + cache_fields[i].off));
}

int msg_cache_res_parse(const msgpack_object *result, rmem_cache_info *info, codec_err *err) {
  memset(info, 0, sizeof(*info));
  int rc = reply_is_map(result, "cache result", err);
  if (rc == 0)
    rc = fields_parse(result, cache_fields, COUNT(cache_fields), info, 1, err);
  return rc;
}
