/* The page cache. One mutex guards everything; it is held for a hash lookup
 * and one page copy, or a walk of one process's pages, never across I/O:
 * pidfds and maps are read outside it, and a process record is kept alive by
 * a reference count while a request uses it.
 *
 * Pages live in a hash table (chained, keyed by pid, start time and
 * address), on one LRU list, and on their process's list. Processes live in
 * a small table; each keeps a snapshot of its maps in which every read-only
 * file mapping carries an epoch that changes whenever the mapping does. A
 * cached file page is valid while its epoch is the current one. */
#include "cache.h"

#include "rmem_error.h"
#include "target.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAPS_NS ((uint64_t)CACHE_MAPS_MS * 1000000u)

/* What a page's mapping allows (PROTOCOL.md, Page cache and coherence). */
enum {
  KIND_NONE,    /* Not mapped in the last snapshot: only max_age serves it. */
  KIND_FILE,    /* Read-only file mapping: served while the mapping is unchanged. */
  KIND_PRIVATE, /* Other private memory: max_age, or frozen. */
  KIND_SHARED,  /* Other shared memory: max_age only. */
};

typedef struct {
  uint64_t start, end, offset, inode, dev;
  uint32_t prot;
  int shared;
  int kind;
  uint64_t epoch; /* KIND_FILE only. */
} cache__vma;

typedef struct cache__page cache__page;

struct cache__proc {
  uint32_t pid;
  uint64_t start_time;
  int pidfd;
  int refs; /* One for the table, one per request using it. */
  int dead; /* Out of the table (exited, pushed out, closing): use nothing. */
  uint64_t seq;
  uint64_t used; /* Last begin, for pushing out the least recently used. */
  int frozen;
  uint64_t frozen_at;
  cache__vma *vmas;
  size_t nvmas;
  uint64_t maps_at; /* When vmas was loaded (or its reload claimed); 0: never. */
  cache__page *pages;
  size_t npages;
};

typedef struct cache__proc cache__proc;

struct cache__page {
  cache__page *hnext;
  cache__page *lprev, *lnext; /* LRU: lru_head is the most recent. */
  cache__page *pprev, *pnext; /* The process's pages. */
  cache__proc *proc;
  uint32_t pid;
  uint64_t start_time;
  uint64_t addr;
  uint64_t stamp; /* ns before the bytes were read. */
  uint64_t epoch; /* The file mapping's epoch then; 0 for other kinds. */
  int kind;
  unsigned char data[];
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static struct {
  int on;
  size_t page;
  uint64_t limit;
  size_t max_pages;
  cache__page **buckets;
  size_t mask;
  cache__page *lru_head, *lru_tail;
  size_t npages;
  cache__proc *procs[CACHE_MAX_PROCS];
  size_t nprocs;
  uint64_t epoch;
  uint64_t hits, misses, evictions, invalidations;
} C;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int cache_init(uint64_t size_limit) {
  cache_close();
  C.page = (size_t)sysconf(_SC_PAGESIZE);
  C.max_pages = (size_t)(size_limit / C.page);
  C.limit = (uint64_t)C.max_pages * C.page;
  if (C.max_pages == 0)
    return 0;
  size_t nb = 64;
  while (nb < C.max_pages && nb < (1u << 24))
    nb <<= 1;
  C.buckets = calloc(nb, sizeof(*C.buckets));
  if (C.buckets == NULL) {
    C.max_pages = 0;
    C.limit = 0;
    return RMEM_ENOMEM;
  }
  C.mask = nb - 1;
  C.on = 1;
  return 0;
}

int cache_enabled(void) {
  return C.on;
}

size_t cache_page_size(void) {
  return C.page ? C.page : (size_t)sysconf(_SC_PAGESIZE);
}

/* Everything below that touches C or a record runs with `mu` held, unless
 * it says otherwise. */

static size_t bucket_of(uint32_t pid, uint64_t addr) {
  uint64_t h = (addr / C.page) * 0x9e3779b97f4a7c15ull ^ (uint64_t)pid * 0xc2b2ae3d27d4eb4full;
  return (size_t)(h ^ h >> 29) & C.mask;
}

static cache__page *page_find(const cache__proc *p, uint64_t addr) {
  for (cache__page *e = C.buckets[bucket_of(p->pid, addr)]; e; e = e->hnext)
    if (e->addr == addr && e->pid == p->pid && e->start_time == p->start_time)
      return e;
  return NULL;
}

static void lru_unlink(cache__page *e) {
  if (e->lprev)
    e->lprev->lnext = e->lnext;
  else
    C.lru_head = e->lnext;
  if (e->lnext)
    e->lnext->lprev = e->lprev;
  else
    C.lru_tail = e->lprev;
}

static void lru_push(cache__page *e) {
  e->lprev = NULL;
  e->lnext = C.lru_head;
  if (C.lru_head)
    C.lru_head->lprev = e;
  C.lru_head = e;
  if (C.lru_tail == NULL)
    C.lru_tail = e;
}

static void lru_touch(cache__page *e) {
  if (C.lru_head != e) {
    lru_unlink(e);
    lru_push(e);
  }
}

/* Takes a page out of every list; the caller frees or reuses it. */
static void page_unlink(cache__page *e) {
  cache__page **pp = &C.buckets[bucket_of(e->pid, e->addr)];
  while (*pp != e)
    pp = &(*pp)->hnext;
  *pp = e->hnext;
  lru_unlink(e);
  cache__proc *p = e->proc;
  if (e->pprev)
    e->pprev->pnext = e->pnext;
  else
    p->pages = e->pnext;
  if (e->pnext)
    e->pnext->pprev = e->pprev;
  p->npages--;
  C.npages--;
}

static void page_link(cache__proc *p, cache__page *e) {
  size_t b = bucket_of(p->pid, e->addr);
  e->hnext = C.buckets[b];
  C.buckets[b] = e;
  lru_push(e);
  e->proc = p;
  e->pid = p->pid;
  e->start_time = p->start_time;
  e->pprev = NULL;
  e->pnext = p->pages;
  if (p->pages)
    p->pages->pprev = e;
  p->pages = e;
  p->npages++;
  C.npages++;
}

/* Frees a page that may not be served any more (`evicted`: for room). */
static void page_drop(cache__page *e, int evicted) {
  page_unlink(e);
  free(e);
  if (evicted)
    C.evictions++;
  else
    C.invalidations++;
}

static void proc_drop_pages(cache__proc *p, int evicted) {
  while (p->pages)
    page_drop(p->pages, evicted);
}

/* Releases one reference; the last one frees the record. */
static void proc_unref(cache__proc *p) {
  if (--p->refs > 0)
    return;
  close(p->pidfd);
  free(p->vmas);
  free(p);
}

/* Takes a record out of the table: its pages go, requests still holding it
 * see `dead` and use nothing. */
static void proc_kill(cache__proc *p, int evicted) {
  if (p->dead)
    return;
  for (size_t i = 0; i < C.nprocs; i++) {
    if (C.procs[i] == p) {
      C.procs[i] = C.procs[--C.nprocs];
      break;
    }
  }
  p->dead = 1;
  proc_drop_pages(p, evicted);
  proc_unref(p);
}

static cache__proc *proc_find(uint32_t pid) {
  for (size_t i = 0; i < C.nprocs; i++)
    if (C.procs[i]->pid == pid)
      return C.procs[i];
  return NULL;
}

/* The snapshot's entry holding `addr`, or NULL. */
static const cache__vma *vma_of(const cache__proc *p, uint64_t addr) {
  size_t lo = 0, hi = p->nvmas;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (p->vmas[mid].end <= addr)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < p->nvmas && p->vmas[lo].start <= addr ? &p->vmas[lo] : NULL;
}

/* Without `mu`: a referenced record for `pid`, whose process was alive a
 * moment ago, or NULL. */
static cache__proc *proc_get(uint32_t pid, uint64_t now, codec_err *err) {
  pthread_mutex_lock(&mu);
  cache__proc *p = proc_find(pid);
  if (p) {
    p->refs++;
    p->used = now;
  }
  pthread_mutex_unlock(&mu);
  if (p) {
    /* A pidfd outlives its process: exited, or a recycled pid, reads here. */
    if (!target_pidfd_exited(p->pidfd))
      return p;
    pthread_mutex_lock(&mu);
    proc_kill(p, 0);
    proc_unref(p);
    pthread_mutex_unlock(&mu);
  }
  int fd;
  uint64_t start_time;
  if (target_pidfd_open(pid, &fd, &start_time, err) != 0)
    return NULL;
  cache__proc *np = calloc(1, sizeof(*np));
  if (np == NULL) {
    close(fd);
    codec_fail(err, RMEM_ENOMEM, "cache: out of memory");
    return NULL;
  }
  np->pid = pid;
  np->start_time = start_time;
  np->pidfd = fd;
  np->refs = 2;
  np->used = now;
  pthread_mutex_lock(&mu);
  p = proc_find(pid);
  if (p && p->start_time == start_time) {
    /* Another request got there first. */
    p->refs++;
    pthread_mutex_unlock(&mu);
    close(fd);
    free(np);
    return p;
  }
  if (p)
    proc_kill(p, 0); /* An exited process the other request has not noticed yet. */
  if (C.nprocs == CACHE_MAX_PROCS) {
    cache__proc *old = NULL;
    for (size_t i = 0; i < C.nprocs; i++)
      if (!C.procs[i]->frozen && (old == NULL || C.procs[i]->used < old->used))
        old = C.procs[i];
    if (old)
      proc_kill(old, 1);
  }
  if (C.nprocs == CACHE_MAX_PROCS) {
    pthread_mutex_unlock(&mu);
    close(fd);
    free(np);
    codec_fail(err, RMEM_EBUSY, "cache: every tracked process is frozen");
    return NULL;
  }
  C.procs[C.nprocs++] = np;
  pthread_mutex_unlock(&mu);
  return np;
}

static int same_mapping(const cache__vma *a, const cache__vma *b) {
  return a->start == b->start && a->end == b->end && a->offset == b->offset &&
         a->inode == b->inode && a->dev == b->dev && a->prot == b->prot && a->shared == b->shared;
}

/* Shared memory objects exist to be written through another mapping. */
static int is_shm_path(const char *path) {
  return strncmp(path, "/memfd:", 7) == 0 || strncmp(path, "/dev/shm/", 9) == 0 ||
         strncmp(path, "/SYSV", 5) == 0;
}

static int kind_of(const target_vma *v) {
  if ((v->prot & RMEM_PROT_R) && !(v->prot & RMEM_PROT_W) && v->inode != 0 && !is_shm_path(v->path))
    return KIND_FILE;
  return v->shared ? KIND_SHARED : KIND_PRIVATE;
}

/* Whether the snapshot of `p` is older than CACHE_MAPS_MS; if so, claims
 * the reload, so that other requests use the old one meanwhile. */
static int maps_due(cache__proc *p, uint64_t now) {
  int due = !p->dead && (p->maps_at == 0 || (now > p->maps_at && now - p->maps_at >= MAPS_NS));
  if (due)
    p->maps_at = now;
  return due;
}

/* Without `mu`: reloads the map of `p` after maps_due said so. Mappings
 * identical to the old snapshot's keep their epoch; new or changed ones get
 * a new epoch, so pages read under the old one no longer count. */
static void maps_load(cache__proc *p) {
  target_vmas m;
  codec_err err;
  cache__vma *nv = NULL;
  size_t n = 0;
  if (target_vmas_load(p->pid, 0, &m, &err) == 0) {
    nv = malloc((m.n ? m.n : 1) * sizeof(*nv));
    if (nv) {
      for (size_t i = 0; i < m.n; i++) {
        const target_vma *v = &m.v[i];
        nv[n++] = (cache__vma){.start = v->start,
                               .end = v->end,
                               .offset = v->offset,
                               .inode = v->inode,
                               .dev = (uint64_t)v->dev_major << 32 | v->dev_minor,
                               .prot = v->prot,
                               .shared = v->shared,
                               .kind = kind_of(v)};
      }
    }
    target_vmas_free(&m);
  }
  /* A map that cannot be read leaves an empty snapshot: no file page is
   * served until one can. */
  pthread_mutex_lock(&mu);
  size_t j = 0;
  int changed = n != p->nvmas;
  for (size_t i = 0; i < n; i++) {
    if (nv[i].kind != KIND_FILE)
      continue;
    while (j < p->nvmas && p->vmas[j].start < nv[i].start)
      j++;
    if (j < p->nvmas && p->vmas[j].kind == KIND_FILE && same_mapping(&p->vmas[j], &nv[i])) {
      nv[i].epoch = p->vmas[j].epoch;
    } else {
      nv[i].epoch = ++C.epoch;
      changed = 1;
    }
  }
  /* Reads that began under the old snapshot may hold bytes of a mapping
   * that is gone: they must not store them under the new epochs. */
  if (changed)
    p->seq++;
  cache__vma *old = p->vmas;
  p->vmas = nv;
  p->nvmas = n;
  pthread_mutex_unlock(&mu);
  free(old);
}

void cache_read_begin(cache_read *r, uint32_t pid, uint64_t max_age_ms, int uncached) {
  memset(r, 0, sizeof(*r));
  if (!C.on)
    return;
  r->now = now_ns();
  r->uncached = uncached;
  r->max_age = max_age_ms > UINT64_MAX / 1000000u ? UINT64_MAX : max_age_ms * 1000000u;
  codec_err err;
  cache__proc *p = proc_get(pid, r->now, &err);
  if (p == NULL)
    return; /* The read itself will say what is wrong with the pid. */
  pthread_mutex_lock(&mu);
  int due = maps_due(p, r->now);
  pthread_mutex_unlock(&mu);
  if (due)
    maps_load(p);
  /* Taken after our own reload, so only a later change refuses our store. */
  pthread_mutex_lock(&mu);
  r->seq = p->seq;
  pthread_mutex_unlock(&mu);
  r->proc = p;
}

void cache_read_end(cache_read *r) {
  if (r->proc == NULL)
    return;
  pthread_mutex_lock(&mu);
  proc_unref(r->proc);
  pthread_mutex_unlock(&mu);
  r->proc = NULL;
}

/* Whether this read may be served a copy of a page of `kind` at all. */
static int may_serve(const cache_read *r, const cache__proc *p, int kind) {
  return kind == KIND_FILE || r->max_age != 0 || (p->frozen && kind == KIND_PRIVATE);
}

/* Whether the copy `e` is good for this read. */
static int usable(const cache_read *r, const cache__proc *p, const cache__page *e,
                  const cache__vma *v) {
  int kind = v ? v->kind : KIND_NONE;
  if (kind == KIND_FILE && e->epoch == v->epoch)
    return 1;
  if (r->max_age != 0 && (e->stamp >= r->now || r->now - e->stamp <= r->max_age))
    return 1;
  return p->frozen && kind == KIND_PRIVATE && e->stamp >= p->frozen_at;
}

int cache_read_lookup(cache_read *r, uint64_t page, void *dst, size_t off, size_t n) {
  cache__proc *p = r->proc;
  if (p == NULL || r->uncached)
    return 0;
  int hit = 0;
  pthread_mutex_lock(&mu);
  const cache__vma *v = vma_of(p, page);
  if (!p->dead && may_serve(r, p, v ? v->kind : KIND_NONE)) {
    cache__page *e = page_find(p, page);
    if (e && usable(r, p, e, v)) {
      memcpy(dst, e->data + off, n);
      lru_touch(e);
      hit = 1;
      C.hits++;
    } else {
      C.misses++;
    }
  }
  pthread_mutex_unlock(&mu);
  return hit;
}

/* A page to fill: the least recently used one when full, else a new one. */
static cache__page *page_new(void) {
  if (C.npages >= C.max_pages && C.lru_tail) {
    cache__page *e = C.lru_tail;
    page_unlink(e);
    C.evictions++;
    return e;
  }
  return malloc(sizeof(cache__page) + C.page);
}

void cache_read_store(cache_read *r, uint64_t page, const void *data) {
  cache__proc *p = r->proc;
  if (p == NULL)
    return;
  pthread_mutex_lock(&mu);
  /* A write since begin may have changed what this read saw. */
  if (p->dead || p->seq != r->seq)
    goto exit;
  const cache__vma *v = vma_of(p, page);
  int kind = v ? v->kind : KIND_NONE;
  cache__page *e = page_find(p, page);
  /* Pages this read could not have been served are kept only to refresh a
   * copy that is there already, so that aged reads see the newest bytes. */
  if (e == NULL) {
    if (!may_serve(r, p, kind))
      goto exit;
    e = page_new();
    if (e == NULL)
      goto exit;
    e->addr = page;
    page_link(p, e);
  } else {
    lru_touch(e);
  }
  memcpy(e->data, data, C.page);
  e->stamp = r->now;
  e->kind = kind;
  e->epoch = kind == KIND_FILE ? v->epoch : 0;
exit:
  pthread_mutex_unlock(&mu);
}

/* Drops the pages of `p` from page `first` to page `last` and stops the
 * reads in flight from storing what they read before. */
static void proc_invalidate(cache__proc *p, uint64_t first, uint64_t last) {
  p->seq++;
  if ((last - first) / C.page < p->npages) {
    for (uint64_t a = first;; a += C.page) {
      cache__page *e = page_find(p, a);
      if (e)
        page_drop(e, 0);
      if (a == last)
        break;
    }
  } else {
    for (cache__page *e = p->pages, *next; e; e = next) {
      next = e->pnext;
      if (e->addr >= first && e->addr <= last)
        page_drop(e, 0);
    }
  }
}

/* Files mapped shared in a written range: other processes that map them see
 * the write too. More than fit makes `n` CACHE__MANY. */
#define CACHE__FILES 8
#define CACHE__MANY ((size_t)-1)

typedef struct {
  uint64_t dev[CACHE__FILES], inode[CACHE__FILES];
  size_t n;
} shared_files;

static void shared_add(shared_files *f, uint64_t dev, uint64_t inode, int shared, uint64_t start,
                       uint64_t end, uint64_t addr, uint64_t last) {
  if (!shared || inode == 0 || start > last || end - 1 < addr || f->n == CACHE__MANY)
    return;
  for (size_t i = 0; i < f->n; i++)
    if (f->dev[i] == dev && f->inode[i] == inode)
      return;
  if (f->n == CACHE__FILES) {
    f->n = CACHE__MANY;
    return;
  }
  f->dev[f->n] = dev;
  f->inode[f->n++] = inode;
}

static int shared_has(const shared_files *f, const cache__vma *v) {
  if (f->n == CACHE__MANY)
    return 1;
  for (size_t i = 0; i < f->n; i++)
    if (v && v->inode == f->inode[i] && v->dev == f->dev[i])
      return 1;
  return 0;
}

void cache_invalidate(uint32_t pid, uint64_t addr, uint64_t len) {
  if (!C.on || len == 0)
    return;
  uint64_t last_byte = addr + (len - 1); /* Ranges may end at 2^64. */
  uint64_t first = addr & ~(uint64_t)(C.page - 1), last = last_byte & ~(uint64_t)(C.page - 1);
  shared_files files = {.n = 0};
  pthread_mutex_lock(&mu);
  cache__proc *p = proc_find(pid);
  if (p) {
    proc_invalidate(p, first, last);
    for (size_t i = 0; i < p->nvmas; i++) {
      const cache__vma *v = &p->vmas[i];
      shared_add(&files, v->dev, v->inode, v->shared, v->start, v->end, addr, last_byte);
    }
  }
  int tracked = C.nprocs > 0;
  pthread_mutex_unlock(&mu);
  if (tracked) {
    /* The writer's map as it is now, not as last snapshotted: a shared
     * mapping made since then may carry this write to files that others
     * have cached. Also covers a pid the cache does not track (a thread of
     * one it does, or a process sharing a file with one). */
    target_vmas m;
    codec_err err;
    if (target_vmas_load(pid, 0, &m, &err) == 0) {
      for (size_t i = 0; i < m.n; i++) {
        const target_vma *v = &m.v[i];
        shared_add(&files, (uint64_t)v->dev_major << 32 | v->dev_minor, v->inode, v->shared,
                   v->start, v->end, addr, last_byte);
      }
      target_vmas_free(&m);
    }
    uint32_t tgid = p ? pid : target_tgid(pid);
    if (tgid != 0 && tgid != pid) {
      pthread_mutex_lock(&mu);
      cache__proc *q = proc_find(tgid);
      if (q)
        proc_invalidate(q, first, last);
      pthread_mutex_unlock(&mu);
    }
  }
  if (files.n == 0)
    return;
  pthread_mutex_lock(&mu);
  for (size_t i = 0; i < C.nprocs; i++) {
    /* The writer too: it may map the file at other addresses. */
    cache__proc *q = C.procs[i];
    q->seq++;
    for (cache__page *e = q->pages, *next; e; e = next) {
      next = e->pnext;
      if (shared_has(&files, vma_of(q, e->addr)))
        page_drop(e, 0);
    }
  }
  pthread_mutex_unlock(&mu);
}

void cache_flush(uint32_t pid) {
  if (!C.on)
    return;
  pthread_mutex_lock(&mu);
  for (size_t i = 0; i < C.nprocs; i++) {
    cache__proc *p = C.procs[i];
    if (pid == 0 || p->pid == pid) {
      p->seq++;
      proc_drop_pages(p, 0);
    }
  }
  pthread_mutex_unlock(&mu);
}

int cache_set_frozen(uint32_t pid, int frozen) {
  if (!C.on)
    return 0;
  uint64_t now = now_ns();
  codec_err err;
  cache__proc *p = proc_get(pid, now, &err);
  if (p == NULL)
    return err.code;
  /* The kinds of pages come from the map: have one before any is read. */
  pthread_mutex_lock(&mu);
  int due = maps_due(p, now);
  pthread_mutex_unlock(&mu);
  if (due)
    maps_load(p);
  pthread_mutex_lock(&mu);
  if (frozen && !p->frozen) {
    p->frozen = 1;
    p->frozen_at = now;
  } else if (!frozen && p->frozen) {
    /* Nothing changed the private pages read while frozen, so they are as
     * good as read now. */
    for (cache__page *e = p->pages; e; e = e->pnext)
      if (e->kind != KIND_SHARED && e->kind != KIND_NONE && e->stamp >= p->frozen_at)
        e->stamp = now;
    p->frozen = 0;
  }
  proc_unref(p);
  pthread_mutex_unlock(&mu);
  return 0;
}

void cache_get_stats(rmem_cache_info *out) {
  memset(out, 0, sizeof(*out));
  pthread_mutex_lock(&mu);
  out->size_limit = C.limit;
  out->pages = C.npages;
  out->bytes = (uint64_t)C.npages * (C.page ? C.page : 0);
  out->hits = C.hits;
  out->misses = C.misses;
  out->evictions = C.evictions;
  out->invalidations = C.invalidations;
  pthread_mutex_unlock(&mu);
}

void cache_close(void) {
  pthread_mutex_lock(&mu);
  while (C.nprocs > 0)
    proc_kill(C.procs[C.nprocs - 1], 0);
  free(C.buckets);
  memset(&C, 0, sizeof(C));
  pthread_mutex_unlock(&mu);
}
