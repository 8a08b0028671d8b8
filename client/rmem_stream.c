/* rmem_read_stream: a read of any length handed to a callback piece by
 * piece, in address order, with a bounded window of requests in flight. It
 * is built only on the public pipelining calls: the memory it holds is the
 * window, never the whole range. */
#include "rmem.h"

#include <stdlib.h>
#include <string.h>

/* Pieces in flight, and their size: the best figures in tests/bench/ over
 * loopback; a slower link wants a bigger window, not bigger pieces. */
#define STREAM_WINDOW 4
#define STREAM_PIECE (1u << 20)

typedef struct {
  uint32_t id;
  uint64_t addr;
  size_t len;
  unsigned char *buf;
} stream_slot;

ssize_t rmem_read_stream(rmem_client *c, uint32_t pid, uint64_t addr, uint64_t len,
                         rmem_chunk_cb cb, void *ctx) {
  const rmem_agent_info *info = rmem_info(c);
  if (info == NULL || cb == NULL)
    return RMEM_EPARAM;
  if (len && addr + (len - 1) < addr)
    return RMEM_EPARAM;
  size_t piece = info->max_read < STREAM_PIECE ? (size_t)info->max_read : STREAM_PIECE;
  int window = STREAM_WINDOW;
  if (info->max_inflight && info->max_inflight < (uint32_t)window)
    window = (int)info->max_inflight;
  stream_slot slots[STREAM_WINDOW];
  memset(slots, 0, sizeof(slots));
  rmem_ranges holes = {0};
  uint64_t sent = 0, total = 0;
  ssize_t rc = 0;
  int inflight = 0, head = 0, nothing = 1;
  for (int i = 0; i < window; i++) {
    slots[i].buf = malloc(piece);
    if (slots[i].buf == NULL) {
      rc = RMEM_ENOMEM;
      goto exit;
    }
  }
  while (sent < len || inflight > 0) {
    /* Keep the window full, then take the oldest reply. */
    while (sent < len && inflight < window) {
      stream_slot *s = &slots[(head + inflight) % window];
      s->addr = addr + sent;
      s->len = len - sent < piece ? (size_t)(len - sent) : piece;
      rc = rmem_read_start(c, pid, s->addr, s->buf, s->len, &s->id);
      if (rc < 0)
        goto exit;
      sent += s->len;
      inflight++;
    }
    stream_slot *s = &slots[head];
    holes.n = 0;
    ssize_t got = rmem_finish(c, s->id, &holes);
    head = (head + 1) % window;
    inflight--;
    if (got < 0 && got != RMEM_EFAULT) {
      rc = got;
      goto exit;
    }
    if (got > 0) {
      nothing = 0;
      total += (uint64_t)got;
    }
    /* A piece with nothing readable is still handed over, all holes, so the
     * callback sees every byte of the range in order. */
    if (cb(ctx, s->addr, s->buf, s->len, holes.v, holes.n) != 0) {
      rc = RMEM_ECANCELED;
      goto exit;
    }
  }
  rc = nothing && len > 0 ? RMEM_EFAULT : (ssize_t)total;
exit:
  /* Replies still owed are collected so the client stays usable. */
  while (inflight > 0) {
    rmem_finish(c, slots[head].id, NULL);
    head = (head + 1) % window;
    inflight--;
  }
  for (int i = 0; i < window; i++)
    free(slots[i].buf);
  rmem_ranges_free(&holes);
  return rc;
}
