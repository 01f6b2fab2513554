#include "config.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "yamldoc/yamldoc.h"

const char *config_process_env(const char *name)
{
    return getenv(name);
}

void config_defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->mig_strategy = MIG_STRATEGY_NONE;
    cfg->fail_on_init_error = true;
    snprintf(cfg->driver_root, sizeof cfg->driver_root, "/");
    cfg->device_list_strategies = DEVICE_LIST_ENVVAR;
    cfg->device_id_strategy = DEVICE_ID_UUID;
    snprintf(cfg->cuda_interposer, sizeof cfg->cuda_interposer, CONFIG_DEFAULT_INTERPOSER);
    snprintf(cfg->state_dir, sizeof cfg->state_dir, CONFIG_DEFAULT_STATE_DIR);
}

const char *config_mig_strategy_name(enum mig_strategy s)
{
    return s == MIG_STRATEGY_SINGLE ? "single" : s == MIG_STRATEGY_MIXED ? "mixed" : "none";
}

const char *config_sharing_name(enum sharing_strategy s)
{
    return s == SHARING_TIME_SLICING ? "time-slicing"
           : s == SHARING_MPS        ? "mps"
           : s == SHARING_SLICES     ? "slices"
                                     : "none";
}

const char *config_gpu_resource(const struct config *cfg, const char *product)
{
    for (size_t i = 0; i < cfg->gpu_name_count; i++)
        if (fnmatch(cfg->gpu_names[i].pattern, product, 0) == 0)
            return cfg->gpu_names[i].name;
    return "nvidia.com/gpu";
}

void config_mig_resource(const struct config *cfg, const char *profile, char *buf, size_t len)
{
    for (size_t i = 0; i < cfg->mig_name_count; i++)
        if (fnmatch(cfg->mig_names[i].pattern, profile, 0) == 0) {
            snprintf(buf, len, "%s", cfg->mig_names[i].name);
            return;
        }
    snprintf(buf, len, "nvidia.com/mig-%s", profile);
    for (char *c = buf; *c; c++)
        if (*c == '+')
            *c = '.';
}

const struct shared_resource *config_shared_for(const struct config *cfg, const char *resource)
{
    for (size_t i = 0; i < cfg->shared_count; i++)
        if (!cfg->shared[i].slices && strcmp(cfg->shared[i].name, resource) == 0)
            return &cfg->shared[i];
    return NULL;
}

/* Whether a list of device selectors names the GPU by index or UUID. */
static bool selectors_name_gpu(const char (*selectors)[96], size_t count, unsigned int index,
                               const char *uuid)
{
    char text[16];
    snprintf(text, sizeof text, "%u", index);
    for (size_t i = 0; i < count; i++)
        if (strcmp(selectors[i], text) == 0 || strcmp(selectors[i], uuid) == 0)
            return true;
    return false;
}

bool config_selects_gpu(const struct shared_resource *s, size_t position, unsigned int index,
                        const char *uuid)
{
    if (s->count > 0)
        return position < s->count;
    if (s->selector_count == 0)
        return true;
    return selectors_name_gpu(s->selectors, s->selector_count, index, uuid);
}

int config_parse_size(const char *text, unsigned long long *out)
{
    static const struct {
        const char *suffix;
        unsigned long long factor;
    } units[] = {{"", 1},          {"Ki", 1ULL << 10}, {"Mi", 1ULL << 20}, {"Gi", 1ULL << 30},
                 {"Ti", 1ULL << 40}, {"K", 1000ULL},   {"M", 1000000ULL},  {"G", 1000000000ULL},
                 {"T", 1000000000000ULL}};
    size_t digits = strspn(text, "0123456789");
    if (digits == 0 || digits > 15)
        return -1; /* more than any GPU has; the product is checked below */
    unsigned long long n = strtoull(text, NULL, 10);
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(text + digits, units[i].suffix) != 0)
            continue;
        if (n > ~0ULL / units[i].factor)
            return -1;
        *out = n * units[i].factor;
        return 0;
    }
    return -1;
}

/* ---- values shared by the file, the environment and the flags ---- */

static int parse_mig_strategy(const char *v, enum mig_strategy *out)
{
    if (strcmp(v, "none") == 0)
        *out = MIG_STRATEGY_NONE;
    else if (strcmp(v, "single") == 0)
        *out = MIG_STRATEGY_SINGLE;
    else if (strcmp(v, "mixed") == 0)
        *out = MIG_STRATEGY_MIXED;
    else
        return -1;
    return 0;
}

static int parse_id_strategy(const char *v, enum device_id_strategy *out)
{
    if (strcmp(v, "uuid") == 0)
        *out = DEVICE_ID_UUID;
    else if (strcmp(v, "index") == 0)
        *out = DEVICE_ID_INDEX;
    else
        return -1;
    return 0;
}

static int parse_list_strategy(const char *v, unsigned int *bits)
{
    if (strcmp(v, "envvar") == 0)
        *bits |= DEVICE_LIST_ENVVAR;
    else if (strcmp(v, "volume-mounts") == 0)
        *bits |= DEVICE_LIST_VOLUME_MOUNTS;
    else if (strcmp(v, "cdi-annotations") == 0)
        *bits |= DEVICE_LIST_CDI_ANNOTATIONS;
    else if (strcmp(v, "cdi-cri") == 0)
        *bits |= DEVICE_LIST_CDI_CRI;
    else
        return -1;
    return 0;
}

/* "envvar,cdi-cri" from a flag or variable */
static int parse_list_strategies(const char *v, unsigned int *out)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", v);
    unsigned int bits = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (parse_list_strategy(tok, &bits) < 0)
            return -1;
    }
    if (bits == 0)
        return -1;
    *out = bits;
    return 0;
}

static int parse_bool_text(const char *v, bool *out)
{
    if (strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0) {
        *out = true;
        return 0;
    }
    if (strcasecmp(v, "false") == 0 || strcmp(v, "0") == 0) {
        *out = false;
        return 0;
    }
    return -1;
}

#define LIST_STRATEGIES "envvar, volume-mounts, cdi-annotations or cdi-cri"

/* ---- the file ---- */

static const char *const top_keys[] = {"version", "flags", "sharing", "resources", "dra", NULL};
static const char *const dra_keys[] = {"enabled", "gpus", "slices", NULL};
/* NVIDIA's flags gpulet accepts; those it has no use for are read and ignored. */
static const char *const flag_keys[] = {
    "migStrategy", "failOnInitError", "nvidiaDriverRoot", "nvidiaDevRoot", "gdsEnabled",
    "mofedEnabled", "useNodeFeatureAPI", "deviceDiscoveryStrategy", "plugin", "gfd", NULL};
static const char *const plugin_keys[] = {
    "passDeviceSpecs", "deviceListStrategy", "deviceIDStrategy", "containerDriverRoot",
    "mpsRoot", "cdiAnnotationPrefix", "nvidiaCTKPath", NULL};
static const char *const sharing_keys[] = {"timeSlicing", "mps", "slices", NULL};
static const char *const slices_keys[] = {"resources", NULL};
static const char *const slice_keys[] = {"name",    "rename",        "replicas", "memory",
                                         "devices", "contextMemory", NULL};
static const char *const strategy_keys[] = {"renameByDefault", "failRequestsGreaterThanOne",
                                            "resources", NULL};
static const char *const shared_keys[] = {"name", "rename", "replicas", "devices", NULL};
static const char *const resources_keys[] = {"gpus", "mig", NULL};
static const char *const named_keys[] = {"pattern", "name", NULL};

static int text_value(const struct ydoc *d, const struct ynode *v, const char *key,
                      const char **out, struct gpulet_error *err)
{
    if (!ynode_is_scalar(v))
        return ydoc_fail(d, v, err, "%s must be a single value", key);
    *out = ynode_text(v);
    return 0;
}

static int file_plugin_flags(const struct ydoc *d, const struct ynode *p, struct config *cfg,
                             struct gpulet_error *err)
{
    if (ynode_expect_map(d, p, "flags.plugin", err) < 0 ||
        ynode_check_keys(d, p, plugin_keys, "flags.plugin", err) < 0)
        return -1;
    const struct ynode *v;
    const char *t = NULL;
    if ((v = ynode_get(d, p, "passDeviceSpecs")) &&
        ynode_bool(d, v, "flags.plugin.passDeviceSpecs", &cfg->pass_device_specs, err) < 0)
        return -1;
    if ((v = ynode_get(d, p, "deviceIDStrategy"))) {
        if (text_value(d, v, "flags.plugin.deviceIDStrategy", &t, err) < 0)
            return -1;
        if (parse_id_strategy(t, &cfg->device_id_strategy) < 0)
            return ydoc_fail(d, v, err,
                             "flags.plugin.deviceIDStrategy must be uuid or index, not \"%s\"", t);
    }
    if ((v = ynode_get(d, p, "deviceListStrategy"))) {
        unsigned int bits = 0;
        if (ynode_is_seq(v)) {
            for (size_t i = 0; i < ynode_count(d, v); i++) {
                const struct ynode *item = ynode_item(d, v, i);
                t = ynode_text(item);
                if (t == NULL || parse_list_strategy(t, &bits) < 0)
                    return ydoc_fail(d, item, err,
                                     "flags.plugin.deviceListStrategy entries must be " LIST_STRATEGIES
                                     ", not \"%s\"",
                                     t ? t : "a list or mapping");
            }
            if (bits == 0)
                return ydoc_fail(d, v, err, "flags.plugin.deviceListStrategy is an empty list");
        } else {
            if (text_value(d, v, "flags.plugin.deviceListStrategy", &t, err) < 0)
                return -1;
            if (parse_list_strategies(t, &bits) < 0)
                return ydoc_fail(d, v, err,
                                 "flags.plugin.deviceListStrategy must be " LIST_STRATEGIES
                                 ", not \"%s\"",
                                 t);
        }
        cfg->device_list_strategies = bits;
    }
    return 0;
}

static int file_flags(const struct ydoc *d, const struct ynode *f, struct config *cfg,
                      struct gpulet_error *err)
{
    if (ynode_expect_map(d, f, "flags", err) < 0 ||
        ynode_check_keys(d, f, flag_keys, "flags", err) < 0)
        return -1;
    const struct ynode *v;
    const char *t = NULL;
    if ((v = ynode_get(d, f, "migStrategy"))) {
        if (text_value(d, v, "flags.migStrategy", &t, err) < 0)
            return -1;
        if (parse_mig_strategy(t, &cfg->mig_strategy) < 0)
            return ydoc_fail(d, v, err,
                             "flags.migStrategy must be none, single or mixed, not \"%s\"", t);
    }
    if ((v = ynode_get(d, f, "failOnInitError")) &&
        ynode_bool(d, v, "flags.failOnInitError", &cfg->fail_on_init_error, err) < 0)
        return -1;
    if ((v = ynode_get(d, f, "nvidiaDriverRoot")) &&
        ynode_string(d, v, "flags.nvidiaDriverRoot", cfg->driver_root, sizeof cfg->driver_root,
                     err) < 0)
        return -1;
    /* gpulet's own key among NVIDIA's GFD flags, which it otherwise ignores */
    if ((v = ynode_get(d, f, "gfd")) && !ynode_is_null(v)) {
        const struct ynode *s;
        if (ynode_expect_map(d, v, "flags.gfd", err) < 0)
            return -1;
        if ((s = ynode_get(d, v, "shortLabels")) &&
            ynode_bool(d, s, "flags.gfd.shortLabels", &cfg->short_labels, err) < 0)
            return -1;
    }
    if ((v = ynode_get(d, f, "plugin")) && !ynode_is_null(v))
        return file_plugin_flags(d, v, cfg, err);
    return 0;
}

static bool alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* nvidia.com/<name>: a Kubernetes qualified name, alphanumerics first and last */
static bool valid_resource_name(const char *name)
{
    size_t len = strlen(name);
    if (strncmp(name, "nvidia.com/", 11) != 0 || len > 63 || len == 11 || !alnum(name[11]) ||
        !alnum(name[len - 1]))
        return false;
    for (const char *p = name + 11; *p; p++)
        if (!alnum(*p) && *p != '-' && *p != '.' && *p != '_')
            return false;
    return true;
}

/* A devices entry: a GPU index, "gpu:mig" indexes, or a GPU- / MIG- UUID. */
static bool valid_device_selector(const char *sel)
{
    if (strncmp(sel, "GPU-", 4) == 0 || strncmp(sel, "MIG-", 4) == 0)
        return sel[4] != '\0';
    size_t gpu = strspn(sel, "0123456789");
    if (gpu == 0 || gpu > 4)
        return false;
    if (sel[gpu] == '\0')
        return true;
    size_t mig = strspn(sel + gpu + 1, "0123456789");
    return sel[gpu] == ':' && mig > 0 && mig <= 4 && sel[gpu + 1 + mig] == '\0';
}

static int file_shared_devices(const struct ydoc *d, const struct ynode *v,
                               struct shared_resource *r, struct gpulet_error *err)
{
    unsigned long long n;
    if (ynode_is_scalar(v) && strcmp(ynode_text(v), "all") == 0) {
        r->all_devices = true;
        return 0;
    }
    r->all_devices = false;
    if (ynode_is_scalar(v)) {
        if (ynode_uint(d, v, "devices", 1, 4096, &n, err) < 0) {
            return ydoc_fail(d, v, err, "devices must be \"all\", a count, or a list of GPU "
                             "indexes, \"gpu:mig\" indexes or UUIDs, not \"%s\"", ynode_text(v));
        }
        r->count = (unsigned int)n;
        return 0;
    }
    if (ynode_expect_seq(d, v, "devices", err) < 0)
        return -1;
    if (ynode_count(d, v) > CONFIG_MAX_DEVICE_SELECTORS)
        return ydoc_fail(d, v, err, "devices lists at most %d entries", CONFIG_MAX_DEVICE_SELECTORS);
    for (size_t i = 0; i < ynode_count(d, v); i++) {
        const struct ynode *item = ynode_item(d, v, i);
        if (ynode_string(d, item, "a devices entry", r->selectors[i], sizeof r->selectors[i],
                         err) < 0)
            return -1;
        if (!valid_device_selector(r->selectors[i]))
            return ydoc_fail(d, item, err, "devices: \"%s\" is not a GPU index (0), MIG device "
                             "(\"0:1\") or UUID (GPU-..., MIG-...)", r->selectors[i]);
        r->selector_count++;
    }
    return 0;
}

/* dra.gpus and dra.slices: whole GPUs, by index or UUID (a GPU in MIG
 * mode brings its MIG devices). */
static int file_dra_list(const struct ydoc *d, const struct ynode *v, const char *key,
                         char (*list)[96], size_t *count, struct gpulet_error *err)
{
    if (ynode_expect_seq(d, v, key, err) < 0)
        return -1;
    if (ynode_count(d, v) > CONFIG_MAX_DEVICE_SELECTORS)
        return ydoc_fail(d, v, err, "%s lists at most %d GPUs", key, CONFIG_MAX_DEVICE_SELECTORS);
    *count = 0;
    for (size_t i = 0; i < ynode_count(d, v); i++) {
        const struct ynode *item = ynode_item(d, v, i);
        char *sel = list[i];
        char what[64];
        snprintf(what, sizeof what, "a %s entry", key);
        if (ynode_string(d, item, what, sel, sizeof list[i], err) < 0)
            return -1;
        if (!valid_device_selector(sel) || strchr(sel, ':') || strncmp(sel, "MIG-", 4) == 0)
            return ydoc_fail(d, item, err, "%s: \"%s\" is not a GPU index (0) or GPU "
                             "UUID (GPU-...); DRA takes whole GPUs", key, sel);
        (*count)++;
    }
    return 0;
}

bool config_dra_gpu(const struct config *cfg, unsigned int index, const char *uuid)
{
    return !cfg->dra_gpus_set ||
           selectors_name_gpu(cfg->dra_gpus, cfg->dra_gpu_count, index, uuid);
}

bool config_dra_slice(const struct config *cfg, unsigned int index, const char *uuid)
{
    return cfg->dra_slice_count > 0 &&
           selectors_name_gpu(cfg->dra_slices, cfg->dra_slice_count, index, uuid);
}

static int file_shared_resource(const struct ydoc *d, const struct ynode *m, bool slices,
                                struct shared_resource *r, struct gpulet_error *err)
{
    if (ynode_expect_map(d, m, "a sharing resource", err) < 0 ||
        ynode_check_keys(d, m, slices ? slice_keys : shared_keys, "sharing resource", err) < 0)
        return -1;
    memset(r, 0, sizeof *r);
    r->all_devices = true;
    r->slices = slices;
    r->line = ynode_line(m);
    const struct ynode *v = ynode_get(d, m, "name");
    if (v == NULL)
        return ydoc_fail(d, m, err, "a sharing resource needs a name (e.g. nvidia.com/gpu)");
    if (ynode_string(d, v, "name", r->name, sizeof r->name, err) < 0)
        return -1;
    if (!valid_resource_name(r->name))
        return ydoc_fail(d, v, err,
                         "name must be nvidia.com/<name> of at most 63 characters, not \"%s\"",
                         r->name);
    if ((v = ynode_get(d, m, "rename"))) {
        if (ynode_string(d, v, "rename", r->rename, sizeof r->rename, err) < 0)
            return -1;
        if (strchr(r->rename, '/') == NULL) {
            /* a bare name lives in nvidia.com, as with NVIDIA's plugin */
            char full[CONFIG_NAME_MAX];
            snprintf(full, sizeof full, "nvidia.com/%s", r->rename);
            memcpy(r->rename, full, sizeof r->rename);
        }
        if (!valid_resource_name(r->rename))
            return ydoc_fail(d, v, err, "rename must be a resource name of at most 63 "
                             "characters in nvidia.com, not \"%s\"", ynode_text(v));
    }
    v = ynode_get(d, m, "replicas");
    const struct ynode *mem = slices ? ynode_get(d, m, "memory") : NULL;
    if (v && mem)
        return ydoc_fail(d, mem, err, "%s: give replicas or memory, not both", r->name);
    if (mem) {
        const char *t = ynode_is_scalar(mem) ? ynode_text(mem) : NULL;
        if (t == NULL || config_parse_size(t, &r->slice_bytes) < 0 || r->slice_bytes == 0)
            return ydoc_fail(d, mem, err, "memory must be a size above zero such as 10Gi, 512Mi "
                             "or a number of bytes, not \"%s\"", t ? t : "a list or mapping");
        r->size_line = ynode_line(mem);
    } else if (v == NULL) {
        return ydoc_fail(d, m, err, slices ? "%s: replicas or memory is required"
                                           : "%s: replicas is required", r->name);
    } else {
        r->size_line = ynode_line(v);
    }
    const struct ynode *ctx = slices ? ynode_get(d, m, "contextMemory") : NULL;
    if (ctx) {
        const char *t = ynode_is_scalar(ctx) ? ynode_text(ctx) : NULL;
        if (t == NULL || config_parse_size(t, &r->context_bytes) < 0 || r->context_bytes == 0 ||
            r->context_bytes > CONFIG_MAX_CONTEXT_BYTES)
            return ydoc_fail(d, ctx, err, "contextMemory must be a size from 1 byte to 16Gi such "
                             "as 300Mi (what nvidia-smi shows for a process that only made a CUDA "
                             "context), not \"%s\"", t ? t : "a list or mapping");
    }
    if ((v = ynode_get(d, m, "devices"))) {
        r->devices_line = ynode_line(v);
        if (file_shared_devices(d, v, r, err) < 0)
            return -1;
    }
    if (mem)
        return 0;
    v = ynode_get(d, m, "replicas");
    unsigned long long n;
    if (ynode_uint(d, v, "replicas", 2, 1024, &n, err) < 0) {
        return ydoc_fail(d, v, err, "replicas must be ≥ 2 (and at most 1024), not \"%s\"",
                         ynode_text(v) ? ynode_text(v) : "a list or mapping");
    }
    r->replicas = (unsigned int)n;
    return 0;
}

/* Two entries for the same resource must select disjoint GPUs. Here the
 * selections are compared as written ("all" and counts take everything
 * or the first GPUs, so they overlap with any other); an index and a UUID
 * naming the same GPU are caught on the node (devices_catalog_build). */
static bool selections_overlap(const struct shared_resource *a, const struct shared_resource *b)
{
    if (a->selector_count == 0 || b->selector_count == 0)
        return true;
    for (size_t i = 0; i < a->selector_count; i++)
        for (size_t j = 0; j < b->selector_count; j++)
            if (strcmp(a->selectors[i], b->selectors[j]) == 0)
                return true;
    return false;
}

/* The resources list of sharing.slices or of timeSlicing / mps. */
static int file_shared_list(const struct ydoc *d, const struct ynode *list, bool slices,
                            struct config *cfg, struct gpulet_error *err)
{
    if (list == NULL || ynode_is_null(list))
        return 0;
    if (ynode_expect_seq(d, list, slices ? "sharing.slices.resources" : "resources", err) < 0)
        return -1;
    if (cfg->shared_count + ynode_count(d, list) > CONFIG_MAX_SHARED)
        return ydoc_fail(d, list, err, "at most %d shared resources", CONFIG_MAX_SHARED);
    size_t first = cfg->shared_count;
    for (size_t i = 0; i < ynode_count(d, list); i++) {
        struct shared_resource *r = &cfg->shared[cfg->shared_count];
        if (file_shared_resource(d, ynode_item(d, list, i), slices, r, err) < 0)
            return -1;
        r->index = i;
        /* time-slicing: one entry per name, as NVIDIA's; slices may
         * split a name's GPUs between entries */
        for (size_t j = first; j < first + i && !slices; j++)
            if (strcmp(cfg->shared[j].name, r->name) == 0)
                return ydoc_fail(d, ynode_item(d, list, i), err, "%s is listed twice", r->name);
        cfg->shared_count++;
    }
    return 0;
}

static int file_slices(const struct ydoc *d, const struct ynode *sl, struct config *cfg,
                       struct gpulet_error *err)
{
    if (ynode_expect_map(d, sl, "sharing.slices", err) < 0 ||
        ynode_check_keys(d, sl, slices_keys, "sharing.slices", err) < 0)
        return -1;
    return file_shared_list(d, ynode_get(d, sl, "resources"), true, cfg, err);
}

static int check_overlaps(const struct ydoc *d, const struct config *cfg,
                          struct gpulet_error *err)
{
    for (size_t i = 0; i < cfg->shared_count; i++) {
        const struct shared_resource *b = &cfg->shared[i];
        for (size_t j = 0; j < i; j++) {
            const struct shared_resource *a = &cfg->shared[j];
            if (strcmp(a->name, b->name) != 0 || !selections_overlap(a, b))
                continue;
            char msg[GPULET_ERROR_MSG_MAX];
            snprintf(msg, sizeof msg, "%s line %lu: sharing.%s.resources[%zu].devices: %s is "
                     "already shared by the entry at line %lu; give each entry its own GPUs "
                     "(devices: a list of indexes or UUIDs)", ydoc_name(d),
                     b->devices_line ? b->devices_line : b->line,
                     b->slices ? "slices" : "timeSlicing", b->index, b->name, a->line);
            return gpulet_error_set(err, GPULET_ERR_INPUT, "%s", msg);
        }
    }
    return 0;
}

static int file_sharing(const struct ydoc *d, const struct ynode *s, struct config *cfg,
                        struct gpulet_error *err)
{
    if (ynode_expect_map(d, s, "sharing", err) < 0 ||
        ynode_check_keys(d, s, sharing_keys, "sharing", err) < 0)
        return -1;
    const struct ynode *ts = ynode_get(d, s, "timeSlicing");
    const struct ynode *mps = ynode_get(d, s, "mps");
    const struct ynode *sl = ynode_get(d, s, "slices");
    if (ts && mps && !ynode_is_null(ts) && !ynode_is_null(mps))
        return ydoc_fail(d, mps, err, "sharing: use timeSlicing or mps, not both");
    if (sl && !ynode_is_null(sl) && file_slices(d, sl, cfg, err) < 0)
        return -1;
    const struct ynode *st = ts && !ynode_is_null(ts) ? ts : mps;
    if (st == NULL || ynode_is_null(st))
        return check_overlaps(d, cfg, err);
    const char *where = st == ts ? "sharing.timeSlicing" : "sharing.mps";
    if (ynode_expect_map(d, st, where, err) < 0 ||
        ynode_check_keys(d, st, strategy_keys, where, err) < 0)
        return -1;
    const struct ynode *v;
    if ((v = ynode_get(d, st, "renameByDefault")) &&
        ynode_bool(d, v, "renameByDefault", &cfg->rename_by_default, err) < 0)
        return -1;
    if ((v = ynode_get(d, st, "failRequestsGreaterThanOne")) &&
        ynode_bool(d, v, "failRequestsGreaterThanOne", &cfg->fail_requests_greater_than_one,
                   err) < 0)
        return -1;
    size_t first = cfg->shared_count;
    if (file_shared_list(d, ynode_get(d, st, "resources"), false, cfg, err) < 0)
        return -1;
    cfg->sharing = cfg->shared_count == first ? SHARING_NONE
                   : st == ts                 ? SHARING_TIME_SLICING
                                              : SHARING_MPS;
    return check_overlaps(d, cfg, err);
}

/* "v100" or "nvidia.com/v100", as NVIDIA's config reads names */
static int resource_name_value(const struct ydoc *d, const struct ynode *v, const char *key,
                               char *buf, size_t len, struct gpulet_error *err)
{
    char text[CONFIG_NAME_MAX];
    if (ynode_string(d, v, key, text, sizeof text, err) < 0)
        return -1;
    if (strchr(text, '/'))
        snprintf(buf, len, "%s", text);
    else
        snprintf(buf, len, "nvidia.com/%s", text);
    if (!valid_resource_name(buf))
        return ydoc_fail(d, v, err, "%s must be a resource name in nvidia.com of at most 63 "
                         "characters (letters, digits, '-', '_', '.', a letter or digit first and "
                         "last), not \"%s\"", key, text);
    return 0;
}

static int file_named_list(const struct ydoc *d, const struct ynode *list, const char *key,
                           struct named_resource *out, size_t *count, struct gpulet_error *err)
{
    char where[64];
    if (ynode_expect_seq(d, list, key, err) < 0)
        return -1;
    if (ynode_count(d, list) > CONFIG_MAX_NAMED)
        return ydoc_fail(d, list, err, "%s lists at most %d entries", key, CONFIG_MAX_NAMED);
    for (size_t i = 0; i < ynode_count(d, list); i++) {
        const struct ynode *m = ynode_item(d, list, i);
        struct named_resource *r = &out[i];
        snprintf(where, sizeof where, "%s[%zu]", key, i);
        if (ynode_expect_map(d, m, where, err) < 0 ||
            ynode_check_keys(d, m, named_keys, where, err) < 0)
            return -1;
        const struct ynode *p = ynode_get(d, m, "pattern"), *n = ynode_get(d, m, "name");
        if (p == NULL || n == NULL)
            return ydoc_fail(d, m, err, "%s needs a pattern and a name", where);
        snprintf(where, sizeof where, "%s[%zu].pattern", key, i);
        if (ynode_string(d, p, where, r->pattern, sizeof r->pattern, err) < 0)
            return -1;
        snprintf(where, sizeof where, "%s[%zu].name", key, i);
        if (resource_name_value(d, n, where, r->name, sizeof r->name, err) < 0)
            return -1;
        r->line = ynode_line(m);
        (*count)++;
    }
    return 0;
}

static int file_resources(const struct ydoc *d, const struct ynode *v, struct config *cfg,
                          struct gpulet_error *err)
{
    if (ynode_expect_map(d, v, "resources", err) < 0 ||
        ynode_check_keys(d, v, resources_keys, "resources", err) < 0)
        return -1;
    const struct ynode *l;
    if ((l = ynode_get(d, v, "gpus")) && !ynode_is_null(l) &&
        file_named_list(d, l, "resources.gpus", cfg->gpu_names, &cfg->gpu_name_count, err) < 0)
        return -1;
    if ((l = ynode_get(d, v, "mig")) && !ynode_is_null(l) &&
        file_named_list(d, l, "resources.mig", cfg->mig_names, &cfg->mig_name_count, err) < 0)
        return -1;
    return 0;
}

static int load_file(const char *path, struct config *cfg, struct gpulet_error *err)
{
    struct ydoc *d;
    if (ydoc_load_file(path, &d, err) < 0) {
        gpulet_error_prefix(err, "cannot read the config file");
        return -1;
    }
    int rc = 0;
    const struct ynode *root = ydoc_root(d);
    if (root == NULL)
        goto done; /* an empty file means the defaults */
    if ((rc = ynode_expect_map(d, root, "the config file", err)) < 0 ||
        (rc = ynode_check_keys(d, root, top_keys, "config", err)) < 0)
        goto done;
    const struct ynode *v = ynode_get(d, root, "version");
    if (v && !ynode_is_null(v) && (!ynode_is_scalar(v) || strcmp(ynode_text(v), "v1") != 0)) {
        rc = ydoc_fail(d, v, err, "version must be v1, not \"%s\"",
                       ynode_text(v) ? ynode_text(v) : "a list or mapping");
        goto done;
    }
    if ((v = ynode_get(d, root, "resources")) && !ynode_is_null(v) &&
        (rc = file_resources(d, v, cfg, err)) < 0)
        goto done;
    if ((v = ynode_get(d, root, "flags")) && !ynode_is_null(v) &&
        (rc = file_flags(d, v, cfg, err)) < 0)
        goto done;
    if ((v = ynode_get(d, root, "sharing")) && !ynode_is_null(v) &&
        (rc = file_sharing(d, v, cfg, err)) < 0)
        goto done;
    if ((v = ynode_get(d, root, "dra")) && !ynode_is_null(v)) {
        const struct ynode *e;
        if ((rc = ynode_expect_map(d, v, "dra", err)) < 0 ||
            (rc = ynode_check_keys(d, v, dra_keys, "dra", err)) < 0)
            goto done;
        if ((e = ynode_get(d, v, "enabled")) && !ynode_is_null(e) &&
            (rc = ynode_bool(d, e, "dra.enabled", &cfg->dra_enabled, err)) < 0)
            goto done;
        if ((e = ynode_get(d, v, "gpus")) && !ynode_is_null(e)) {
            cfg->dra_gpus_set = true;
            if ((rc = file_dra_list(d, e, "dra.gpus", cfg->dra_gpus, &cfg->dra_gpu_count,
                                    err)) < 0)
                goto done;
        }
        if ((e = ynode_get(d, v, "slices")) && !ynode_is_null(e))
            rc = file_dra_list(d, e, "dra.slices", cfg->dra_slices, &cfg->dra_slice_count, err);
    }
done:
    ydoc_free(d);
    return rc;
}

/* ---- the environment and the flags ---- */

static int apply_value(const char *what, const char *key, const char *v, struct config *cfg,
                       struct gpulet_error *err)
{
    if (strcmp(key, "mig") == 0) {
        if (parse_mig_strategy(v, &cfg->mig_strategy) < 0)
            return gpulet_error_set(err, GPULET_ERR_USAGE,
                                    "%s must be none, single or mixed, not \"%s\"", what, v);
    } else if (strcmp(key, "fail") == 0) {
        if (parse_bool_text(v, &cfg->fail_on_init_error) < 0)
            return gpulet_error_set(err, GPULET_ERR_USAGE, "%s must be true or false, not \"%s\"",
                                    what, v);
    } else if (strcmp(key, "root") == 0) {
        if (v[0] == '\0')
            return gpulet_error_set(err, GPULET_ERR_USAGE, "%s must not be empty", what);
        snprintf(cfg->driver_root, sizeof cfg->driver_root, "%s", v);
    } else if (strcmp(key, "specs") == 0) {
        if (parse_bool_text(v, &cfg->pass_device_specs) < 0)
            return gpulet_error_set(err, GPULET_ERR_USAGE, "%s must be true or false, not \"%s\"",
                                    what, v);
    } else if (strcmp(key, "list") == 0) {
        if (parse_list_strategies(v, &cfg->device_list_strategies) < 0)
            return gpulet_error_set(err, GPULET_ERR_USAGE,
                                    "%s must be a comma-separated list of " LIST_STRATEGIES
                                    ", not \"%s\"",
                                    what, v);
    } else if (strcmp(key, "replica") == 0) {
        if (strcmp(v, "distributed") != 0 && strcmp(v, "packed") != 0)
            return gpulet_error_set(err, GPULET_ERR_USAGE,
                                    "%s must be distributed or packed, not \"%s\"", what, v);
        cfg->replicas_packed = strcmp(v, "packed") == 0;
    } else if (strcmp(key, "short") == 0) {
        if (parse_bool_text(v, &cfg->short_labels) < 0)
            return gpulet_error_set(err, GPULET_ERR_USAGE, "%s must be true or false, not \"%s\"",
                                    what, v);
    } else if (strcmp(key, "interposer") == 0 || strcmp(key, "state") == 0) {
        if (v[0] != '/')
            return gpulet_error_set(err, GPULET_ERR_USAGE, "%s must be an absolute path, not \"%s\"",
                                    what, v);
        bool interposer = key[0] == 'i';
        char *dst = interposer ? cfg->cuda_interposer : cfg->state_dir;
        size_t cap = interposer ? sizeof cfg->cuda_interposer : sizeof cfg->state_dir;
        if (strlen(v) >= cap)
            return gpulet_error_set(err, GPULET_ERR_USAGE, "%s is longer than %zu characters",
                                    what, cap - 1);
        snprintf(dst, cap, "%s", v);
    } else if (strcmp(key, "id") == 0) {
        if (parse_id_strategy(v, &cfg->device_id_strategy) < 0)
            return gpulet_error_set(err, GPULET_ERR_USAGE, "%s must be uuid or index, not \"%s\"",
                                    what, v);
    }
    return 0;
}

struct setting {
    const char *key;
    const char *env;
    const char *flag;
    size_t flag_offset;
};

static const struct setting settings[] = {
    {"mig", "MIG_STRATEGY", "--mig-strategy", offsetof(struct config_flags, mig_strategy)},
    {"fail", "FAIL_ON_INIT_ERROR", "--fail-on-init-error",
     offsetof(struct config_flags, fail_on_init_error)},
    {"root", "NVIDIA_DRIVER_ROOT", "--driver-root", offsetof(struct config_flags, driver_root)},
    {"specs", "PASS_DEVICE_SPECS", "--pass-device-specs",
     offsetof(struct config_flags, pass_device_specs)},
    {"list", "DEVICE_LIST_STRATEGY", "--device-list-strategy",
     offsetof(struct config_flags, device_list_strategy)},
    {"id", "DEVICE_ID_STRATEGY", "--device-id-strategy",
     offsetof(struct config_flags, device_id_strategy)},
    {"replica", "GPULET_REPLICA_POLICY", "--replica-policy",
     offsetof(struct config_flags, replica_policy)},
    {"short", "GPULET_SHORT_LABELS", "--short-labels", offsetof(struct config_flags, short_labels)},
    {"interposer", "GPULET_CUDA_INTERPOSER", "--cuda-interposer",
     offsetof(struct config_flags, cuda_interposer)},
    {"state", "GPULET_STATE_DIR", "--state-dir", offsetof(struct config_flags, state_dir)},
};

int config_load(const struct config_flags *flags, config_getenv_fn getenv_fn, struct config *out,
                struct gpulet_error *err)
{
    struct config *cfg = calloc(1, sizeof *cfg);
    if (cfg == NULL)
        return gpulet_error_set(err, GPULET_ERR_SYSTEM, "out of memory");
    config_defaults(cfg);
    if (flags->default_state_dir)
        snprintf(cfg->state_dir, sizeof cfg->state_dir, "%s", flags->default_state_dir);
    const char *file = flags->config_file ? flags->config_file : getenv_fn("CONFIG_FILE");
    int rc = 0;
    if (file && file[0]) {
        snprintf(cfg->file, sizeof cfg->file, "%s", file);
        rc = load_file(file, cfg, err);
    }
    /* The environment overrides the file, the command line both. */
    for (size_t i = 0; rc == 0 && i < sizeof settings / sizeof settings[0]; i++) {
        const char *v = getenv_fn(settings[i].env);
        char what[64];
        snprintf(what, sizeof what, "environment variable %s", settings[i].env);
        if (v && v[0])
            rc = apply_value(what, settings[i].key, v, cfg, err);
    }
    for (size_t i = 0; rc == 0 && i < sizeof settings / sizeof settings[0]; i++) {
        const char *v = *(const char *const *)((const char *)flags + settings[i].flag_offset);
        if (v)
            rc = apply_value(settings[i].flag, settings[i].key, v, cfg, err);
    }
    if (rc == 0)
        *out = *cfg;
    free(cfg);
    return rc;
}
