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
typedef struct {
  uint32_t version;
  char client[64]; /* Truncated copy of the client's name. */
} msg_hello_req;

void msg_hello_req_pack(msgpack_packer *pk, uint32_t msgid, const msg_hello_req *req);
int msg_hello_req_parse(const msgpack_object *params, msg_hello_req *req, codec_err *err);
void msg_hello_res_pack(msgpack_packer *pk, uint32_t msgid, const rmem_agent_info *info);
int msg_hello_res_parse(const msgpack_object *result, rmem_agent_info *info, codec_err *err);

/* ps */
void msg_ps_req_pack(msgpack_packer *pk, uint32_t msgid);
void msg_ps_res_pack(msgpack_packer *pk, uint32_t msgid, const rmem_proc *procs, size_t n);
int msg_ps_res_parse(const msgpack_object *result, rmem_proc_list *out, codec_err *err);

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

/* read */
typedef struct {
  uint32_t pid;
  uint64_t addr;
  uint64_t len;
} msg_read_req;

void msg_read_req_pack(msgpack_packer *pk, uint32_t msgid, const msg_read_req *req);
/* Checks types only; limits (max_read, wrap-around) are the handler's. */
int msg_read_req_parse(const msgpack_object *params, msg_read_req *req, codec_err *err);
/* The result is {data: bin, holes: [...]}. data comes first so the agent can
 * read target memory straight into the reply: msg_read_res_head packs
 * everything up to and including the bin header, the caller writes `len`
 * bytes, then msg_read_res_tail packs the holes. msg_read_res_pack does all
 * three and gives the same bytes. */
void msg_read_res_head(msgpack_packer *pk, uint32_t msgid, uint64_t len);
void msg_read_res_tail(msgpack_packer *pk, const rmem_range *holes, size_t nholes);
void msg_read_res_pack(msgpack_packer *pk, uint32_t msgid, const void *data, size_t len,
                       const rmem_range *holes, size_t nholes);
/* Points *data at the bytes in place and appends the holes to `holes` (may be NULL). */
int msg_read_res_parse(const msgpack_object *result, const char **data, size_t *len,
                       rmem_ranges *holes, codec_err *err);

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

/* Names used on the wire for region enums; NULL for none. */
const char *msg_state_name(int state);
const char *msg_type_name(int type);
const char *msg_usage_name(int usage);

#endif
