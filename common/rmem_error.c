#include "rmem_error.h"

#include <errno.h>
#include <string.h>

const char *rmem_strerror(int code) {
  switch (code) {
  case 0:
    return "success";
#define RMEM__ERR_MSG(name, c, msg)                                                                \
  case c:                                                                                          \
    return msg;
    RMEM_ERRNO_MAP(RMEM__ERR_MSG)
#undef RMEM__ERR_MSG
  }
  return "unknown error";
}

const char *rmem_err_name(int code) {
  switch (code) {
  case 0:
    return "RMEM_OK";
#define RMEM__ERR_NAME(name, c, msg)                                                               \
  case c:                                                                                          \
    return "RMEM_" #name;
    RMEM_ERRNO_MAP(RMEM__ERR_NAME)
#undef RMEM__ERR_NAME
  }
  return "RMEM_UNKNOWN";
}

int rmem_err_from_name(const char *name) {
#define RMEM__ERR_CMP(n, c, msg)                                                                   \
  if (strcmp(name, "RMEM_" #n) == 0)                                                               \
    return c;
  RMEM_ERRNO_MAP(RMEM__ERR_CMP)
#undef RMEM__ERR_CMP
  return 0;
}

int rmem_err_from_errno(int err) {
  switch (err) {
  case 0:
    return 0;
  case ESRCH:
  case ENOENT:
    return RMEM_ENOPROC;
  case EPERM:
  case EACCES:
    return RMEM_EPERM;
  case EFAULT:
    return RMEM_EFAULT;
  case EIO:
    return RMEM_EIO;
  case ENOMEM:
    return RMEM_ENOMEM;
  case EINVAL:
    return RMEM_EPARAM;
  case ETIMEDOUT:
    return RMEM_ETIMEDOUT;
  case ECONNREFUSED:
  case EHOSTUNREACH:
  case ENETUNREACH:
    return RMEM_ECONNECT;
  case EPIPE:
  case ECONNRESET:
    return RMEM_ECLOSED;
  }
  return RMEM_EINTERNAL;
}
