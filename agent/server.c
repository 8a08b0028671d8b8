#include "server.h"

#include "conn.h"
#include "log.h"

#include <string.h>

static void server__on_connection(uv_stream_t *listener, int status) {
  server *s = listener->data;
  if (status < 0) {
    log_warn("accept: %s", uv_strerror(status));
    return;
  }
  int rc = conn_accept(s, listener);
  if (rc < 0)
    log_warn("accept: %s", uv_strerror(rc));
}

int server_start(server *s, uv_loop_t *loop, const char *host, int port, int *bound_port) {
  s->loop = loop;
  struct sockaddr_storage addr;
  int rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
  if (rc != 0)
    rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr);
  if (rc != 0)
    return rc;
  uv_tcp_init(loop, &s->listener);
  s->listener.data = s;
  rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&s->listener, 511, server__on_connection);
  if (rc == 0) {
    struct sockaddr_storage got;
    int len = sizeof(got);
    rc = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&got, &len);
    if (rc == 0)
      *bound_port = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                                                    : ((struct sockaddr_in *)&got)->sin_port);
  }
  if (rc != 0)
    uv_close((uv_handle_t *)&s->listener, NULL);
  return rc;
}

void server_stop(server *s) {
  if (s->stopping)
    return;
  s->stopping = 1;
  uv_close((uv_handle_t *)&s->listener, NULL);
  conn_close_all(s);
}
