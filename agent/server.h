/* The TCP listener and the set of live connections. */
#ifndef RMEM_SERVER_H
#define RMEM_SERVER_H

#include "dispatch.h"

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
  size_t max_conns; /* Connections past this get RMEM_EBUSY and are closed. */
  int stopping;
} server;

/* Binds and listens on host:port (port 0 picks one); *bound_port gets the
 * actual port. Returns 0 or a negative libuv error. */
int server_start(server *s, uv_loop_t *loop, const char *host, int port, int *bound_port);
/* Stops listening and closes every connection. */
void server_stop(server *s);

#endif
