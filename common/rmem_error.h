/* The one error table shared by rmemd, librmem and the CLI.
 *
 * Codes are negative, stable, and travel on the wire as the `code` field of an
 * error object, together with the name (`RMEM_EFAULT`) and a message. Never
 * renumber an entry; add new ones at the end. */
#ifndef RMEM_ERROR_H
#define RMEM_ERROR_H

/* X(name, code, message) */
#define RMEM_ERRNO_MAP(X)                                                                          \
  X(EMALFORMED, -1, "malformed message")                                                           \
  X(EFRAME, -2, "frame too large")                                                                 \
  X(ENOMETHOD, -3, "unknown method")                                                               \
  X(EPARAM, -4, "bad or missing parameter")                                                        \
  X(ENOPROC, -5, "no such process")                                                                \
  X(EPERM, -6, "permission denied")                                                                \
  X(EFAULT, -7, "unmapped or unreadable address")                                                  \
  X(ETOOBIG, -8, "request too large")                                                              \
  X(EBUSY, -9, "busy")                                                                             \
  X(EEXITED, -10, "target exited")                                                                 \
  X(EINTERNAL, -11, "internal error")                                                              \
  X(ENOHELLO, -12, "hello must come first")                                                        \
  X(EVERSION, -13, "unsupported protocol version")                                                 \
  X(ENOMEM, -14, "out of memory")                                                                  \
  X(EUNMAPPED, -15, "address not mapped")                                                          \
  X(EPROT, -16, "page protection forbids access")                                                  \
  X(EIO, -17, "I/O error on mapped page")                                                          \
  X(ECONNECT, -18, "cannot connect to agent")                                                      \
  X(ECLOSED, -19, "connection closed")                                                             \
  X(ETIMEDOUT, -20, "timed out")                                                                   \
  X(EPROTO, -21, "protocol violation by peer")                                                     \
  X(ETLS, -22, "TLS handshake or certificate failure")                                             \
  X(ECANCELED, -23, "stopped by the caller")

typedef enum {
  RMEM_OK = 0,
#define RMEM__ERR_ENUM(name, code, msg) RMEM_##name = (code),
  RMEM_ERRNO_MAP(RMEM__ERR_ENUM)
#undef RMEM__ERR_ENUM
} rmem_errno_t;

/* Returns a static message for `code`, or "unknown error" for codes not in the table. */
const char *rmem_strerror(int code);

/* Returns the static name ("RMEM_EFAULT") for `code`, or "RMEM_UNKNOWN". */
const char *rmem_err_name(int code);

/* Returns the code for a name such as "RMEM_EFAULT", or 0 when the name is unknown. */
int rmem_err_from_name(const char *name);

/* Translates an errno value from a syscall on a target into the table. */
int rmem_err_from_errno(int err);

#endif
