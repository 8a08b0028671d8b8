/* Message codecs: one pack function and one parse function per message of
 * proto/PROTOCOL.md. The agent packs results and parses params; librmem packs
 * params and parses results. The golden frames in proto/vectors/ check both.
 *
 * Pack functions write a whole message (not the frame header) to `pk`, fields
 * in the order the spec lists them, omitting optional fields that are absent.
 * Parse functions take the decoded `params` or `result` object, accept fields
 * in any order, ignore unknown fields, and return 0 or a negative code with
 * the reason in `err`. Parsed strings that are kept are copied (malloc). */
#ifndef RMEM_MSG_H
#define RMEM_MSG_H

#include "codec.h"
#include "rmem.h"

/* hello */

/* Compression algorithms a client offers in hello, as bits. */
enum { MSG_COMPRESS_LZ4 = 1u };

typedef struct {
  uint32_t version;
  char client[64]; /* Truncated copy of the client's name. */
  int has_token;   /* A token was sent (it may be empty). */
  size_t token_len;
  char token[RMEM_TOKEN_MAX + 1]; /* The shared secret; a longer one is RMEM_EPARAM. */
  unsigned compress;              /* MSG_COMPRESS_* offered; names we do not know are
                                     ignored. Packed only when nonzero. */
} msg_hello_req;

void msg_hello_req_pack(msgpack_packer *pk, uint32_t msgid, const msg_hello_req *req);
int msg_hello_req_parse(const msgpack_object *params, msg_hello_req *req, codec_err *err);
void msg_hello_res_pack(msgpack_packer *pk, uint32_t msgid, const rmem_agent_info *info);
int msg_hello_res_parse(const msgpack_object *result, rmem_agent_info *info, codec_err *err);

/* ps. `start` lists processes from that pid on (0: all); packed only when nonzero. */
void msg_ps_req_pack(msgpack_packer *pk, uint32_t msgid, uint32_t start);
int msg_ps_req_parse(const msgpack_object *params, uint32_t *start, codec_err *err);
/* Packs {procs, next?}; `next` only when has_next. The head/proc/tail split
 * lets the agent stop before the frame limit, as for map. */
void msg_ps_res_pack(msgpack_packer *pk, uint32_t msgid, const rmem_proc *procs, size_t n,
                     int has_next, uint32_t next);
void msg_ps_res_head(msgpack_packer *pk, uint32_t msgid, size_t n, int has_next);
void msg_proc_pack(msgpack_packer *pk, const rmem_proc *p);
void msg_ps_res_tail(msgpack_packer *pk, int has_next, uint32_t next);
/* Appends the procs of `result` to `out` and reads the optional `next`. */
int msg_ps_res_parse(const msgpack_object *result, rmem_proc_list *out, int *has_next,
                     uint32_t *next, codec_err *err);

/* map */
typedef struct {
  uint32_t pid;
  int free;       /* List free gaps too. */
  int detail;     /* Add smaps figures. */
  uint64_t start; /* Continue from this address (0: from the start). */
} msg_map_req;

void msg_map_req_pack(msgpack_packer *pk, uint32_t msgid, const msg_map_req *req);
int msg_map_req_parse(const msgpack_object *params, msg_map_req *req, codec_err *err);
/* Packs {pid, regions, next?}; `next` is packed only when has_next. */
void msg_map_res_pack(msgpack_packer *pk, uint32_t msgid, uint32_t pid, const rmem_region *r,
                      size_t n, int has_next, uint64_t next);
/* msg_map_res_pack in pieces: the head up to the regions' array header, then
 * n regions packed by the caller, then the tail. The agent packs regions
 * first to see how many fit a frame. */
void msg_map_res_head(msgpack_packer *pk, uint32_t msgid, uint32_t pid, size_t n, int has_next);
void msg_map_res_tail(msgpack_packer *pk, int has_next, uint64_t next);
/* Packs one region map; the agent uses it to size replies region by region. */
void msg_region_pack(msgpack_packer *pk, const rmem_region *r);
/* Appends the regions of `result` to `out` (so continued maps join up) and
 * sets *has_next / *next from the optional `next` field. */
int msg_map_res_parse(const msgpack_object *result, rmem_memmap *out, int *has_next, uint64_t *next,
                      codec_err *err);

/* read. The cache options are packed only when set (max_age_ms nonzero,
 * uncached true). */
typedef struct {
  uint32_t pid;
  uint64_t addr;
  uint64_t len;
  uint64_t max_age_ms; /* 0: no age accepted. */
  int uncached;
} msg_read_req;

void msg_read_req_pack(msgpack_packer *pk, uint32_t msgid, const msg_read_req *req);
/* Checks types only; limits (max_read, wrap-around) are the handler's. */
int msg_read_req_parse(const msgpack_object *params, msg_read_req *req, codec_err *err);
/* The result is {data: bin, holes: [...], cached: uint}. data comes first so
 * the agent can read target memory straight into the reply:
 * msg_read_res_head packs everything up to and including the bin header,
 * the caller writes `len` bytes, then msg_read_res_tail packs the holes and
 * `cached` (bytes served from the agent's page cache). msg_read_res_pack
 * does all three and gives the same bytes.
 *
 * Compressed, it is {lz4_len: uint, data: bin, holes, cached}, where data
 * is an lz4 block of `lz4_len` bytes: msg_read_res_lz4_head packs up to the
 * block's bin header, and msg_read_res_tail ends it as for raw data.
 * lz4_len comes first so that a reader knows before the data arrives. */
void msg_read_res_head(msgpack_packer *pk, uint32_t msgid, uint64_t len);
void msg_read_res_lz4_head(msgpack_packer *pk, uint32_t msgid, uint64_t lz4_len, size_t block_len);
void msg_read_res_tail(msgpack_packer *pk, const rmem_range *holes, size_t nholes, uint64_t cached);
/* `lz4_len` 0: `data` is raw; otherwise it is a block of that many bytes. */
void msg_read_res_pack(msgpack_packer *pk, uint32_t msgid, const void *data, size_t len,
                       uint64_t lz4_len, const rmem_range *holes, size_t nholes, uint64_t cached);
/* Points *data at the bin's bytes in place, sets *lz4_len (0 for raw data;
 * when it is not, *data is an lz4 block that holds that many bytes; a NULL
 * lz4_len makes compressed data a bad reply), appends the holes to `holes`
 * (may be NULL) and sets *cached (may be NULL; 0 when an older agent left
 * it out). The block is not looked into: see compress_lz4_unpack. */
int msg_read_res_parse(const msgpack_object *result, const char **data, size_t *len,
                       uint64_t *lz4_len, rmem_ranges *holes, uint64_t *cached, codec_err *err);

/* write */
typedef struct {
  uint32_t pid;
  uint64_t addr;
  const char *data; /* Points into the decoded message. */
  size_t len;
} msg_write_req;

void msg_write_req_pack(msgpack_packer *pk, uint32_t msgid, const msg_write_req *req);
/* Everything of msg_write_req_pack up to and including the bin header, so a
 * client can send the data from the caller's buffer without copying it. */
void msg_write_req_head(msgpack_packer *pk, uint32_t msgid, uint32_t pid, uint64_t addr,
                        size_t len);
int msg_write_req_parse(const msgpack_object *params, msg_write_req *req, codec_err *err);
void msg_write_res_pack(msgpack_packer *pk, uint32_t msgid, uint64_t written,
                        const rmem_range *failed, size_t nfailed);
int msg_write_res_parse(const msgpack_object *result, uint64_t *written, rmem_ranges *failed,
                        codec_err *err);

/* The error reply for a read or write in which not one byte could be
 * transferred: [1, msgid, {code: RMEM_EFAULT, name, message, holes}, nil],
 * where `holes` says why for every byte of the request. */
void msg_fault_pack(msgpack_packer *pk, uint32_t msgid, const char *message,
                    const rmem_range *holes, size_t nholes);
/* Appends an error object's `holes` to `holes`. Returns 0, 1 when the error
 * has none, or RMEM_EPROTO. */
int msg_fault_parse(const msgpack_object *error, rmem_ranges *holes, codec_err *err);

/* Parses an error object {code, name, message} into *code and msg. */
int msg_error_parse(const msgpack_object *error, int *code, char *msg, size_t msglen);

/* Appends one range; returns 0 or RMEM_ENOMEM. */
int msg_ranges_push(rmem_ranges *r, uint64_t addr, uint64_t len, int code);
/* The same, joined to the last range when they touch and share the reason,
 * so that adjacent unreadable pages form one hole. */
int msg_ranges_add(rmem_ranges *r, uint64_t addr, uint64_t len, int code);
/* A hole's reason in a few words for messages: "not mapped", "no access"
 * or "I/O error". */
const char *msg_hole_reason(int code);

/* Names used on the wire for region enums; NULL for none. */
const char *msg_state_name(int state);
const char *msg_type_name(int type);
const char *msg_usage_name(int usage);

/* readv. One range of a request. */
typedef struct {
  uint64_t addr, len;
} msg_span;

typedef struct {
  uint32_t pid;
  msg_span *ranges; /* Parse: malloc'd; msg_readv_req_free releases it. */
  size_t n;
} msg_readv_req;

void msg_readv_req_pack(msgpack_packer *pk, uint32_t msgid, uint32_t pid, const msg_span *ranges,
                        size_t n);
/* Checks types and the count (RMEM_ETOOBIG over RMEM_READV_MAX_RANGES,
 * before anything is allocated); max_read and wrap-around are the handler's. */
int msg_readv_req_parse(const msgpack_object *params, msg_readv_req *req, codec_err *err);
void msg_readv_req_free(msg_readv_req *req);

/* One result of a readv reply: exactly a read result. */
typedef struct {
  const char *data; /* Parse: points into the decoded message. */
  size_t len;
  const rmem_range *holes; /* Parse: points into the `holes` list given to parse. */
  size_t nholes;
} msg_readv_entry;

/* The result is {results: [{data, holes}...]}. As for read, the agent packs
 * it in pieces so that target memory goes straight into the reply: the head
 * (up to the results' array header), then per range an entry head (up to and
 * including the bin header), `len` bytes, and the entry tail (the holes). */
void msg_readv_res_head(msgpack_packer *pk, uint32_t msgid, size_t n);
void msg_readv_entry_head(msgpack_packer *pk, uint64_t len);
void msg_readv_entry_tail(msgpack_packer *pk, const rmem_range *holes, size_t nholes);
void msg_readv_res_pack(msgpack_packer *pk, uint32_t msgid, const msg_readv_entry *e, size_t n);
/* Fills e[0..*n) (at most `cap` entries; more is RMEM_EPROTO) and appends
 * every entry's holes to `holes`, which the entries then point into. */
int msg_readv_res_parse(const msgpack_object *result, msg_readv_entry *e, size_t cap, size_t *n,
                        rmem_ranges *holes, codec_err *err);

/* deref */
typedef struct {
  uint32_t pid;
  uint64_t addr;
  int64_t *offsets; /* Parse: malloc'd; msg_deref_req_free releases it. */
  size_t n;
  uint64_t len;
} msg_deref_req;

void msg_deref_req_pack(msgpack_packer *pk, uint32_t msgid, uint32_t pid, uint64_t addr,
                        const int64_t *offsets, size_t n, uint64_t len);
/* Offsets are msgpack integers from -2^63 to 2^63-1. Checks types and the
 * count (RMEM_ETOOBIG over RMEM_DEREF_MAX_OFFSETS, before allocating). */
int msg_deref_req_parse(const msgpack_object *params, msg_deref_req *req, codec_err *err);
void msg_deref_req_free(msg_deref_req *req);

/* A deref result: resolved {pointers, addr, data, holes} or broken
 * {pointers, broken: {step, addr, code}}. */
typedef struct {
  uint64_t *pointers; /* Parse: malloc'd (free()); NULL when there are none. */
  size_t npointers;
  uint64_t addr; /* The final address, or where the failed read was. */
  int broken;
  uint32_t step;    /* Broken: the offset's index, or the number of offsets for the final read. */
  int code;         /* Broken: RMEM_EUNMAPPED, RMEM_EPROT or RMEM_EIO. */
  const char *data; /* Resolved: parse points into the decoded message. */
  size_t len;
} msg_deref_res;

void msg_deref_res_pack(msgpack_packer *pk, uint32_t msgid, const msg_deref_res *r,
                        const rmem_range *holes, size_t nholes);
/* Appends the holes of a resolved result to `holes` (may be NULL). */
int msg_deref_res_parse(const msgpack_object *result, msg_deref_res *r, rmem_ranges *holes,
                        codec_err *err);

/* read_string */
enum { MSG_ENC_UTF8 = 0, MSG_ENC_UTF16 = 1 };

typedef struct {
  uint32_t pid;
  uint64_t addr;
  uint64_t max_len; /* 0: absent, meaning RMEM_STRING_DEFAULT; not packed. */
  int encoding;     /* MSG_ENC_*; UTF-8, the default, is not packed. */
} msg_string_req;

void msg_string_req_pack(msgpack_packer *pk, uint32_t msgid, const msg_string_req *req);
/* Leaves an absent max_len 0 (so that parse and pack round-trip); a max_len
 * of 0 on the wire or an unknown encoding is RMEM_EPARAM. Limits are the
 * handler's. */
int msg_string_req_parse(const msgpack_object *params, msg_string_req *req, codec_err *err);

typedef struct {
  const char *text; /* UTF-8; parse points into the decoded message. */
  size_t text_len;
  uint64_t len; /* Bytes consumed in the target, without the terminator. */
  int terminated;
  int has_hole; /* Reading stopped at an unreadable page: */
  uint64_t hole_addr;
  int hole_code;
} msg_string_res;

void msg_string_res_pack(msgpack_packer *pk, uint32_t msgid, const msg_string_res *r);
int msg_string_res_parse(const msgpack_object *result, msg_string_res *r, codec_err *err);

/* fill. The result is write's: msg_write_res_pack and msg_write_res_parse. */
typedef struct {
  uint32_t pid;
  uint64_t addr;
  uint64_t len;
  const char *pattern; /* Points into the decoded message. */
  size_t plen;
} msg_fill_req;

void msg_fill_req_pack(msgpack_packer *pk, uint32_t msgid, const msg_fill_req *req);
/* Checks types only; the pattern's and the range's limits are the handler's. */
int msg_fill_req_parse(const msgpack_object *params, msg_fill_req *req, codec_err *err);

/* cache */
typedef struct {
  int flush;
  uint32_t pid; /* With flush: only this process; 0: all. */
} msg_cache_req;

void msg_cache_req_pack(msgpack_packer *pk, uint32_t msgid, const msg_cache_req *req);
/* A pid of 0, or a pid without flush, is RMEM_EPARAM. */
int msg_cache_req_parse(const msgpack_object *params, msg_cache_req *req, codec_err *err);
void msg_cache_res_pack(msgpack_packer *pk, uint32_t msgid, const rmem_cache_info *info);
int msg_cache_res_parse(const msgpack_object *result, rmem_cache_info *info, codec_err *err);

#endif
