/* A client connection. The input buffer holds whole frames for the
 * dispatcher; replies are written as they come back from the workers. A
 * connection is freed only when its handle is closed and no job refers to it. */
#include "conn.h"

#include "log.h"
#include "rmem_error.h"
#include "server.h"

#include <stdlib.h>
#include <string.h>

#define CONN_INBUF_MIN (64u << 10)

struct conn {
  uv_tcp_t tcp;
  uv_timer_t hello_timer;
  server *srv;
  conn *prev, *next;
  dispatch_session session;
  char peer[64];
  int refs; /* One per open handle (socket, timer), one per job in flight. */
  int closing;
  int reading;
  int eof;               /* The peer finished sending: answer what it sent, then close. */
  int close_after_flush; /* Set after a framing error: reply, then close. */
  char *in;              /* Received bytes not yet dispatched. */
  size_t in_len, in_cap;
  uint32_t inflight;    /* Jobs in the thread pool. */
  uint64_t reserved;    /* Reply bytes those jobs may produce. */
  uint64_t out_pending; /* Bytes handed to uv_write and not yet written. */
};

typedef struct {
  uv_write_t req;
  conn *c;
  char *buf;
  size_t len;
} conn_wreq;

typedef struct {
  uv_work_t req;
  conn *c;
  dispatch_job *job;
  uint64_t cost;
} conn_work;

static void conn__process(conn *c);

static void conn__unref(conn *c) {
  if (--c->refs > 0)
    return;
  server *s = c->srv;
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  s->nconns--;
  free(c->in);
  free(c);
}

static void conn__on_close(uv_handle_t *h) {
  conn *c = h->data;
  if (h == (uv_handle_t *)&c->tcp)
    log_info("conn %llu %s: closed", (unsigned long long)c->session.id, c->peer);
  conn__unref(c);
}

void conn_close(conn *c) {
  if (c->closing)
    return;
  c->closing = 1;
  uv_read_stop((uv_stream_t *)&c->tcp);
  uv_close((uv_handle_t *)&c->tcp, conn__on_close);
  uv_close((uv_handle_t *)&c->hello_timer, conn__on_close);
}

static void conn__on_hello_timeout(uv_timer_t *t) {
  conn *c = t->data;
  if (c->session.hello_done || c->closing)
    return;
  log_warn("conn %llu %s: no hello within %llu ms", (unsigned long long)c->session.id, c->peer,
           (unsigned long long)c->srv->hello_timeout_ms);
  conn_close(c);
}

void conn_close_all(server *srv) {
  for (conn *c = srv->conns; c; c = c->next)
    conn_close(c);
}

static void conn__on_write(uv_write_t *req, int status) {
  conn_wreq *w = (conn_wreq *)req;
  conn *c = w->c;
  c->out_pending -= w->len;
  free(w->buf);
  free(w);
  if (c->closing)
    return;
  if (status < 0) {
    log_info("conn %llu %s: write: %s", (unsigned long long)c->session.id, c->peer,
             uv_strerror(status));
    conn_close(c);
  } else if (c->close_after_flush && c->out_pending == 0) {
    conn_close(c);
  } else {
    conn__process(c);
  }
}

/* The transport's output side: plaintext goes straight to the socket. Takes
 * ownership of `buf`. */
static void conn__transport_out(conn *c, char *buf, size_t len) {
  conn_wreq *w = malloc(sizeof(*w));
  if (w == NULL) {
    free(buf);
    conn_close(c);
    return;
  }
  w->c = c;
  w->buf = buf;
  w->len = len;
  uv_buf_t b = uv_buf_init(buf, (unsigned)len);
  int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, conn__on_write);
  if (rc < 0) {
    free(buf);
    free(w);
    conn_close(c);
    return;
  }
  c->out_pending += len;
}

/* Sends one reply frame. Takes ownership of `buf`, even on failure. */
static void conn__write(conn *c, char *buf, size_t len) {
  if (c->closing || buf == NULL) {
    free(buf);
    return;
  }
  conn__transport_out(c, buf, len);
}

static void conn__work(uv_work_t *req) {
  conn_work *w = req->data;
  dispatch_job_run(w->job);
}

static void conn__after_work(uv_work_t *req, int status) {
  conn_work *w = req->data;
  conn *c = w->c;
  c->inflight--;
  c->reserved -= w->cost;
  if (c->closing || status < 0) {
    dispatch_job_free(w->job);
  } else {
    size_t len;
    char *frame = dispatch_job_finish(w->job, &len);
    conn__write(c, frame, len);
  }
  free(w);
  if (!c->closing)
    conn__process(c);
  conn__unref(c);
}

static void conn__queue(conn *c, dispatch_job *job) {
  conn_work *w = malloc(sizeof(*w));
  if (w == NULL) {
    dispatch_job_free(job);
    conn_close(c);
    return;
  }
  w->req.data = w;
  w->c = c;
  w->job = job;
  w->cost = job->cost;
  int rc = uv_queue_work(c->srv->loop, &w->req, conn__work, conn__after_work);
  if (rc < 0) {
    codec_buf b;
    codec_buf_init(&b);
    codec_error_frame(&b, &job->msgid, RMEM_EINTERNAL, uv_strerror(rc));
    size_t len;
    char *frame = codec_buf_steal(&b, &len);
    conn__write(c, frame, len);
    dispatch_job_free(job);
    free(w);
    return;
  }
  c->refs++;
  c->inflight++;
  c->reserved += w->cost;
}

static int conn__over_caps(const conn *c) {
  const dispatch_limits *l = &c->srv->limits;
  return c->inflight >= l->max_inflight || c->out_pending + c->reserved >= l->max_output;
}

static void conn__on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void conn__on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Dispatches every whole frame in the input buffer, as far as the caps
 * allow, then reads on or stops reading (backpressure). */
static void conn__process(conn *c) {
  const dispatch_limits *l = &c->srv->limits;
  size_t off = 0;
  while (!c->closing && !c->close_after_flush && !conn__over_caps(c)) {
    size_t avail = c->in_len - off;
    if (avail < CODEC_FRAME_HDR)
      break;
    uint32_t n = codec_frame_len(c->in + off);
    if (n > l->max_frame) {
      char msg[96];
      snprintf(msg, sizeof(msg), "frame of %u bytes exceeds max_frame %llu", n,
               (unsigned long long)l->max_frame);
      log_warn("conn %llu %s: RMEM_EFRAME: %s", (unsigned long long)c->session.id, c->peer, msg);
      codec_buf b;
      codec_buf_init(&b);
      codec_error_frame(&b, NULL, RMEM_EFRAME, msg);
      size_t len;
      char *frame = codec_buf_steal(&b, &len);
      c->close_after_flush = 1;
      conn__write(c, frame, len);
      break;
    }
    if (avail - CODEC_FRAME_HDR < n)
      break;
    dispatch_result r;
    dispatch_frame(&c->session, c->in + off + CODEC_FRAME_HDR, n, &r);
    off += CODEC_FRAME_HDR + (size_t)n;
    if (r.reply)
      conn__write(c, r.reply, r.reply_len);
    if (r.job)
      conn__queue(c, r.job);
  }
  if (off > 0) {
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
  }
  /* Give back a big buffer once the big frame it held is gone. */
  if (c->in_cap > CONN_INBUF_MIN && c->in_len < CONN_INBUF_MIN / 2) {
    char *p = realloc(c->in, CONN_INBUF_MIN);
    if (p) {
      c->in = p;
      c->in_cap = CONN_INBUF_MIN;
    }
  }
  if (c->closing)
    return;
  if (c->eof) {
    /* Whole frames still waiting behind the caps are answered; a partial
     * frame can never complete. */
    int partial = c->in_len > 0 && (c->in_len < CODEC_FRAME_HDR ||
                                    c->in_len - CODEC_FRAME_HDR < codec_frame_len(c->in));
    if (partial) {
      log_info("conn %llu %s: closed in the middle of a frame", (unsigned long long)c->session.id,
               c->peer);
      conn_close(c);
    } else if (c->in_len == 0 && c->inflight == 0 && c->out_pending == 0) {
      conn_close(c);
    }
    return;
  }
  int want = !c->close_after_flush && !conn__over_caps(c);
  if (want && !c->reading) {
    if (uv_read_start((uv_stream_t *)&c->tcp, conn__on_alloc, conn__on_read) == 0)
      c->reading = 1;
  } else if (!want && c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
}

/* Hands libuv the free tail of the input buffer. The buffer grows by
 * doubling as bytes arrive, up to the frame being received (its length was
 * checked against max_frame): a 4-byte header alone cannot make the agent
 * allocate the whole frame. */
static void conn__on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  conn *c = h->data;
  size_t need = c->in_cap;
  if (c->in_cap - c->in_len < CONN_INBUF_MIN / 4) {
    size_t limit = CONN_INBUF_MIN;
    if (c->in_len >= CODEC_FRAME_HDR) {
      uint64_t n = codec_frame_len(c->in);
      if (n <= c->srv->limits.max_frame && CODEC_FRAME_HDR + n > limit)
        limit = CODEC_FRAME_HDR + n;
    }
    need = c->in_cap * 2 < limit ? c->in_cap * 2 : limit;
    if (need < c->in_len + CONN_INBUF_MIN / 4)
      need = c->in_len + CONN_INBUF_MIN / 4;
  }
  if (need > c->in_cap) {
    char *p = realloc(c->in, need);
    if (p != NULL) {
      c->in = p;
      c->in_cap = need;
    }
  }
  *buf = uv_buf_init(c->in + c->in_len, (unsigned)(c->in_cap - c->in_len));
}

static void conn__on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn *c = s->data;
  if (nread == UV_EOF) {
    /* A half-close still gets its answers: see conn__process. */
    c->eof = 1;
    uv_read_stop(s);
    c->reading = 0;
    conn__process(c);
    return;
  }
  if (nread < 0) {
    log_info("conn %llu %s: read: %s", (unsigned long long)c->session.id, c->peer,
             uv_strerror((int)nread));
    conn_close(c);
    return;
  }
  if (nread == 0)
    return;
  /* The transport's input side: plaintext bytes are frame bytes already. */
  c->in_len += (size_t)nread;
  conn__process(c);
}

static void peer_name(uv_tcp_t *tcp, char *out, size_t len) {
  struct sockaddr_storage ss;
  int n = sizeof(ss);
  char host[48] = "?";
  int port = 0;
  if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &n) == 0) {
    if (ss.ss_family == AF_INET) {
      uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof(host));
      port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof(host));
      port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
  }
  snprintf(out, len, "%s:%d", host, port);
}

int conn_accept(server *srv, uv_stream_t *listener) {
  conn *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return UV_ENOMEM;
  c->in = malloc(CONN_INBUF_MIN);
  if (c->in == NULL) {
    free(c);
    return UV_ENOMEM;
  }
  c->in_cap = CONN_INBUF_MIN;
  c->srv = srv;
  c->refs = 2;
  c->session.id = ++srv->next_conn_id;
  c->session.peer = c->peer;
  c->session.limits = &srv->limits;
  uv_tcp_init(srv->loop, &c->tcp);
  c->tcp.data = c;
  uv_timer_init(srv->loop, &c->hello_timer);
  c->hello_timer.data = c;
  c->next = srv->conns;
  if (srv->conns)
    srv->conns->prev = c;
  srv->conns = c;
  srv->nconns++;
  int rc = uv_accept(listener, (uv_stream_t *)&c->tcp);
  if (rc < 0) {
    conn_close(c);
    return rc;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  peer_name(&c->tcp, c->peer, sizeof(c->peer));
  log_info("conn %llu %s: accepted", (unsigned long long)c->session.id, c->peer);
  if (srv->nconns > srv->max_conns) {
    log_warn("conn %llu %s: RMEM_EBUSY: %zu connections", (unsigned long long)c->session.id,
             c->peer, srv->nconns - 1);
    codec_buf b;
    codec_buf_init(&b);
    codec_error_frame(&b, NULL, RMEM_EBUSY, "too many connections");
    size_t len;
    char *frame = codec_buf_steal(&b, &len);
    c->close_after_flush = 1;
    conn__write(c, frame, len);
    return 0;
  }
  uv_timer_start(&c->hello_timer, conn__on_hello_timeout, c->srv->hello_timeout_ms, 0);
  conn__process(c);
  return 0;
}
