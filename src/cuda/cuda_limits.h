/*
 * cuda_limits: the bookkeeping of libgpulet-cuda.so, the CUDA interposer
 * that holds a container to a memory limit and a compute share per GPU
 * (docs/sharing.md).
 *
 * The usage of one GPU by all processes of a container lives in one file,
 * GPULET_CUDA_STATE_DIR/<GPU UUID>, mapped by each process and guarded by
 * a process-shared robust mutex: a slot per process, so the memory of a
 * process that died is taken back, and a token bucket of GPU time for the
 * compute share. Nothing here calls CUDA; the interposer (interpose.c)
 * does, and this part is tested on its own.
 */
#ifndef GPULET_CUDA_LIMITS_H
#define GPULET_CUDA_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GLC_MAX_PROCS 1024 /* a multiple of 128 */

/* "10Gi", "512Mi", "1G", "4096": bytes; -1 when malformed or zero. */
int glc_parse_size(const char *text, uint64_t *bytes);
/* "30", "12.5", "33.33": a percent from 0.01 to 100, in hundredths of a
 * percent (3000, 1250, 3333); -1 otherwise. */
int glc_parse_percent(const char *text, unsigned int *hundredths);

/* The limits file gpulet's Allocate mounts read-only into a sliced
 * container: lines KEY=VALUE (GPULET_CUDA_DEVICE_UUID_<i>,
 * GPULET_CUDA_MEMORY_LIMIT_<i>, GPULET_CUDA_COMPUTE_SHARE_<i>, and
 * optionally GPULET_CUDA_STATE_DIR and GPULET_CUDA_CONTEXT_SIZE), '#'
 * comments. Its path is fixed: a container must not be able to point the
 * interposer at a file of its own. This module owns the format, written
 * (glc_format_limits, by gpulet) and read (glc_parse_limits, by the
 * interposer and by gpulet's metrics), and where a sliced container finds
 * the interposer, the file and the state folder. */
#define GLC_LIMITS_FILE "/etc/gpulet/cuda-limits"
#define GLC_CONTAINER_INTERPOSER "/usr/lib/gpulet/libgpulet-cuda.so"
#define GLC_CONTAINER_STATE_DIR "/run/gpulet/cuda"
#define GLC_LIMITS_MAX_BYTES 4096
#define GLC_MAX_DEVS 64

struct glc_limits {
    struct {
        uint64_t limit;      /* bytes; 0: none */
        unsigned int share;  /* hundredths of a percent; 0: none */
        char uuid[48];       /* "" when not given */
    } dev[GLC_MAX_DEVS];
    bool by_uuid;            /* every device with a limit names its UUID */
    char state_dir[256];     /* "" when not given */
    uint64_t context_bytes;  /* 0 when not given */
};

/* A GPU's limits as gpulet grants them: share in hundredths of a percent
 * (10000 or more: the whole GPU). */
struct glc_grant {
    const char *uuid;
    uint64_t limit;
    unsigned long share;
};
/* "12.5" for 1250 hundredths, "100" for 10000 or more, "0.01" for 0 (a
 * share that rounded to nothing: "0" would make the file unreadable): a
 * share as the file and GPULET_CUDA_COMPUTE_SHARE_<i> give it. */
void glc_format_percent(unsigned long hundredths, char *buf, size_t len);
/* The text of the limits file for devices 0..n-1 (and a context size
 * unless 0), as glc_parse_limits reads it back (a share of 100 % reads as
 * none). Returns its length, or -1 when it does not fit len bytes. */
int glc_format_limits(const struct glc_grant *devs, size_t n, uint64_t context_bytes, char *buf,
                      size_t len);

/* Parses len bytes of a limits file. -1 with the line and reason in msg on
 * anything it does not know (an unknown or repeated key, a bad value, a
 * NUL byte, too long): the caller then refuses rather than guesses. */
int glc_parse_limits(const char *text, size_t len, struct glc_limits *out, char *msg,
                     size_t msg_len);
/* Reads and parses the limits file at path: 1 when there is none, 0 when
 * read, -1 (reason in msg) when it is there but unusable: a link, not a
 * regular file, over GLC_LIMITS_MAX_BYTES, unreadable or malformed. */
int glc_read_limits(const char *path, struct glc_limits *out, char *msg, size_t msg_len);
/* Whether two UUIDs name the same device: "GPU-" and "MIG-" prefixes and
 * case aside, the same hex digits. */
bool glc_same_uuid(const char *a, const char *b);

struct glc_file;

/* Maps dir/name, creating it; dir NULL keeps the state in this process
 * only. NULL on failure, with the reason in msg. */
struct glc_file *glc_open(const char *dir, const char *name, char *msg, size_t msg_len);
void glc_close(struct glc_file *f);
/* In a forked child (from pthread_atfork): the child shares its parent's
 * open file, and with it the slot's lock, so it takes a file of its own,
 * and a slot of its own when it needs one. Kept out of the allocation
 * path, which then needs no getpid(). */
void glc_forked(struct glc_file *f);

/* Takes bytes for this process if the container's usage stays within
 * limit, reclaiming the usage of dead processes when it would not. */
bool glc_reserve(struct glc_file *f, uint64_t bytes, uint64_t limit);
void glc_release(struct glc_file *f, uint64_t bytes);
uint64_t glc_used(struct glc_file *f);

/* Charges cost_ns of GPU time to a bucket filled at share hundredths of a
 * percent of wall time (holding at most burst_ns); returns how long to
 * wait first. */
uint64_t glc_charge(struct glc_file *f, unsigned int share, uint64_t cost_ns, uint64_t burst_ns,
                    uint64_t now_ns);

/* What gpulet's metrics read of a state file, without its lock. */
struct glc_usage {
    uint64_t used;       /* bytes held by the container's processes, live or not yet reclaimed */
    uint64_t charged_ns; /* GPU time charged to the compute share, ever */
    bool counted;        /* charged_ns is known (files of the first layout lack it) */
};

/* Reads name under dir_fd defensively (the container writes it): no link,
 * no FIFO, exactly a state file's size with its magic; -1 with the
 * reason in msg otherwise. */
int glc_peek(int dir_fd, const char *name, struct glc_usage *out, char *msg, size_t msg_len);

/* Bytes of an array of w x h x d elements of elem_bytes x channels over
 * levels mipmap levels (a 0 dimension counts as 1); UINT64_MAX on
 * overflow. */
uint64_t glc_array_bytes(uint64_t w, uint64_t h, uint64_t d, uint64_t elem_bytes,
                         unsigned int channels, unsigned int levels);

/* Whether the ELF shared object open at fd defines (exports) the dynamic
 * symbol name: 1 yes, 0 no, -1 when it is not a 64-bit ELF file whose
 * section headers and dynamic symbols can be read within its size. The
 * file is the container's: every offset is checked before it is read. */
int glc_elf_defines(int fd, const char *name);

/* A map from (kind, handle) to (device, bytes): what each live allocation
 * of this process holds. Not locked: the interposer holds a mutex. */
struct glc_entry {
    uint64_t key;
    uint32_t kind; /* 0: empty, UINT32_MAX: deleted */
    int32_t dev;
    uint64_t bytes;
};

struct glc_map {
    struct glc_entry *e;
    size_t cap, used, live;
};

int glc_map_put(struct glc_map *m, uint32_t kind, uint64_t key, int dev, uint64_t bytes);
/* Removes the entry; false when there is none. */
bool glc_map_take(struct glc_map *m, uint32_t kind, uint64_t key, int *dev, uint64_t *bytes);
/* Reads the entry, leaving it; false when there is none. */
bool glc_map_get(const struct glc_map *m, uint32_t kind, uint64_t key, int *dev, uint64_t *bytes);
void glc_map_free(struct glc_map *m);

#endif
