/* librmem: a blocking client for rmemd with pipelining.
 *
 * Requests are framed into `out` and sent with one sendmsg (write data goes
 * out from the caller's buffer as a second iovec). Every reply frame is read
 * into its own buffer (a small free-list keeps big buffers warm, so bulk
 * reads do not fault fresh pages in on every chunk), decoded once, and parked
 * on its pending entry until rmem_finish (or an internal caller) consumes it.
 *
 * Read data is not copied at all in the common case: when a big frame starts
 * like the reply to a pending read, its bin bytes are received straight into
 * the caller's buffer and only the rest of the frame is kept (rx_prefix).
 * Otherwise it is copied once, from the frame into the caller's buffer.
 * Compressed data (lz4, when hello agreed on it) always takes that second
 * path: the frame is received whole and decompressed into the caller's
 * buffer, checked as untrusted input.
 *
 * Timeouts are inactivity timeouts: a call fails with RMEM_ETIMEDOUT when the
 * connection makes no progress for `timeout_ms`, so long bulk transfers are
 * not cut short while bytes keep flowing.
 *
 * With TLS (mbedTLS), the same loops run over mbedtls_ssl_read/write, whose
 * send/recv callbacks never block: WANT_READ/WANT_WRITE are "not yet", as
 * EAGAIN is for plaintext. Decrypted read data still lands straight in the
 * caller's buffer. */
#include "rmem.h"

#include "codec.h"
#include "compress.h"
#include "msg.h"
#include "rmem_error.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* The longest frame librmem accepts, whatever the agent announces. */
#define RMEM__MAX_FRAME (256u << 20)

/* Long reads go out in pieces of at most RMEM__PIECE bytes with
 * RMEM__WINDOW requests in flight: the best pair measured by
 * tests/bench/run.sh over loopback (bigger pieces only add latency before
 * the first byte arrives; a slow link wants a bigger window instead). */
#define RMEM__PIECE (1u << 20)
/* Chunk requests kept in flight by rmem_read and rmem_write. */
#ifndef RMEM__WINDOW
#define RMEM__WINDOW 4
#endif
/* Bytes read per recv when not reading a big payload in place. */
#define RMEM__STAGE (64u << 10)
/* Payload bytes left above which recv goes straight into the frame. */
#define RMEM__DIRECT (16u << 10)
/* Idle frame buffers kept for reuse, and the largest one worth keeping. */
#define RMEM__FREE_FRAMES 10
#define RMEM__FREE_MAX_CAP (64u << 20)
/* Frames at least this long may be read replies whose data can be received
 * straight into the caller's buffer; their first RMEM__PREFIX bytes tell. */
#define RMEM__DIRECT_MIN (64u << 10)
#define RMEM__PREFIX 19
/* Room left in a frame for everything but the bulk bytes of a read or write. */
#define RMEM__FRAME_SLACK 4096u
#define RMEM__DEFAULT_TIMEOUT_MS 10000
/* TLS: ciphertext received per recv at most, about four full records. */
#define RMEM__TLS_READAHEAD (68u << 10)

enum { PEND_CALL, PEND_READ, PEND_WRITE };

/* One received frame, decoded in place. */
typedef struct rmem__frame {
  struct rmem__frame *next; /* Free-list link. */
  char *buf;
  size_t cap;
  size_t len;
  int decoded;
  msgpack_unpacked up;
  codec_msg msg;
} rmem__frame;

/* A request whose reply has not been consumed yet. */
typedef struct {
  uint32_t msgid;
  int kind;
  int abandoned; /* The caller gave up: drop the reply when it comes. */
  void *dest;    /* Reads: where the data goes. */
  size_t len;
  uint64_t addr;
  uint32_t pid;
  int direct;         /* The data went straight to `dest`; the frame holds the rest. */
  rmem__frame *reply; /* NULL until the reply arrives. */
} rmem__pend;

/* Where the reader is within the incoming stream. */
enum {
  RX_HDR,    /* Collecting a 4-byte frame length. */
  RX_PREFIX, /* A big frame: collecting its first bytes to see whose data it holds. */
  RX_DIRECT, /* Read data going straight into the caller's buffer. */
  RX_BODY,   /* The rest of the frame going into `cur`. */
};

typedef struct rmem__tls rmem__tls;

struct rmem_client {
  int fd;
  rmem__tls *tls; /* NULL for plaintext. */
  int timeout_ms; /* -1: wait forever. */
  int broken;     /* 0, or the code that made the connection unusable. */
  int lz4;        /* hello agreed that read data may come lz4-compressed. */
  uint32_t next_id;
  uint64_t max_frame;
  size_t window;
  rmem_agent_info info;
  char peer[80]; /* "127.0.0.1:7467", for messages. */
  char err[512];

  rmem__pend *pend;
  size_t npend, cappend;

  /* Frame reader. */
  int rx_state;
  unsigned char hdr[CODEC_FRAME_HDR];
  size_t hdr_got;
  uint32_t frame_len;
  unsigned char prefix[RMEM__PREFIX];
  size_t prefix_got;
  rmem__frame *cur; /* Where the frame (or what is left of it) is received. */
  size_t cur_got;
  int cur_direct;     /* `cur` is a read reply whose data went to the caller. */
  uint32_t direct_id; /* That read's msgid. */
  char *direct_dst;   /* Next data byte goes here; NULL to discard (abandoned). */
  size_t direct_left;
  char *stage;

  rmem__frame *free_frames;
  size_t nfree;

  codec_buf out;       /* Requests waiting to be sent. */
  rmem_ranges scratch; /* Ranges of one reply, before they are checked. */
};

/* The message of this thread's last failed rmem_connect. */
static _Thread_local char connect_err[512];

static int fail(rmem_client *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(rmem_client *c, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err, sizeof(c->err), fmt, ap);
  va_end(ap);
  return code;
}

/* Marks the connection unusable; later calls return `code` at once. */
static int breakdown(rmem_client *c, int code) {
  if (!c->broken)
    c->broken = code;
  return code;
}

static int check_usable(rmem_client *c) {
  return c->broken ? c->broken : 0;
}

/* Frames and the free-list. */

static void frame_destroy(rmem__frame *f) {
  if (f == NULL)
    return;
  if (f->decoded)
    msgpack_unpacked_destroy(&f->up);
  free(f->buf);
  free(f);
}

/* A frame with room for `len` bytes: the best-fitting idle one, or a new one. */
static rmem__frame *frame_get(rmem_client *c, size_t len) {
  rmem__frame **best = NULL;
  for (rmem__frame **pp = &c->free_frames; *pp; pp = &(*pp)->next) {
    if ((*pp)->cap >= len && (best == NULL || (*pp)->cap < (*best)->cap))
      best = pp;
  }
  rmem__frame *f;
  if (best) {
    f = *best;
    *best = f->next;
    c->nfree--;
  } else {
    f = calloc(1, sizeof(*f));
    if (f == NULL)
      return NULL;
    /* Round small frames up so one buffer serves many replies. */
    size_t cap = len < 4096 ? 4096 : len;
    f->buf = malloc(cap);
    if (f->buf == NULL) {
      free(f);
      return NULL;
    }
    f->cap = cap;
  }
  f->next = NULL;
  f->len = len;
  f->decoded = 0;
  return f;
}

/* Returns a consumed frame to the free-list. Accepts NULL. */
static void frame_put(rmem_client *c, rmem__frame *f) {
  if (f == NULL)
    return;
  if (f->decoded) {
    msgpack_unpacked_destroy(&f->up);
    f->decoded = 0;
  }
  if (f->cap > RMEM__FREE_MAX_CAP) {
    frame_destroy(f);
    return;
  }
  if (c->nfree >= RMEM__FREE_FRAMES) {
    /* Keep the bigger buffers: they are the ones worth not faulting in again. */
    rmem__frame **small = &c->free_frames;
    for (rmem__frame **pp = &c->free_frames; *pp; pp = &(*pp)->next) {
      if ((*pp)->cap < (*small)->cap)
        small = pp;
    }
    if ((*small)->cap >= f->cap) {
      frame_destroy(f);
      return;
    }
    rmem__frame *drop = *small;
    *small = drop->next;
    frame_destroy(drop);
    c->nfree--;
  }
  f->next = c->free_frames;
  c->free_frames = f;
  c->nfree++;
}

/* Pending requests. Few are in flight at a time, so a flat array will do. */

static rmem__pend *pend_find(rmem_client *c, uint32_t msgid) {
  for (size_t i = 0; i < c->npend; i++) {
    if (c->pend[i].msgid == msgid)
      return &c->pend[i];
  }
  return NULL;
}

static rmem__pend *pend_add(rmem_client *c, int kind) {
  if (c->npend == c->cappend) {
    size_t cap = c->cappend ? 2 * c->cappend : 16;
    rmem__pend *p = realloc(c->pend, cap * sizeof(*p));
    if (p == NULL)
      return NULL;
    c->pend = p;
    c->cappend = cap;
  }
  rmem__pend *p = &c->pend[c->npend++];
  memset(p, 0, sizeof(*p));
  p->kind = kind;
  p->msgid = c->next_id++;
  if (c->next_id == 0)
    c->next_id = 1;
  return p;
}

/* Removes an entry; the caller keeps or releases its reply. */
static void pend_remove(rmem_client *c, rmem__pend *p) {
  size_t i = (size_t)(p - c->pend);
  c->pend[i] = c->pend[--c->npend];
}

/* Receiving. */

/* Handles one complete frame: decodes it and parks it on its pending entry. */
static int rx_complete(rmem_client *c) {
  rmem__frame *f = c->cur;
  int direct = c->cur_direct;
  c->cur = NULL;
  c->cur_got = 0;
  c->cur_direct = 0;
  c->rx_state = RX_HDR;
  msgpack_unpacked_init(&f->up);
  f->decoded = 1;
  char why[128];
  /* codec_check bounds every count by the bytes left, so the frame length is
   * a safe object limit even for a map of tens of thousands of regions. */
  int rc = codec_msg_decode(f->buf, f->len, f->len, &f->up, &f->msg, why, sizeof(why));
  if (rc != 0) {
    frame_put(c, f);
    return breakdown(c, fail(c, RMEM_EPROTO, "%s sent a malformed frame: %s", c->peer, why));
  }
  if (f->msg.type == CODEC_NOTIFY) {
    frame_put(c, f); /* Reserved for streaming; nothing uses them yet. */
    return 0;
  }
  if (f->msg.type != CODEC_RESPONSE) {
    frame_put(c, f);
    return breakdown(c, fail(c, RMEM_EPROTO, "%s sent a request to the client", c->peer));
  }
  if (!f->msg.has_msgid) {
    /* A connection-level error: the agent could not tie it to a request. */
    int code = RMEM_EPROTO;
    char msg[256] = "";
    if (f->msg.error == NULL || msg_error_parse(f->msg.error, &code, msg, sizeof(msg)) != 0 ||
        code >= 0)
      code = RMEM_EPROTO;
    fail(c, code, "%s reported a connection error: %s", c->peer,
         msg[0] ? msg : rmem_strerror(code));
    frame_put(c, f);
    return breakdown(c, code);
  }
  rmem__pend *p = pend_find(c, f->msg.msgid);
  if (p == NULL || p->reply != NULL) {
    uint32_t id = f->msg.msgid;
    frame_put(c, f);
    return breakdown(
        c, fail(c, RMEM_EPROTO, "%s sent a reply to unknown request %u", c->peer, (unsigned)id));
  }
  if (p->abandoned) {
    pend_remove(c, p);
    frame_put(c, f);
    return 0;
  }
  p->direct = direct;
  p->reply = f;
  return 0;
}

static int rx_advance(rmem_client *c);

/* Reads an unsigned msgpack integer at p[0..n); returns its length or 0. */
static size_t prefix_uint(const unsigned char *p, size_t n, uint64_t *v) {
  if (n < 1)
    return 0;
  size_t w;
  switch (p[0]) {
  case 0xcc:
    w = 1;
    break;
  case 0xcd:
    w = 2;
    break;
  case 0xce:
    w = 4;
    break;
  default:
    if (p[0] <= 0x7f) {
      *v = p[0];
      return 1;
    }
    return 0;
  }
  if (n < 1 + w)
    return 0;
  *v = 0;
  for (size_t i = 0; i < w; i++)
    *v = *v << 8 | p[1 + i];
  return 1 + w;
}

/* Allocates `cur` for `len` bytes and starts receiving into it. */
static int rx_body(rmem_client *c, size_t len) {
  c->cur = frame_get(c, len);
  if (c->cur == NULL)
    return breakdown(c, fail(c, RMEM_ENOMEM, "out of memory for a %zu-byte frame", len));
  c->cur_got = 0;
  c->rx_state = RX_BODY;
  return 0;
}

/* Recognises the start of a read reply as msg_read_res_head packs it:
 * [1, msgid, nil, {"data": bin(len), ...}]. Sets where the bin header starts
 * (*bin_at) and where its bytes start (*data_at). Returns 1 on a match. */
static int read_reply_head(const unsigned char *p, size_t n, uint32_t *msgid, size_t *bin_at,
                           size_t *data_at, uint64_t *binlen) {
  static const unsigned char data_key[] = {0xa4, 'd', 'a', 't', 'a'};
  uint64_t id;
  size_t at = 2, w;
  if (n < 2 || p[0] != 0x94 || p[1] != CODEC_RESPONSE ||
      (w = prefix_uint(p + at, n - at, &id)) == 0)
    return 0;
  at += w;
  /* nil error, a map of 1 to 15 fields, "data" first. */
  if (at + 2 + sizeof(data_key) + 1 > n || p[at] != 0xc0 || p[at + 1] < 0x81 || p[at + 1] > 0x8f ||
      memcmp(p + at + 2, data_key, sizeof(data_key)) != 0)
    return 0;
  at += 2 + sizeof(data_key);
  size_t lw = p[at] == 0xc4 ? 1 : p[at] == 0xc5 ? 2 : p[at] == 0xc6 ? 4 : 0;
  if (lw == 0 || at + 1 + lw > n)
    return 0;
  uint64_t len = 0;
  for (size_t i = 0; i < lw; i++)
    len = len << 8 | p[at + 1 + i];
  *msgid = (uint32_t)id;
  *bin_at = at;
  *data_at = at + 1 + lw;
  *binlen = len;
  return 1;
}

/* The first bytes of a big frame are in. When they begin the reply to a
 * pending read of the same length, its data goes straight to the caller's
 * buffer, and only the rest of the frame is kept, with the bin emptied, so
 * that it still decodes and is checked as a whole. Any other frame is
 * received whole. */
static int rx_prefix(rmem_client *c) {
  const unsigned char *p = c->prefix;
  const size_t n = RMEM__PREFIX;
  uint32_t msgid;
  size_t bin_at, data_at;
  uint64_t binlen;
  rmem__pend *pend = NULL;
  if (read_reply_head(p, n, &msgid, &bin_at, &data_at, &binlen))
    pend = pend_find(c, msgid);
  if (pend == NULL || pend->kind != PEND_READ || pend->abandoned || pend->reply ||
      pend->len != binlen || binlen < n - data_at || binlen > c->frame_len - data_at) {
    int rc = rx_body(c, c->frame_len);
    if (rc == 0) {
      memcpy(c->cur->buf, p, n);
      c->cur_got = n;
    }
    return rc;
  }
  size_t keep = bin_at + 2 + (c->frame_len - data_at - binlen);
  int rc = rx_body(c, keep);
  if (rc != 0)
    return rc;
  memcpy(c->cur->buf, p, bin_at);
  c->cur->buf[bin_at] = (char)0xc4;
  c->cur->buf[bin_at + 1] = 0;
  c->cur_got = bin_at + 2;
  c->cur_direct = 1;
  c->direct_id = msgid;
  size_t early = n - data_at; /* Data bytes that came with the prefix. */
  memcpy(pend->dest, p + data_at, early);
  c->direct_dst = (char *)pend->dest + early;
  c->direct_left = binlen - early;
  c->rx_state = RX_DIRECT;
  return rx_advance(c);
}

/* Starts the payload of a frame whose header is complete. */
static int rx_header(rmem_client *c) {
  uint32_t n = codec_frame_len(c->hdr);
  c->hdr_got = 0;
  if (n == 0)
    return breakdown(c, fail(c, RMEM_EPROTO, "%s sent an empty frame", c->peer));
  if (n > c->max_frame)
    return breakdown(c, fail(c, RMEM_EPROTO, "%s sent a frame of %u bytes, over max_frame %llu",
                             c->peer, (unsigned)n, (unsigned long long)c->max_frame));
  c->frame_len = n;
  if (n >= RMEM__DIRECT_MIN) {
    c->prefix_got = 0;
    c->rx_state = RX_PREFIX;
    return 0;
  }
  return rx_body(c, n);
}

/* Called after bytes were added in any state: moves on when a part is done. */
static int rx_advance(rmem_client *c) {
  switch (c->rx_state) {
  case RX_HDR:
    return c->hdr_got == CODEC_FRAME_HDR ? rx_header(c) : 0;
  case RX_PREFIX:
    return c->prefix_got == RMEM__PREFIX ? rx_prefix(c) : 0;
  case RX_DIRECT:
    if (c->direct_left > 0)
      return 0;
    c->rx_state = RX_BODY;
    /* fall through */
  default:
    return c->cur_got == c->cur->len ? rx_complete(c) : 0;
  }
}

/* Distributes freshly received bytes into headers, prefixes, data and frames. */
static int rx_feed(rmem_client *c, const char *p, size_t n) {
  while (n > 0) {
    size_t take;
    switch (c->rx_state) {
    case RX_HDR:
      take = CODEC_FRAME_HDR - c->hdr_got;
      take = take < n ? take : n;
      memcpy(c->hdr + c->hdr_got, p, take);
      c->hdr_got += take;
      break;
    case RX_PREFIX:
      take = RMEM__PREFIX - c->prefix_got;
      take = take < n ? take : n;
      memcpy(c->prefix + c->prefix_got, p, take);
      c->prefix_got += take;
      break;
    case RX_DIRECT:
      take = c->direct_left < n ? c->direct_left : n;
      if (c->direct_dst) {
        memcpy(c->direct_dst, p, take);
        c->direct_dst += take;
      }
      c->direct_left -= take;
      break;
    default:
      take = c->cur->len - c->cur_got;
      take = take < n ? take : n;
      memcpy(c->cur->buf + c->cur_got, p, take);
      c->cur_got += take;
      break;
    }
    p += take;
    n -= take;
    int rc = rx_advance(c);
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* TLS. mbedTLS runs over the same non-blocking socket, with send/recv
 * callbacks that never wait: WANT_READ and WANT_WRITE come back to the
 * loops above, which poll with the client's timeout as for plaintext. */

/* The suites rmemd offers (agent/tls.c, whose order wins): ECDHE with
 * ChaCha20-Poly1305 or AES-GCM. */
static const int rmem__suites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    0,
};

static int wait_fd(rmem_client *c, short events);

struct rmem__tls {
  mbedtls_ssl_context ssl;
  mbedtls_ssl_config conf;
  mbedtls_x509_crt ca, cert;
  mbedtls_pk_context key;
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  int has_cert;      /* A client certificate is offered. */
  unsigned char *ra; /* Read-ahead: one recv brings several records. */
  size_t ra_off, ra_len;
  int sock_errno;      /* errno of the last failed send or recv. */
  int rc;              /* The mbedTLS error behind the last EPROTO. */
  unsigned char first; /* The first byte received: 0 from a plaintext rmemd. */
  size_t got;          /* Bytes received so far (up to a few). */
};

static void tls_free(rmem__tls *t) {
  if (t == NULL)
    return;
  mbedtls_ssl_free(&t->ssl);
  mbedtls_ssl_config_free(&t->conf);
  mbedtls_x509_crt_free(&t->ca);
  mbedtls_x509_crt_free(&t->cert);
  mbedtls_pk_free(&t->key);
  mbedtls_ctr_drbg_free(&t->drbg);
  mbedtls_entropy_free(&t->entropy);
  free(t->ra);
  free(t);
}

static int tls_send_cb(void *ctx, const unsigned char *buf, size_t len) {
  rmem_client *c = ctx;
  ssize_t n;
  do
    n = send(c->fd, buf, len < INT_MAX ? len : INT_MAX, MSG_NOSIGNAL | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n >= 0)
    return (int)n;
  if (errno == EAGAIN || errno == EWOULDBLOCK)
    return MBEDTLS_ERR_SSL_WANT_WRITE;
  c->tls->sock_errno = errno;
  return MBEDTLS_ERR_NET_SEND_FAILED;
}

/* mbedTLS asks for a record header, then for its body: the read-ahead
 * buffer turns those two recv calls per record into one per several
 * records. WANT_READ only when it is empty and so is the socket, so a poll
 * after WANT_READ never misses buffered bytes. */
static int tls_recv_cb(void *ctx, unsigned char *buf, size_t len) {
  rmem_client *c = ctx;
  rmem__tls *t = c->tls;
  if (t->ra_off == t->ra_len) {
    ssize_t n;
    do
      n = recv(c->fd, t->ra, RMEM__TLS_READAHEAD, MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n == 0)
      return 0; /* mbedTLS: MBEDTLS_ERR_SSL_CONN_EOF. */
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return MBEDTLS_ERR_SSL_WANT_READ;
      t->sock_errno = errno;
      return MBEDTLS_ERR_NET_RECV_FAILED;
    }
    if (t->got == 0)
      t->first = t->ra[0];
    t->got += (size_t)n;
    t->ra_off = 0;
    t->ra_len = (size_t)n;
  }
  size_t k = t->ra_len - t->ra_off < len ? t->ra_len - t->ra_off : len;
  if (k > INT_MAX)
    k = INT_MAX;
  memcpy(buf, t->ra + t->ra_off, k);
  t->ra_off += k;
  return (int)k;
}

/* Turns an mbedTLS result into what recv or send would have said: n >= 0,
 * or -1 with errno (EAGAIN: not yet; EPROTO: TLS failure, in tls->rc). */
static ssize_t tls_result(rmem_client *c, int rc) {
  if (rc >= 0)
    return rc;
  switch (rc) {
  case MBEDTLS_ERR_SSL_WANT_READ:
  case MBEDTLS_ERR_SSL_WANT_WRITE:
    errno = EAGAIN;
    return -1;
  case MBEDTLS_ERR_SSL_CONN_EOF:
  case MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY:
    return 0;
  case MBEDTLS_ERR_NET_SEND_FAILED:
  case MBEDTLS_ERR_NET_RECV_FAILED:
    errno = c->tls->sock_errno;
    return -1;
  }
  c->tls->rc = rc;
  errno = EPROTO;
  return -1;
}

/* recv, through TLS when it is on. */
static ssize_t io_recv(rmem_client *c, void *dst, size_t want) {
  ssize_t n;
  if (c->tls == NULL) {
    do
      n = recv(c->fd, dst, want, MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    return n;
  }
  /* Gives at most one record's bytes (16 KiB); the rest stays in mbedTLS. */
  n = tls_result(c, mbedtls_ssl_read(&c->tls->ssl, dst, want < INT_MAX ? want : INT_MAX));
  /* A read that ends a record but yields nothing (an empty record) is not EOF. */
  return n;
}

/* Sends the start of p[0..len) as one TLS record. After EAGAIN, the same
 * bytes must be offered again (mbedTLS holds the record). */
static ssize_t io_tls_send(rmem_client *c, const void *p, size_t len) {
  return tls_result(c, mbedtls_ssl_write(&c->tls->ssl, p, len));
}

/* The message for a TLS failure; returns RMEM_ETLS. */
static int tls_fail(rmem_client *c, const char *what, int rc) {
  char why[200];
  mbedtls_strerror(rc, why, sizeof(why));
  return fail(c, RMEM_ETLS, "%s %s: %s", what, c->peer, why);
}

static const char *alert_name(unsigned char a) {
  switch (a) {
  case MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE:
    return "handshake failure";
  case MBEDTLS_SSL_ALERT_MSG_BAD_CERT:
    return "bad certificate";
  case MBEDTLS_SSL_ALERT_MSG_UNSUPPORTED_CERT:
    return "unsupported certificate";
  case MBEDTLS_SSL_ALERT_MSG_CERT_UNKNOWN:
    return "certificate unknown";
  case MBEDTLS_SSL_ALERT_MSG_CERT_EXPIRED:
    return "certificate expired";
  case MBEDTLS_SSL_ALERT_MSG_UNKNOWN_CA:
    return "unknown CA";
  case MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED:
    return "access denied";
  case MBEDTLS_SSL_ALERT_MSG_PROTOCOL_VERSION:
    return "protocol version";
  case MBEDTLS_SSL_ALERT_MSG_INSUFFICIENT_SECURITY:
    return "insufficient security";
  }
  return "other";
}

/* Explains a failed handshake. */
static int tls_handshake_fail(rmem_client *c, int rc) {
  rmem__tls *t = c->tls;
  const char *need_cert =
      t->has_cert ? "" : " (it may require a client certificate: --cert and --key)";
  if (t->got > 0 && t->first == 0)
    return fail(c, RMEM_ETLS,
                "%s answered in plaintext: the agent does not speak TLS (connect "
                "without TLS, or start rmemd with --tls-cert and --tls-key)",
                c->peer);
  if (rc == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
    char info[256] = "";
    uint32_t flags = mbedtls_ssl_get_verify_result(&t->ssl);
    int n = mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags);
    for (int i = 0; i < n && info[i]; i++)
      if (info[i] == '\n')
        info[i] = i + 1 < n && info[i + 1] ? ';' : '\0';
    return fail(c, RMEM_ETLS, "the certificate of %s is not trusted: %s", c->peer, info);
  }
  if (rc == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE && t->ssl.in_msg)
    return fail(c, RMEM_ETLS, "%s refused the TLS handshake (alert: %s)%s", c->peer,
                alert_name(t->ssl.in_msg[1]),
                t->has_cert ? " (does it trust our client certificate?)" : need_cert);
  /* An agent that rejects our certificate (or its absence) may close before
   * we finish sending our part: EPIPE or a reset rather than an alert. */
  int cut = rc == MBEDTLS_ERR_SSL_CONN_EOF ||
            ((rc == MBEDTLS_ERR_NET_SEND_FAILED || rc == MBEDTLS_ERR_NET_RECV_FAILED) &&
             (t->sock_errno == EPIPE || t->sock_errno == ECONNRESET));
  if (cut)
    return fail(c, RMEM_ETLS, "%s closed the connection during the TLS handshake%s", c->peer,
                t->has_cert ? " (does it trust our client certificate?)" : need_cert);
  if (rc == MBEDTLS_ERR_NET_SEND_FAILED || rc == MBEDTLS_ERR_NET_RECV_FAILED)
    return fail(c, RMEM_ETLS, "TLS handshake with %s: %s", c->peer, strerror(t->sock_errno));
  return tls_fail(c, "TLS handshake with", rc);
}

/* Parses a SHA-256 in hex, colons allowed. */
static int parse_pin(const char *s, unsigned char out[32]) {
  size_t n = 0;
  int hi = -1;
  for (; *s; s++) {
    int v;
    if (*s == ':' && hi < 0)
      continue;
    if (*s >= '0' && *s <= '9')
      v = *s - '0';
    else if ((*s | 0x20) >= 'a' && (*s | 0x20) <= 'f')
      v = (*s | 0x20) - 'a' + 10;
    else
      return -1;
    if (hi < 0) {
      hi = v;
      continue;
    }
    if (n == 32)
      return -1;
    out[n++] = (unsigned char)(hi << 4 | v);
    hi = -1;
  }
  return n == 32 && hi < 0 ? 0 : -1;
}

static void hex_pin(const unsigned char *h, char *out) {
  for (int i = 0; i < 32; i++)
    sprintf(out + 3 * i, "%02X%s", h[i], i < 31 ? ":" : "");
}

/* 1 when the certificate names the IP address `ip` (4 or 16 bytes) in its
 * subjectAltName. mbedTLS 2.28 matches DNS names only. */
static int cert_has_ip(const mbedtls_x509_crt *crt, const unsigned char *ip, size_t len) {
  for (const mbedtls_x509_sequence *s = &crt->subject_alt_names; s; s = s->next) {
    if (s->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) && s->buf.len == len &&
        memcmp(s->buf.p, ip, len) == 0)
      return 1;
  }
  return 0;
}

/* Sets TLS up on the connected socket, runs the handshake and checks the
 * agent's certificate. */
static int tls_start(rmem_client *c, const rmem_connect_options *o, const char *host) {
  rmem__tls *t = calloc(1, sizeof(*t));
  if (t == NULL)
    return fail(c, RMEM_ENOMEM, "out of memory");
  c->tls = t;
  mbedtls_ssl_init(&t->ssl);
  t->ra = malloc(RMEM__TLS_READAHEAD);
  mbedtls_ssl_config_init(&t->conf);
  mbedtls_x509_crt_init(&t->ca);
  mbedtls_x509_crt_init(&t->cert);
  mbedtls_pk_init(&t->key);
  mbedtls_entropy_init(&t->entropy);
  mbedtls_ctr_drbg_init(&t->drbg);

  if (t->ra == NULL)
    return fail(c, RMEM_ENOMEM, "out of memory");
  unsigned char pin[32];
  if (o->pin_sha256 && parse_pin(o->pin_sha256, pin) != 0)
    return fail(c, RMEM_EPARAM, "pin '%s' is not a SHA-256 in hex (64 digits, colons allowed)",
                o->pin_sha256);
  unsigned char ip[16];
  size_t iplen = inet_pton(AF_INET, host, ip) == 1    ? 4
                 : inet_pton(AF_INET6, host, ip) == 1 ? 16
                                                      : 0;

  int rc = mbedtls_ctr_drbg_seed(&t->drbg, mbedtls_entropy_func, &t->entropy,
                                 (const unsigned char *)"librmem", 7);
  if (rc != 0)
    return tls_fail(c, "TLS random generator for", rc);
  if (o->ca_file && (rc = mbedtls_x509_crt_parse_file(&t->ca, o->ca_file)) != 0) {
    if (rc > 0)
      return fail(c, RMEM_ETLS, "CA file %s: %d certificates could not be parsed", o->ca_file, rc);
    char why[160];
    mbedtls_strerror(rc, why, sizeof(why));
    return fail(c, RMEM_ETLS, "CA file %s: %s", o->ca_file, why);
  }
  if (o->cert_file) {
    char why[160] = "";
    const char *bad = NULL;
    if ((rc = mbedtls_x509_crt_parse_file(&t->cert, o->cert_file)) != 0)
      bad = o->cert_file;
    else if ((rc = mbedtls_pk_parse_keyfile(&t->key, o->key_file, NULL)) != 0)
      bad = o->key_file;
    else if ((rc = mbedtls_pk_check_pair(&t->cert.pk, &t->key)) != 0)
      bad = "client certificate and key do not match";
    if (bad) {
      if (rc < 0)
        mbedtls_strerror(rc, why, sizeof(why));
      return fail(c, RMEM_ETLS, "%s: %s", bad, rc < 0 ? why : "unparsable certificates");
    }
    t->has_cert = 1;
  }
  rc = mbedtls_ssl_config_defaults(&t->conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                   MBEDTLS_SSL_PRESET_DEFAULT);
  if (rc == 0 && t->has_cert)
    rc = mbedtls_ssl_conf_own_cert(&t->conf, &t->cert, &t->key);
  if (rc != 0)
    return tls_fail(c, "TLS configuration for", rc);
  mbedtls_ssl_conf_rng(&t->conf, mbedtls_ctr_drbg_random, &t->drbg);
  mbedtls_ssl_conf_min_version(&t->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
  mbedtls_ssl_conf_ciphersuites(&t->conf, rmem__suites);
  if (o->ca_file) {
    mbedtls_ssl_conf_ca_chain(&t->conf, &t->ca, NULL);
    mbedtls_ssl_conf_authmode(&t->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
  } else {
    /* Pin only: the chain is not checked, the exact certificate is, below. */
    mbedtls_ssl_conf_authmode(&t->conf, MBEDTLS_SSL_VERIFY_OPTIONAL);
  }
  rc = mbedtls_ssl_setup(&t->ssl, &t->conf);
  /* Names are checked by mbedTLS; IP addresses below (and sent as no SNI). */
  if (rc == 0)
    rc = mbedtls_ssl_set_hostname(&t->ssl, o->ca_file && iplen == 0 ? host : NULL);
  if (rc != 0)
    return tls_fail(c, "TLS setup for", rc);
  mbedtls_ssl_set_bio(&t->ssl, c, tls_send_cb, tls_recv_cb, NULL);

  for (;;) {
    rc = mbedtls_ssl_handshake(&t->ssl);
    if (rc == 0)
      break;
    if (rc != MBEDTLS_ERR_SSL_WANT_READ && rc != MBEDTLS_ERR_SSL_WANT_WRITE)
      return tls_handshake_fail(c, rc);
    int ev = wait_fd(c, rc == MBEDTLS_ERR_SSL_WANT_READ ? POLLIN : POLLOUT);
    if (ev < 0)
      return ev;
    if (ev == 0)
      return fail(c, RMEM_ETIMEDOUT, "TLS handshake with %s: no progress within %d ms", c->peer,
                  c->timeout_ms);
  }

  const mbedtls_x509_crt *crt = mbedtls_ssl_get_peer_cert(&t->ssl);
  if (crt == NULL)
    return fail(c, RMEM_ETLS, "%s sent no certificate", c->peer);
  if (o->pin_sha256) {
    unsigned char h[32];
    if (mbedtls_sha256_ret(crt->raw.p, crt->raw.len, h, 0) != 0)
      return fail(c, RMEM_ETLS, "cannot hash the certificate of %s", c->peer);
    if (memcmp(h, pin, sizeof(h)) != 0) {
      char got[97];
      hex_pin(h, got);
      return fail(c, RMEM_ETLS, "the certificate of %s does not match the pin: its SHA-256 is %s",
                  c->peer, got);
    }
  }
  if (o->ca_file && iplen && !cert_has_ip(crt, ip, iplen))
    return fail(c, RMEM_ETLS, "the certificate of %s is not issued for IP address %s", c->peer,
                host);
  return 0;
}

/* 1 when the socket's peer is on a loopback address. */
static int peer_is_loopback(int fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
    return 0;
  if (ss.ss_family == AF_INET)
    return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
  if (ss.ss_family == AF_INET6) {
    const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
  }
  return 0;
}

/* One recv without waiting. Returns bytes received, 0 when none are
 * available yet, or a negative code (the connection is then broken). */
static ssize_t rx_read(rmem_client *c) {
  /* Big runs of bytes are received in place, exactly up to their end. */
  char *dst = NULL;
  size_t want = 0;
  if (c->rx_state == RX_DIRECT && c->direct_dst && c->direct_left >= RMEM__DIRECT) {
    dst = c->direct_dst;
    want = c->direct_left;
  } else if (c->rx_state == RX_BODY && c->cur->len - c->cur_got >= RMEM__DIRECT) {
    dst = c->cur->buf + c->cur_got;
    want = c->cur->len - c->cur_got;
  }
  ssize_t n;
  if (dst) {
    n = io_recv(c, dst, want);
    if (n > 0) {
      if (c->rx_state == RX_DIRECT) {
        c->direct_dst += n;
        c->direct_left -= (size_t)n;
      } else {
        c->cur_got += (size_t)n;
      }
      int rc = rx_advance(c);
      return rc != 0 ? rc : n;
    }
  } else {
    if (c->stage == NULL) {
      c->stage = malloc(RMEM__STAGE);
      if (c->stage == NULL)
        return breakdown(c, fail(c, RMEM_ENOMEM, "out of memory"));
    }
    n = io_recv(c, c->stage, RMEM__STAGE);
    if (n > 0) {
      int rc = rx_feed(c, c->stage, (size_t)n);
      return rc != 0 ? rc : n;
    }
  }
  if (n == 0) {
    int mid = c->rx_state != RX_HDR || c->hdr_got != 0;
    return breakdown(c, fail(c, RMEM_ECLOSED, "connection to %s closed by the agent%s", c->peer,
                             mid ? " in the middle of a frame" : ""));
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK)
    return 0;
  if (c->tls && errno == EPROTO)
    return breakdown(c, tls_fail(c, "TLS from", c->tls->rc));
  int e = errno;
  return breakdown(c, fail(c, e == ECONNRESET ? RMEM_ECLOSED : RMEM_ECONNECT, "recv from %s: %s",
                           c->peer, strerror(e)));
}

/* Waits for `events` on the socket. Returns the revents, 0 on timeout, or a
 * negative code. */
static int wait_fd(rmem_client *c, short events) {
  struct pollfd pfd = {.fd = c->fd, .events = events};
  for (;;) {
    int n = poll(&pfd, 1, c->timeout_ms);
    if (n > 0)
      return pfd.revents;
    if (n == 0)
      return 0;
    if (errno != EINTR)
      return breakdown(c, fail(c, RMEM_EINTERNAL, "poll: %s", strerror(errno)));
  }
}

/* Reads frames until the reply to `msgid` has arrived. */
static int rx_until(rmem_client *c, uint32_t msgid) {
  for (;;) {
    rmem__pend *p = pend_find(c, msgid);
    if (p == NULL)
      return fail(c, RMEM_EPARAM, "no request %u is pending", (unsigned)msgid);
    if (p->reply)
      return 0;
    if (c->broken)
      return c->broken; /* The stream cannot be read on; the message stays. */
    ssize_t n = rx_read(c);
    if (n < 0)
      return (int)n;
    if (n > 0)
      continue;
    int ev = wait_fd(c, POLLIN);
    if (ev < 0)
      return ev;
    if (ev == 0)
      return fail(c, RMEM_ETIMEDOUT, "no reply from %s within %d ms", c->peer, c->timeout_ms);
  }
}

/* Sending. */

/* Sends the queued requests in `out`, then `body` (may be NULL), whole.
 * While the socket is full, replies keep being read so that the agent, which
 * stops reading when its output backs up, can always make progress. */
static int tx_flush(rmem_client *c, const void *body, size_t bodylen) {
  if (c->broken) {
    c->out.len = 0;
    return c->broken;
  }
  struct iovec iov[2] = {{c->out.data, c->out.len}, {(void *)body, bodylen}};
  int niov = bodylen ? 2 : 1;
  struct iovec *v = iov;
  size_t left = c->out.len + bodylen;
  c->out.len = 0;
  while (left > 0) {
    ssize_t n;
    if (c->tls) {
      /* One record at a time, from the iovec in turn. */
      while (v->iov_len == 0) {
        v++;
        niov--;
      }
      n = io_tls_send(c, v->iov_base, v->iov_len);
    } else {
      struct msghdr mh = {.msg_iov = v, .msg_iovlen = (size_t)niov};
      n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    if (n > 0) {
      left -= (size_t)n;
      while (niov > 0 && (size_t)n >= v->iov_len) {
        n -= (ssize_t)v->iov_len;
        v++;
        niov--;
      }
      if (niov > 0) {
        v->iov_base = (char *)v->iov_base + n;
        v->iov_len -= (size_t)n;
      }
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && c->tls && errno == EPROTO)
      return breakdown(c, tls_fail(c, "TLS to", c->tls->rc));
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      int e = errno;
      int code = e == EPIPE || e == ECONNRESET ? RMEM_ECLOSED : RMEM_ECONNECT;
      return breakdown(c, fail(c, code, "send to %s: %s", c->peer, strerror(e)));
    }
    int ev = wait_fd(c, POLLOUT | POLLIN);
    if (ev < 0)
      return ev;
    if (ev == 0)
      /* Part of a frame may be on the wire: the stream cannot be resumed. */
      return breakdown(c, fail(c, RMEM_ETIMEDOUT, "sending to %s: no progress within %d ms",
                               c->peer, c->timeout_ms));
    if (ev & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t r = rx_read(c);
      if (r < 0)
        return (int)r;
    }
  }
  return 0;
}

/* Request helpers. */

/* Registers a new call and starts its frame in `out`; the caller packs the
 * request with p->msgid and then hands it to call(). */
static rmem__pend *begin_call(rmem_client *c, msgpack_packer *pk, size_t *start) {
  rmem__pend *p = pend_add(c, PEND_CALL);
  if (p == NULL) {
    fail(c, RMEM_ENOMEM, "out of memory");
    return NULL;
  }
  *start = c->out.len;
  codec_frame_begin(&c->out, pk);
  return p;
}

/* Closes the frame that starts at `start` of `out`. */
static int queue_end(rmem_client *c, size_t start) {
  int rc = codec_frame_end(&c->out, start);
  if (rc != 0) {
    c->out.len = start;
    c->out.oom = 0;
    return fail(c, rc, "cannot build request: %s", rmem_strerror(rc));
  }
  return 0;
}

/* Turns an error object into a code and keeps its message. */
static int reply_error(rmem_client *c, const msgpack_object *error) {
  int code = RMEM_EPROTO;
  char msg[sizeof(c->err)] = "";
  if (msg_error_parse(error, &code, msg, sizeof(msg)) != 0 || code >= 0)
    return fail(c, RMEM_EPROTO, "%s sent an invalid error object", c->peer);
  snprintf(c->err, sizeof(c->err), "%s", msg[0] ? msg : rmem_strerror(code));
  return code;
}

/* Waits for the reply to `msgid` and takes it off the pending list. */
static int take_reply(rmem_client *c, uint32_t msgid, rmem__pend *out, rmem__frame **f) {
  int rc = rx_until(c, msgid);
  if (rc != 0)
    return rc;
  rmem__pend *p = pend_find(c, msgid);
  *out = *p;
  *f = p->reply;
  pend_remove(c, p);
  return 0;
}

/* Gives up on a request: its reply is dropped when it arrives. */
static void abandon(rmem_client *c, uint32_t msgid) {
  rmem__pend *p = pend_find(c, msgid);
  if (p == NULL)
    return;
  if (p->reply) {
    frame_put(c, p->reply);
    pend_remove(c, p);
    return;
  }
  p->abandoned = 1;
  /* Its buffer may go away now: drop the rest of any data on its way there. */
  if (c->rx_state == RX_DIRECT && c->direct_id == msgid)
    c->direct_dst = NULL;
}

/* Sends the request framed at `start` of `out` and waits for its result,
 * which the caller parses and then releases with frame_put. */
static int call(rmem_client *c, const char *what, uint32_t msgid, size_t start, rmem__frame **f) {
  *f = NULL;
  int rc = queue_end(c, start);
  if (rc != 0) {
    pend_remove(c, pend_find(c, msgid));
    return rc;
  }
  rc = tx_flush(c, NULL, 0);
  if (rc == 0)
    rc = take_reply(c, msgid, &(rmem__pend){0}, f);
  if (rc != 0) {
    abandon(c, msgid);
    return rc;
  }
  if ((*f)->msg.error) {
    rc = reply_error(c, (*f)->msg.error);
  } else if ((*f)->msg.result == NULL) {
    rc = fail(c, RMEM_EPROTO, "%s sent an empty result for %s", c->peer, what);
  }
  if (rc != 0) {
    frame_put(c, *f);
    *f = NULL;
  }
  return rc;
}

/* Connecting. */

static void addr_str(const struct sockaddr *sa, socklen_t len, char *out, size_t n) {
  char host[INET6_ADDRSTRLEN] = "?", serv[8] = "?";
  getnameinfo(sa, len, host, sizeof(host), serv, sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV);
  if (sa->sa_family == AF_INET6)
    snprintf(out, n, "[%s]:%s", host, serv);
  else
    snprintf(out, n, "%s:%s", host, serv);
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Connects to one address within the deadline (-1: none). Returns the fd, or
 * a negative code with a message in c->err. */
static int connect_one(rmem_client *c, const struct addrinfo *ai, long long deadline) {
  addr_str(ai->ai_addr, ai->ai_addrlen, c->peer, sizeof(c->peer));
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0)
    return fail(c, RMEM_ECONNECT, "connect %s: socket: %s", c->peer, strerror(errno));
  int err = 0;
  if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
    err = errno;
    if (err == EINPROGRESS || err == EINTR) {
      struct pollfd pfd = {.fd = fd, .events = POLLOUT};
      int n;
      do {
        int wait = -1;
        if (deadline >= 0) {
          long long left = deadline - now_ms();
          wait = left > 0 ? (int)left : 0;
        }
        n = poll(&pfd, 1, wait);
      } while (n < 0 && errno == EINTR);
      if (n == 0) {
        close(fd);
        return fail(c, RMEM_ETIMEDOUT, "connect %s: timed out after %d ms", c->peer, c->timeout_ms);
      }
      socklen_t sl = sizeof(err);
      if (n < 0)
        err = errno;
      else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) != 0)
        err = errno;
    }
  }
  if (err != 0) {
    close(fd);
    return fail(c, err == ETIMEDOUT ? RMEM_ETIMEDOUT : RMEM_ECONNECT, "connect %s: %s", c->peer,
                strerror(err));
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

/* Says hello, with the token when there is one, offering lz4 when asked to. */
static int hello(rmem_client *c, const char *token, int compress) {
  msgpack_packer pk;
  size_t start;
  rmem__pend *p = begin_call(c, &pk, &start);
  if (p == NULL)
    return RMEM_ENOMEM;
  msg_hello_req req = {.version = CODEC_PROTOCOL_VERSION};
  snprintf(req.client, sizeof(req.client), "librmem/%s", RMEM_VERSION);
  if (token) {
    req.has_token = 1;
    req.token_len = strlen(token);
    memcpy(req.token, token, req.token_len);
  }
  if (compress)
    req.compress = MSG_COMPRESS_LZ4;
  msg_hello_req_pack(&pk, p->msgid, &req);
  mbedtls_platform_zeroize(&req, sizeof(req));
  rmem__frame *f;
  int rc = call(c, "hello", p->msgid, start, &f);
  /* The request, token included, has been sent (or dropped): wipe it. */
  mbedtls_platform_zeroize(c->out.data, c->out.cap);
  if (rc != 0) {
    if (rc == RMEM_ETIMEDOUT)
      fail(c, rc, "hello to %s: no reply within %d ms (is it an rmemd?)", c->peer, c->timeout_ms);
    else if (rc == RMEM_EPROTO && strlen(c->err) + 20 < sizeof(c->err))
      strcat(c->err, " (is it an rmemd?)");
    return rc;
  }
  codec_err e = {0};
  rc = msg_hello_res_parse(f->msg.result, &c->info, &e);
  frame_put(c, f);
  if (rc != 0)
    return fail(c, RMEM_EPROTO, "%s sent an invalid hello reply: %s", c->peer, e.msg);
  if (c->info.max_read == 0 || c->info.max_write == 0)
    return fail(c, RMEM_EPROTO, "%s announced a zero max_read or max_write", c->peer);
  if (c->info.compress[0] && (!compress || strcmp(c->info.compress, COMPRESS_LZ4_NAME) != 0))
    return fail(c, RMEM_EPROTO, "%s chose compression '%s', which was not offered", c->peer,
                c->info.compress);
  c->lz4 = c->info.compress[0] != '\0';
  /* The agent's word bounds what we accept, but never past our own ceiling:
   * a hostile agent must not make us allocate gigabytes. */
  if (c->info.max_frame > 0)
    c->max_frame = c->info.max_frame < RMEM__MAX_FRAME ? c->info.max_frame : RMEM__MAX_FRAME;
  c->window = RMEM__WINDOW;
  if (c->info.max_inflight > 0 && c->info.max_inflight < c->window)
    c->window = c->info.max_inflight;
  return 0;
}

static int norm_timeout(int timeout_ms) {
  if (timeout_ms == 0)
    return RMEM__DEFAULT_TIMEOUT_MS;
  return timeout_ms < 0 ? -1 : timeout_ms;
}

int rmem_connect(rmem_client **out, const char *host, uint16_t port, int timeout_ms) {
  rmem_connect_options o = {.host = host, .port = port, .timeout_ms = timeout_ms};
  return rmem_connect_opts(out, &o);
}

/* Checks the options before anything is attempted. */
static int check_options(rmem_client *c, const rmem_connect_options *o) {
  if (!o->tls && (o->ca_file || o->pin_sha256 || o->cert_file || o->key_file))
    return fail(c, RMEM_EPARAM, "a CA file, pin or client certificate needs TLS");
  if (o->tls && !o->ca_file && !o->pin_sha256)
    return fail(c, RMEM_EPARAM,
                "TLS needs a way to check the agent's certificate: a CA file or a pin");
  if (!o->cert_file != !o->key_file)
    return fail(c, RMEM_EPARAM, "a client certificate needs its key, and a key its certificate");
  if (o->token && (o->token[0] == '\0' || strlen(o->token) > RMEM_TOKEN_MAX))
    return fail(c, RMEM_EPARAM, "the token must have 1 to %d bytes", RMEM_TOKEN_MAX);
  return 0;
}

int rmem_connect_opts(rmem_client **out, const rmem_connect_options *opts) {
  *out = NULL;
  connect_err[0] = '\0';
  static const rmem_connect_options defaults = {0};
  const rmem_connect_options *o = opts ? opts : &defaults;
  const char *host = o->host;
  uint16_t port = o->port;
  rmem_client *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    snprintf(connect_err, sizeof(connect_err), "out of memory");
    return RMEM_ENOMEM;
  }
  c->fd = -1;
  c->next_id = 1;
  c->max_frame = CODEC_DEFAULT_MAX_FRAME;
  c->timeout_ms = norm_timeout(o->timeout_ms);
  struct addrinfo *res = NULL;
  int rc = check_options(c, o);
  if (rc != 0)
    goto exit;
  if (host == NULL || *host == '\0')
    host = "127.0.0.1";
  if (port == 0)
    port = RMEM_DEFAULT_PORT;
  snprintf(c->peer, sizeof(c->peer), "%s:%u", host, (unsigned)port);

  char serv[8];
  snprintf(serv, sizeof(serv), "%u", (unsigned)port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  rc = getaddrinfo(host, serv, &hints, &res);
  if (rc != 0) {
    rc = fail(c, RMEM_ECONNECT, "resolve %s: %s", host,
              rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
    goto exit;
  }
  long long deadline = c->timeout_ms < 0 ? -1 : now_ms() + c->timeout_ms;
  rc = RMEM_ECONNECT;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    rc = connect_one(c, ai, deadline);
    if (rc >= 0) {
      c->fd = rc;
      rc = 0;
      break;
    }
    if (rc == RMEM_ETIMEDOUT)
      break;
  }
  /* Whoever sees the traffic would have the secret. */
  if (rc == 0 && o->token && !o->tls && !peer_is_loopback(c->fd))
    rc = fail(c, RMEM_EPERM, "refusing to send the token in the clear to %s: use TLS", c->peer);
  if (rc == 0 && o->tls)
    rc = tls_start(c, o, host);
  if (rc == 0)
    rc = hello(c, o->token, o->compress);

exit:
  if (res)
    freeaddrinfo(res);
  if (rc != 0) {
    snprintf(connect_err, sizeof(connect_err), "%s", c->err);
    rmem_close(c);
    return rc;
  }
  *out = c;
  return 0;
}

void rmem_close(rmem_client *c) {
  if (c == NULL)
    return;
  if (c->tls && !c->broken)
    mbedtls_ssl_close_notify(&c->tls->ssl); /* Best effort: it never waits. */
  tls_free(c->tls);
  if (c->fd >= 0)
    close(c->fd);
  for (size_t i = 0; i < c->npend; i++)
    frame_destroy(c->pend[i].reply);
  free(c->pend);
  frame_destroy(c->cur);
  while (c->free_frames) {
    rmem__frame *f = c->free_frames;
    c->free_frames = f->next;
    frame_destroy(f);
  }
  free(c->stage);
  codec_buf_free(&c->out);
  free(c->scratch.v);
  free(c);
}

void rmem_set_timeout(rmem_client *c, int timeout_ms) {
  c->timeout_ms = norm_timeout(timeout_ms);
}

const rmem_agent_info *rmem_info(const rmem_client *c) {
  return &c->info;
}

const char *rmem_last_error(const rmem_client *c) {
  return c ? c->err : connect_err;
}

/* ps and map. */

/* A malicious or broken agent must not make us grow without bound by
 * continuing a listing for ever. */
#define RMEM_MAX_LISTED (1u << 22)

int rmem_ps(rmem_client *c, rmem_proc_list *out) {
  memset(out, 0, sizeof(*out));
  int rc = check_usable(c);
  if (rc != 0)
    return rc;
  uint32_t from = 0;
  for (;;) {
    msgpack_packer pk;
    size_t start;
    rmem__pend *p = begin_call(c, &pk, &start);
    if (p == NULL) {
      rc = RMEM_ENOMEM;
      break;
    }
    msg_ps_req_pack(&pk, p->msgid, from);
    rmem__frame *f;
    rc = call(c, "ps", p->msgid, start, &f);
    if (rc != 0)
      break;
    codec_err e = {0};
    int has_next = 0;
    uint32_t next = 0;
    size_t before = out->n;
    rc = msg_ps_res_parse(f->msg.result, out, &has_next, &next, &e);
    frame_put(c, f);
    if (rc != 0) {
      rc = fail(c, RMEM_EPROTO, "%s sent an invalid ps reply: %s", c->peer, e.msg);
      break;
    }
    if (!has_next)
      break;
    if (next <= from || out->n == before || out->n > RMEM_MAX_LISTED) {
      rc = fail(c, RMEM_EPROTO, "%s sent a ps continuation that does not advance (%u)", c->peer,
                next);
      break;
    }
    from = next;
  }
  if (rc != 0)
    rmem_proc_list_free(out);
  return rc;
}

int rmem_map(rmem_client *c, uint32_t pid, unsigned flags, rmem_memmap *out) {
  memset(out, 0, sizeof(*out));
  int rc = check_usable(c);
  if (rc != 0)
    return rc;
  msg_map_req req = {
      .pid = pid, .free = (flags & RMEM_MAP_FREE) != 0, .detail = (flags & RMEM_MAP_DETAIL) != 0};
  for (;;) {
    msgpack_packer pk;
    size_t start;
    rmem__pend *p = begin_call(c, &pk, &start);
    if (p == NULL) {
      rc = RMEM_ENOMEM;
      break;
    }
    msg_map_req_pack(&pk, p->msgid, &req);
    rmem__frame *f;
    rc = call(c, "map", p->msgid, start, &f);
    if (rc != 0)
      break;
    codec_err e = {0};
    int has_next = 0;
    uint64_t next = 0;
    size_t before = out->n;
    rc = msg_map_res_parse(f->msg.result, out, &has_next, &next, &e);
    frame_put(c, f);
    if (rc != 0) {
      rc = fail(c, RMEM_EPROTO, "%s sent an invalid map reply: %s", c->peer, e.msg);
      break;
    }
    if (!has_next)
      break;
    /* A continuation must move forward, or we would loop for ever. */
    if (next <= req.start || out->n == before || out->n > RMEM_MAX_LISTED) {
      rc = fail(c, RMEM_EPROTO, "%s sent a map continuation that does not advance (0x%llx)",
                c->peer, (unsigned long long)next);
      break;
    }
    req.start = next;
  }
  if (rc != 0) {
    rmem_memmap_free(out);
    return rc;
  }
  out->pid = pid;
  return 0;
}

/* Read and write. */

/* Appends a range, merging it with the last one when they touch and share a
 * reason, as long as that one was added by this call (index >= `first`). */
static int ranges_add(rmem_ranges *r, size_t first, uint64_t addr, uint64_t len, int code) {
  if (r == NULL || len == 0)
    return 0;
  return r->n > first ? msg_ranges_add(r, addr, len, code) : msg_ranges_push(r, addr, len, code);
}

/* Checks the ranges of one reply (in c->scratch) against its request
 * [addr, addr+len): in order, disjoint, inside. Returns their byte total, or
 * -1 when they are not. */
static long long ranges_check(const rmem_ranges *r, uint64_t addr, uint64_t len) {
  uint64_t at = addr, total = 0;
  for (size_t i = 0; i < r->n; i++) {
    const rmem_range *h = &r->v[i];
    if (h->addr < at || h->len == 0 || h->len > len || h->addr - addr > len - h->len ||
        h->code >= 0)
      return -1;
    at = h->addr + h->len;
    total += h->len;
  }
  return (long long)total;
}

/* Completes a read or write from its reply. Ranges go to `ranges` (merged
 * from index `first` on); what a read says about itself (bytes from the
 * agent's cache, compressed bytes) is added to *info (may be NULL). Returns
 * bytes transferred or a negative code. For RMEM_EFAULT, the whole request
 * is recorded as one range too. */
static ssize_t complete_io(rmem_client *c, const rmem__pend *p, rmem__frame *f, rmem_ranges *ranges,
                           size_t first, rmem_read_info *info) {
  const char *verb = p->kind == PEND_READ ? "read" : "write";
  ssize_t rc;
  c->scratch.n = 0;
  if (f->msg.error) {
    rc = reply_error(c, f->msg.error);
    if (rc == RMEM_EFAULT) {
      if (p->kind == PEND_READ)
        memset(p->dest, 0, p->len);
      /* The agent lists why for every byte; an agent that does not leaves the
       * reason as RMEM_EFAULT rather than a guess. */
      codec_err e = {0};
      int got = msg_fault_parse(f->msg.error, &c->scratch, &e);
      if (got < 0 ||
          (got == 0 && ranges_check(&c->scratch, p->addr, p->len) != (long long)p->len)) {
        rc = breakdown(c, fail(c, RMEM_EPROTO, "%s sent invalid holes with RMEM_EFAULT", c->peer));
        goto exit;
      }
      if (got == 1)
        msg_ranges_push(&c->scratch, p->addr, p->len, RMEM_EFAULT);
      for (size_t i = 0; i < c->scratch.n; i++)
        if (ranges_add(ranges, first, c->scratch.v[i].addr, c->scratch.v[i].len,
                       c->scratch.v[i].code) != 0)
          rc = fail(c, RMEM_ENOMEM, "out of memory");
    }
    goto exit;
  }
  codec_err e = {0};
  uint64_t done = 0;
  if (p->kind == PEND_READ) {
    const char *data = NULL;
    size_t n = 0;
    uint64_t from_cache = 0, lz4_len = 0;
    rc = f->msg.result
             ? msg_read_res_parse(f->msg.result, &data, &n, &lz4_len, &c->scratch, &from_cache, &e)
             : codec_fail(&e, RMEM_EPARAM, "no result");
    if (rc == 0 && from_cache > p->len)
      rc = codec_fail(&e, RMEM_EPARAM, "%llu cached bytes for a %zu-byte read",
                      (unsigned long long)from_cache, p->len);
    if (rc == 0 && lz4_len) {
      /* Untrusted: the block must expand to exactly the bytes asked for, and
       * lz4 never writes past them. Direct placement never takes a
       * compressed reply, since its data is not first; an agent that puts
       * it first anyway is caught here. */
      if (!c->lz4 || p->direct)
        rc = codec_fail(&e, RMEM_EPARAM, "compressed data that was not agreed on");
      else if (lz4_len != p->len)
        rc = codec_fail(&e, RMEM_EPARAM, "an lz4 block of %llu bytes for a %zu-byte read",
                        (unsigned long long)lz4_len, p->len);
      else
        rc = compress_lz4_unpack(data, n, p->dest, p->len, &e);
      if (rc == 0 && info) {
        info->compressed_bytes += n;
        info->decompressed_bytes += p->len;
      }
    } else if (rc == 0) {
      /* With direct placement the data is in place already and the bin is empty. */
      size_t want = p->direct ? 0 : p->len;
      if (n != want)
        rc = codec_fail(&e, RMEM_EPARAM, "%zu bytes of data for a %zu-byte read", n, p->len);
      if (rc == 0 && n > 0)
        memcpy(p->dest, data, n);
    }
    if (rc == 0 && info)
      info->cached_bytes += from_cache;
  } else {
    rc = f->msg.result ? msg_write_res_parse(f->msg.result, &done, &c->scratch, &e)
                       : codec_fail(&e, RMEM_EPARAM, "no result");
  }
  long long bad = rc == 0 ? ranges_check(&c->scratch, p->addr, p->len) : 0;
  if (rc == 0 && bad < 0)
    rc = codec_fail(&e, RMEM_EPARAM, "ranges outside the request or out of order");
  if (rc == 0 && p->kind == PEND_WRITE && (done > p->len || done + (uint64_t)bad > p->len))
    rc = codec_fail(&e, RMEM_EPARAM, "written %llu of %zu bytes with %lld failed",
                    (unsigned long long)done, p->len, bad);
  if (rc != 0) {
    rc =
        breakdown(c, fail(c, RMEM_EPROTO, "%s sent an invalid %s reply: %s", c->peer, verb, e.msg));
    goto exit;
  }
  if (p->kind == PEND_READ)
    done = p->len - (uint64_t)bad;
  for (size_t i = 0; i < c->scratch.n; i++) {
    const rmem_range *h = &c->scratch.v[i];
    if (ranges_add(ranges, first, h->addr, h->len, h->code) != 0) {
      rc = fail(c, RMEM_ENOMEM, "out of memory");
      goto exit;
    }
  }
  rc = (ssize_t)done;
exit:
  frame_put(c, f);
  return rc;
}

/* Frames one read request into `out` and records it as pending. `opts` may
 * be NULL. */
static int queue_read(rmem_client *c, uint32_t pid, uint64_t addr, void *buf, size_t len,
                      const rmem_read_opts *opts, uint32_t *id) {
  rmem__pend *p = pend_add(c, PEND_READ);
  if (p == NULL)
    return fail(c, RMEM_ENOMEM, "out of memory");
  p->pid = pid;
  p->addr = addr;
  p->dest = buf;
  p->len = len;
  *id = p->msgid;
  msgpack_packer pk;
  size_t start = c->out.len;
  codec_frame_begin(&c->out, &pk);
  msg_read_req req = {.pid = pid, .addr = addr, .len = len};
  if (opts) {
    req.max_age_ms = opts->max_age_ms;
    req.uncached = opts->uncached != 0;
  }
  msg_read_req_pack(&pk, *id, &req);
  int rc = queue_end(c, start);
  if (rc != 0)
    pend_remove(c, pend_find(c, *id));
  return rc;
}

/* Frames a write request's head into `out` (the data follows it on the wire,
 * straight from the caller's buffer) and records it as pending. */
static int queue_write(rmem_client *c, uint32_t pid, uint64_t addr, size_t len, uint32_t *id) {
  rmem__pend *p = pend_add(c, PEND_WRITE);
  if (p == NULL)
    return fail(c, RMEM_ENOMEM, "out of memory");
  p->pid = pid;
  p->addr = addr;
  p->len = len;
  *id = p->msgid;
  msgpack_packer pk;
  size_t start = c->out.len;
  codec_frame_begin(&c->out, &pk);
  msg_write_req_head(&pk, *id, pid, addr, len);
  int rc = c->out.oom ? RMEM_ENOMEM : 0;
  if (rc == 0) {
    size_t n = c->out.len - start - CODEC_FRAME_HDR + len;
    if (n > UINT32_MAX)
      rc = RMEM_ETOOBIG;
    else
      codec_frame_put_len(c->out.data + start, (uint32_t)n);
  }
  if (rc != 0) {
    c->out.len = start;
    c->out.oom = 0;
    pend_remove(c, pend_find(c, *id));
    return fail(c, rc, "cannot build write request: %s", rmem_strerror(rc));
  }
  return 0;
}

/* The longest piece one request may carry: the agent's limit, kept inside a
 * frame. */
static size_t piece_max(const rmem_client *c, uint64_t limit) {
  uint64_t m = limit;
  if (c->max_frame > 2 * RMEM__FRAME_SLACK && m > c->max_frame - RMEM__FRAME_SLACK)
    m = c->max_frame - RMEM__FRAME_SLACK;
  if (m > SIZE_MAX / 2)
    m = SIZE_MAX / 2;
  return m ? (size_t)m : 1;
}

static int check_range(rmem_client *c, const char *verb, uint64_t addr, size_t len) {
  if (len > (size_t)SSIZE_MAX || (len > 0 && addr + (len - 1) < addr))
    return fail(c, RMEM_EPARAM, "%s 0x%llx+0x%zx: range wraps around the address space", verb,
                (unsigned long long)addr, len);
  return 0;
}

int rmem_read_start(rmem_client *c, uint32_t pid, uint64_t addr, void *buf, size_t len,
                    uint32_t *id) {
  int rc = check_usable(c);
  if (rc != 0)
    return rc;
  if (len > c->info.max_read)
    return fail(c, RMEM_ETOOBIG, "read of %zu bytes is over the agent's max_read %llu", len,
                (unsigned long long)c->info.max_read);
  rc = check_range(c, "read", addr, len);
  if (rc == 0)
    rc = queue_read(c, pid, addr, buf, len, NULL, id);
  if (rc == 0) {
    rc = tx_flush(c, NULL, 0);
    if (rc != 0)
      abandon(c, *id);
  }
  return rc;
}

int rmem_write_start(rmem_client *c, uint32_t pid, uint64_t addr, const void *buf, size_t len,
                     uint32_t *id) {
  int rc = check_usable(c);
  if (rc != 0)
    return rc;
  if (len > c->info.max_write)
    return fail(c, RMEM_ETOOBIG, "write of %zu bytes is over the agent's max_write %llu", len,
                (unsigned long long)c->info.max_write);
  rc = check_range(c, "write", addr, len);
  if (rc == 0)
    rc = queue_write(c, pid, addr, len, id);
  if (rc == 0) {
    rc = tx_flush(c, buf, len);
    if (rc != 0)
      abandon(c, *id);
  }
  return rc;
}

ssize_t rmem_finish(rmem_client *c, uint32_t id, rmem_ranges *ranges) {
  rmem__pend *p = pend_find(c, id);
  if (p == NULL || p->kind == PEND_CALL || p->abandoned)
    return fail(c, RMEM_EPARAM, "no read or write %u is pending", (unsigned)id);
  rmem__pend pend;
  rmem__frame *f;
  int rc = take_reply(c, id, &pend, &f);
  if (rc != 0) {
    /* The request ends here either way, so the caller may free its buffer. */
    abandon(c, id);
    return rc;
  }
  ssize_t n = complete_io(c, &pend, f, ranges, ranges ? ranges->n : 0, NULL);
  if (n == 0 && pend.len > 0)
    return fail(c, RMEM_EFAULT, "%s pid %u 0x%llx+0x%zx: nothing could be transferred",
                pend.kind == PEND_READ ? "read" : "write", (unsigned)pend.pid,
                (unsigned long long)pend.addr, pend.len);
  return n;
}

/* Moves `len` bytes at `addr` in pieces of at most `piece`, keeping up to
 * `window` requests in flight. Reads land in `rbuf`, writes come from `wbuf`.
 * Ranges are collected in address order since replies are consumed in the
 * order the requests were sent. Reads take `opts` (may be NULL) and add
 * what their replies say to *info (may be NULL). */
static ssize_t transfer(rmem_client *c, int kind, uint32_t pid, uint64_t addr, void *rbuf,
                        const void *wbuf, size_t len, rmem_ranges *ranges,
                        const rmem_read_opts *opts, rmem_read_info *info) {
  const char *verb = kind == PEND_READ ? "read" : "write";
  int rc = check_usable(c);
  if (rc == 0)
    rc = check_range(c, verb, addr, len);
  if (rc != 0)
    return rc;
  if (len == 0)
    return 0;
  size_t piece = piece_max(c, kind == PEND_READ ? c->info.max_read : c->info.max_write);
  if (kind == PEND_READ && piece > RMEM__PIECE)
    piece = RMEM__PIECE;
  size_t npieces = len / piece + (len % piece != 0);
  size_t window = c->window ? c->window : 1;
  uint32_t ids[RMEM__WINDOW];
  size_t first = ranges ? ranges->n : 0;
  size_t issued = 0, done = 0, total = 0;
  ssize_t err = 0;
  while (done < npieces) {
    /* Keep the window full; reads go out together in one send. */
    while (err == 0 && issued < npieces && issued - done < window) {
      size_t off = issued * piece;
      size_t n = len - off < piece ? len - off : piece;
      uint32_t *id = &ids[issued % RMEM__WINDOW];
      if (kind == PEND_READ) {
        err = queue_read(c, pid, addr + off, (char *)rbuf + off, n, opts, id);
      } else {
        err = queue_write(c, pid, addr + off, n, id);
        if (err == 0)
          err = tx_flush(c, (const char *)wbuf + off, n);
      }
      if (err == 0)
        issued++;
    }
    if (err == 0 && kind == PEND_READ && c->out.len > 0)
      err = tx_flush(c, NULL, 0);
    if (err != 0)
      break;
    rmem__pend pend;
    rmem__frame *f;
    err = take_reply(c, ids[done % RMEM__WINDOW], &pend, &f);
    if (err != 0)
      break;
    done++;
    ssize_t n = complete_io(c, &pend, f, ranges, first, info);
    if (n == RMEM_EFAULT)
      continue; /* Recorded as a range; other pieces may still succeed. */
    if (n < 0) {
      err = n;
      break;
    }
    total += (size_t)n;
  }
  if (err != 0) {
    for (size_t i = done; i < issued; i++)
      abandon(c, ids[i % RMEM__WINDOW]);
    return err;
  }
  if (total == 0)
    /* The agent's own message says it best when there was one request. */
    return npieces == 1 ? RMEM_EFAULT
                        : fail(c, RMEM_EFAULT, "%s pid %u 0x%llx+0x%zx: nothing could be %s", verb,
                               (unsigned)pid, (unsigned long long)addr, len,
                               kind == PEND_READ ? "read" : "written");
  return (ssize_t)total;
}

ssize_t rmem_read(rmem_client *c, uint32_t pid, uint64_t addr, void *buf, size_t len,
                  rmem_ranges *holes) {
  return transfer(c, PEND_READ, pid, addr, buf, NULL, len, holes, NULL, NULL);
}

ssize_t rmem_read_ex(rmem_client *c, uint32_t pid, uint64_t addr, void *buf, size_t len,
                     const rmem_read_opts *opts, rmem_ranges *holes, rmem_read_info *info) {
  rmem_read_info tmp;
  if (info == NULL)
    info = &tmp;
  memset(info, 0, sizeof(*info));
  return transfer(c, PEND_READ, pid, addr, buf, NULL, len, holes, opts, info);
}

ssize_t rmem_write(rmem_client *c, uint32_t pid, uint64_t addr, const void *buf, size_t len,
                   rmem_ranges *failed) {
  return transfer(c, PEND_WRITE, pid, addr, NULL, buf, len, failed, NULL, NULL);
}

/* The page cache. */

static int cache_call(rmem_client *c, const msg_cache_req *req, rmem_cache_info *out) {
  rmem_cache_info tmp;
  if (out == NULL)
    out = &tmp;
  memset(out, 0, sizeof(*out));
  int rc = check_usable(c);
  if (rc != 0)
    return rc;
  msgpack_packer pk;
  size_t start;
  rmem__pend *p = begin_call(c, &pk, &start);
  if (p == NULL)
    return RMEM_ENOMEM;
  msg_cache_req_pack(&pk, p->msgid, req);
  rmem__frame *f;
  rc = call(c, "cache", p->msgid, start, &f);
  if (rc != 0)
    return rc;
  codec_err e = {0};
  rc = msg_cache_res_parse(f->msg.result, out, &e);
  frame_put(c, f);
  if (rc != 0)
    return fail(c, RMEM_EPROTO, "%s sent an invalid cache reply: %s", c->peer, e.msg);
  return 0;
}

int rmem_cache_stats(rmem_client *c, rmem_cache_info *out) {
  msg_cache_req req = {0};
  return cache_call(c, &req, out);
}

int rmem_cache_flush(rmem_client *c, uint32_t pid, rmem_cache_info *out) {
  msg_cache_req req = {.flush = 1, .pid = pid};
  return cache_call(c, &req, out);
}

/* Results. Each accepts a zeroed struct. */

void rmem_deref_result_free(rmem_deref_result *r) {
  if (r == NULL)
    return;
  free(r->pointers);
  rmem_ranges_free(&r->holes);
  memset(r, 0, sizeof(*r));
}

void rmem_string_free(rmem_string *s) {
  if (s == NULL)
    return;
  free(s->text);
  memset(s, 0, sizeof(*s));
}

/* Slow links: readv, deref, read_string, fill. */

/* Reply bytes budgeted per readv range besides its data (headers, one hole). */
#define RMEM__READV_PER_RANGE 128u

/* Frame bytes a request or reply may use: max_frame less some slack. */
static uint64_t frame_room(const rmem_client *c) {
  return c->max_frame > 2 * RMEM__FRAME_SLACK ? c->max_frame - RMEM__FRAME_SLACK : c->max_frame / 2;
}

/* A readv reply's size for `bytes` of data in `n` ranges, with room for the
 * holes: at most about one per 64 bytes of a range, plus one per range. */
static uint64_t readv_cost(uint64_t bytes, size_t n) {
  return bytes + bytes / 64 + (uint64_t)n * RMEM__READV_PER_RANGE;
}

/* Queues one request framed by `pack` into `out` as a plain call. Returns
 * its id in *id, or a negative code. */
static int queue_call(rmem_client *c, uint32_t *id, rmem__pend **pp, msgpack_packer *pk,
                      size_t *start) {
  *pp = begin_call(c, pk, start);
  if (*pp == NULL)
    return RMEM_ENOMEM;
  *id = (*pp)->msgid;
  return 0;
}

/* Closes a request queued with queue_call; on failure forgets it. */
static int queue_call_end(rmem_client *c, uint32_t id, size_t start) {
  int rc = queue_end(c, start);
  if (rc != 0)
    pend_remove(c, pend_find(c, id));
  return rc;
}

/* The state of one rmem_readv call: its pieces (each part of one iov, at
 * most one request's worth of bytes) and the requests in flight. */
typedef struct {
  msg_span *spans; /* Target ranges, packed into requests as they are. */
  char **bufs;     /* Where each piece's bytes go. */
  size_t *iovs;    /* The iov each piece belongs to. */
  size_t npieces;
  msg_readv_entry *entries; /* One reply's results. */
} readv_state;

/* Splits the iovs into pieces of at most `most` bytes. Zero-length iovs have
 * no piece. */
static int readv_pieces(rmem_client *c, const rmem_iov *iov, size_t n, size_t most,
                        readv_state *s) {
  size_t count = 0;
  for (size_t i = 0; i < n; i++) {
    int rc = check_range(c, "readv", iov[i].addr, iov[i].len);
    if (rc != 0)
      return rc;
    size_t k = iov[i].len / most + (iov[i].len % most != 0);
    if (k > SIZE_MAX / sizeof(msg_span) - count)
      return fail(c, RMEM_ENOMEM, "out of memory");
    count += k;
  }
  s->spans = malloc((count ? count : 1) * sizeof(*s->spans));
  s->bufs = malloc((count ? count : 1) * sizeof(*s->bufs));
  s->iovs = malloc((count ? count : 1) * sizeof(*s->iovs));
  if (s->spans == NULL || s->bufs == NULL || s->iovs == NULL)
    return fail(c, RMEM_ENOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) {
    for (size_t off = 0; off < iov[i].len; off += most) {
      size_t len = iov[i].len - off < most ? iov[i].len - off : most;
      s->spans[s->npieces] = (msg_span){.addr = iov[i].addr + off, .len = len};
      s->bufs[s->npieces] = (char *)iov[i].buf + off;
      s->iovs[s->npieces++] = i;
    }
  }
  return 0;
}

/* Takes the reply to the request for pieces [first, first + n) and places
 * its data and holes. Returns the bytes read or a negative code. */
static ssize_t readv_complete(rmem_client *c, readv_state *s, uint32_t id, size_t first, size_t n,
                              rmem_ranges *holes, size_t *iov_first, size_t *last_iov) {
  rmem__pend pend;
  rmem__frame *f;
  int rc = take_reply(c, id, &pend, &f);
  if (rc != 0)
    return rc;
  ssize_t total = 0;
  codec_err e = {0};
  size_t got = 0;
  if (f->msg.error) {
    total = reply_error(c, f->msg.error);
    goto exit;
  }
  c->scratch.n = 0;
  rc = f->msg.result ? msg_readv_res_parse(f->msg.result, s->entries, n, &got, &c->scratch, &e)
                     : codec_fail(&e, RMEM_EPROTO, "no result");
  if (rc == 0 && got != n)
    rc = codec_fail(&e, RMEM_EPROTO, "%zu results for %zu ranges", got, n);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    const msg_readv_entry *r = &s->entries[i];
    const msg_span *sp = &s->spans[first + i];
    rmem_ranges view = {.v = (rmem_range *)r->holes, .n = r->nholes};
    long long bad = ranges_check(&view, sp->addr, sp->len);
    if (r->len != sp->len || bad < 0) {
      rc = codec_fail(&e, RMEM_EPROTO, "result %zu does not match its range", i);
      break;
    }
    if (r->len)
      memcpy(s->bufs[first + i], r->data, r->len);
    /* Holes of one iov join up across its pieces, never across iovs. */
    if (s->iovs[first + i] != *last_iov) {
      *last_iov = s->iovs[first + i];
      *iov_first = holes ? holes->n : 0;
    }
    for (size_t h = 0; h < r->nholes; h++)
      if (ranges_add(holes, *iov_first, r->holes[h].addr, r->holes[h].len, r->holes[h].code) != 0)
        rc = fail(c, RMEM_ENOMEM, "out of memory");
    total += (ssize_t)(sp->len - (uint64_t)bad);
  }
  if (rc == RMEM_ENOMEM)
    total = rc;
  else if (rc != 0)
    total =
        breakdown(c, fail(c, RMEM_EPROTO, "%s sent an invalid readv reply: %s", c->peer, e.msg));
exit:
  frame_put(c, f);
  return total;
}

ssize_t rmem_readv(rmem_client *c, uint32_t pid, const rmem_iov *iov, size_t n,
                   rmem_ranges *holes) {
  int rc = check_usable(c);
  if (rc != 0)
    return rc;
  /* Per request: at most the agent's ranges, bytes and frame. */
  uint64_t room = frame_room(c);
  size_t max_ranges = RMEM_READV_MAX_RANGES;
  if (room / RMEM__READV_PER_RANGE < max_ranges)
    max_ranges = room / RMEM__READV_PER_RANGE ? (size_t)(room / RMEM__READV_PER_RANGE) : 1;
  uint64_t most = c->info.max_read;
  if (readv_cost(most, 1) > room)
    most = (room - (room > RMEM__READV_PER_RANGE ? RMEM__READV_PER_RANGE : 0)) / 65 * 64;
  if (most > SIZE_MAX / 2)
    most = SIZE_MAX / 2;
  if (most == 0)
    most = 1;
  readv_state s = {0};
  uint32_t ids[RMEM__WINDOW];
  size_t firsts[RMEM__WINDOW], counts[RMEM__WINDOW];
  size_t issued = 0, done = 0, next = 0, iov_first = 0, last_iov = SIZE_MAX;
  ssize_t total = 0;
  size_t window = c->window ? c->window : 1;
  uint64_t want = 0;
  rc = readv_pieces(c, iov, n, (size_t)most, &s);
  if (rc != 0)
    goto exit;
  s.entries = malloc(max_ranges * sizeof(*s.entries));
  if (s.entries == NULL) {
    rc = fail(c, RMEM_ENOMEM, "out of memory");
    goto exit;
  }
  while (next < s.npieces || done < issued) {
    /* Keep the window full; requests go out together in one send. */
    while (rc == 0 && next < s.npieces && issued - done < window) {
      size_t first = next, k = 0;
      uint64_t bytes = 0;
      while (next < s.npieces && k < max_ranges && bytes + s.spans[next].len <= most &&
             readv_cost(bytes + s.spans[next].len, k + 1) <= room) {
        bytes += s.spans[next].len;
        next++;
        k++;
      }
      if (k == 0) { /* A piece alone always fits; this is only a safeguard. */
        next++;
        k = 1;
      }
      msgpack_packer pk;
      size_t start;
      rmem__pend *p;
      uint32_t *id = &ids[issued % RMEM__WINDOW];
      rc = queue_call(c, id, &p, &pk, &start);
      if (rc != 0)
        break;
      msg_readv_req_pack(&pk, *id, pid, s.spans + first, k);
      rc = queue_call_end(c, *id, start);
      if (rc != 0)
        break;
      firsts[issued % RMEM__WINDOW] = first;
      counts[issued % RMEM__WINDOW] = k;
      want += bytes;
      issued++;
    }
    if (rc == 0 && c->out.len > 0)
      rc = tx_flush(c, NULL, 0);
    if (rc != 0 || done == issued)
      break;
    size_t w = done % RMEM__WINDOW;
    ssize_t got = readv_complete(c, &s, ids[w], firsts[w], counts[w], holes, &iov_first, &last_iov);
    done++;
    if (got < 0) {
      rc = (int)got;
      break;
    }
    total += got;
  }
  if (rc != 0) {
    for (size_t i = done; i < issued; i++)
      abandon(c, ids[i % RMEM__WINDOW]);
    goto exit;
  }
  if (total == 0 && want > 0)
    rc =
        fail(c, RMEM_EFAULT, "readv pid %u: nothing in %zu ranges could be read", (unsigned)pid, n);
exit:
  free(s.spans);
  free(s.bufs);
  free(s.iovs);
  free(s.entries);
  return rc != 0 ? rc : total;
}

/* One deref request: offsets[0..n) from `addr`, then `len` bytes. On
 * success r->pointers get the values read, from index `at` on. */
static int deref_once(rmem_client *c, uint32_t pid, uint64_t addr, const int64_t *offsets, size_t n,
                      void *buf, size_t len, rmem_deref_result *r, size_t at) {
  msgpack_packer pk;
  size_t start;
  rmem__pend *p;
  uint32_t id;
  int rc = queue_call(c, &id, &p, &pk, &start);
  if (rc != 0)
    return rc;
  msg_deref_req_pack(&pk, id, pid, addr, offsets, n, len);
  rmem__frame *f;
  rc = call(c, "deref", id, start, &f);
  if (rc != 0)
    return rc;
  msg_deref_res res;
  codec_err e = {0};
  size_t h0 = r->holes.n;
  c->scratch.n = 0;
  rc = msg_deref_res_parse(f->msg.result, &res, &c->scratch, &e);
  if (rc == 0 && (res.npointers > n || (!res.broken && res.npointers != n) ||
                  (res.broken && (res.step > n || res.npointers != res.step))))
    rc = codec_fail(&e, RMEM_EPROTO, "%zu pointers for %zu offsets", res.npointers, n);
  if (rc == 0 && !res.broken && (res.len != len || ranges_check(&c->scratch, res.addr, len) < 0))
    rc = codec_fail(&e, RMEM_EPROTO, "data or holes do not match the %zu bytes asked", len);
  if (rc == 0 && res.npointers)
    memcpy(r->pointers + at, res.pointers, res.npointers * sizeof(*res.pointers));
  if (rc == 0) {
    r->npointers = at + res.npointers;
    r->addr = res.addr;
  }
  if (rc == 0 && res.broken) {
    r->broken = 1;
    r->step = at + res.step;
    r->code = res.code;
  } else if (rc == 0) {
    if (len)
      memcpy(buf, res.data, len);
    for (size_t i = 0; rc == 0 && i < c->scratch.n; i++)
      if (ranges_add(&r->holes, h0, c->scratch.v[i].addr, c->scratch.v[i].len,
                     c->scratch.v[i].code) != 0)
        rc = fail(c, RMEM_ENOMEM, "out of memory");
  } else if (rc != RMEM_ENOMEM) {
    rc = breakdown(c, fail(c, RMEM_EPROTO, "%s sent an invalid deref reply: %s", c->peer, e.msg));
  }
  free(res.pointers);
  frame_put(c, f);
  return rc;
}

int rmem_deref(rmem_client *c, uint32_t pid, uint64_t addr, const int64_t *offsets, size_t n,
               void *buf, size_t len, rmem_deref_result *out) {
  rmem_deref_result local = {0};
  rmem_deref_result *r = out ? out : &local;
  rmem_deref_result_free(r);
  int rc = check_usable(c);
  if (rc != 0)
    return rc;
  if (n > SIZE_MAX / sizeof(uint64_t) || len > (size_t)SSIZE_MAX)
    return fail(c, RMEM_EPARAM, "deref: %zu offsets, %zu bytes: too many", n, len);
  r->pointers = malloc((n ? n : 1) * sizeof(*r->pointers));
  if (r->pointers == NULL)
    return fail(c, RMEM_ENOMEM, "out of memory");
  /* The final bytes come with the last request when they fit one. */
  size_t most = piece_max(c, c->info.max_read);
  int separate = len > most;
  uint64_t p = addr;
  size_t done = 0;
  do {
    size_t k = n - done < RMEM_DEREF_MAX_OFFSETS ? n - done : RMEM_DEREF_MAX_OFFSETS;
    size_t ask = done + k == n && !separate ? len : 0;
    rc = deref_once(c, pid, p, offsets + done, k, buf, ask, r, done);
    if (rc != 0 || r->broken)
      break;
    p = r->addr;
    done += k;
  } while (done < n);
  if (rc == 0 && !r->broken && separate) {
    ssize_t got = rmem_read(c, pid, p, buf, len, &r->holes);
    if (got == RMEM_EFAULT) {
      r->broken = 1;
      r->step = n;
      r->code = r->holes.n > 0 ? r->holes.v[0].code : RMEM_EUNMAPPED;
      r->holes.n = 0;
    } else if (got < 0) {
      rc = (int)got;
    }
  }
  if (rc == 0 && r->broken)
    rc = fail(c, RMEM_EFAULT, "deref pid %u: the chain broke at step %zu: 0x%llx: %s",
              (unsigned)pid, r->step, (unsigned long long)r->addr, msg_hole_reason(r->code));
  rmem_deref_result_free(&local);
  return rc;
}

int rmem_read_string(rmem_client *c, uint32_t pid, uint64_t addr, size_t max_len, unsigned flags,
                     rmem_string *out) {
  rmem_string_free(out);
  int rc = check_usable(c);
  if (rc != 0)
    return rc;
  uint64_t limit = c->info.max_read < RMEM_STRING_MAX ? c->info.max_read : RMEM_STRING_MAX;
  if (max_len > limit)
    return fail(c, RMEM_ETOOBIG, "read_string: max_len %zu is over the limit of %llu", max_len,
                (unsigned long long)limit);
  msgpack_packer pk;
  size_t start;
  rmem__pend *p;
  uint32_t id;
  rc = queue_call(c, &id, &p, &pk, &start);
  if (rc != 0)
    return rc;
  msg_string_req req = {.pid = pid,
                        .addr = addr,
                        .max_len = max_len,
                        .encoding = flags & RMEM_STRING_UTF16 ? MSG_ENC_UTF16 : MSG_ENC_UTF8};
  msg_string_req_pack(&pk, id, &req);
  rmem__frame *f;
  rc = call(c, "read_string", id, start, &f);
  if (rc != 0)
    return rc;
  msg_string_res res;
  codec_err e = {0};
  uint64_t asked = max_len ? max_len : RMEM_STRING_DEFAULT;
  rc = msg_string_res_parse(f->msg.result, &res, &e);
  /* UTF-16 to UTF-8 takes at most 3 bytes per 2. */
  if (rc == 0 && (res.len > asked || res.text_len > asked / 2 * 3 + asked % 2 ||
                  (res.terminated && res.has_hole)))
    rc = codec_fail(&e, RMEM_EPROTO, "%llu bytes for a max_len of %llu",
                    (unsigned long long)res.len, (unsigned long long)asked);
  if (rc == 0) {
    out->text = malloc(res.text_len + 1);
    if (out->text == NULL) {
      rc = fail(c, RMEM_ENOMEM, "out of memory");
    } else {
      if (res.text_len)
        memcpy(out->text, res.text, res.text_len);
      out->text[res.text_len] = '\0';
      out->text_len = res.text_len;
      out->len = res.len;
      out->terminated = res.terminated;
      out->has_hole = res.has_hole;
      out->hole_addr = res.hole_addr;
      out->hole_code = res.hole_code;
    }
  } else {
    rc = breakdown(
        c, fail(c, RMEM_EPROTO, "%s sent an invalid read_string reply: %s", c->peer, e.msg));
  }
  frame_put(c, f);
  return rc;
}

/* Takes the reply to a fill of [addr, addr + len): adds its failed ranges
 * (merged from index `first` on) and returns the bytes written, RMEM_EFAULT
 * (its ranges recorded too), or another negative code. */
static ssize_t fill_complete(rmem_client *c, uint32_t id, uint64_t addr, uint64_t len,
                             rmem_ranges *failed, size_t first) {
  rmem__pend pend;
  rmem__frame *f;
  ssize_t rc = take_reply(c, id, &pend, &f);
  if (rc != 0)
    return rc;
  codec_err e = {0};
  uint64_t written = 0;
  c->scratch.n = 0;
  if (f->msg.error) {
    rc = reply_error(c, f->msg.error);
    int got = rc == RMEM_EFAULT ? msg_fault_parse(f->msg.error, &c->scratch, &e) : 1;
    if (got == 0 && ranges_check(&c->scratch, addr, len) != (long long)len)
      got = RMEM_EPROTO;
    if (got < 0) {
      rc = breakdown(c, fail(c, RMEM_EPROTO, "%s sent invalid holes with RMEM_EFAULT", c->peer));
      goto exit;
    }
    if (rc == RMEM_EFAULT && got == 1)
      msg_ranges_push(&c->scratch, addr, len, RMEM_EFAULT);
  } else {
    int prc = f->msg.result ? msg_write_res_parse(f->msg.result, &written, &c->scratch, &e)
                            : codec_fail(&e, RMEM_EPROTO, "no result");
    long long bad = prc == 0 ? ranges_check(&c->scratch, addr, len) : 0;
    if (prc == 0 && (bad < 0 || written > len || written + (uint64_t)bad > len))
      prc = codec_fail(&e, RMEM_EPROTO, "written %llu of %llu bytes with %lld failed",
                       (unsigned long long)written, (unsigned long long)len, bad);
    if (prc != 0) {
      rc = breakdown(c, fail(c, RMEM_EPROTO, "%s sent an invalid fill reply: %s", c->peer, e.msg));
      goto exit;
    }
    rc = (ssize_t)written;
  }
  for (size_t i = 0; i < c->scratch.n; i++)
    if (ranges_add(failed, first, c->scratch.v[i].addr, c->scratch.v[i].len,
                   c->scratch.v[i].code) != 0)
      rc = fail(c, RMEM_ENOMEM, "out of memory");
exit:
  frame_put(c, f);
  return rc;
}

ssize_t rmem_fill(rmem_client *c, uint32_t pid, uint64_t addr, size_t len, const void *pattern,
                  size_t plen, rmem_ranges *failed) {
  int rc = check_usable(c);
  if (rc == 0 && (plen == 0 || pattern == NULL))
    rc = fail(c, RMEM_EPARAM, "fill: the pattern is empty");
  if (rc == 0 && plen > RMEM_FILL_MAX_PATTERN)
    rc = fail(c, RMEM_ETOOBIG, "fill: a pattern of %zu bytes is over the limit of %d", plen,
              RMEM_FILL_MAX_PATTERN);
  if (rc == 0)
    rc = check_range(c, "fill", addr, len);
  if (rc != 0 || len == 0)
    return rc;
  /* Whole repetitions per request keep the pattern's phase across them. */
  size_t piece = (size_t)(RMEM_FILL_MAX / plen * plen);
  size_t npieces = len / piece + (len % piece != 0);
  size_t window = c->window ? c->window : 1;
  uint32_t ids[RMEM__WINDOW];
  size_t first = failed ? failed->n : 0;
  size_t issued = 0, done = 0, total = 0;
  ssize_t err = 0;
  while (done < npieces) {
    while (err == 0 && issued < npieces && issued - done < window) {
      size_t off = issued * piece;
      msg_fill_req req = {.pid = pid,
                          .addr = addr + off,
                          .len = len - off < piece ? len - off : piece,
                          .pattern = pattern,
                          .plen = plen};
      msgpack_packer pk;
      size_t start;
      rmem__pend *p;
      uint32_t *id = &ids[issued % RMEM__WINDOW];
      err = queue_call(c, id, &p, &pk, &start);
      if (err == 0) {
        msg_fill_req_pack(&pk, *id, &req);
        err = queue_call_end(c, *id, start);
      }
      if (err == 0)
        issued++;
    }
    if (err == 0 && c->out.len > 0)
      err = tx_flush(c, NULL, 0);
    if (err != 0)
      break;
    size_t off = done * piece;
    uint64_t n = len - off < piece ? len - off : piece;
    ssize_t got = fill_complete(c, ids[done % RMEM__WINDOW], addr + off, n, failed, first);
    done++;
    if (got == RMEM_EFAULT)
      continue; /* Recorded as failed ranges; other pieces may still succeed. */
    if (got < 0) {
      err = got;
      break;
    }
    total += (size_t)got;
  }
  if (err != 0) {
    for (size_t i = done; i < issued; i++)
      abandon(c, ids[i % RMEM__WINDOW]);
    return err;
  }
  if (total == 0)
    return npieces == 1 ? RMEM_EFAULT
                        : fail(c, RMEM_EFAULT, "fill pid %u 0x%llx+0x%zx: nothing could be written",
                               (unsigned)pid, (unsigned long long)addr, len);
  return (ssize_t)total;
}
