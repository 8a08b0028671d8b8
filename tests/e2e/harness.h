/* Helpers for the end-to-end tests: a real rmemd on 127.0.0.1 with an
 * automatic port, real fixture processes, raw sockets that speak frames, and
 * /proc/PID/maps read back as the oracle.
 *
 * Functions return 0 or -1 (with a message on stderr) unless stated. Paths
 * come from CMake: RMEMD_PATH, FIXTURE_TARGET_PATH, FIXTURE_REGIONS_PATH. */
#ifndef RMEM_TEST_HARNESS_H
#define RMEM_TEST_HARNESS_H

#include "codec.h"
#include "rmem.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* A running rmemd. */
typedef struct {
  pid_t pid;
  uint16_t port;
  char dir[64]; /* Temporary directory holding the port file. */
  char portfile[96];
} h_agent;

/* Starts rmemd listening on 127.0.0.1, port 0, and waits (10 s at most) for
 * the port file. `prefix`, when not NULL, is a NULL-terminated argv run in
 * front of the agent (such as setpriv and its options). */
int h_agent_start(h_agent *a, const char *const *prefix);
/* The same, with `extra` (NULL-terminated, may be NULL) appended to the agent's options. */
int h_agent_start_args(h_agent *a, const char *const *prefix, const char *const *extra);
/* Sends SIGTERM and waits (10 s at most, then SIGKILL). Returns the exit
 * status (0 is a clean exit), 128 + signal when killed by one, or -1. */
int h_agent_stop(h_agent *a);

/* A running fixture with pipes to its stdin and stdout, and the `key=value`
 * lines it printed before `ready`. */
typedef struct {
  pid_t pid;
  int in_fd;  /* Its stdin. */
  int out_fd; /* Its stdout. */
  char buf[8192];
  size_t buflen;
  size_t nkv;
  char keys[64][32];
  char vals[64][80];
} h_fixture;

/* Runs `path` with `args` (NULL-terminated, without argv[0]; may be NULL) and
 * parses its output until `ready` (30 s at most). */
int h_fixture_start(h_fixture *f, const char *path, const char *const *args);
/* The value printed for `key`, or NULL. */
const char *h_fixture_get(const h_fixture *f, const char *key);
/* The value for `key` as a number (decimal or 0x hex); aborts the test
 * process when missing, since every caller needs it. */
uint64_t h_fixture_u64(const h_fixture *f, const char *key);
/* Sends one command line and reads one reply line (without the newline). */
int h_fixture_cmd(h_fixture *f, const char *cmd, char *reply, size_t n);
/* Asks the fixture to hex-dump its own memory and decodes the reply. */
int h_fixture_dump(h_fixture *f, uint64_t addr, size_t len, void *out);
/* Sends `exit`, closes the pipes and reaps the fixture (SIGKILL after 5 s).
 * Returns its exit status as h_agent_stop does. Safe on a stopped fixture. */
int h_fixture_stop(h_fixture *f);

/* The common end of a test group: closes *c, stops the fixture, then the
 * agent (when *agent_up) and checks that it exited 0 (ASan makes a leak a
 * non-zero exit). Returns 0 or -1 for cmocka's group teardown. */
int h_group_teardown(rmem_client **c, h_fixture *fx, h_agent *agent, int *agent_up);
/* SIGKILLs the fixture and reaps it. */
void h_fixture_kill(h_fixture *f);

/* Raw sockets. */
enum { H_CLOSED = -100, H_TIMEOUT = -101, H_BADREPLY = -102 };

/* A decoded response. */
typedef struct {
  int type;      /* CODEC_RESPONSE normally. */
  int has_msgid; /* 0 for msgid nil. */
  uint32_t msgid;
  int code; /* 0 when error was nil, else the error map's code. */
  char name[32];
  char message[256];
  /* The whole payload, kept so tests can look at the result. */
  char *payload;
  size_t len;
  msgpack_unpacked up;
  const msgpack_object *result; /* NULL when nil. */
} h_resp;

void h_resp_free(h_resp *r);

/* Connects to 127.0.0.1:port. Returns the fd or -1. */
int h_raw_connect(uint16_t port);
/* Sends all bytes. Returns 0, or H_CLOSED when the peer is gone. */
int h_raw_send(int fd, const void *p, size_t n);
/* Sends a frame holding `payload` as is. */
int h_raw_send_frame(int fd, const void *payload, size_t n);
/* Sends the frame built in `b` (frames from codec_frame_begin/end). */
int h_raw_send_buf(int fd, const codec_buf *b);
/* Receives one frame and decodes it into `r` (call h_resp_free after).
 * Returns 0, H_CLOSED, H_TIMEOUT or H_BADREPLY. */
int h_raw_recv(int fd, int timeout_ms, h_resp *r);
/* Waits for the peer to close; returns 1 when it did (EOF or reset), 0 when
 * it was still open after `timeout_ms` (any bytes that arrive are dropped). */
int h_raw_wait_closed(int fd, int timeout_ms);
/* Sends hello (version 1) with msgid `msgid` and checks the reply. */
int h_raw_hello(int fd, uint32_t msgid);

/* Request builders: frames of [0, msgid, method, {...}]. */
int h_send_hello(int fd, uint32_t msgid, uint64_t version);
int h_send_read(int fd, uint32_t msgid, uint64_t pid, uint64_t addr, uint64_t len);
int h_send_write(int fd, uint32_t msgid, uint64_t pid, uint64_t addr, const void *data, size_t len);
int h_send_map(int fd, uint32_t msgid, uint64_t pid);

/* One line of /proc/PID/maps. */
typedef struct {
  uint64_t start, end, offset, inode;
  uint32_t dev_major, dev_minor;
  uint32_t prot; /* RMEM_PROT_* bits. */
  int shared;
  int deleted;    /* The path ended with " (deleted)", which is stripped. */
  char path[256]; /* "" for none. */
} h_mapline;

/* Reads /proc/PID/maps. `*out` is malloc'd. Returns the count or -1. */
long h_maps_read(pid_t pid, h_mapline **out);
/* The index of the line holding addr, or -1. */
long h_maps_find(const h_mapline *m, long n, uint64_t addr);
/* An smaps field (e.g. "Rss") in bytes for the region starting at `start`,
 * or -1. `vmflags` (may be NULL) gets the VmFlags line. */
long long h_smaps_field(pid_t pid, uint64_t start, const char *field, char *vmflags, size_t vflen);

/* Monotonic milliseconds. */
double h_now_ms(void);

#endif
