#include "auth.h"

#include "log.h"
#include "rmem.h"

#include <errno.h>
#include <fcntl.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int auth_token_load(auth_config *a, const char *path, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) == 0 && (st.st_mode & 077))
    log_warn("token file %s can be read by others (mode %03o); chmod 600 it", path,
             (unsigned)(st.st_mode & 0777));
  /* Room for the longest token, a CR LF, and one byte to tell it is too long. */
  char buf[RMEM_TOKEN_MAX + 3];
  size_t n = 0;
  int rc = 0;
  while (n < sizeof(buf)) {
    ssize_t r = read(fd, buf + n, sizeof(buf) - n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      snprintf(err, errlen, "%s: %s", path, strerror(errno));
      rc = -1;
      break;
    }
    if (r == 0)
      break;
    n += (size_t)r;
  }
  close(fd);
  if (rc == 0) {
    if (n > 0 && buf[n - 1] == '\n')
      n--;
    if (n > 0 && buf[n - 1] == '\r')
      n--;
    if (n == 0) {
      snprintf(err, errlen, "%s: the token is empty", path);
      rc = -1;
    } else if (n > RMEM_TOKEN_MAX) {
      snprintf(err, errlen, "%s: the token is longer than %d bytes", path, RMEM_TOKEN_MAX);
      rc = -1;
    } else if (mbedtls_sha256_ret((const unsigned char *)buf, n, a->token_sha256, 0) != 0) {
      snprintf(err, errlen, "%s: cannot hash the token", path);
      rc = -1;
    } else {
      a->has_token = 1;
    }
  }
  mbedtls_platform_zeroize(buf, sizeof(buf));
  return rc;
}

int auth_token_check(const auth_config *a, const char *token, size_t len) {
  unsigned char h[32];
  if (!a->has_token || mbedtls_sha256_ret((const unsigned char *)token, len, h, 0) != 0)
    return 0;
  /* Every byte is compared, whatever the first difference. */
  volatile unsigned char diff = 0;
  for (size_t i = 0; i < sizeof(h); i++)
    diff |= h[i] ^ a->token_sha256[i];
  mbedtls_platform_zeroize(h, sizeof(h));
  return diff == 0;
}

const char *auth_required(const auth_config *a) {
  return a->mtls ? "mtls" : a->has_token ? "token" : "none";
}

static auth_peer *auth__find(auth_failures *f, const char *host) {
  for (size_t i = 0; i < AUTH_PEERS; i++) {
    if (f->peers[i].host[0] && strcmp(f->peers[i].host, host) == 0)
      return &f->peers[i];
  }
  return NULL;
}

uint32_t auth_failure_note(auth_failures *f, const char *host, uint64_t now_ms) {
  auth_peer *p = auth__find(f, host);
  if (p && now_ms - p->last_ms > AUTH_FORGET_MS)
    p->failures = 0;
  if (p == NULL) {
    /* A free slot, or else the one whose last failure is the oldest. */
    p = &f->peers[0];
    for (size_t i = 0; i < AUTH_PEERS && p->host[0]; i++) {
      if (f->peers[i].host[0] == '\0' || f->peers[i].last_ms < p->last_ms)
        p = &f->peers[i];
    }
    snprintf(p->host, sizeof(p->host), "%s", host);
    p->failures = 0;
  }
  if (p->failures < UINT32_MAX)
    p->failures++;
  p->last_ms = now_ms;
  return p->failures;
}

void auth_failure_clear(auth_failures *f, const char *host) {
  auth_peer *p = auth__find(f, host);
  if (p)
    memset(p, 0, sizeof(*p));
}

uint64_t auth_failure_delay_ms(uint32_t n) {
  if (n == 0)
    return 0;
  uint64_t d = AUTH_DELAY_BASE_MS;
  for (uint32_t i = 1; i < n && d < AUTH_DELAY_MAX_MS; i++)
    d *= 2;
  return d < AUTH_DELAY_MAX_MS ? d : AUTH_DELAY_MAX_MS;
}
