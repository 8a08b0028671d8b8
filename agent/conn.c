/* A client connection. The input buffer holds whole frames for the
 * dispatcher; replies are written as they come back from the workers. A
 * connection is freed only when its handle is closed and no job refers to it.
 *
 * With TLS, libuv reads ciphertext into the session's buffer and the
 * plaintext lands in the same input buffer as plaintext TCP would fill;
 * replies are encrypted straight into the buffer handed to uv_write. The
 * dispatcher sees frames either way. */
#include "conn.h"

#include "log.h"
#include "rmem_error.h"
#include "server.h"

#include <stdlib.h>
#include <string.h>

#define CONN_INBUF_MIN (64u << 10)
/* Room kept in the input buffer for one decrypted TLS record. */
#define CONN_TLS_PLAIN (16u << 10)
/* Replies are encrypted this much at a time (4 full records), and only
 * while less than CONN_TLS_AHEAD of ciphertext waits in uv_write: the first
 * records leave while later ones are made, and a big reply holds the loop
 * for at most CONN_TLS_AHEAD of cipher work at a time (about 1 ms at the
 * 200 MB/s one core does here), not for the whole frame. */
#define CONN_TLS_SLICE (64u << 10)
#define CONN_TLS_AHEAD (192u << 10)

/* A reply frame waiting to be encrypted. */
typedef struct conn_plain {
  struct conn_plain *next;
  char *buf;
  size_t len, off; /* buf[off..len) is not encrypted yet. */
} conn_plain;

struct conn {
  uv_tcp_t tcp;
  uv_timer_t hello_timer; /* Also bounds the TLS handshake. */
  uv_timer_t auth_timer;  /* Holds back the reply to a failed authentication. */
  server *srv;
  conn *prev, *next;
  dispatch_session session;
  tls_conn *tls; /* NULL for plaintext. */
  char peer[64];
  char host[48]; /* The peer's address without the port. */
  int refs;      /* One per open handle (socket, timers), one per job in flight. */
  int closing;
  int reading;
  int eof;               /* The peer finished sending: answer what it sent, then close. */
  int close_after_flush; /* Set after a framing error: reply, then close. */
  char *in;              /* Received bytes not yet dispatched. */
  size_t in_len, in_cap;
  uint32_t inflight;              /* Jobs in the thread pool. */
  uint64_t reserved;              /* Reply bytes those jobs may produce. */
  uint64_t out_pending;           /* Bytes handed to uv_write and not yet written. */
  conn_plain *tls_q, *tls_q_tail; /* TLS: frames to encrypt, in order. */
  uint64_t tls_queued;            /* Their bytes not yet encrypted. */
  int got_bytes;                  /* Something was received: the first byte was checked. */
  char *held;                     /* The reply held back by auth_timer; reading waits for it. */
  size_t held_len;
  uint32_t auth_failures; /* On this connection. */
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
  tls_conn_free(c->tls);
  while (c->tls_q) {
    conn_plain *p = c->tls_q;
    c->tls_q = p->next;
    free(p->buf);
    free(p);
  }
  free(c->held);
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
  uv_close((uv_handle_t *)&c->auth_timer, conn__on_close);
}

static void conn__on_hello_timeout(uv_timer_t *t) {
  conn *c = t->data;
  /* Saying hello is not enough where authentication is required: a client
   * without the secret must not keep a connection slot. */
  if ((c->session.hello_done && c->session.authenticated) || c->closing)
    return;
  if (c->tls && !tls_handshake_done(c->tls)) {
    log_warn("conn %llu %s: TLS handshake not finished within %llu ms",
             (unsigned long long)c->session.id, c->peer,
             (unsigned long long)c->srv->hello_timeout_ms);
    conn_close(c);
    return;
  }
  log_warn("conn %llu %s: no %s within %llu ms", (unsigned long long)c->session.id, c->peer,
           c->session.hello_done ? "authentication" : "hello",
           (unsigned long long)c->srv->hello_timeout_ms);
  conn_close(c);
}

void conn_close_all(server *srv) {
  for (conn *c = srv->conns; c; c = c->next)
    conn_close(c);
}

static void conn__tls_pump(conn *c);

/* Reply bytes not yet on the wire: handed to uv_write, or waiting to be
 * encrypted. */
static uint64_t conn__unsent(const conn *c) {
  return c->out_pending + c->tls_queued;
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
    return;
  }
  if (c->tls)
    conn__tls_pump(c);
  if (c->closing)
    return;
  if (c->close_after_flush && conn__unsent(c) == 0)
    conn_close(c);
  else
    conn__process(c);
}

/* Writes bytes to the socket as they are. Takes ownership of `buf`. */
static void conn__raw_write(conn *c, char *buf, size_t len) {
  if (c->closing) {
    free(buf);
    return;
  }
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

/* Sends the ciphertext the TLS session produced (handshake, alerts, records). */
static void conn__tls_flush(conn *c) {
  size_t len;
  char *buf = tls_out_take(c->tls, &len);
  if (buf)
    conn__raw_write(c, buf, len);
}

/* Encrypts queued reply frames, a slice at a time, into buffers that go to
 * uv_write as they are; see CONN_TLS_SLICE. Called again as writes complete. */
static void conn__tls_pump(conn *c) {
  while (c->tls_q && !c->closing && c->out_pending < CONN_TLS_AHEAD) {
    conn_plain *p = c->tls_q;
    size_t n = p->len - p->off < CONN_TLS_SLICE ? p->len - p->off : CONN_TLS_SLICE;
    int rc = tls_write(c->tls, p->buf + p->off, n);
    if (rc < 0) {
      log_warn("conn %llu %s: TLS write: %s", (unsigned long long)c->session.id, c->peer,
               tls_error(c->tls));
      conn_close(c);
      return;
    }
    p->off += n;
    c->tls_queued -= n;
    if (p->off == p->len) {
      c->tls_q = p->next;
      if (c->tls_q == NULL)
        c->tls_q_tail = NULL;
      free(p->buf);
      free(p);
    }
    conn__tls_flush(c);
  }
}

/* The transport's output side: plaintext goes straight to the socket; with
 * TLS the frame joins the queue that conn__tls_pump encrypts, so that records
 * keep the order of the frames. Takes ownership of `buf`. */
static void conn__transport_out(conn *c, char *buf, size_t len) {
  if (c->tls == NULL) {
    conn__raw_write(c, buf, len);
    return;
  }
  conn_plain *p = malloc(sizeof(*p));
  if (p == NULL) {
    free(buf);
    conn_close(c);
    return;
  }
  *p = (conn_plain){.buf = buf, .len = len};
  if (c->tls_q_tail)
    c->tls_q_tail->next = p;
  else
    c->tls_q = p;
  c->tls_q_tail = p;
  c->tls_queued += len;
  conn__tls_pump(c);
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
  return c->held != NULL || c->inflight >= l->max_inflight ||
         conn__unsent(c) + c->reserved >= l->max_output;
}

static void conn__on_auth_delay(uv_timer_t *t) {
  conn *c = t->data;
  if (c->closing)
    return;
  char *buf = c->held;
  c->held = NULL;
  if (c->auth_failures >= AUTH_MAX_FAILURES) {
    log_warn("conn %llu %s: %u failed authentications: closing", (unsigned long long)c->session.id,
             c->peer, (unsigned)c->auth_failures);
    c->close_after_flush = 1;
  }
  conn__write(c, buf, c->held_len);
  conn__process(c);
}

/* Holds back the reply to a failed authentication, longer for each failure
 * from the same address, without blocking the loop: the connection reads
 * nothing more until it is sent. Takes ownership of `buf`. */
static void conn__hold(conn *c, char *buf, size_t len) {
  uint32_t n = auth_failure_note(&c->srv->auth_fails, c->host, uv_now(c->srv->loop));
  uint64_t delay = auth_failure_delay_ms(n);
  c->auth_failures++;
  log_warn("conn %llu %s: RMEM_EPERM: wrong token (failure %u from %s, %u on this connection); "
           "replying in %llu ms",
           (unsigned long long)c->session.id, c->peer, (unsigned)n, c->host,
           (unsigned)c->auth_failures, (unsigned long long)delay);
  free(c->held);
  c->held = buf;
  c->held_len = len;
  uv_timer_start(&c->auth_timer, conn__on_auth_delay, delay, 0);
}

static void conn__on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void conn__on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Dispatches every whole frame in the input buffer, as far as the caps
 * allow, then reads on or stops reading (backpressure). */
static void conn__process(conn *c) {
  const dispatch_limits *l = &c->srv->limits;
  size_t off = 0;
  int wipe = 0; /* A frame carried a token: do not leave it in the buffer. */
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
    wipe |= r.auth_event != 0;
    if (r.auth_event > 0)
      auth_failure_clear(&c->srv->auth_fails, c->host);
    if (r.reply && r.auth_event < 0)
      conn__hold(c, r.reply, r.reply_len);
    else if (r.reply)
      conn__write(c, r.reply, r.reply_len);
    if (r.job)
      conn__queue(c, r.job);
  }
  if (off > 0) {
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    /* The consumed bytes that the move did not overwrite lie in here. */
    if (wipe)
      memset(c->in + c->in_len, 0, off);
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
    } else if (c->in_len == 0 && c->inflight == 0 && conn__unsent(c) == 0 && c->held == NULL) {
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
  if (c->tls) {
    /* Ciphertext goes to the session; plaintext is made room for in conn__tls_in. */
    char *p;
    size_t n;
    tls_in_buf(c->tls, &p, &n);
    *buf = uv_buf_init(p, (unsigned)n);
    return;
  }
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

/* Sends an error frame in plaintext, with msgid nil, and closes after it. */
static void conn__refuse(conn *c, int code, const char *msg) {
  codec_buf b;
  codec_buf_init(&b);
  codec_error_frame(&b, NULL, code, msg);
  size_t len;
  char *frame = codec_buf_steal(&b, &len);
  c->close_after_flush = 1;
  if (frame)
    conn__raw_write(c, frame, len);
  else
    conn_close(c);
}

/* The first byte tells a TLS client from a plaintext one; a mismatch is
 * answered in plaintext, which both kinds of client can recognise, and the
 * connection is closed. Returns 0 to go on. */
static int conn__check_first(conn *c, unsigned char first) {
  c->got_bytes = 1;
  int hs = tls_is_handshake_byte(first);
  if (c->tls && !hs) {
    log_warn("conn %llu %s: RMEM_ETLS: plaintext client on a TLS agent: closing",
             (unsigned long long)c->session.id, c->peer);
    conn__refuse(c, RMEM_ETLS, "this agent requires TLS: connect with TLS (rmem --tls)");
    return -1;
  }
  if (!c->tls && hs) {
    log_warn("conn %llu %s: RMEM_ETLS: TLS client on a plaintext agent: closing "
             "(start rmemd with --tls-cert and --tls-key for TLS)",
             (unsigned long long)c->session.id, c->peer);
    conn__refuse(c, RMEM_ETLS, "this agent does not speak TLS");
    return -1;
  }
  return 0;
}

/* Makes room for `n` more bytes in the input buffer. */
static int conn__in_reserve(conn *c, size_t n) {
  if (c->in_cap - c->in_len >= n)
    return 0;
  size_t cap = c->in_cap * 2 > c->in_len + n ? c->in_cap * 2 : c->in_len + n;
  char *p = realloc(c->in, cap);
  if (p == NULL)
    return -1;
  c->in = p;
  c->in_cap = cap;
  return 0;
}

/* The handshake just finished. */
static void conn__tls_ready(conn *c) {
  char subject[256] = "";
  if (tls_peer_verified(c->tls)) {
    /* Only a certificate from the agent's client CA gets this far. */
    c->session.authenticated = 1;
    tls_peer_subject(c->tls, subject, sizeof(subject));
  }
  log_info("conn %llu %s: TLS with %s%s%s", (unsigned long long)c->session.id, c->peer,
           tls_suite(c->tls), subject[0] ? ", client certificate " : "", subject);
}

/* The TLS transport's input side: the ciphertext just received becomes
 * frame bytes in the input buffer (all of it: the session keeps no
 * ciphertext back), and the handshake moves on. */
static void conn__tls_in(conn *c) {
  int was_done = tls_handshake_done(c->tls);
  ssize_t n;
  for (;;) {
    if (conn__in_reserve(c, CONN_TLS_PLAIN) != 0) {
      n = RMEM_ENOMEM;
      break;
    }
    n = tls_read(c->tls, c->in + c->in_len, c->in_cap - c->in_len);
    if (n <= 0)
      break;
    c->in_len += (size_t)n;
  }
  if (!was_done && tls_handshake_done(c->tls))
    conn__tls_ready(c);
  /* Handshake messages, or the alert that tells the peer why it failed. */
  conn__tls_flush(c);
  if (c->closing)
    return;
  if (n == RMEM_ECLOSED) {
    /* close_notify: answer what came before it, as for a half-close. */
    c->eof = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  } else if (n < 0) {
    log_warn("conn %llu %s: RMEM_ETLS: TLS %s failed: %s", (unsigned long long)c->session.id,
             c->peer, tls_handshake_done(c->tls) ? "session" : "handshake", tls_error(c->tls));
    c->close_after_flush = 1;
    if (c->out_pending == 0) {
      conn_close(c);
      return;
    }
  }
  conn__process(c);
}

static void conn__on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn *c = s->data;
  if (nread == UV_EOF) {
    if (c->tls && !tls_handshake_done(c->tls))
      log_info("conn %llu %s: closed during the TLS handshake", (unsigned long long)c->session.id,
               c->peer);
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
  if (!c->got_bytes && conn__check_first(c, (unsigned char)buf->base[0]) != 0) {
    conn__process(c); /* Stops reading. */
    return;
  }
  if (c->tls) {
    tls_in_commit(c->tls, (size_t)nread);
    conn__tls_in(c);
    return;
  }
  /* The transport's input side: plaintext bytes are frame bytes already. */
  c->in_len += (size_t)nread;
  conn__process(c);
}

/* Formats "host:port" into `out` and the host alone into host[48]; returns
 * 1 when the peer is on a loopback address. */
static int peer_name(uv_tcp_t *tcp, char *out, size_t len, char *host) {
  struct sockaddr_storage ss;
  int n = sizeof(ss);
  int port = 0, loopback = 0;
  snprintf(host, 48, "?");
  if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &n) == 0) {
    loopback = server_is_loopback(&ss);
    if (ss.ss_family == AF_INET) {
      uv_ip4_name((struct sockaddr_in *)&ss, host, 48);
      port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      uv_ip6_name((struct sockaddr_in6 *)&ss, host, 48);
      port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
  }
  snprintf(out, len, "%s:%d", host, port);
  return loopback;
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
  c->refs = 3;
  c->session.id = ++srv->next_conn_id;
  c->session.peer = c->peer;
  c->session.limits = &srv->limits;
  c->session.auth = &srv->auth;
  c->session.authenticated = !srv->auth.has_token && !srv->auth.mtls;
  uv_tcp_init(srv->loop, &c->tcp);
  c->tcp.data = c;
  uv_timer_init(srv->loop, &c->hello_timer);
  c->hello_timer.data = c;
  uv_timer_init(srv->loop, &c->auth_timer);
  c->auth_timer.data = c;
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
  c->session.loopback = peer_name(&c->tcp, c->peer, sizeof(c->peer), c->host);
  log_info("conn %llu %s: accepted", (unsigned long long)c->session.id, c->peer);
  if (srv->tls) {
    rc = tls_conn_new(&c->tls, srv->tls);
    if (rc < 0) {
      log_warn("conn %llu %s: TLS: out of memory", (unsigned long long)c->session.id, c->peer);
      conn_close(c);
      return 0;
    }
    c->session.tls = 1;
  }
  if (srv->nconns > srv->max_conns && c->tls) {
    /* No handshake for a connection that would be refused anyway. */
    log_warn("conn %llu %s: RMEM_EBUSY: %zu connections: closing",
             (unsigned long long)c->session.id, c->peer, srv->nconns - 1);
    conn_close(c);
    return 0;
  }
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
