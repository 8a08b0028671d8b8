/* The dispatcher: turns one decoded frame into a reply or a worker job. It
 * never sees a socket: the connection layer (conn.c) feeds it frames and
 * runs its jobs on the thread pool. */
#ifndef RMEM_DISPATCH_H
#define RMEM_DISPATCH_H

#include "auth.h"
#include "codec.h"

#include <stddef.h>
#include <stdint.h>

/* Limits announced in hello and enforced per connection. */
typedef struct {
  uint64_t max_frame;
  uint64_t max_read;
  uint64_t max_write;
  uint32_t max_inflight;
  uint64_t max_output; /* Unsent reply bytes per connection before backpressure. */
  int no_compress;     /* rmemd --no-compress: decline compression in hello. */
} dispatch_limits;

/* The per-connection state the dispatcher keeps. Owned by the connection. */
typedef struct {
  int hello_done;
  uint64_t id;
  const char *peer;
  const dispatch_limits *limits;
  const auth_config *auth; /* What the agent requires; agent-wide. */
  int tls;                 /* The connection runs over TLS. */
  int loopback;            /* The peer's address is a loopback one. */
  int authenticated;       /* By token or client certificate, or nothing is required. */
  int auth_event;          /* Set by hello: 1 a token was accepted, -1 one was rejected. */
  int lz4;                 /* Set by hello: read data may go out lz4-compressed. */
} dispatch_session;

typedef struct dispatch_job dispatch_job;

/* One method: parse runs on the loop and checks every field; run does the
 * target work in a worker thread and builds the reply frame; cleanup frees
 * what parse or run kept in `priv`. */
typedef struct {
  const char *name;
  unsigned flags;
  size_t priv_size;
  int (*parse)(dispatch_job *j, const msgpack_object *params);
  void (*run)(dispatch_job *j);
  void (*cleanup)(dispatch_job *j);
} dispatch_method;

#define DISPATCH_BEFORE_HELLO 1u /* Allowed before hello. */
#define DISPATCH_INLINE 2u       /* No target I/O: run on the loop. */
#define DISPATCH_BEFORE_AUTH 4u  /* Allowed before authentication. */

struct dispatch_job {
  uint32_t msgid;
  const dispatch_method *method;
  dispatch_session *session;     /* Only valid during parse and inline runs. */
  const dispatch_limits *limits; /* Agent-wide, outlives every job. */
  uint64_t cost;                 /* Reply bytes reserved against max_output. */
  codec_err err;                 /* err.code < 0: reply with this error. */
  codec_buf out;                 /* The reply frame, built by run (an error reply
                                    that carries more than a message, too). */
  void *priv;                    /* priv_size bytes for the method. */
};

/* The outcome of one frame: a reply to send now, a job to run, or both
 * empty (a notification). `close` asks the connection to close after the reply. */
typedef struct {
  char *reply; /* Owned by the caller once returned. */
  size_t reply_len;
  dispatch_job *job; /* Owned by the caller: run it, then finish or free it. */
  int auth_event;    /* 1: a token was accepted; -1: one was rejected, and the
                        connection holds `reply` back to slow guessing down. */
} dispatch_result;

void dispatch_frame(dispatch_session *s, const char *p, size_t n, dispatch_result *out);
/* Runs a job's target work; called in a worker thread. */
void dispatch_job_run(dispatch_job *j);
/* Takes the reply frame (the caller frees it with free()) and frees the job. */
char *dispatch_job_finish(dispatch_job *j, size_t *len);
/* Frees a job whose reply is no longer wanted. Accepts NULL. */
void dispatch_job_free(dispatch_job *j);

/* The method table, sorted by name; hello lists it. */
extern const dispatch_method *const dispatch_methods[];
extern const size_t dispatch_nmethods;

/* Helpers for methods: fail the job with a code and a message. */
int dispatch_fail(dispatch_job *j, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Fails the job with RMEM_EPARAM when [addr, addr + len) goes past 2^64 (a
 * range may end exactly there). `what` names the range in the message. */
int dispatch_check_range(dispatch_job *j, const char *what, uint64_t addr, uint64_t len);

#endif
