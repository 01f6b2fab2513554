/* Inside the dra module: the driver's programs (nvidia-smi, nvidia-cuda-
 * mps-control) run for claims without blocking the event loop. A job is a
 * list of steps (run a program with a deadline, wait for a socket, call a
 * function); jobs run one at a time, in order, so that settings of one GPU
 * are applied in the order the claims asked for them. */
#ifndef GPULET_DRA_JOBS_H
#define GPULET_DRA_JOBS_H

#include <stdbool.h>

#include <event2/event.h>

#include "error/error.h"

#define DRA_JOBS_MAX 64        /* jobs queued at once */
#define DRA_JOB_STEPS 200      /* steps a job: two per GPU of a claim of 64 and more */
#define DRA_JOB_OUTPUT 1024    /* a program's output kept for its error message */

/* When a step runs: while the job has not failed, only after it failed
 * (undoing what the job did), or in any case. */
enum dra_step_when { DRA_STEP_OK, DRA_STEP_FAILED, DRA_STEP_ALWAYS };

struct dra_jobs;
struct dra_job;

struct dra_jobs *dra_jobs_new(struct event_base *base);
/* Kills a program still running (and reaps it) and drops every job
 * without calling back. */
void dra_jobs_free(struct dra_jobs *q);

struct dra_job *dra_job_new(const char *what);
void dra_job_free(struct dra_job *j);

/* Runs argv (argv[0] a path) with gpulet's environment plus env
 * ("KEY=VALUE", NULL-terminated, may be NULL), stdin_text (at most 4 KiB)
 * on its standard input, killed past timeout_ms; a step fails when the
 * program does not exit 0. root: a folder to chroot into first (argv[0]
 * is then a path in it), or NULL. shm: a folder the program sees as
 * /dev/shm (a mount namespace of its own), or NULL. */
int dra_job_run(struct dra_job *j, enum dra_step_when when, const char *const *argv,
                const char *const *env, const char *stdin_text, const char *root,
                const char *shm, int timeout_ms);
/* Waits until a Unix socket at path accepts a connection (present) or no
 * longer does (!present); fails past timeout_ms. */
int dra_job_wait_socket(struct dra_job *j, enum dra_step_when when, const char *path,
                        bool present, int timeout_ms);
/* Calls fn(arg) on the loop; it fails the step by returning -1 with err,
 * skips the n steps after it by returning n, or returns DRA_JOB_AGAIN to
 * be called again on a later turn of the loop (long work in slices, the
 * loop serving others between them). */
#define DRA_JOB_AGAIN (-2)
typedef int (*dra_job_fn)(void *arg, struct gpulet_error *err);
/* arg: size bytes copied and kept with the step. */
int dra_job_call(struct dra_job *j, enum dra_step_when when, dra_job_fn fn, const void *arg,
                 size_t size);

/* done(user, NULL) when every step went well, else with the first
 * failure's message. The queue owns the job from here on, even when
 * this fails (a full queue). */
typedef void (*dra_job_done)(void *user, const char *error);
int dra_jobs_submit(struct dra_jobs *q, struct dra_job *j, dra_job_done done, void *user,
                    struct gpulet_error *err);
/* Whoever waited on a job queued with user has gone: it runs to its end
 * but calls nobody. */
void dra_jobs_forget(struct dra_jobs *q, void *user);

/* Whether a Unix socket at path accepts a connection now. */
bool dra_socket_alive(const char *path);

/* ---- a claim's sharing settings, as jobs (dra_mps.c) ---- */

#include "dra_internal.h"

#define DRA_MPS_DAEMONS 16 /* MPS control daemons at once */

struct dra_share {
    struct dra_jobs *jobs;
    const struct gpu_inventory *inv;
    const char *driver_root; /* where usr/bin/nvidia-smi and the MPS control program are */
    /* The programs run chrooted into the driver root, as NVIDIA's driver
     * runs them, where it has a shell (a whole system: the host's / seen
     * from gpulet's container); else straight from it, with its libraries. */
    bool chroot;
    char mps_root[4200];     /* <state dir>/dra/mps: <claim uid>/{pipe,log,shm} */
    /* A claim's folders, which its containers can fill, are handed to the
     * slice folders' reaper (<state dir>/dra/alloc) to be removed. */
    const char *slice_dir;
    struct allocdir_reaper *reaper;
    /* Whether a prepared claim other than uid holds GPU gpu (its time
     * slice stays then). */
    bool (*gpu_held)(void *user, unsigned int gpu, const char *uid);
    /* Whether claim uid is prepared or being prepared (its MPS folder is
     * not to be swept). */
    bool (*claim_known)(void *user, const char *uid);
    void *user;
};

/* The job that applies a claim's settings on prepare (time slices, its
 * MPS control daemon started or, when running, reused, and its
 * defaults); undoes the daemon when a step fails. again: the claim was
 * prepared before (a repeated prepare, gpulet's start): the time slices
 * are set again, which a reboot or a driver reload loses, but not the
 * compute mode, and a failure undoes nothing. NULL *out when the claim
 * asks for nothing. */
int dra_share_prepare(struct dra_share *s, const char *uid, const struct dra_result *r,
                      size_t count, const struct dra_device *devs, size_t n_devs,
                      const struct dra_mps *mps, bool again, struct dra_job **out,
                      struct gpulet_error *err);
/* The job that undoes them on unprepare: quit to the daemon, its folders
 * removed, the default time slice back on GPUs no other claim holds. */
int dra_share_unprepare(struct dra_share *s, const char *uid, const struct dra_result *r,
                        size_t count, const struct dra_device *devs, size_t n_devs,
                        bool mps, struct dra_job **out, struct gpulet_error *err);
/* NVIDIA's container edits for a claim with an MPS daemon: the pipe
 * folder at /tmp/nvidia-mps (CUDA_MPS_PIPE_DIRECTORY) and the shm folder
 * at /dev/shm, as the state folder's paths (a DaemonSet mounts it at
 * the same path). */
void dra_share_mps_edits(const struct dra_share *s, const char *uid, json_t *edits);
/* Whether the claim's daemon answers on its control socket. */
bool dra_share_mps_alive(const struct dra_share *s, const char *uid);
/* Whether the claim has MPS folders (its daemon may run). */
bool dra_share_mps_left(const struct dra_share *s, const char *uid);
/* The claims with an MPS folder that claim_known does not know, at most
 * max into uids (a bounded number of entries read). Only real folders
 * named as gpulet names them count: links and other names are not
 * gpulet's, counted in *odd and left alone. */
size_t dra_share_mps_orphans(const struct dra_share *s, char (*uids)[DRA_UID_MAX], size_t max,
                             size_t *odd);
/* The job that sweeps the MPS folder of a claim gpulet does not know
 * (lost from the checkpoint): its daemon told to quit, anything left
 * carrying its mark ended, its folders handed to the reaper, with one
 * log line; nothing when the claim is known or the folder gone by then. */
int dra_share_sweep(struct dra_share *s, const char *uid, struct dra_job **out,
                    struct gpulet_error *err);

#endif
