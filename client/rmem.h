/* librmem: the client library for rmemd, the remote process-memory agent.
 *
 * Blocking calls with timeouts; no event loop is imposed. Requests can be
 * pipelined with the *_start / rmem_finish pair. Every function returns 0 (or
 * a byte count) on success and a negative code from rmem_error.h on failure;
 * rmem_last_error() then gives the agent's own message.
 *
 * Ownership: results filled into caller structs (rmem_proc_list, rmem_memmap,
 * rmem_ranges) belong to the caller and are released with their *_free
 * function, which also accepts a zeroed struct. */
#ifndef RMEM_H
#define RMEM_H

#include "rmem_error.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RMEM_VERSION "0.1.0"
#define RMEM_DEFAULT_PORT 7467
/** Longest token (shared secret) sent in hello, in bytes. */
#define RMEM_TOKEN_MAX 512

typedef struct rmem_client rmem_client;

/** What the agent announced in its hello reply. */
typedef struct {
  uint32_t version;      /**< Protocol version (1). */
  char agent[64];        /**< Agent name and version, "rmemd/0.1.0". */
  char os[16];           /**< "linux". */
  char arch[16];         /**< "x86_64", "aarch64", ... */
  uint32_t page_size;    /**< Target page size in bytes. */
  uint32_t pointer_size; /**< Agent pointer size in bytes. */
  uint64_t max_frame;    /**< Longest frame the agent accepts or sends. */
  uint64_t max_read;     /**< Longest single read request. */
  uint64_t max_write;    /**< Longest single write request. */
  uint32_t max_inflight; /**< Requests in flight per connection before backpressure. */
  size_t nmethods;
  char methods[32][24]; /**< Method names the agent serves. */
  int tls;              /**< 1 when the connection runs over TLS. */
  char auth[8];         /**< What the agent requires: "none", "token" or "mtls". */
  char compress[8];     /**< How read data may be compressed on this connection: "lz4"
                             when offered (rmem_connect_options.compress) and accepted,
                             "" for never. */
} rmem_agent_info;

/** One process on the target box. */
typedef struct {
  uint32_t pid, ppid, uid;
  uint32_t threads;
  char state;   /**< 'R', 'S', 'D', 'Z', 'T', ... as in /proc/PID/stat. */
  uint64_t rss; /**< Resident set size in bytes. */
  char *name;   /**< Command name (comm). Never NULL. */
  char *exe;    /**< Executable path, "" when unknown or not permitted. Never NULL. */
  char **argv;  /**< Command line, argc strings; empty for kernel threads. */
  size_t argc;
  int cmdline_truncated; /**< 1 when the agent cut the command line (over 4 KiB). */
} rmem_proc;

typedef struct {
  rmem_proc *procs;
  size_t n;
} rmem_proc_list;

#define RMEM_PROT_R 1u
#define RMEM_PROT_W 2u
#define RMEM_PROT_X 4u

/** Region state, as VirtualQuery's MEM_COMMIT / MEM_RESERVE / MEM_FREE. */
enum { RMEM_STATE_COMMIT = 0, RMEM_STATE_RESERVE = 1, RMEM_STATE_FREE = 2 };
/** Region type, as MEM_IMAGE / MEM_MAPPED / MEM_PRIVATE; NONE for free gaps. */
enum { RMEM_TYPE_NONE = 0, RMEM_TYPE_IMAGE = 1, RMEM_TYPE_MAPPED = 2, RMEM_TYPE_PRIVATE = 3 };
/** What a region holds. */
enum {
  RMEM_USAGE_NONE = 0,
  RMEM_USAGE_HEAP,         /**< [heap] */
  RMEM_USAGE_STACK,        /**< The main thread's [stack]; tid is the pid. */
  RMEM_USAGE_THREAD_STACK, /**< Another thread's stack, found from its stack pointer. */
  RMEM_USAGE_VDSO,
  RMEM_USAGE_VVAR,
  RMEM_USAGE_VSYSCALL,
  RMEM_USAGE_MODULE, /**< Part of a mapped ELF file (executable or shared object). */
};

/** smaps figures for one region, in bytes. */
typedef struct {
  uint64_t rss, pss, shared_clean, shared_dirty, private_clean, private_dirty;
  uint64_t referenced, anonymous, swap, swap_pss, anon_huge, locked;
  char vmflags[128]; /**< The VmFlags line, "rd wr mr mw me ac". */
} rmem_smaps;

/** One region of a memory map: MEMORY_BASIC_INFORMATION translated to Linux. */
typedef struct {
  uint64_t base, size;
  uint64_t alloc_base; /**< First region of the same mapping (module, reservation). */
  uint64_t offset;     /**< File offset. */
  uint64_t inode;
  uint32_t dev_major, dev_minor;
  uint32_t prot; /**< RMEM_PROT_* bits. */
  int shared;    /**< 1 for MAP_SHARED. */
  int state;     /**< RMEM_STATE_*. */
  int type;      /**< RMEM_TYPE_*. */
  int usage;     /**< RMEM_USAGE_*. */
  uint32_t tid;  /**< Thread whose stack this is, for STACK and THREAD_STACK. */
  int main_exe;  /**< 1 when the module is the main executable. */
  int deleted;   /**< 1 when the backing file was deleted. */
  char *path;    /**< Backing file or pseudo-name ("[heap]"); NULL when none. */
  int has_smaps; /**< 1 when `smaps` was filled (RMEM_MAP_DETAIL). */
  rmem_smaps smaps;
} rmem_region;

typedef struct {
  uint32_t pid;
  rmem_region *regions;
  size_t n;
} rmem_memmap;

/** A byte range that could not be read or written, and why (RMEM_EUNMAPPED,
 * RMEM_EPROT or RMEM_EIO). */
typedef struct {
  uint64_t addr, len;
  int code;
} rmem_range;

typedef struct {
  rmem_range *v;
  size_t n, cap;
} rmem_ranges;

#define RMEM_MAP_FREE 1u   /**< Also list free gaps between mappings. */
#define RMEM_MAP_DETAIL 2u /**< Add smaps figures per region. */

/** Connects to an agent and says hello. `timeout_ms` bounds the connect and
 * every later call (0 means 10 s; negative means wait forever). */
int rmem_connect(rmem_client **out, const char *host, uint16_t port, int timeout_ms);

/** How to connect (rmem_connect_opts). A zeroed struct gives rmem_connect's
 * defaults: plaintext to 127.0.0.1:7467, 10 s timeout, no token. */
typedef struct {
  const char *host;       /**< Name or address; NULL: "127.0.0.1". */
  uint16_t port;          /**< 0: RMEM_DEFAULT_PORT. */
  int timeout_ms;         /**< As for rmem_connect; the TLS handshake counts as connecting. */
  int tls;                /**< 1: TLS 1.2 (ECDHE with AES-GCM or ChaCha20-Poly1305). The
                               agent's certificate must then be checked: give ca_file,
                               pin_sha256 or both. */
  const char *ca_file;    /**< PEM file of the CA(s) that must have issued the agent's
                               certificate, whose names must match `host`. */
  const char *pin_sha256; /**< SHA-256 of the agent's certificate (DER) in hex, colons
                               allowed: accepts exactly that certificate (test rigs). */
  const char *cert_file;  /**< Client certificate (PEM) for mutual TLS, with key_file. */
  const char *key_file;   /**< Its private key (PEM, unencrypted). */
  const char *token;      /**< Shared secret sent in hello (at most RMEM_TOKEN_MAX
                               bytes), or NULL. Never sent in the clear to a
                               non-loopback address: that fails with RMEM_EPERM. */
  int compress;           /**< 1: offer lz4 compression of read data. It pays on links
                               slower than the agent compresses (about 1 GB/s per
                               core on heap-like memory) when the memory compresses;
                               the agent sends what does not compress raw, and may
                               decline (see rmem_info()->compress). Reads of 4 KiB or
                               more through rmem_read, rmem_read_ex, rmem_read_start
                               and rmem_read_stream use it; rmem_readv does not. */
} rmem_connect_options;

/** Connects as `opts` says and says hello. TLS failures (handshake, a
 * certificate that is not trusted or does not match the pin, an agent that
 * does not speak TLS) return RMEM_ETLS with the reason in rmem_last_error(NULL);
 * a token the agent rejects returns RMEM_EPERM. */
int rmem_connect_opts(rmem_client **out, const rmem_connect_options *opts);
/** Closes the connection and frees the client. Accepts NULL. */
void rmem_close(rmem_client *c);
/** Changes the per-call timeout. */
void rmem_set_timeout(rmem_client *c, int timeout_ms);
/** The agent's hello reply. */
const rmem_agent_info *rmem_info(const rmem_client *c);
/** The message that came with the last error (the agent's, or the library's own).
 * With NULL, the message of this thread's last failed rmem_connect. */
const char *rmem_last_error(const rmem_client *c);

/** Lists the processes on the target box. */
int rmem_ps(rmem_client *c, rmem_proc_list *out);
void rmem_proc_list_free(rmem_proc_list *l);

/** The whole memory map of `pid`; `flags` is RMEM_MAP_FREE | RMEM_MAP_DETAIL.
 * Maps longer than one frame arrive in pieces and are joined here. */
int rmem_map(rmem_client *c, uint32_t pid, unsigned flags, rmem_memmap *out);
void rmem_memmap_free(rmem_memmap *m);

/** Reads `len` bytes at `addr` into `buf`. Ranges that could not be read are
 * zero-filled and listed in `holes` (which may be NULL). Returns the number of
 * bytes actually read (len minus the holes), or a negative code; a read with
 * no readable byte at all fails with RMEM_EFAULT (`holes` then still lists
 * the range). Reads longer than the agent's max_read are split and pipelined. */
ssize_t rmem_read(rmem_client *c, uint32_t pid, uint64_t addr, void *buf, size_t len,
                  rmem_ranges *holes);

/** Writes `len` bytes at `addr` through the debugger path (read-only pages
 * are patched too). Returns the number of bytes written; ranges that failed
 * are listed in `failed` (which may be NULL). A write that wrote nothing
 * fails with RMEM_EFAULT. */
ssize_t rmem_write(rmem_client *c, uint32_t pid, uint64_t addr, const void *buf, size_t len,
                   rmem_ranges *failed);

void rmem_ranges_free(rmem_ranges *r);

/** Pipelining: send a request now, collect its reply later with rmem_finish.
 * `buf` must stay valid until then; len must not exceed max_read (or
 * max_write). Up to any number of requests may be outstanding; the agent
 * applies backpressure past its max_inflight. */
int rmem_read_start(rmem_client *c, uint32_t pid, uint64_t addr, void *buf, size_t len,
                    uint32_t *id);
int rmem_write_start(rmem_client *c, uint32_t pid, uint64_t addr, const void *buf, size_t len,
                     uint32_t *id);
/** Receives one piece of a streamed read: `len` bytes at `addr`, with the
 * piece's holes (zero-filled in `data`). `data` is valid only during the call.
 * Return 0 to go on, anything else to stop the stream. */
typedef int (*rmem_chunk_cb)(void *ctx, uint64_t addr, const void *data, size_t len,
                             const rmem_range *holes, size_t nholes);

/** Reads `len` bytes (any length) at `addr` and hands them to `cb` in
 * address order, piece by piece, keeping a few requests in flight: memory
 * use is a few MiB whatever `len` is. Returns the bytes read (len minus the
 * holes), RMEM_EFAULT when nothing was readable, RMEM_ECANCELED when `cb`
 * stopped the stream, or another negative code. */
ssize_t rmem_read_stream(rmem_client *c, uint32_t pid, uint64_t addr, uint64_t len,
                         rmem_chunk_cb cb, void *ctx);

/** Waits for the reply to request `id` and returns what rmem_read or
 * rmem_write would have returned for it. Holes or failed ranges are appended
 * to `ranges` (which may be NULL). The request is over when this returns,
 * even with an error such as RMEM_ETIMEDOUT: a late reply is dropped. */
ssize_t rmem_finish(rmem_client *c, uint32_t id, rmem_ranges *ranges);

/* Slow links: several reads in one round trip (readv, deref, read_string),
 * and writes whose bytes need not travel (fill). */

/** Limits of readv, deref, read_string and fill (proto/PROTOCOL.md). The
 * library splits longer readv, deref and fill calls into several requests. */
#define RMEM_READV_MAX_RANGES 4096  /**< Ranges in one readv request. */
#define RMEM_DEREF_MAX_OFFSETS 1024 /**< Offsets in one deref request. */
#define RMEM_STRING_MAX (1u << 20)  /**< Largest read_string max_len, in bytes. */
#define RMEM_STRING_DEFAULT 4096    /**< read_string max_len when none is given. */
#define RMEM_FILL_MAX (1ull << 30)  /**< Longest range of one fill request. */
#define RMEM_FILL_MAX_PATTERN 4096  /**< Longest fill pattern, in bytes. */

/** One range of a scatter read: `len` bytes at target address `addr` go to `buf`. */
typedef struct {
  uint64_t addr;
  size_t len;
  void *buf;
} rmem_iov;

/** Reads `n` ranges, which may overlap and come in any order, in as few round
 * trips as the agent's limits allow (pipelined). Each range behaves as
 * rmem_read: unreadable bytes are zero-filled and listed in `holes` (which
 * may be NULL), in the order of `iov` and, within one range, in address
 * order; holes of different ranges are never merged. A range with nothing
 * readable does not fail the call. Returns the total number of bytes read,
 * or a negative code; RMEM_EFAULT when not one byte of any range could be
 * read (`holes` then still lists them all). */
ssize_t rmem_readv(rmem_client *c, uint32_t pid, const rmem_iov *iov, size_t n, rmem_ranges *holes);

/** Where a pointer chain led (rmem_deref). Caller storage: zero it before
 * the first use; rmem_deref_result_free releases it. */
typedef struct {
  uint64_t *pointers; /**< Every pointer value read, in order (malloc'd). */
  size_t npointers;   /**< n when the chain resolved; the pointers read before it broke. */
  uint64_t addr;      /**< The final address; where the failed read was, when broken. */
  int broken;         /**< 1 when the chain broke (rmem_deref returned RMEM_EFAULT). */
  size_t step;        /**< Broken: index of the offset whose pointer could not be read,
                           or n when the final read found nothing readable. */
  int code;           /**< Broken: why (RMEM_EUNMAPPED, RMEM_EPROT or RMEM_EIO). */
  rmem_ranges holes;  /**< Resolved: unreadable parts of the final bytes (zero in buf). */
} rmem_deref_result;

/** Follows a pointer chain in one round trip, as a Cheat Engine pointer path:
 * p = addr; for each offset o: p = *(pointer *)p + o; then reads `len` bytes
 * at p into `buf`. Pointers have the target's width (4 bytes for 32-bit
 * processes, 8 for 64-bit ones) and arithmetic wraps around at that width.
 * Chains longer than RMEM_DEREF_MAX_OFFSETS and lengths over max_read are
 * split into several requests. Returns 0 when the chain resolved (`buf`
 * holds the bytes, out->holes lists any unreadable ones), RMEM_EFAULT when
 * it broke (out says at which step, where and why; `buf` then holds nothing
 * useful), or another negative code. `out` may be NULL; its previous
 * contents are released. */
int rmem_deref(rmem_client *c, uint32_t pid, uint64_t addr, const int64_t *offsets, size_t n,
               void *buf, size_t len, rmem_deref_result *out);
void rmem_deref_result_free(rmem_deref_result *r);

#define RMEM_STRING_UTF16 1u /**< rmem_read_string: UTF-16LE, ended by a 0x0000 unit. */

/** A string read from the target (rmem_read_string). Caller storage: zero
 * it before the first use; rmem_string_free releases it. */
typedef struct {
  char *text;         /**< UTF-8 (for UTF-8 targets, the raw bytes), NUL-terminated; malloc'd. */
  size_t text_len;    /**< Bytes of text, without the NUL. */
  uint64_t len;       /**< Bytes consumed in the target, without the terminator. */
  int terminated;     /**< 1 when the terminator was found. */
  int has_hole;       /**< 1 when reading stopped at an unreadable page: */
  uint64_t hole_addr; /**< its first byte, */
  int hole_code;      /**< and why (RMEM_EUNMAPPED, RMEM_EPROT or RMEM_EIO). */
} rmem_string;

/** Reads a NUL-terminated string (or, with RMEM_STRING_UTF16 in `flags`, a
 * UTF-16LE string ended by a 0x0000 unit, converted to UTF-8 with unpaired
 * surrogates as U+FFFD) of at most `max_len` bytes at `addr` (0: the
 * default, RMEM_STRING_DEFAULT). Reading stops at the terminator, at
 * max_len, or at the first unreadable page, which is not an error when
 * something before it was read. Fails with RMEM_EFAULT when the first byte
 * is unreadable and with RMEM_ETOOBIG when max_len is over RMEM_STRING_MAX
 * or the agent's max_read. The previous contents of `out` are released. */
int rmem_read_string(rmem_client *c, uint32_t pid, uint64_t addr, size_t max_len, unsigned flags,
                     rmem_string *out);
void rmem_string_free(rmem_string *s);

/** Writes the `plen` bytes of `pattern` (1 to RMEM_FILL_MAX_PATTERN) repeated
 * over `len` bytes at `addr`, as WinDbg's FillVirtual, without sending the
 * bytes. Pages are treated as rmem_write treats them. Returns the number of
 * bytes written; failed ranges are listed in `failed` (which may be NULL). A
 * fill that wrote nothing fails with RMEM_EFAULT. Ranges longer than
 * RMEM_FILL_MAX are split, keeping the pattern's phase. */
ssize_t rmem_fill(rmem_client *c, uint32_t pid, uint64_t addr, size_t len, const void *pattern,
                  size_t plen, rmem_ranges *failed);

/** Options of one read (rmem_read_ex). A zeroed struct gives rmem_read's
 * behaviour. */
typedef struct {
  int uncached;        /**< 1: read live memory, never a cached copy (as WinDbg's
                            ReadVirtualUncached); what is read refreshes the cache. */
  uint64_t max_age_ms; /**< Also accept copies of any page that the agent read at most
                            this many milliseconds ago; 0: only the copies the
                            coherence rules allow without an age. */
} rmem_read_opts;

/** What a read says about itself. */
typedef struct {
  uint64_t cached_bytes;       /**< Bytes served from the agent's page cache rather than
                                    read from the target just now. */
  uint64_t compressed_bytes;   /**< Wire bytes of the data that came lz4-compressed. */
  uint64_t decompressed_bytes; /**< The bytes those blocks held: the rest of the read
                                    came raw. */
} rmem_read_info;

/** rmem_read with options: `opts` may be NULL; `info` (may be NULL) is always
 * filled, with what the pieces that completed said. Agents without a page
 * cache ignore the options and report nothing cached. The rules for which
 * cached copies a read may get, and how stale they may be, are in
 * PROTOCOL.md, "Page cache and coherence". */
ssize_t rmem_read_ex(rmem_client *c, uint32_t pid, uint64_t addr, void *buf, size_t len,
                     const rmem_read_opts *opts, rmem_ranges *holes, rmem_read_info *info);

/** The agent's page cache figures. Counts are pages and run from the agent's
 * start; flushing does not reset them. */
typedef struct {
  uint64_t size_limit;    /**< Bytes the cache may hold (0: the cache is off). */
  uint64_t bytes;         /**< Bytes held now. */
  uint64_t pages;         /**< Pages held now. */
  uint64_t hits;          /**< Pages served from the cache. */
  uint64_t misses;        /**< Pages a read could have taken from the cache but read live. */
  uint64_t evictions;     /**< Pages dropped to stay within size_limit. */
  uint64_t invalidations; /**< Pages dropped as no longer trustworthy (writes,
                               flushes, exits, changed mappings). */
} rmem_cache_info;

/** Fills `out` with the agent's page cache figures. */
int rmem_cache_stats(rmem_client *c, rmem_cache_info *out);
/** Drops the agent's cached pages of `pid`, or of every process when `pid`
 * is 0. `out` (may be NULL) gets the figures after the flush. */
int rmem_cache_flush(rmem_client *c, uint32_t pid, rmem_cache_info *out);

#ifdef __cplusplus
}
#endif
#endif
