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

#define GLC_MAX_PROCS 1024

/* "10Gi", "512Mi", "1G", "4096": bytes; -1 when malformed or zero. */
int glc_parse_size(const char *text, uint64_t *bytes);
/* "30": percent in 1..100; -1 otherwise. */
int glc_parse_percent(const char *text, unsigned int *pct);

struct glc_file;

/* Maps dir/name, creating it; dir NULL keeps the state in this process
 * only. NULL on failure, with the reason in msg. */
struct glc_file *glc_open(const char *dir, const char *name, char *msg, size_t msg_len);
void glc_close(struct glc_file *f);

/* Takes bytes for this process if the container's usage stays within
 * limit, reclaiming the usage of dead processes when it would not. */
bool glc_reserve(struct glc_file *f, uint64_t bytes, uint64_t limit);
void glc_release(struct glc_file *f, uint64_t bytes);
uint64_t glc_used(struct glc_file *f);

/* Charges cost_ns of GPU time to a bucket filled at pct percent of wall
 * time (holding at most burst_ns); returns how long to wait first. */
uint64_t glc_charge(struct glc_file *f, unsigned int pct, uint64_t cost_ns, uint64_t burst_ns,
                    uint64_t now_ns);

/* Bytes of an array of w x h x d elements of elem_bytes x channels over
 * levels mipmap levels (a 0 dimension counts as 1); UINT64_MAX on
 * overflow. */
uint64_t glc_array_bytes(uint64_t w, uint64_t h, uint64_t d, uint64_t elem_bytes,
                         unsigned int channels, unsigned int levels);

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
