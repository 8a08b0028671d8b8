/* A client connection: socket, framing, backpressure and reply writing.
 *
 * Bytes flow socket -> (transport) -> frame splitter -> dispatcher, and back
 * dispatcher -> conn_write -> (transport) -> socket. The transport is plain
 * TCP today; TLS slots in at conn__transport_in/out without touching the
 * dispatcher or the methods. */
#ifndef RMEM_CONN_H
#define RMEM_CONN_H

#include "dispatch.h"

#include <stdint.h>
#include <uv.h>

typedef struct server server;
typedef struct conn conn;

/* Accepts a pending connection on `listener` and starts reading. */
int conn_accept(server *srv, uv_stream_t *listener);
/* Begins closing; the connection is freed once its handle and jobs are done. */
void conn_close(conn *c);
/* Closes every connection of the server (shutdown). */
void conn_close_all(server *srv);

#endif
