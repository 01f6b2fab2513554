#include "dra_internal.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dra/v1/api.pb-c.h"
#include "dra_jobs.h"
#include "fileio/fileio.h"
#include "grpc/grpc.h"
#include "log/log.h"
#include "plugin/plugin.h"
#include "pluginregistration/v1/api.pb-c.h"

typedef K8s__Io__Kubelet__Pkg__Apis__Dra__V1__NodePrepareResourcesRequest PrepareRequest;
typedef K8s__Io__Kubelet__Pkg__Apis__Dra__V1__NodePrepareResourcesResponse PrepareResponse;
typedef K8s__Io__Kubelet__Pkg__Apis__Dra__V1__NodePrepareResourcesResponse__ClaimsEntry
    PrepareEntry;
typedef K8s__Io__Kubelet__Pkg__Apis__Dra__V1__NodePrepareResourceResponse PrepareResult;
typedef K8s__Io__Kubelet__Pkg__Apis__Dra__V1__Device Device;
typedef K8s__Io__Kubelet__Pkg__Apis__Dra__V1__NodeUnprepareResourcesRequest UnprepareRequest;
typedef K8s__Io__Kubelet__Pkg__Apis__Dra__V1__NodeUnprepareResourcesResponse UnprepareResponse;
typedef K8s__Io__Kubelet__Pkg__Apis__Dra__V1__NodeUnprepareResourcesResponse__ClaimsEntry
    UnprepareEntry;
typedef K8s__Io__Kubelet__Pkg__Apis__Dra__V1__NodeUnprepareResourceResponse UnprepareResult;

#define SERVICE_V1 "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin"
#define SERVICE_V1BETA1 "k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin"
#define GET_TIMEOUT_MS 10000
#define WRITE_TIMEOUT_MS 15000
#define WATCH_SECONDS 240
#define BACKOFF_BASE_MS 500
#define BACKOFF_MAX_MS 30000
#define REG_CHECK_MS 1000
#define MAX_PREPARES 64 /* NodePrepareResources calls waiting for the API server */

struct prepare;

/* One claim of a NodePrepareResources call. */
struct pclaim {
    struct prepare *call;
    char uid[DRA_UID_MAX];
    char namespace[256], name[256];
    char error[GPULET_ERROR_MSG_MAX];
    struct dra_result *results;
    size_t count;
    bool from_checkpoint;
    bool unprepared; /* unprepared while its GET was in flight: not to be prepared */
    bool added;      /* remember() took it in, with its spec and slice folder */
    struct kube_request *req;
    struct dra_mps mps;
    bool sharing; /* its sharing settings are being applied (dra_mps.c) */
};

struct start_item {
    char uid[DRA_UID_MAX];
    bool sweep;
};

struct prepare {
    struct dra *d;
    struct prepare *next, *prev;
    struct grpc_call *call;
    size_t count, pending;
    struct pclaim *claims;
};

struct dra {
    struct event_base *base;
    const struct gpu_inventory *inv;
    char node[256];
    char kubelet_root[4096], state_dir[4096], cdi_root[4096], sysfs[4096];
    struct cdi_options cdi;
    char driver_root[4096], dev_root[4096], hook_path[4096], host_root[4096];
    char sock[4200], reg_sock[4200], checkpoint[4200];
    char slice_dir[4200]; /* <state dir>/dra: alloc/<id> per claim with GPU memory */
    const struct config *cfg;
    void (*prepared)(void *user);
    void *prepared_user;
    struct allocdir_reaper *reaper; /* removes the released slice folders */
    bool consumable_off_said;
    bool hook_missing; /* said once while the hook cannot be run */
    bool taints;         /* dra.deviceTaints */
    bool taints_dropped; /* the API server drops the field: devices leave instead */
    struct dra_device *devs;
    size_t n_devs;
    struct devices_health *health; /* subscribed to; NULL until started */
    struct grpc_budget *budget;
    struct grpc_server *server, *reg;
    struct event *reg_timer;
    struct kube_client *kube;
    struct dra_claim *claims; /* prepared, as in the checkpoint */
    size_t n_claims;
    /* time slices and MPS daemons (dra_mps.c) */
    struct dra_jobs *jobs;
    struct dra_share share;
    size_t mps_starting;
    /* At start, one job at a time: the checkpoint's claims' sharing
     * settings applied again (a driver reload loses time slices), then the
     * MPS folders of claims it lacks swept. */
    struct start_item *start;
    size_t n_start, start_next;
    struct prepare *prepares;
    size_t n_prepares;
    struct unprepare *unprepares; /* waiting for sharing settings undone */
    /* publishing */
    struct event *pub_timer;
    unsigned pub_attempt;
    bool pub_busy, pub_again;
    bool node_uid_known;
    char node_uid[128];
    char list_rv[64];
    long long generation;
    json_t *to_delete; /* names of slices to delete, then */
    json_t *to_create; /* slice objects to create */
    char want_hash[17];
    struct kube_request *pub_req;
    struct kube_request *watch;
    char watch_rv[64];
    struct timespec watch_started;
    bool watch_relist;
    unsigned watch_attempt; /* watches in a row that ended early */
};

/* ---- helpers ---- */

/* A DNS subdomain (node, namespace, object names): lower-case letters,
 * digits, '-' and '.', so it goes into a URL path as it is. */
static bool dns_name(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-' ||
              s[i] == '.'))
            return false;
    return true;
}

static struct dra_claim *find_claim(struct dra *d, const char *uid)
{
    for (size_t i = 0; i < d->n_claims; i++)
        if (strcmp(d->claims[i].uid, uid) == 0)
            return &d->claims[i];
    return NULL;
}

/* A claim's slice folder, gone with the claim (whose line names it). */
static void allocdir_remove_dra(struct dra *d, const char *alloc)
{
    plugin_slice_release(d->slice_dir, alloc, d->reaper);
}

static void spec_path(const struct dra *d, const char *uid, char *buf, size_t len)
{
    snprintf(buf, len, "%s/k8s.gpu.nvidia.com-claim_%s.yaml", d->cdi_root, uid);
}

/* ---- the CDI spec of a claim ---- */

/* The variables and mounts of e, added to a spec's containerEdits. */
static void spec_add_edits(json_t *spec, const struct devices_edits *e)
{
    json_t *edits = json_object_get(spec, "containerEdits");
    for (size_t i = 0; i < e->n_env; i++) {
        char line[256];
        snprintf(line, sizeof line, "%s=%s", e->env[i].key, e->env[i].value);
        json_array_append_new(json_object_get(edits, "env"), json_string(line));
    }
    json_t *mounts = json_object_get(edits, "mounts");
    for (size_t i = 0; i < e->n_mounts; i++)
        json_array_append_new(mounts, json_pack("{s:s, s:s, s:[s, s, s, s]}", "hostPath",
                                                e->mounts[i].host, "containerPath",
                                                e->mounts[i].container, "options",
                                                e->mounts[i].read_only ? "ro" : "rw", "nosuid",
                                                "nodev", "rbind"));
}

static int compare_claim_gpus(const void *a, const void *b)
{
    const struct cdi_claim_device *x = a, *y = b;
    return (x->gpu > y->gpu) - (x->gpu < y->gpu);
}

/* A claim holding memory of a shared GPU gets what a sliced container of
 * the device plugin gets: per GPU of the claim (in GPU order, as CUDA
 * numbers them) a memory limit, the memory consumed (the whole GPU's for
 * a GPU the claim holds whole), and a compute share in proportion, in a
 * limits folder of its own; the interposer and its mounts. alloc: the
 * folder's id, reused when set, else filled in. */
static int add_slice_edits(struct dra *d, const char *uid, const struct dra_result *results,
                           size_t count, const struct cdi_claim_device *devs, size_t n,
                           json_t *spec, char alloc[24], struct gpulet_error *err)
{
    /* Only what was published shared counts: an amount the API server
     * puts on another device limits nothing. */
    bool sliced = false;
    for (size_t i = 0; i < count; i++) {
        const struct dra_device *dev = dra_device_find(d->devs, d->n_devs, results[i].device);
        sliced |= results[i].memory > 0 && dev && dev->shared;
    }
    if (!sliced)
        return 0;
    struct cdi_claim_device sorted[DRA_CLAIM_DEVICES];
    struct devices_slice_gpu gpus[DRA_CLAIM_DEVICES];
    memcpy(sorted, devs, n * sizeof *devs);
    qsort(sorted, n, sizeof *sorted, compare_claim_gpus);
    for (size_t i = 0; i < n; i++) {
        const struct gpu_device *g = &d->inv->gpus[sorted[i].gpu];
        if (sorted[i].mig >= 0)
            return gpulet_error_set(err, GPULET_ERR_INPUT, "the claim holds memory of a shared "
                                    "GPU and a MIG device; gpulet limits GPU memory only on "
                                    "whole GPUs: ask for them in separate claims");
        unsigned long long memory = 0;
        for (size_t j = 0; j < count; j++) {
            const struct dra_device *dev = dra_device_find(d->devs, d->n_devs, results[j].device);
            if (dev && dev->shared && dev->gpu == sorted[i].gpu &&
                __builtin_add_overflow(memory, results[j].memory, &memory))
                memory = ULLONG_MAX; /* clamped to the GPU's memory below */
        }
        if (memory == 0 || memory > g->memory_total_bytes)
            memory = g->memory_total_bytes;
        gpus[i] = (struct devices_slice_gpu){
            .uuid = g->uuid,
            .memory = memory,
            .share = g->memory_total_bytes
                         ? (unsigned long)(memory * 10000.0 / (double)g->memory_total_bytes)
                         : 10000};
    }
    struct arena a = {0};
    struct devices_edits edits = {.arena = &a};
    char *ids[1] = {(char *)uid}, dir[4400];
    int rc = plugin_slice_grant(d->cfg, d->slice_dir, DRA_DRIVER, ids, 1, gpus, n, 0,
                                alloc[0] ? alloc : NULL, &edits, dir, sizeof dir, err);
    if (rc == 0)
        spec_add_edits(spec, &edits);
    arena_free(&a);
    if (rc < 0)
        return -1;
    const char *slash = strrchr(dir, '/');
    snprintf(alloc, 24, "%s", slash ? slash + 1 : dir);
    return 0;
}

/* Whether the claims' specs can name the ld-cache hook: a spec naming one
 * the host's runtime cannot run makes the container fail to start, while
 * without it only programs that look libraries up in the ld cache miss
 * the driver's. Looked at for every spec (the bundle may be installed
 * later); said when that changes. */
static bool hook_usable(struct dra *d)
{
    if (d->cdi.hook_path == NULL)
        return false;
    struct gpulet_error err = {0};
    bool ok = cdi_hook_check(&d->cdi, &err) == 0;
    if (!ok && !d->hook_missing)
        log_warn("claims' CDI specs name no ld-cache hook: install gpulet's bundle on the host "
                 "(the host-setup component) or give --host-hook-path", "error=\"%s\"", err.msg);
    else if (ok && d->hook_missing)
        log_info("claims' CDI specs name the ld-cache hook again", "hook=%s", d->cdi.hook_path);
    d->hook_missing = !ok;
    return ok;
}

/* alloc: as for add_slice_edits. */
static int write_claim_spec(struct dra *d, const char *uid, const struct dra_result *results,
                            size_t count, char alloc[24], struct gpulet_error *err)
{
    struct cdi_claim_device devs[DRA_CLAIM_DEVICES] = {0};
    char names[DRA_CLAIM_DEVICES][DRA_UID_MAX + DRA_NAME_MAX + 1];
    size_t n = 0;
    for (size_t i = 0; i < count && n < DRA_CLAIM_DEVICES; i++) {
        const struct dra_device *dev = dra_device_find(d->devs, d->n_devs, results[i].device);
        if (dev == NULL)
            return gpulet_error_set(err, GPULET_ERR_INPUT, "device %s of the claim is not one "
                                    "of this node's (%s): its slice is out of date; delete "
                                    "the claim so that it is allocated again",
                                    results[i].device, d->node);
        bool seen = false; /* one device for two requests: listed once */
        for (size_t j = 0; j < i; j++)
            seen |= strcmp(results[j].device, results[i].device) == 0;
        if (seen)
            continue;
        snprintf(names[n], sizeof names[n], "%s-%s", uid, dev->name);
        devs[n] = (struct cdi_claim_device){.name = names[n], .gpu = dev->gpu, .mig = dev->mig};
        n++;
    }
    json_t *spec;
    struct cdi_options cdi = d->cdi;
    if (!hook_usable(d))
        cdi.hook_path = NULL;
    if (cdi_claim_spec_build(d->inv, &cdi, DRA_CDI_KIND, devs, n, &spec, err) < 0)
        return -1;
    for (size_t i = 0; i < count; i++)
        if (results[i].mps) {
            dra_share_mps_edits(&d->share, uid, json_object_get(spec, "containerEdits"));
            break;
        }
    bool made = alloc[0] == '\0';
    if (add_slice_edits(d, uid, results, count, devs, n, spec, alloc, err) < 0) {
        json_decref(spec);
        return -1;
    }
    char path[4400];
    spec_path(d, uid, path, sizeof path);
    int rc = cdi_spec_write(spec, CDI_YAML, path, err);
    json_decref(spec);
    if (rc < 0 && made && alloc[0]) {
        allocdir_remove_dra(d, alloc);
        alloc[0] = '\0';
    }
    return rc;
}

static int save_checkpoint(struct dra *d, struct gpulet_error *err)
{
    return dra_checkpoint_write(d->checkpoint, d->claims, d->n_claims, err);
}

/* ---- GPU sharing: time slices and MPS daemons (dra_mps.c) ---- */

static bool asks_sharing(const struct dra_result *r, size_t n, const struct dra_mps *mps)
{
    for (size_t i = 0; i < n; i++)
        if (r[i].timeslice)
            return true;
    return mps->on;
}

/* Queues what undoes a claim's settings; nobody waits for it. */
static void sharing_undo(struct dra *d, const char *uid, const struct dra_result *r, size_t n,
                         bool mps)
{
    struct gpulet_error err = {0};
    struct dra_job *j;
    if (d->jobs == NULL)
        return;
    if (dra_share_unprepare(&d->share, uid, r, n, d->devs, d->n_devs, mps, &j, &err) < 0 ||
        (j && dra_jobs_submit(d->jobs, j, NULL, NULL, &err) < 0))
        log_warn("cannot undo a claim's GPU sharing", "uid=%s error=\"%s\"", uid, err.msg);
}

static bool gpu_held(void *user, unsigned int gpu, const char *uid)
{
    struct dra *d = user;
    for (size_t i = 0; i < d->n_claims; i++) {
        if (strcmp(d->claims[i].uid, uid) == 0)
            continue;
        for (size_t j = 0; j < d->claims[i].count; j++) {
            const struct dra_device *dev =
                dra_device_find(d->devs, d->n_devs, d->claims[i].results[j].device);
            if (dev && dev->gpu == gpu)
                return true;
        }
    }
    return false;
}

/* Prepared, or in a prepare call still under way that has not failed it
 * (whose job may have started its daemon already). */
static bool claim_known(void *user, const char *uid)
{
    struct dra *d = user;
    if (find_claim(d, uid))
        return true;
    for (struct prepare *p = d->prepares; p; p = p->next)
        for (size_t i = 0; i < p->count; i++)
            if (!p->claims[i].error[0] && strcmp(p->claims[i].uid, uid) == 0)
                return true;
    return false;
}

static void start_next(struct dra *d);

static void start_done(void *user, const char *error)
{
    struct dra *d = user;
    const struct start_item *it = &d->start[d->start_next - 1];
    char why[GPULET_ERROR_MSG_MAX];
    log_one_line(error ? error : "", error ? strlen(error) : 0, why, sizeof why);
    if (it->sweep && error)
        log_warn("MPS folder of a claim not in the checkpoint not swept cleanly",
                 "uid=%s error=\"%s\"", it->uid, why);
    else if (!it->sweep && error)
        log_warn("GPU sharing of a prepared claim not applied again", "uid=%s error=\"%s\"",
                 it->uid, why);
    else if (!it->sweep)
        log_info("GPU sharing of a prepared claim applied again", "uid=%s", it->uid);
    start_next(d);
}

/* The next claim's job of the start's list, until none is left. */
static void start_next(struct dra *d)
{
    while (d->start_next < d->n_start) {
        const struct start_item *it = &d->start[d->start_next++];
        struct gpulet_error err = {0};
        struct dra_job *j = NULL;
        int rc;
        if (it->sweep) {
            rc = dra_share_sweep(&d->share, it->uid, &j, &err);
        } else {
            const struct dra_claim *c = find_claim(d, it->uid);
            if (c == NULL)
                continue; /* unprepared meanwhile */
            /* As a repeated prepare: a daemon still running is kept (its
             * GPUs' compute mode, which the driver forgets, set again). */
            rc = dra_share_prepare(&d->share, c->uid, c->results, c->count, d->devs, d->n_devs,
                                   &c->mps, true, &j, &err);
        }
        if (rc == 0 && j == NULL)
            continue;
        if (rc == 0 && dra_jobs_submit(d->jobs, j, start_done, d, &err) == 0)
            return;
        log_warn(it->sweep ? "MPS folder of a claim not in the checkpoint not swept"
                           : "GPU sharing of a prepared claim not applied again",
                 "uid=%s error=\"%s\"", it->uid, err.msg);
    }
    free(d->start);
    d->start = NULL;
    d->n_start = d->start_next = 0;
}

/* What the start does for the checkpoint's claims and the MPS folders it
 * does not know. */
static int start_list(struct dra *d, struct gpulet_error *err)
{
    char (*orphans)[DRA_UID_MAX] = calloc(DRA_MAX_CLAIMS, sizeof *orphans);
    if (orphans == NULL)
        return gpulet_error_errno(err, ENOMEM, "cannot start the DRA driver");
    size_t odd, n = dra_share_mps_orphans(&d->share, orphans, DRA_MAX_CLAIMS, &odd);
    if (odd)
        log_warn("entries of the MPS folder that gpulet did not make left alone",
                 "dir=%s count=%zu", d->share.mps_root, odd);
    d->start = calloc(d->n_claims + n + 1, sizeof *d->start);
    if (d->start == NULL) {
        free(orphans);
        return gpulet_error_errno(err, ENOMEM, "cannot start the DRA driver");
    }
    for (size_t i = 0; i < d->n_claims; i++)
        if (asks_sharing(d->claims[i].results, d->claims[i].count, &d->claims[i].mps))
            snprintf(d->start[d->n_start++].uid, DRA_UID_MAX, "%s", d->claims[i].uid);
    for (size_t i = 0; i < n; i++) {
        snprintf(d->start[d->n_start].uid, DRA_UID_MAX, "%s", orphans[i]);
        d->start[d->n_start++].sweep = true;
    }
    free(orphans);
    return 0;
}

static void prepare_answer(struct prepare *p);

static void share_done(void *user, const char *error)
{
    struct pclaim *c = user;
    struct prepare *p = c->call;
    c->sharing = false;
    p->d->mps_starting -= c->mps.on && !c->from_checkpoint;
    if (error && !c->error[0])
        snprintf(c->error, sizeof c->error, "claim %s/%s: %s", c->namespace, c->name, error);
    if (--p->pending == 0)
        prepare_answer(p);
}

/* Applies the claim's time slices and starts its MPS daemon; the answer
 * waits for them. */
static void start_sharing(struct dra *d, struct pclaim *c)
{
    struct gpulet_error err = {0};
    if (!asks_sharing(c->results, c->count, &c->mps))
        return;
    if (c->mps.on && !c->from_checkpoint) {
        size_t running = d->mps_starting;
        for (size_t i = 0; i < d->n_claims; i++)
            running += d->claims[i].mps.on;
        if (running >= DRA_MPS_DAEMONS) {
            snprintf(c->error, sizeof c->error, "claim %s/%s: %d MPS control daemons run on "
                     "this node already, gpulet's bound; the kubelet will retry",
                     c->namespace, c->name, DRA_MPS_DAEMONS);
            return;
        }
    }
    struct dra_job *j;
    if (dra_share_prepare(&d->share, c->uid, c->results, c->count, d->devs, d->n_devs, &c->mps,
                          c->from_checkpoint, &j, &err) < 0 ||
        (j && dra_jobs_submit(d->jobs, j, share_done, c, &err) < 0)) {
        snprintf(c->error, sizeof c->error, "claim %s/%s: %s", c->namespace, c->name, err.msg);
        return;
    }
    if (j == NULL)
        return;
    c->sharing = true;
    d->mps_starting += c->mps.on && !c->from_checkpoint;
    c->call->pending++;
}

/* ---- NodePrepareResources ---- */

static void prepare_free(struct prepare *p)
{
    struct dra *d = p->d;
    for (size_t i = 0; i < p->count; i++) {
        struct pclaim *c = &p->claims[i];
        kube_request_cancel(c->req);
        if (c->sharing && d->jobs) {
            /* The kubelet gave up on the call: what the job does for a
             * claim not recorded is undone after it (a prepared claim's
             * daemon, started again, stays). */
            dra_jobs_forget(d->jobs, c);
            if (!c->from_checkpoint) {
                d->mps_starting -= c->mps.on;
                if (!c->unprepared)
                    sharing_undo(d, c->uid, c->results, c->count, c->mps.on);
            }
        }
        free(c->results);
    }
    free(p->claims);
    if (p->prev)
        p->prev->next = p->next;
    else
        d->prepares = p->next;
    if (p->next)
        p->next->prev = p->prev;
    d->n_prepares--;
    free(p);
}

/* What claims consume of a shared device, other than claim skip. */
static unsigned long long memory_held(const struct dra *d, const char *device, const char *skip)
{
    unsigned long long held = 0;
    for (size_t i = 0; i < d->n_claims; i++) {
        if (strcmp(d->claims[i].uid, skip) == 0)
            continue;
        for (size_t j = 0; j < d->claims[i].count; j++)
            if (strcmp(d->claims[i].results[j].device, device) == 0 &&
                __builtin_add_overflow(held, d->claims[i].results[j].memory, &held))
                return ULLONG_MAX;
    }
    return held;
}

/* The scheduler keeps the claims on a shared GPU within what was published
 * of its memory; an API server answering otherwise (a bug, garbage) must
 * not get it oversubscribed, or the interposer's limits promise memory
 * that is not there. */
static int check_fits(const struct dra *d, const struct pclaim *c, struct gpulet_error *err)
{
    for (size_t i = 0; i < c->count; i++) {
        const struct dra_device *dev = dra_device_find(d->devs, d->n_devs, c->results[i].device);
        if (dev == NULL || !dev->shared || c->results[i].memory == 0)
            continue;
        unsigned long long want = 0;
        for (size_t j = 0; j < c->count; j++)
            if (strcmp(c->results[j].device, dev->name) == 0 &&
                __builtin_add_overflow(want, c->results[j].memory, &want))
                want = ULLONG_MAX;
        unsigned long long total = d->inv->gpus[dev->gpu].memory_total_bytes / DRA_MEMORY_STEP *
                                   DRA_MEMORY_STEP;
        unsigned long long held = memory_held(d, dev->name, c->uid);
        if (want > total || held > total - want)
            return gpulet_error_set(err, GPULET_ERR_INPUT, "the claim asks for %llu MiB, more "
                                    "memory of %s than is free (%llu of %llu MiB held by "
                                    "prepared claims): the allocation is not one the scheduler "
                                    "makes; delete the claim so that it is allocated again",
                                    want == ULLONG_MAX ? ULLONG_MAX >> 20 : want >> 20,
                                    dev->name, held == ULLONG_MAX ? ULLONG_MAX >> 20 : held >> 20,
                                    total >> 20);
    }
    return 0;
}

/* A claim read from the API server becomes prepared: spec, then memory. */
static int remember(struct dra *d, struct pclaim *c, struct gpulet_error *err)
{
    struct dra_claim *known = find_claim(d, c->uid);
    char alloc[24] = "";
    if (known)
        snprintf(alloc, sizeof alloc, "%s", known->alloc);
    else if (check_fits(d, c, err) < 0)
        return -1;
    if (write_claim_spec(d, c->uid, c->results, c->count, alloc, err) < 0)
        return -1;
    if (known)
        return 0; /* a call beside this one prepared it too */
    if (d->n_claims >= DRA_MAX_CLAIMS)
        return gpulet_error_set(err, GPULET_ERR_SYSTEM, "%d claims are prepared on this node "
                                "already, gpulet's bound", DRA_MAX_CLAIMS);
    struct dra_claim *list = realloc(d->claims, (d->n_claims + 1) * sizeof *list);
    struct dra_result *results = malloc((c->count ? c->count : 1) * sizeof *results);
    if (list == NULL || results == NULL) {
        if (list)
            d->claims = list;
        free(results);
        return gpulet_error_errno(err, ENOMEM, "cannot remember claim %s", c->uid);
    }
    d->claims = list;
    struct dra_claim *dc = &d->claims[d->n_claims++];
    memset(dc, 0, sizeof *dc);
    snprintf(dc->uid, sizeof dc->uid, "%s", c->uid);
    snprintf(dc->namespace, sizeof dc->namespace, "%s", c->namespace);
    snprintf(dc->name, sizeof dc->name, "%s", c->name);
    snprintf(dc->alloc, sizeof dc->alloc, "%s", alloc);
    dc->mps = c->mps;
    memcpy(results, c->results, c->count * sizeof *results);
    dc->results = results;
    dc->count = c->count;
    c->added = true;
    return 0;
}

static void forget(struct dra *d, const char *uid)
{
    struct dra_claim *c = find_claim(d, uid);
    if (c == NULL)
        return;
    free(c->results);
    *c = d->claims[--d->n_claims];
}

/* A claim taken in but not recorded goes whole: its spec and slice folder
 * too, or they would stay behind a claim gpulet no longer knows. */
static void undo(struct dra *d, const char *uid)
{
    struct dra_claim *c = find_claim(d, uid);
    if (c == NULL)
        return;
    char path[4400];
    spec_path(d, uid, path, sizeof path);
    if (unlink(path) != 0 && errno != ENOENT)
        log_warn("cannot remove the spec of an unrecorded claim", "path=%s error=\"%s\"", path,
                 strerror(errno));
    if (c->alloc[0])
        allocdir_remove_dra(d, c->alloc);
    if (asks_sharing(c->results, c->count, &c->mps))
        sharing_undo(d, uid, c->results, c->count, c->mps.on);
    forget(d, uid);
}

static void prepare_answer(struct prepare *p)
{
    struct dra *d = p->d;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool changed = false;
    for (size_t i = 0; i < p->count; i++) {
        struct pclaim *c = &p->claims[i];
        if (c->error[0] || c->from_checkpoint)
            continue;
        struct gpulet_error err = {0};
        if (remember(d, c, &err) < 0) {
            snprintf(c->error, sizeof c->error, "%s", err.msg);
            if (asks_sharing(c->results, c->count, &c->mps) && !find_claim(d, c->uid))
                sharing_undo(d, c->uid, c->results, c->count, c->mps.on);
        } else {
            changed = true;
        }
    }
    if (changed) {
        struct gpulet_error err = {0};
        if (save_checkpoint(d, &err) < 0) {
            /* Unrecorded, a claim cannot be answered as prepared: after a
             * restart gpulet would not know it. */
            for (size_t i = 0; i < p->count; i++) {
                struct pclaim *c = &p->claims[i];
                if (!c->added)
                    continue;
                undo(d, c->uid);
                snprintf(c->error, sizeof c->error, "cannot record the prepared claim: %s",
                         err.msg);
            }
        }
    }
    PrepareResponse resp = K8S__IO__KUBELET__PKG__APIS__DRA__V1__NODE_PREPARE_RESOURCES_RESPONSE__INIT;
    PrepareEntry *entries = calloc(p->count ? p->count : 1, sizeof *entries);
    PrepareEntry **entry_ptrs = calloc(p->count ? p->count : 1, sizeof *entry_ptrs);
    PrepareResult *results = calloc(p->count ? p->count : 1, sizeof *results);
    size_t total = 0;
    for (size_t i = 0; i < p->count; i++)
        total += p->claims[i].count;
    Device *devices = calloc(total ? total : 1, sizeof *devices);
    Device **device_ptrs = calloc(total ? total : 1, sizeof *device_ptrs);
    char (*ids)[DRA_UID_MAX + DRA_NAME_MAX + 64] = calloc(total ? total : 1, sizeof *ids);
    char **id_ptrs = calloc(total ? total : 1, sizeof *id_ptrs);
    char **req_ptrs = calloc(total ? total : 1, sizeof *req_ptrs);
    if (!entries || !entry_ptrs || !results || !devices || !device_ptrs || !ids || !id_ptrs ||
        !req_ptrs) {
        grpc_call_finish(p->call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    size_t k = 0;
    for (size_t i = 0; i < p->count; i++) {
        struct pclaim *c = &p->claims[i];
        k8s__io__kubelet__pkg__apis__dra__v1__node_prepare_resources_response__claims_entry__init(
            &entries[i]);
        k8s__io__kubelet__pkg__apis__dra__v1__node_prepare_resource_response__init(&results[i]);
        entries[i].key = c->uid;
        entries[i].value = &results[i];
        entry_ptrs[i] = &entries[i];
        if (c->error[0]) {
            results[i].error = c->error;
            continue;
        }
        results[i].devices = &device_ptrs[k];
        for (size_t j = 0; j < c->count; j++, k++) {
            Device *dev = &devices[k];
            k8s__io__kubelet__pkg__apis__dra__v1__device__init(dev);
            req_ptrs[k] = c->results[j].request;
            dev->request_names = &req_ptrs[k];
            dev->n_request_names = 1;
            dev->pool_name = d->node;
            dev->device_name = c->results[j].device;
            dra_cdi_id(c->uid, c->results[j].device, ids[k], sizeof ids[k]);
            id_ptrs[k] = ids[k];
            dev->cdi_device_ids = &id_ptrs[k];
            dev->n_cdi_device_ids = 1;
            device_ptrs[k] = dev;
            results[i].n_devices++;
        }
    }
    resp.claims = entry_ptrs;
    resp.n_claims = p->count;
    grpc_call_reply_message(p->call, &resp.base);
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    for (size_t i = 0; i < p->count; i++) {
        /* The error may quote the claim's JSON. */
        char why[GPULET_ERROR_MSG_MAX];
        log_one_line(p->claims[i].error, strlen(p->claims[i].error), why, sizeof why);
        log_info("claim prepared", "claim=%s/%s uid=%s devices=%zu from=%s error=\"%s\"",
                 p->claims[i].namespace, p->claims[i].name, p->claims[i].uid,
                 p->claims[i].error[0] ? 0 : p->claims[i].count,
                 p->claims[i].from_checkpoint ? "checkpoint" : "apiserver", why);
    }
    log_debug("NodePrepareResources answered", "claims=%zu answer_ms=%ld", p->count,
              (long)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000));
out:
    free(entries);
    free(entry_ptrs);
    free(results);
    free(devices);
    free(device_ptrs);
    free(ids);
    free(id_ptrs);
    free(req_ptrs);
    p->call = NULL;
    prepare_free(p);
    if (d->prepared)
        d->prepared(d->prepared_user);
}

static void claim_fetched(const struct kube_response *r, void *user)
{
    struct pclaim *c = user;
    struct prepare *p = c->call;
    c->req = NULL;
    if (c->unprepared) {
        /* The error says so already. */
    } else if (r->status == 200) {
        struct gpulet_error err = {0};
        if (dra_claim_parse(r->body, r->len, c->uid, p->d->node, &c->results, &c->count,
                            &c->mps, &err) < 0)
            snprintf(c->error, sizeof c->error, "claim %s/%s: %s", c->namespace, c->name,
                     err.msg);
        else
            start_sharing(p->d, c);
    } else if (r->status == 404) {
        snprintf(c->error, sizeof c->error, "claim %s/%s is not in the API server (deleted?)",
                 c->namespace, c->name);
    } else if (r->status == 401 || r->status == 403) {
        snprintf(c->error, sizeof c->error, "gpulet may not read claim %s/%s (HTTP %ld): give "
                 "its service account get on resourceclaims (deploy/ has the ClusterRole)",
                 c->namespace, c->name, r->status);
    } else if (r->status) {
        snprintf(c->error, sizeof c->error, "the API server answered HTTP %ld for claim %s/%s; "
                 "the kubelet will retry", r->status, c->namespace, c->name);
    } else {
        snprintf(c->error, sizeof c->error, "cannot read claim %s/%s from the API server: %s; "
                 "the kubelet will retry", c->namespace, c->name, r->error);
    }
    if (--p->pending == 0)
        prepare_answer(p);
}

static void prepare_closed(struct grpc_call *call, enum grpc_status why, void *user)
{
    (void)call;
    struct prepare *p = user;
    log_warn("NodePrepareResources abandoned by the kubelet", "claims=%zu why=%s", p->count,
             grpc_status_name(why));
    p->call = NULL;
    prepare_free(p);
}

static void start_claim(struct dra *d, struct pclaim *c,
                        const K8s__Io__Kubelet__Pkg__Apis__Dra__V1__Claim *in)
{
    snprintf(c->uid, sizeof c->uid, "%s", in->uid ? in->uid : "");
    if (in->uid == NULL || !dra_uid_valid(in->uid)) {
        snprintf(c->error, sizeof c->error, "claim UID \"%.64s\" is not a UID", c->uid);
        return;
    }
    snprintf(c->namespace, sizeof c->namespace, "%s", in->namespace_ ? in->namespace_ : "");
    snprintf(c->name, sizeof c->name, "%s", in->name ? in->name : "");
    struct dra_claim *known = find_claim(d, c->uid);
    if (known) {
        /* The names it was read under, checked then; the call's go unchecked
         * into no log line. */
        snprintf(c->namespace, sizeof c->namespace, "%s", known->namespace);
        snprintf(c->name, sizeof c->name, "%s", known->name);
        /* Prepared before (a retry, a kubelet or gpulet restart): the same
         * answer, and the spec again in case it was removed meanwhile. */
        char path[4400];
        spec_path(d, c->uid, path, sizeof path);
        struct gpulet_error err = {0};
        char alloc[sizeof known->alloc];
        snprintf(alloc, sizeof alloc, "%s", known->alloc);
        if (access(path, F_OK) != 0 &&
            write_claim_spec(d, c->uid, known->results, known->count, known->alloc, &err) < 0) {
            snprintf(c->error, sizeof c->error, "%s", err.msg);
            return;
        }
        /* Its slice folder was gone too and is made again. */
        if (strcmp(alloc, known->alloc) != 0 && save_checkpoint(d, &err) < 0)
            log_warn("cannot record the claim's new slice folder", "uid=%s error=\"%s\"",
                     c->uid, err.msg);
        c->results = malloc((known->count ? known->count : 1) * sizeof *c->results);
        if (c->results == NULL) {
            snprintf(c->error, sizeof c->error, "out of memory");
            return;
        }
        memcpy(c->results, known->results, known->count * sizeof *c->results);
        c->count = known->count;
        c->from_checkpoint = true;
        /* Its sharing settings are applied again before the answer, after
         * any of them gpulet queued (jobs run in order): the time slices,
         * which a reboot or a driver reload loses while the checkpoint
         * keeps the claim, and its MPS daemon, started again when it ended
         * (a gpulet container restart), with its defaults. */
        if (asks_sharing(known->results, known->count, &known->mps)) {
            c->mps = known->mps;
            start_sharing(d, c);
        }
        return;
    }
    if (!dns_name(c->namespace, 63) || !dns_name(c->name, 253)) {
        snprintf(c->error, sizeof c->error, "claim namespace \"%.64s\" or name \"%.64s\" is not "
                 "a Kubernetes name", c->namespace, c->name);
        return;
    }
    char path[700];
    snprintf(path, sizeof path, "/apis/resource.k8s.io/v1/namespaces/%s/resourceclaims/%s",
             c->namespace, c->name);
    struct gpulet_error err = {0};
    c->req = kube_request(d->kube, "GET", path, NULL, GET_TIMEOUT_MS, claim_fetched, c, &err);
    if (c->req == NULL) {
        snprintf(c->error, sizeof c->error, "cannot read claim %s/%s: %s", c->namespace,
                 c->name, err.msg);
        return;
    }
    c->call->pending++;
}

static void prepare_cb(struct grpc_call *call, const uint8_t *req, size_t len, void *user)
{
    struct dra *d = user;
    PrepareRequest *in =
        k8s__io__kubelet__pkg__apis__dra__v1__node_prepare_resources_request__unpack(NULL, len,
                                                                                      req);
    if (in == NULL) {
        grpc_call_finish(call, GRPC_INVALID_ARGUMENT, "malformed NodePrepareResourcesRequest");
        return;
    }
    if (in->n_claims > DRA_MAX_CLAIMS || d->n_prepares >= MAX_PREPARES) {
        k8s__io__kubelet__pkg__apis__dra__v1__node_prepare_resources_request__free_unpacked(in,
                                                                                           NULL);
        grpc_call_finish(call, GRPC_RESOURCE_EXHAUSTED, "too many claims being prepared; retry");
        return;
    }
    struct prepare *p = calloc(1, sizeof *p);
    if (p)
        p->claims = calloc(in->n_claims ? in->n_claims : 1, sizeof *p->claims);
    if (p == NULL || p->claims == NULL) {
        free(p);
        k8s__io__kubelet__pkg__apis__dra__v1__node_prepare_resources_request__free_unpacked(in,
                                                                                           NULL);
        grpc_call_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    p->d = d;
    p->call = call;
    p->count = in->n_claims;
    p->next = d->prepares;
    if (d->prepares)
        d->prepares->prev = p;
    d->prepares = p;
    d->n_prepares++;
    p->pending = 1; /* held until every claim has started */
    for (size_t i = 0; i < in->n_claims; i++) {
        p->claims[i].call = p;
        start_claim(d, &p->claims[i], in->claims[i]);
    }
    k8s__io__kubelet__pkg__apis__dra__v1__node_prepare_resources_request__free_unpacked(in, NULL);
    if (--p->pending == 0) {
        prepare_answer(p);
        return;
    }
    grpc_call_on_close(call, prepare_closed, p);
}

/* ---- NodeUnprepareResources ---- */

/* A prepare of uid still reading the claim would, when the answer comes,
 * write a spec and hold GPU memory for a claim the kubelet has let go:
 * it answers with an error instead. Whether one was in flight. */
static bool drop_pending(struct dra *d, const char *uid)
{
    bool found = false;
    for (struct prepare *p = d->prepares; p; p = p->next)
        for (size_t i = 0; i < p->count; i++) {
            struct pclaim *c = &p->claims[i];
            if ((c->req == NULL && !c->sharing) || c->unprepared || strcmp(c->uid, uid) != 0)
                continue;
            c->unprepared = true;
            found = true;
            /* Its settings are being applied: undone after (jobs run in order). */
            if (c->sharing && !c->from_checkpoint)
                sharing_undo(d, uid, c->results, c->count, c->mps.on);
            snprintf(c->error, sizeof c->error, "claim %s/%s was unprepared while gpulet was "
                     "reading it from the API server; prepare it again if it is still wanted",
                     c->namespace, c->name);
        }
    return found;
}

/* A NodeUnprepareResources call waiting for claims' sharing settings to
 * be undone (an MPS daemon's quit, a time slice back to default). */
struct unprepare;
struct unprepare_wait {
    struct unprepare *u;
    size_t i;
};

struct unprepare {
    struct dra *d;
    struct unprepare *next, *prev;
    struct grpc_call *call;
    UnprepareRequest *in;
    size_t n, pending;
    UnprepareEntry *entries;
    UnprepareEntry **ptrs;
    UnprepareResult *results;
    char (*errors)[GPULET_ERROR_MSG_MAX];
    struct unprepare_wait *waits;
};

static void unprepare_free(struct unprepare *u)
{
    if (u->prev)
        u->prev->next = u->next;
    else if (u->d->unprepares == u)
        u->d->unprepares = u->next;
    if (u->next)
        u->next->prev = u->prev;
    free(u->entries);
    free(u->ptrs);
    free(u->results);
    free(u->errors);
    free(u->waits);
    k8s__io__kubelet__pkg__apis__dra__v1__node_unprepare_resources_request__free_unpacked(u->in,
                                                                                         NULL);
    free(u);
}

static void unprepare_reply(struct unprepare *u)
{
    UnprepareResponse resp =
        K8S__IO__KUBELET__PKG__APIS__DRA__V1__NODE_UNPREPARE_RESOURCES_RESPONSE__INIT;
    resp.claims = u->ptrs;
    resp.n_claims = u->n;
    if (u->call)
        grpc_call_reply_message(u->call, &resp.base);
    unprepare_free(u);
}

static void unprepare_closed(struct grpc_call *call, enum grpc_status why, void *user)
{
    (void)call;
    struct unprepare *u = user;
    log_warn("NodeUnprepareResources abandoned by the kubelet", "claims=%zu why=%s", u->n,
             grpc_status_name(why));
    u->call = NULL; /* its jobs still run to their end */
}

static void unshare_done(void *user, const char *error)
{
    struct unprepare_wait *w = user;
    struct unprepare *u = w->u;
    if (error) {
        log_warn("claim's GPU sharing not undone", "uid=%s error=\"%s\"", u->entries[w->i].key,
                 error);
        snprintf(u->errors[w->i], sizeof u->errors[w->i], "%s", error);
        u->results[w->i].error = u->errors[w->i];
    }
    if (--u->pending == 0)
        unprepare_reply(u);
}

static void unprepare_cb(struct grpc_call *call, const uint8_t *req, size_t len, void *user)
{
    struct dra *d = user;
    UnprepareRequest *in =
        k8s__io__kubelet__pkg__apis__dra__v1__node_unprepare_resources_request__unpack(NULL, len,
                                                                                        req);
    if (in == NULL) {
        grpc_call_finish(call, GRPC_INVALID_ARGUMENT, "malformed NodeUnprepareResourcesRequest");
        return;
    }
    size_t n = in->n_claims;
    struct unprepare *u = calloc(1, sizeof *u);
    if (u == NULL) {
        k8s__io__kubelet__pkg__apis__dra__v1__node_unprepare_resources_request__free_unpacked(
            in, NULL);
        grpc_call_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    *u = (struct unprepare){.d = d, .call = call, .in = in, .n = n};
    u->entries = calloc(n ? n : 1, sizeof *u->entries);
    u->ptrs = calloc(n ? n : 1, sizeof *u->ptrs);
    u->results = calloc(n ? n : 1, sizeof *u->results);
    u->errors = calloc(n ? n : 1, sizeof *u->errors);
    u->waits = calloc(n ? n : 1, sizeof *u->waits);
    if (!u->entries || !u->ptrs || !u->results || !u->errors || !u->waits) {
        grpc_call_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
        unprepare_free(u);
        return;
    }
    u->next = d->unprepares;
    if (d->unprepares)
        d->unprepares->prev = u;
    d->unprepares = u;
    u->pending = 1; /* held until every claim has started */
    bool changed = false;
    for (size_t i = 0; i < n; i++) {
        const char *uid = in->claims[i]->uid ? in->claims[i]->uid : "";
        k8s__io__kubelet__pkg__apis__dra__v1__node_unprepare_resources_response__claims_entry__init(
            &u->entries[i]);
        k8s__io__kubelet__pkg__apis__dra__v1__node_unprepare_resource_response__init(
            &u->results[i]);
        u->entries[i].key = (char *)uid;
        u->entries[i].value = &u->results[i];
        u->ptrs[i] = &u->entries[i];
        if (!dra_uid_valid(uid)) {
            snprintf(u->errors[i], sizeof u->errors[i], "claim UID \"%.64s\" is not a UID", uid);
            u->results[i].error = u->errors[i];
            continue;
        }
        bool in_flight = drop_pending(d, uid);
        char path[4400];
        spec_path(d, uid, path, sizeof path);
        if (unlink(path) != 0 && errno != ENOENT) {
            snprintf(u->errors[i], sizeof u->errors[i], "cannot remove the CDI spec %s: %s",
                     path, strerror(errno));
            u->results[i].error = u->errors[i];
            continue;
        }
        struct dra_claim *known = find_claim(d, uid);
        char slice_dir[4400] = "";
        if (known && known->alloc[0]) {
            snprintf(slice_dir, sizeof slice_dir, "%s/alloc/%s", d->slice_dir, known->alloc);
            allocdir_remove_dra(d, known->alloc);
        }
        /* An MPS daemon of a claim gpulet did not get to record (it stopped
         * between starting the daemon and the checkpoint) is ended too. */
        bool unrecorded = !known && !in_flight && dra_share_mps_left(&d->share, uid);
        if ((known && asks_sharing(known->results, known->count, &known->mps)) || unrecorded) {
            struct gpulet_error err = {0};
            struct dra_job *j = NULL;
            u->waits[i] = (struct unprepare_wait){u, i};
            if (dra_share_unprepare(&d->share, uid, known ? known->results : NULL,
                                    known ? known->count : 0, d->devs, d->n_devs,
                                    known ? known->mps.on : true, &j, &err) < 0 ||
                (j && dra_jobs_submit(d->jobs, j, unshare_done, &u->waits[i], &err) < 0)) {
                snprintf(u->errors[i], sizeof u->errors[i], "%s", err.msg);
                u->results[i].error = u->errors[i];
                j = NULL;
            }
            u->pending += j != NULL;
        }
        if (known) {
            forget(d, uid);
            changed = true;
        }
        log_info("claim unprepared", "uid=%s slice_dir=%s", uid, slice_dir);
    }
    struct gpulet_error err = {0};
    if (changed && save_checkpoint(d, &err) < 0) {
        /* The specs are gone; a stale entry only makes a later prepare of
         * the same UID answer from memory, which stays right. */
        log_warn("cannot record unprepared claims", "error=\"%s\"", err.msg);
    }
    if (--u->pending == 0) {
        unprepare_reply(u);
        return;
    }
    grpc_call_on_close(call, unprepare_closed, u);
}

/* ---- registration ---- */

static void get_info_cb(struct grpc_call *call, const uint8_t *req, size_t len, void *user)
{
    (void)req;
    (void)len;
    struct dra *d = user;
    static char *versions[] = {"v1.DRAPlugin", "v1beta1.DRAPlugin"};
    Pluginregistration__PluginInfo info = PLUGINREGISTRATION__PLUGIN_INFO__INIT;
    info.type = "DRAPlugin";
    info.name = DRA_DRIVER;
    info.endpoint = d->sock;
    info.supported_versions = versions;
    info.n_supported_versions = 2;
    grpc_call_reply_message(call, &info.base);
}

static void notify_cb(struct grpc_call *call, const uint8_t *req, size_t len, void *user)
{
    (void)user;
    Pluginregistration__RegistrationStatus *st =
        pluginregistration__registration_status__unpack(NULL, len, req);
    if (st == NULL) {
        grpc_call_finish(call, GRPC_INVALID_ARGUMENT, "malformed RegistrationStatus");
        return;
    }
    if (st->plugin_registered)
        log_info("registered with the kubelet", "driver=" DRA_DRIVER);
    else {
        char why[201] = "";
        if (st->error)
            log_one_line(st->error, strlen(st->error), why, sizeof why);
        log_error("the kubelet refused the DRA driver", "driver=" DRA_DRIVER " error=\"%s\"",
                  why);
    }
    pluginregistration__registration_status__free_unpacked(st, NULL);
    Pluginregistration__RegistrationStatusResponse resp =
        PLUGINREGISTRATION__REGISTRATION_STATUS_RESPONSE__INIT;
    grpc_call_reply_message(call, &resp.base);
}

static int listen_registration(struct dra *d, struct gpulet_error *err)
{
    if (grpc_server_listen(d->base, d->reg_sock, d->budget, &d->reg, err) < 0 ||
        grpc_server_handle(d->reg, "/pluginregistration.Registration/GetInfo", get_info_cb, d,
                           err) < 0 ||
        grpc_server_handle(d->reg, "/pluginregistration.Registration/NotifyRegistrationStatus",
                           notify_cb, d, err) < 0)
        return -1;
    return 0;
}

/* The DRA socket first: the kubelet dials it as soon as the registration
 * socket appears. */
static int serve_sockets(struct dra *d, struct gpulet_error *err)
{
    grpc_server_free(d->reg);
    d->reg = NULL;
    grpc_server_free(d->server);
    d->server = NULL;
    static const char *const methods[] = {"/" SERVICE_V1 "/NodePrepareResources",
                                          "/" SERVICE_V1 "/NodeUnprepareResources",
                                          "/" SERVICE_V1BETA1 "/NodePrepareResources",
                                          "/" SERVICE_V1BETA1 "/NodeUnprepareResources"};
    int rc = grpc_server_listen(d->base, d->sock, d->budget, &d->server, err);
    for (size_t i = 0; rc == 0 && i < 4; i++)
        rc = grpc_server_handle(d->server, methods[i], i % 2 ? unprepare_cb : prepare_cb, d,
                                err);
    if (rc == 0)
        rc = listen_registration(d, err);
    return rc;
}

/* The kubelet learns of the driver from the socket's appearance; one
 * removed (a cleanup of the folder) is made again. */
static void reg_check(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct dra *d = arg;
    struct stat st;
    if (d->reg && stat(d->reg_sock, &st) == 0 && stat(d->sock, &st) == 0)
        return;
    log_warn("DRA sockets gone; serving them again", "socket=%s", d->reg_sock);
    struct gpulet_error err = {0};
    if (serve_sockets(d, &err) < 0)
        log_error("cannot serve the DRA sockets; retrying", "error=\"%s\"", err.msg);
}

/* ---- ResourceSlices ---- */

static void publish(struct dra *d);

static void schedule_publish(struct dra *d, long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(d->pub_timer, &tv);
}

static void pub_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    publish(arg);
}

static void publish_failed(struct dra *d, const char *step, const struct kube_response *r)
{
    d->pub_busy = false;
    d->pub_req = NULL;
    long ms = kube_backoff_ms(d->pub_attempt++, BACKOFF_BASE_MS, BACKOFF_MAX_MS);
    char body[161] = "";
    if (r && r->status)
        log_one_line(r->body, r->len, body, sizeof body);
    log_warn("cannot publish the ResourceSlices; retrying", "step=%s status=%ld error=\"%s\" "
             "body=\"%s\" retry_ms=%ld", step, r ? r->status : 0L, r ? r->error : "", body,
             ms);
    schedule_publish(d, ms);
}

static void watch_line(const char *line, size_t len, void *user);
static void watch_done(const struct kube_response *r, void *user);

static void selector(const struct dra *d, char *buf, size_t len)
{
    /* spec.nodeName=<node>,spec.driver=gpu.nvidia.com, URL-encoded */
    snprintf(buf, len, "fieldSelector=spec.nodeName%%3D%s%%2Cspec.driver%%3D" DRA_DRIVER,
             d->node);
}

static void start_watch(struct dra *d)
{
    if (d->watch)
        return;
    char sel[512], path[1024];
    selector(d, sel, sizeof sel);
    snprintf(path, sizeof path, "/apis/resource.k8s.io/v1/resourceslices?watch=true&"
             "allowWatchBookmarks=true&timeoutSeconds=%d&resourceVersion=%s&%s", WATCH_SECONDS,
             d->watch_rv, sel);
    d->watch_relist = false;
    clock_gettime(CLOCK_MONOTONIC, &d->watch_started);
    struct gpulet_error err = {0};
    d->watch = kube_watch(d->kube, path, (WATCH_SECONDS + 30) * 1000L, watch_line, watch_done, d,
                          &err);
    if (d->watch == NULL)
        log_warn("cannot watch the ResourceSlices", "error=\"%s\"", err.msg);
}

static void publish_done(struct dra *d)
{
    d->pub_busy = false;
    d->pub_req = NULL;
    d->pub_attempt = 0;
    if (d->watch == NULL) {
        snprintf(d->watch_rv, sizeof d->watch_rv, "%s", d->list_rv);
        start_watch(d);
    }
    if (d->pub_again) {
        d->pub_again = false;
        schedule_publish(d, 0);
    }
}

static void next_write(struct dra *d);

/* A sick device must not stay allocatable: when the API server drops the
 * taints of a slice written with some (DRADeviceTaints off), the devices
 * leave the slice instead, published again once this round ends. */
static void check_taints_kept(struct dra *d, const struct kube_response *r)
{
    if (!d->taints || d->taints_dropped ||
        !dra_slice_has(json_array_get(d->to_create, 0), "taints"))
        return;
    json_t *made = json_loadb(r->body, r->len, 0, NULL);
    if (made && !dra_slice_has(made, "taints")) {
        log_warn("the API server dropped the device taints: its DRADeviceTaints feature gate "
                 "is off, so unhealthy devices leave the ResourceSlice instead of being "
                 "tainted", "node=%s", d->node);
        d->taints_dropped = true;
        d->pub_again = true;
    }
    json_decref(made);
}

static void write_done(const struct kube_response *r, void *user)
{
    struct dra *d = user;
    d->pub_req = NULL;
    bool deleting = json_array_size(d->to_delete) > 0;
    if (deleting ? !(r->status == 200 || r->status == 202 || r->status == 404)
                 : r->status != 201 && r->status != 200) {
        publish_failed(d, deleting ? "delete" : "create", r);
        return;
    }
    if (!deleting)
        check_taints_kept(d, r);
    if (!deleting && !d->consumable_off_said &&
        dra_slice_has(json_array_get(d->to_create, 0), "allowMultipleAllocations")) {
        json_t *made = json_loadb(r->body, r->len, 0, NULL);
        if (made && !dra_slice_has(made, "allowMultipleAllocations")) {
            /* The field is alpha: an API server without the gate drops it,
             * and the GPUs are whole devices, claimed one at a time. */
            log_warn("the API server dropped allowMultipleAllocations: its "
                     "DRAConsumableCapacity feature gate is off, so the GPUs of dra.slices "
                     "are published as whole GPUs", "node=%s", d->node);
            d->consumable_off_said = true;
        }
        json_decref(made);
    }
    json_array_remove(deleting ? d->to_delete : d->to_create, 0);
    next_write(d);
}

/* Deletes the slices that do not match, then creates ours, one request at
 * a time. */
static void next_write(struct dra *d)
{
    struct gpulet_error err = {0};
    if (json_array_size(d->to_delete)) {
        char path[700];
        snprintf(path, sizeof path, "/apis/resource.k8s.io/v1/resourceslices/%s",
                 json_string_value(json_array_get(d->to_delete, 0)));
        d->pub_req = kube_request(d->kube, "DELETE", path, NULL, WRITE_TIMEOUT_MS, write_done, d,
                                  &err);
    } else if (json_array_size(d->to_create)) {
        char *body = json_dumps(json_array_get(d->to_create, 0), JSON_COMPACT);
        d->pub_req = body ? kube_request(d->kube, "POST", "/apis/resource.k8s.io/v1/resourceslices",
                                         body, WRITE_TIMEOUT_MS, write_done, d, &err)
                          : NULL;
        free(body);
    } else {
        log_info("ResourceSlices published", "node=%s generation=%lld devices=%zu", d->node,
                 d->generation, d->n_devs);
        publish_done(d);
        return;
    }
    if (d->pub_req == NULL) {
        struct kube_response none = {.error = err.msg, .body = ""};
        publish_failed(d, "request", &none);
    }
}

static json_t *desired_devices(struct dra *d)
{
    json_t *devices = json_array();
    for (size_t i = 0; i < d->n_devs; i++)
        if (d->devs[i].healthy || (d->taints && !d->taints_dropped))
            json_array_append_new(devices, dra_device_json(d->inv, &d->devs[i], d->sysfs));
    return devices;
}

static void slices_listed(const struct kube_response *r, void *user)
{
    struct dra *d = user;
    d->pub_req = NULL;
    if (r->status != 200) {
        publish_failed(d, "list", r);
        return;
    }
    json_error_t jerr;
    json_t *list = json_loadb(r->body, r->len, 0, &jerr);
    json_t *items = json_object_get(list, "items");
    const char *rv = json_string_value(json_object_get(json_object_get(list, "metadata"),
                                                       "resourceVersion"));
    if (!json_is_array(items) || rv == NULL || strlen(rv) >= sizeof d->list_rv) {
        json_decref(list);
        struct kube_response bad = {.status = 0, .error = "the slice list is not a "
                                    "ResourceSliceList", .body = ""};
        publish_failed(d, "list", &bad);
        return;
    }
    snprintf(d->list_rv, sizeof d->list_rv, "%s", rv);
    json_t *devices = desired_devices(d);
    dra_json_hash(devices, d->want_hash);
    long long max_gen = 0;
    bool same = true;
    size_t want_slices = json_array_size(devices)
                             ? (json_array_size(devices) + DRA_SLICE_DEVICES - 1) /
                                   DRA_SLICE_DEVICES
                             : 1;
    json_array_clear(d->to_delete);
    size_t i;
    json_t *item;
    long long first_gen = -1;
    size_t mine = 0;
    json_array_foreach(items, i, item) {
        json_t *meta = json_object_get(item, "metadata");
        json_t *spec = json_object_get(item, "spec");
        json_t *pool = json_object_get(spec, "pool");
        /* gpulet may delete any slice: only this node's pool of its driver
         * is its own, whatever the list holds (a field selector ignored). */
        const char *node = json_string_value(json_object_get(spec, "nodeName"));
        const char *driver = json_string_value(json_object_get(spec, "driver"));
        const char *pool_name = json_string_value(json_object_get(pool, "name"));
        if (!node || !driver || !pool_name || strcmp(node, d->node) != 0 ||
            strcmp(driver, DRA_DRIVER) != 0 || strcmp(pool_name, d->node) != 0)
            continue;
        mine++;
        long long gen = json_integer_value(json_object_get(pool, "generation"));
        const char *name = json_string_value(json_object_get(meta, "name"));
        const char *hash = json_string_value(
            json_object_get(json_object_get(meta, "annotations"), "gpulet.nvidia.com/content"));
        if (gen > max_gen)
            max_gen = gen;
        if (first_gen < 0)
            first_gen = gen;
        same &= hash && strcmp(hash, d->want_hash) == 0 && gen == first_gen &&
                json_integer_value(json_object_get(pool, "resourceSliceCount")) ==
                    (json_int_t)want_slices;
        if (name && dns_name(name, 253))
            json_array_append_new(d->to_delete, json_string(name));
    }
    same &= mine == want_slices;
    json_decref(list);
    if (same) {
        json_array_clear(d->to_delete);
        json_decref(devices);
        d->generation = first_gen;
        log_debug("ResourceSlices up to date", "node=%s generation=%lld", d->node, first_gen);
        publish_done(d);
        return;
    }
    d->generation = (max_gen > d->generation ? max_gen : d->generation) + 1;
    json_decref(d->to_create);
    d->to_create = dra_slices_json(d->node, d->node_uid_known ? d->node_uid : NULL,
                                   d->generation, devices, d->want_hash);
    json_decref(devices);
    next_write(d);
}

static void list_slices(struct dra *d)
{
    char sel[512], path[700];
    selector(d, sel, sizeof sel);
    snprintf(path, sizeof path, "/apis/resource.k8s.io/v1/resourceslices?%s", sel);
    struct gpulet_error err = {0};
    d->pub_req = kube_request(d->kube, "GET", path, NULL, GET_TIMEOUT_MS, slices_listed, d, &err);
    if (d->pub_req == NULL) {
        struct kube_response none = {.error = err.msg, .body = ""};
        publish_failed(d, "list", &none);
    }
}

static void node_fetched(const struct kube_response *r, void *user)
{
    struct dra *d = user;
    d->pub_req = NULL;
    if (r->status == 200) {
        json_t *node = json_loadb(r->body, r->len, 0, NULL);
        const char *uid = json_string_value(
            json_object_get(json_object_get(node, "metadata"), "uid"));
        if (uid && strlen(uid) < sizeof d->node_uid)
            snprintf(d->node_uid, sizeof d->node_uid, "%s", uid);
        json_decref(node);
        d->node_uid_known = true;
    } else if (r->status == 403 || r->status == 404) {
        /* Published without an owner: the slices then outlive a deleted
         * Node object, which the kubelet cleans up at its next start. */
        log_warn("cannot read the Node object; ResourceSlices get no owner reference",
                 "node=%s status=%ld", d->node, r->status);
        d->node_uid_known = true;
        d->node_uid[0] = '\0';
    } else {
        publish_failed(d, "node", r);
        return;
    }
    list_slices(d);
}

static void publish(struct dra *d)
{
    if (d->pub_busy) {
        d->pub_again = true;
        return;
    }
    d->pub_busy = true;
    if (d->node_uid_known) {
        list_slices(d);
        return;
    }
    char path[400];
    snprintf(path, sizeof path, "/api/v1/nodes/%s", d->node);
    struct gpulet_error err = {0};
    d->pub_req = kube_request(d->kube, "GET", path, NULL, GET_TIMEOUT_MS, node_fetched, d, &err);
    if (d->pub_req == NULL) {
        struct kube_response none = {.error = err.msg, .body = ""};
        publish_failed(d, "node", &none);
    }
}

/* Inside libcurl: only notes, and the timer. */
static void watch_line(const char *line, size_t len, void *user)
{
    struct dra *d = user;
    json_t *ev = json_loadb(line, len, 0, NULL);
    const char *type = json_string_value(json_object_get(ev, "type"));
    json_t *obj = json_object_get(ev, "object");
    const char *rv = json_string_value(
        json_object_get(json_object_get(obj, "metadata"), "resourceVersion"));
    if (type == NULL) {
        d->watch_relist = true;
    } else if (strcmp(type, "ERROR") == 0) {
        /* 410 Gone: the version is too old; list again. */
        d->watch_relist = true;
    } else {
        if (rv && strlen(rv) < sizeof d->watch_rv)
            snprintf(d->watch_rv, sizeof d->watch_rv, "%s", rv);
        if (strcmp(type, "DELETED") == 0 || strcmp(type, "MODIFIED") == 0)
            schedule_publish(d, 0);
    }
    json_decref(ev);
}

static void watch_done(const struct kube_response *r, void *user)
{
    struct dra *d = user;
    d->watch = NULL;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long lasted_ms = (now.tv_sec - d->watch_started.tv_sec) * 1000L +
                     (now.tv_nsec - d->watch_started.tv_nsec) / 1000000L;
    bool long_enough = lasted_ms >= 2000;
    if (long_enough)
        d->watch_attempt = 0;
    if (r->status == 200 && !d->watch_relist && long_enough) {
        start_watch(d); /* resumes from the last version seen */
        return;
    }
    /* Its own count: a list that succeeds resets the publishing backoff,
     * and a watch cut at once (a proxy) would then list twice a second. */
    long ms = r->status == 200 && long_enough ? 0
                                              : kube_backoff_ms(d->watch_attempt++,
                                                                BACKOFF_BASE_MS, BACKOFF_MAX_MS);
    log_debug("ResourceSlice watch ended; listing again", "status=%ld error=\"%s\" "
              "relist=%d retry_ms=%ld", r->status, r->error, d->watch_relist, ms);
    schedule_publish(d, ms);
}

void dra_set_health(struct dra *d, unsigned int gpu, int mig, bool healthy, const char *reason)
{
    if (d == NULL)
        return;
    bool changed = false;
    for (size_t i = 0; i < d->n_devs; i++) {
        struct dra_device *dev = &d->devs[i];
        /* A whole GPU's trouble is its MIG devices' too. */
        if (dev->gpu != gpu || (mig >= 0 && dev->mig != mig) || dev->healthy == healthy)
            continue;
        dev->healthy = healthy;
        changed = true;
        dra_device_taint(dev, healthy ? NULL : reason ? reason : "", time(NULL));
        if (d->taints && !d->taints_dropped && !healthy)
            log_info("device tainted in the ResourceSlice", "device=%s key=%s value=%s",
                     dev->name, dev->taint_key, dev->taint_value);
        else if (d->taints && !d->taints_dropped)
            log_info("device taint removed", "device=%s", dev->name);
        else
            log_info(healthy ? "device back in the ResourceSlice"
                             : "device taken out of the ResourceSlice",
                     "device=%s", dev->name);
    }
    if (changed)
        publish(d);
}

static void health_changed(unsigned int gpu, int mig, bool healthy, const char *reason,
                           void *user)
{
    dra_set_health(user, gpu, mig, healthy, reason);
}

/* ---- start and stop ---- */

static bool claim_held(const char *uid, void *user)
{
    return find_claim(user, uid) != NULL;
}

int dra_start(struct event_base *base, const struct dra_options *opts,
              const struct gpu_inventory *inv, struct dra **out, struct gpulet_error *err)
{
    if (opts->node_name == NULL || !dns_name(opts->node_name, 200))
        return gpulet_error_set(err, GPULET_ERR_USAGE, "DRA needs this node's name: give "
                                "--node-name or NODE_NAME (from the pod's spec.nodeName), "
                                "a Kubernetes node name, not \"%.64s\"",
                                opts->node_name ? opts->node_name : "");
    struct dra *d = calloc(1, sizeof *d);
    if (d == NULL)
        return gpulet_error_errno(err, ENOMEM, "cannot start the DRA driver");
    d->base = base;
    d->inv = inv;
    d->prepared = opts->prepared;
    d->prepared_user = opts->prepared_user;
    snprintf(d->node, sizeof d->node, "%s", opts->node_name);
    snprintf(d->kubelet_root, sizeof d->kubelet_root, "%s", opts->kubelet_root);
    snprintf(d->state_dir, sizeof d->state_dir, "%s", opts->state_dir);
    snprintf(d->cdi_root, sizeof d->cdi_root, "%s", opts->cdi_root);
    snprintf(d->sysfs, sizeof d->sysfs, "%s", opts->sysfs ? opts->sysfs : "/sys");
    snprintf(d->driver_root, sizeof d->driver_root, "%s",
             opts->cdi.driver_root ? opts->cdi.driver_root : "/");
    snprintf(d->dev_root, sizeof d->dev_root, "%s",
             opts->cdi.dev_root ? opts->cdi.dev_root : d->driver_root);
    if (opts->cdi.hook_path)
        snprintf(d->hook_path, sizeof d->hook_path, "%s", opts->cdi.hook_path);
    if (opts->cdi.host_root)
        snprintf(d->host_root, sizeof d->host_root, "%s", opts->cdi.host_root);
    d->cdi = (struct cdi_options){.driver_root = d->driver_root, .dev_root = d->dev_root,
                                  .hook_path = d->hook_path[0] ? d->hook_path : NULL,
                                  .host_root = d->host_root[0] ? d->host_root : NULL};
    snprintf(d->sock, sizeof d->sock, "%s/plugins/" DRA_DRIVER "/dra.sock", d->kubelet_root);
    snprintf(d->reg_sock, sizeof d->reg_sock, "%s/plugins_registry/" DRA_DRIVER "-reg.sock",
             d->kubelet_root);
    snprintf(d->checkpoint, sizeof d->checkpoint, "%s/dra-checkpoint.json", d->state_dir);
    snprintf(d->slice_dir, sizeof d->slice_dir, "%s/dra", d->state_dir);
    d->cfg = opts->cfg;
    d->taints = opts->cfg && opts->cfg->dra_device_taints;
    d->to_delete = json_array();
    d->to_create = json_array();
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/plugins/" DRA_DRIVER, d->kubelet_root);
    char reg_dir[4200];
    snprintf(reg_dir, sizeof reg_dir, "%s/plugins_registry", d->kubelet_root);
    if (dra_devices_build(inv, opts->cfg, &d->devs, &d->n_devs, err) < 0 ||
        fileio_mkdirs(dir, 0755, 0750, err) < 0 || fileio_mkdirs(reg_dir, 0755, 0750, err) < 0 ||
        fileio_mkdirs(d->cdi_root, 0755, 0755, err) < 0 ||
        fileio_mkdirs(d->state_dir, 0755, 0700, err) < 0 ||
        dra_checkpoint_read(d->checkpoint, &d->claims, &d->n_claims, err) < 0 ||
        kube_client_new(base, opts->kube, &d->kube, err) < 0) {
        dra_free(d);
        return -1;
    }
    /* Folders of claims gpulet did not get to record (it stopped between
     * the two) hold nothing. */
    plugin_slice_prune(d->slice_dir, claim_held, d);
    d->reaper = plugin_slice_reaper(d->slice_dir);
    d->jobs = dra_jobs_new(base);
    d->share = (struct dra_share){.jobs = d->jobs, .inv = inv, .driver_root = d->driver_root,
                                  .slice_dir = d->slice_dir, .reaper = d->reaper,
                                  .gpu_held = gpu_held, .claim_known = claim_known,
                                  .user = d};
    snprintf(d->share.mps_root, sizeof d->share.mps_root, "%s/mps", d->slice_dir);
    char sh[4200], usr_sh[4200];
    snprintf(sh, sizeof sh, "%s/bin/sh", d->driver_root);
    snprintf(usr_sh, sizeof usr_sh, "%s/usr/bin/sh", d->driver_root);
    d->share.chroot = strcmp(d->driver_root, "/") != 0 &&
                      (access(sh, X_OK) == 0 || access(usr_sh, X_OK) == 0);
    d->budget = grpc_budget_new();
    d->pub_timer = evtimer_new(base, pub_timer_cb, d);
    d->reg_timer = event_new(base, -1, EV_PERSIST, reg_check, d);
    if (d->budget == NULL || d->pub_timer == NULL || d->reg_timer == NULL || d->reaper == NULL ||
        d->jobs == NULL) {
        dra_free(d);
        return gpulet_error_errno(err, ENOMEM, "cannot start the DRA driver");
    }
    if (serve_sockets(d, err) < 0) {
        gpulet_error_prefix(err, "cannot serve the DRA sockets (--kubelet-root %s)",
                            opts->kubelet_root);
        dra_free(d);
        return -1;
    }
    if (devices_health_subscribe(opts->health, health_changed, d, err) < 0) {
        dra_free(d);
        return -1;
    }
    d->health = opts->health;
    /* The prepared claims' time slices, lost when the driver reloaded
     * while gpulet was away, and MPS daemons that ended (its container
     * restarted with them) are applied again; MPS folders of claims the
     * checkpoint lost are swept. */
    if (start_list(d, err) < 0) {
        dra_free(d);
        return -1;
    }
    start_next(d);
    struct timeval tv = {REG_CHECK_MS / 1000, (REG_CHECK_MS % 1000) * 1000};
    event_add(d->reg_timer, &tv);
    publish(d);
    log_info("DRA driver running", "driver=" DRA_DRIVER " node=%s socket=%s devices=%zu "
             "prepared_claims=%zu", d->node, d->sock, d->n_devs, d->n_claims);
    *out = d;
    return 0;
}

void dra_free(struct dra *d)
{
    if (d == NULL)
        return;
    if (d->health)
        devices_health_unsubscribe(d->health, health_changed, d);
    /* Programs running for claims are ended; MPS daemons stay with their
     * claims, for the next gpulet to find. */
    dra_jobs_free(d->jobs);
    d->jobs = NULL;
    free(d->start);
    while (d->unprepares) {
        struct grpc_call *call = d->unprepares->call;
        d->unprepares->call = NULL;
        if (call)
            grpc_call_finish(call, GRPC_UNAVAILABLE, "gpulet is stopping");
        unprepare_free(d->unprepares);
    }
    while (d->prepares) {
        struct grpc_call *call = d->prepares->call;
        d->prepares->call = NULL;
        if (call)
            grpc_call_finish(call, GRPC_UNAVAILABLE, "gpulet is stopping");
        prepare_free(d->prepares);
    }
    grpc_server_free(d->reg);
    grpc_server_free(d->server);
    grpc_budget_free(d->budget);
    if (d->reg_timer)
        event_free(d->reg_timer);
    if (d->pub_timer)
        event_free(d->pub_timer);
    kube_client_free(d->kube);
    plugin_slice_reaper_free(d->reaper);
    json_decref(d->to_delete);
    json_decref(d->to_create);
    dra_claims_free(d->claims, d->n_claims);
    free(d->devs);
    free(d);
}

void dra_pods_listed(struct dra *d, const V1__ListPodResourcesResponse *resp,
                     void (*fn)(const struct metrics_limit *l, void *user), void *user)
{
    if (d == NULL)
        return;
    struct dra_claim_view v = {d->inv, d->devs, d->n_devs, d->claims, d->n_claims, d->slice_dir};
    dra_claim_limits(&v, resp, fn, user);
}
