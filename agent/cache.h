/* The agent's page cache: copies of target pages, so that reading the same
 * memory again need not touch the target. Keyed by process (pid and start
 * time) and page address; least recently used pages go first when the cache
 * is full. PROTOCOL.md, "Page cache and coherence", says when a copy may be
 * served; in short:
 *
 * - pages of read-only file mappings are served while their mapping is
 *   unchanged (checked against /proc/PID/maps at most every CACHE_MAPS_MS);
 * - any other page only to a read that accepts an age (max_age_ms), or while
 *   the process is frozen (cache_set_frozen);
 * - writes through the agent invalidate the pages they touch
 *   (cache_invalidate); an exited process's pages are never served.
 *
 * One agent-wide cache: cache_init before the worker threads start,
 * cache_close after they stopped. Everything else is thread-safe and runs in
 * worker threads, since it may read /proc. */
#ifndef RMEM_CACHE_H
#define RMEM_CACHE_H

#include "rmem.h"

#include <stddef.h>
#include <stdint.h>

/* The default size limit, in bytes. */
#define CACHE_DEFAULT_SIZE (64u << 20)
/* How old a process's map may be before a cached file page is checked
 * against a fresh one, in milliseconds. */
#define CACHE_MAPS_MS 100
/* Processes tracked at once; a new one pushes out the least recently used
 * (with its pages) unless all are frozen. */
#define CACHE_MAX_PROCS 64

/* Sets the limit in bytes (rounded down to whole pages; under one page
 * disables the cache). Returns 0 or RMEM_ENOMEM. */
int cache_init(uint64_t size_limit);
/* Frees every page. Safe when cache_init was not called. */
void cache_close(void);
/* 1 when the cache holds pages at all (size limit of a page or more). */
int cache_enabled(void);
/* The page size the cache works in. */
size_t cache_page_size(void);

/* One read request's view of the cache. Caller storage: begin, any number of
 * lookups and stores, then end. */
typedef struct {
  struct cache__proc *proc; /* NULL: the request bypasses the cache. */
  uint64_t seq;             /* The process's invalidation count at begin. */
  uint64_t now;             /* CLOCK_MONOTONIC ns at begin: the stamp of stored pages. */
  uint64_t max_age;         /* ns; 0: no age accepted. */
  int uncached;
} cache_read;

/* Starts a read of `pid`. `max_age_ms` 0 accepts no age; `uncached` skips
 * lookups (stores still refresh the copies). Leaves r->proc NULL when the
 * cache is off or the process cannot be tracked; lookups then miss and
 * stores do nothing. */
void cache_read_begin(cache_read *r, uint32_t pid, uint64_t max_age_ms, int uncached);
/* Copies `n` bytes at offset `off` of the page at `page` (page-aligned) to
 * `dst` when a copy that this read may use is cached. Returns 1 on a hit. */
int cache_read_lookup(cache_read *r, uint64_t page, void *dst, size_t off, size_t n);
/* Offers one whole page read from the target during this read; it is kept
 * when the page is of a kind worth keeping for this read and no write
 * touched the process since cache_read_begin. Never pass pages with holes. */
void cache_read_store(cache_read *r, uint64_t page, const void *data);
void cache_read_end(cache_read *r);

/* Drops the cached pages of `pid` that overlap [addr, addr + len); every
 * method that writes target memory calls it once the write is done. Reads
 * in flight that began before it do not store what they read. */
void cache_invalidate(uint32_t pid, uint64_t addr, uint64_t len);
/* Drops every page of `pid`, or of all processes when pid is 0. */
void cache_flush(uint32_t pid);
/* The freeze hook. Call with 1 once every thread of `pid` is stopped, and
 * with 0 just before resuming it. While frozen, a private page read during
 * the freeze is served whatever its age; at thaw those copies count as read
 * at that moment. Pages of shared mappings still need max_age_ms, since
 * other processes may write them. Returns 0 or a negative code. */
int cache_set_frozen(uint32_t pid, int frozen);

void cache_get_stats(rmem_cache_info *out);

#endif
