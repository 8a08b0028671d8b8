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
/** Waits for the reply to request `id` and returns what rmem_read or
 * rmem_write would have returned for it. Holes or failed ranges are appended
 * to `ranges` (which may be NULL). The request is over when this returns,
 * even with an error such as RMEM_ETIMEDOUT: a late reply is dropped. */
ssize_t rmem_finish(rmem_client *c, uint32_t id, rmem_ranges *ranges);

#ifdef __cplusplus
}
#endif
#endif
