/* Wire codec: frames and msgpack-rpc message shapes. No I/O here: bytes in,
 * objects or bytes out. Shared by rmemd and librmem.
 *
 * A frame is a 4-byte big-endian length N, then N bytes holding exactly one
 * msgpack object (proto/PROTOCOL.md, section Framing). */
#ifndef RMEM_CODEC_H
#define RMEM_CODEC_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#define CODEC_FRAME_HDR 4
#define CODEC_PROTOCOL_VERSION 1
#define CODEC_DEFAULT_PORT 7467
#define CODEC_DEFAULT_MAX_FRAME (16u << 20)

enum { CODEC_REQUEST = 0, CODEC_RESPONSE = 1, CODEC_NOTIFY = 2 };

/* A growable byte buffer that msgpack_packer writes into. Caller storage:
 * zero it or call codec_buf_init(); codec_buf_free() accepts a zeroed buffer.
 * After an allocation failure `oom` stays set and further writes are dropped. */
typedef struct {
  char *data;
  size_t len;
  size_t cap;
  int oom;
} codec_buf;

void codec_buf_init(codec_buf *b);
void codec_buf_free(codec_buf *b);
/* Ensures room for `extra` more bytes. Returns 0 or RMEM_ENOMEM. */
int codec_buf_reserve(codec_buf *b, size_t extra);
/* The msgpack_packer write callback; `data` is a codec_buf. */
int codec_buf_write(void *data, const char *buf, size_t len);
/* Hands the bytes to the caller, who frees them with free(); the buffer is reset. */
char *codec_buf_steal(codec_buf *b, size_t *len);

/* Starts a frame: appends a 4-byte length placeholder and points `pk` at `b`. */
void codec_frame_begin(codec_buf *b, msgpack_packer *pk);
/* Patches the length of the frame that starts at offset `start` of `b`.
 * Returns 0, RMEM_ENOMEM after a failed write, or RMEM_EFRAME over 4 GiB. */
int codec_frame_end(codec_buf *b, size_t start);

/* Reads a frame length from 4 bytes. */
uint32_t codec_frame_len(const void *hdr4);
/* Writes a frame length as 4 bytes. */
void codec_frame_put_len(void *hdr4, uint32_t len);

/* Checks that p[0..n) holds exactly one well-formed msgpack object, with no
 * trailing bytes, no container count larger than the bytes left, and at most
 * `max_objects` objects in all. This runs before msgpack-c sees the bytes,
 * because its unpacker allocates count * sizeof(msgpack_object) as soon as it
 * reads a container header. Returns 0, RMEM_EMALFORMED or RMEM_ETOOBIG. */
int codec_check(const void *p, size_t n, size_t max_objects);

/* A decoded message. Pointers refer into the unpacked object, which refers
 * into the frame bytes: both must outlive this struct. */
typedef struct {
  int type;      /* CODEC_REQUEST, CODEC_RESPONSE or CODEC_NOTIFY. */
  int has_msgid; /* 0 when a response carries a nil msgid. */
  uint32_t msgid;
  const char *method; /* Not NUL-terminated. Requests and notifications. */
  size_t method_len;
  const msgpack_object *params; /* A map, or NULL when nil. */
  const msgpack_object *error;  /* Responses: NULL when nil. */
  const msgpack_object *result; /* Responses: NULL when nil. */
} codec_msg;

/* Decodes one frame payload into `up` (caller-initialised with
 * msgpack_unpacked_init) and classifies it. On failure returns RMEM_EMALFORMED
 * or RMEM_ETOOBIG, writes a one-line reason to `why`, and sets out->has_msgid
 * when a msgid could still be recovered (so the error can be answered). */
int codec_msg_decode(const char *p, size_t n, size_t max_objects, msgpack_unpacked *up,
                     codec_msg *out, char *why, size_t whylen);

/* Packing helpers: every rmem message is built from these. */
void codec_pack_str(msgpack_packer *pk, const char *s);
void codec_pack_strn(msgpack_packer *pk, const char *s, size_t n);
/* [0, msgid, method, map(nparams)]: the caller then packs nparams pairs. */
void codec_pack_request_head(msgpack_packer *pk, uint32_t msgid, const char *method,
                             uint32_t nparams);
/* [1, msgid, nil, ...]: the caller then packs the result. */
void codec_pack_result_head(msgpack_packer *pk, uint32_t msgid);
/* A whole error response [1, msgid|nil, {code,name,message}, nil]. */
void codec_pack_error_response(msgpack_packer *pk, const uint32_t *msgid, int code,
                               const char *message);
/* Builds a whole error response frame into `b` (appended). */
int codec_error_frame(codec_buf *b, const uint32_t *msgid, int code, const char *message);

/* Lookups in a decoded map. */
const msgpack_object *codec_map_get(const msgpack_object *map, const char *key);
int codec_str_eq(const msgpack_object *o, const char *s);

/* Typed parameter getters. Each returns 0 when found, 1 when absent and not
 * required, or RMEM_EPARAM with a message naming the field in `err`. */
typedef struct {
  int code;
  char msg[192];
} codec_err;

int codec_get_u64(const msgpack_object *map, const char *key, int required, uint64_t *out,
                  codec_err *err);
int codec_get_u32(const msgpack_object *map, const char *key, int required, uint32_t *out,
                  codec_err *err);
int codec_get_bool(const msgpack_object *map, const char *key, int required, int *out,
                   codec_err *err);
/* Points at the string in place; not NUL-terminated. */
int codec_get_str(const msgpack_object *map, const char *key, int required, const char **s,
                  size_t *n, codec_err *err);
/* Points at the bytes in place. */
int codec_get_bin(const msgpack_object *map, const char *key, int required, const char **p,
                  size_t *n, codec_err *err);
/* Sets err and returns code. */
int codec_fail(codec_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
