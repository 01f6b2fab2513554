/*
 * sim_device: what the GPUs of a simulated node hold right now, shared by
 * every process that uses the node, as a real GPU's memory and engine are.
 *
 * One file (GPULET_SIM_DEVICE_STATE, by default
 * $TMPDIR/gpulet-sim-<uid>-<node>.device) is mapped by the simulated
 * libcuda.so.1, which allocates memory and queues kernels in it, and by the
 * simulated libnvidia-ml.so.1, which reports them. A process-shared robust
 * mutex guards it; memory of processes that died is given back, as the
 * kernel driver does.
 */
#ifndef GPULET_SIM_DEVICE_H
#define GPULET_SIM_DEVICE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sim_node.h"

#define SIM_DEV_MAX_PROCS 64
#define SIM_DEV_PERIODS 32
#define SIM_DEV_PERIOD_NS 100000000ULL
/* A process's busy time: the last second, and the second of work a full
 * launch queue holds ahead (its periods must not overwrite the past ones). */
#define SIM_DEV_PROC_PERIODS 32

struct sim_dev_proc {
    int32_t pid; /* 0: a free slot */
    uint64_t used_bytes;
    uint64_t busy_ns;
    /* Its kernels' time per 100 ms period, as the GPU's, for per-process
     * utilisation. */
    uint64_t period[SIM_DEV_PROC_PERIODS], period_busy_ns[SIM_DEV_PROC_PERIODS];
};

/* The GPU runs one kernel at a time, in the order they were queued by all
 * processes: its engine is a single timeline. */
struct sim_dev_gpu {
    uint64_t used_bytes;
    uint64_t busy_until_ns;  /* CLOCK_MONOTONIC time the queued work ends */
    uint64_t busy_total_ns;
    /* Busy time per 100 ms period (period p in slot p % SIM_DEV_PERIODS),
     * for utilisation. */
    uint64_t period[SIM_DEV_PERIODS], period_busy_ns[SIM_DEV_PERIODS];
    struct sim_dev_proc procs[SIM_DEV_MAX_PROCS];
};

struct sim_dev_file {
    uint32_t magic, gpu_count;
    pthread_mutex_t lock;
    struct sim_dev_gpu gpus[SIM_MAX_GPUS];
};

/* Maps the node's shared file, creating it on first use when create is
 * set. NULL on failure, with the reason in msg (empty when the file is
 * absent and create is not set). */
struct sim_dev_file *sim_dev_open(const struct sim_node *node, bool create, char *msg,
                                  size_t msg_len);

uint64_t sim_dev_now_ns(void);

/* Takes bytes of GPU gpu for this process if they fit in capacity; gives
 * back the memory of dead processes first when they would not. */
bool sim_dev_alloc(struct sim_dev_file *f, unsigned int gpu, uint64_t bytes, uint64_t capacity);
void sim_dev_free(struct sim_dev_file *f, unsigned int gpu, uint64_t bytes);
uint64_t sim_dev_used(struct sim_dev_file *f, unsigned int gpu);

/* Queues dur_ns of work on gpu's timeline; returns when it will end. */
uint64_t sim_dev_enqueue(struct sim_dev_file *f, unsigned int gpu, uint64_t dur_ns);

/* Percent of the last second gpu was busy. */
unsigned int sim_dev_utilization(struct sim_dev_file *f, unsigned int gpu);
/* Percent of the last second (before now_ns) a process's kernels kept its
 * GPU busy, from a copy sim_dev_processes gave. */
unsigned int sim_dev_proc_utilization(const struct sim_dev_proc *p, uint64_t now_ns);

/* The live processes holding memory on gpu: up to max of them, with what
 * each holds. Returns how many there are. */
size_t sim_dev_processes(struct sim_dev_file *f, unsigned int gpu, struct sim_dev_proc *out,
                         size_t max);

#endif
