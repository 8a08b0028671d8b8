#include "server.h"

#include "conn.h"
#include "log.h"

#include <netdb.h>
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

int server_resolve(uv_loop_t *loop, const char *host, int port, struct sockaddr_storage *out) {
  memset(out, 0, sizeof(*out));
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)out) == 0 ||
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)out) == 0)
    return 0;
  /* A name: resolved once, synchronously, before the loop runs. */
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  uv_getaddrinfo_t req;
  int rc = uv_getaddrinfo(loop, &req, NULL, host, NULL, &hints);
  if (rc != 0)
    return rc;
  if (req.addrinfo == NULL || req.addrinfo->ai_addrlen > sizeof(*out)) {
    uv_freeaddrinfo(req.addrinfo);
    return UV_EAI_NONAME;
  }
  memcpy(out, req.addrinfo->ai_addr, req.addrinfo->ai_addrlen);
  uv_freeaddrinfo(req.addrinfo);
  if (out->ss_family == AF_INET)
    ((struct sockaddr_in *)out)->sin_port = htons((uint16_t)port);
  else
    ((struct sockaddr_in6 *)out)->sin6_port = htons((uint16_t)port);
  return 0;
}

int server_is_loopback(const struct sockaddr_storage *a) {
  if (a->ss_family == AF_INET)
    return (ntohl(((const struct sockaddr_in *)a)->sin_addr.s_addr) >> 24) == 127;
  const struct in6_addr *a6 = &((const struct sockaddr_in6 *)a)->sin6_addr;
  return IN6_IS_ADDR_LOOPBACK(a6) || (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127);
}

int server_start(server *s, uv_loop_t *loop, const struct sockaddr_storage *addr, int *bound_port) {
  s->loop = loop;
  int rc;
  uv_tcp_init(loop, &s->listener);
  s->listener.data = s;
  rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)addr, 0);
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
