/* Who may use the agent: what it requires (a token, a client certificate),
 * the token check, and the record of failed attempts that slows guessing.
 *
 * No I/O but reading the token file, once, at start-up. The token itself is
 * never kept: only its SHA-256, so that the comparison takes the same time
 * whatever the presented token's length and content. */
#ifndef RMEM_AUTH_H
#define RMEM_AUTH_H

#include <stddef.h>
#include <stdint.h>

/* Agent-wide, set up by main before the loop runs. */
typedef struct {
  int tls;       /* The agent serves TLS. */
  int mtls;      /* TLS clients must present a certificate the agent's CA issued. */
  int has_token; /* hello must carry the token (unless mtls authenticated the peer). */
  unsigned char token_sha256[32];
} auth_config;

/* Reads the token from `path`: its bytes up to an optional final newline, 1
 * to RMEM_TOKEN_MAX of them. Warns when others may read the file. Returns 0,
 * or -1 with the reason in `err`. */
int auth_token_load(auth_config *a, const char *path, char *err, size_t errlen);
/* 1 when `token` is the agent's token, in constant time; 0 otherwise. */
int auth_token_check(const auth_config *a, const char *token, size_t len);
/* What hello announces the agent requires: "mtls", "token" or "none". */
const char *auth_required(const auth_config *a);

/* Failed authentications are slowed down: the reply to the Nth failure from
 * one address (counted over AUTH_FORGET_MS) waits base * 2^(N-1) ms, capped,
 * and a connection is closed after AUTH_MAX_FAILURES of them. A success from
 * the address clears its count. */
#define AUTH_MAX_FAILURES 5
#define AUTH_DELAY_BASE_MS 50
#define AUTH_DELAY_MAX_MS 2000
#define AUTH_FORGET_MS (15 * 60 * 1000)
#define AUTH_PEERS 256 /* Addresses remembered; the stalest is forgotten first. */

typedef struct {
  char host[48]; /* "" for a free slot. */
  uint32_t failures;
  uint64_t last_ms;
} auth_peer;

typedef struct {
  auth_peer peers[AUTH_PEERS];
} auth_failures;

/* Records a failure from `host` at `now_ms`; returns its count. */
uint32_t auth_failure_note(auth_failures *f, const char *host, uint64_t now_ms);
/* Forgets the failures of `host`. */
void auth_failure_clear(auth_failures *f, const char *host);
/* How long to hold the reply to the `n`th failure, in ms. */
uint64_t auth_failure_delay_ms(uint32_t n);

#endif
