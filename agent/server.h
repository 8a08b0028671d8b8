/* The TCP listener and the set of live connections. */
#ifndef RMEM_SERVER_H
#define RMEM_SERVER_H

#include "auth.h"
#include "dispatch.h"
#include "tls.h"

#include <stdint.h>
#include <uv.h>

typedef struct conn conn;

typedef struct server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  dispatch_limits limits;
  uint64_t next_conn_id;
  conn *conns; /* Doubly linked list of live connections. */
  size_t nconns;
  size_t max_conns;          /* Connections past this get RMEM_EBUSY and are closed. */
  uint64_t hello_timeout_ms; /* Also bounds the TLS handshake. */
  tls_config *tls;           /* NULL: plaintext. */
  auth_config auth;
  auth_failures auth_fails; /* Failed authentications per peer address. */
  int stopping;
} server;

/* Turns a numeric address or a host name into a socket address. Resolves
 * synchronously: call it before the loop runs. Returns 0 or a libuv error. */
int server_resolve(uv_loop_t *loop, const char *host, int port, struct sockaddr_storage *out);
/* 1 for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104. */
int server_is_loopback(const struct sockaddr_storage *addr);
/* Binds and listens on `addr` (port 0 picks one); *bound_port gets the
 * actual port. Returns 0 or a negative libuv error. */
int server_start(server *s, uv_loop_t *loop, const struct sockaddr_storage *addr, int *bound_port);
/* Stops listening and closes every connection. */
void server_stop(server *s);

#endif
