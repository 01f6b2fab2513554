#include "labels.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio/fileio.h"
#include "log/log.h"

static bool alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool name_valid(const char *s, size_t len)
{
    if (len == 0 || len > 63 || !alnum(s[0]) || !alnum(s[len - 1]))
        return false;
    for (size_t i = 0; i < len; i++)
        if (!alnum(s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
            return false;
    return true;
}

bool label_key_valid(const char *key)
{
    const char *slash = strchr(key, '/');
    if (slash == NULL)
        return name_valid(key, strlen(key));
    size_t prefix = (size_t)(slash - key);
    if (prefix == 0 || prefix > 253)
        return false;
    for (size_t i = 0; i < prefix; i++) /* a DNS subdomain */
        if (!(key[i] >= 'a' && key[i] <= 'z') && !(key[i] >= '0' && key[i] <= '9') &&
            key[i] != '-' && key[i] != '.')
            return false;
    return name_valid(slash + 1, strlen(slash + 1));
}

bool label_value_valid(const char *value)
{
    return value[0] == '\0' || name_valid(value, strlen(value));
}

void label_product(const char *name, char *buf, size_t len)
{
    size_t o = 0;
    bool space = false;
    for (const char *p = name; *p && o + 1 < len; p++) {
        if (*p == ' ') {
            space = true;
        } else if (alnum(*p) || *p == '-' || *p == '_' || *p == '.') {
            if (space && o > 0) {
                if (o + 2 >= len)
                    break;
                buf[o++] = '-';
            }
            space = false;
            buf[o++] = *p;
        }
    }
    buf[o] = '\0';
}

void label_model(const char *name, char *buf, size_t len)
{
    static const char *const vendor[] = {"NVIDIA", "Tesla", "GeForce", "Quadro", NULL};
    char words[128];
    snprintf(words, sizeof words, "%s", name);
    size_t o = 0;
    buf[0] = '\0';
    char *save = NULL;
    for (char *w = strtok_r(words, " ", &save); w && o + 1 < len; w = strtok_r(NULL, " ", &save)) {
        bool skip = false;
        for (size_t i = 0; vendor[i] && !skip; i++)
            skip = strcmp(w, vendor[i]) == 0;
        if (skip)
            continue;
        bool digit = strpbrk(w, "0123456789") != NULL;
        if (digit)
            w[strcspn(w, "-")] = '\0'; /* V100-SXM2-16GB: the part before the form factor */
        char part[64];
        label_product(w, part, sizeof part);
        o += (size_t)snprintf(buf + o, len - o, "%s%s", o ? "-" : "", part);
        if (digit)
            break; /* what follows (80GB, HBM3, PCIe) is not the model */
    }
    if (o >= len)
        buf[len - 1] = '\0';
}

const char *label_family(int major, int minor)
{
    switch (major) {
    case 1: return "tesla";
    case 2: return "fermi";
    case 3: return "kepler";
    case 5: return "maxwell";
    case 6: return "pascal";
    case 7: return minor < 5 ? "volta" : "turing";
    case 8: return minor < 9 ? "ampere" : "ada-lovelace";
    case 9: return "hopper";
    case 10:
    case 12: return "blackwell";
    case 13: return "rubin";
    default: return "undefined";
    }
}

static int add(struct label_set *set, struct gpulet_error *err, const char *key,
               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int add(struct label_set *set, struct gpulet_error *err, const char *key, const char *fmt,
               ...)
{
    struct label l;
    snprintf(l.key, sizeof l.key, "%s", key);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(l.value, sizeof l.value, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof l.value || !label_key_valid(l.key) ||
        !label_value_valid(l.value)) {
        log_warn("label left out: not a valid Kubernetes label", "key=\"%s\" value=\"%s\"", key,
                 l.value);
        return 0;
    }
    for (size_t i = 0; i < set->count; i++)
        if (strcmp(set->items[i].key, l.key) == 0) { /* a later, more specific labeler wins */
            set->items[i] = l;
            return 0;
        }
    struct label *items = realloc(set->items, (set->count + 1) * sizeof *items);
    if (items == NULL)
        return gpulet_error_errno(err, ENOMEM, "cannot compute the labels");
    set->items = items;
    set->items[set->count++] = l;
    return 0;
}

#define ADD(...)                                                                              \
    do {                                                                                      \
        if (add(set, err, __VA_ARGS__) < 0)                                                   \
            return -1;                                                                        \
    } while (0)

static int versions(const struct gpu_inventory *inv, struct label_set *set,
                    struct gpulet_error *err)
{
    char major[16] = "", minor[16] = "", rev[16] = "";
    if (sscanf(inv->driver_version, "%15[0-9].%15[0-9].%15[0-9]", major, minor, rev) >= 2) {
        ADD("nvidia.com/cuda.driver.major", "%s", major);
        ADD("nvidia.com/cuda.driver.minor", "%s", minor);
        ADD("nvidia.com/cuda.driver.rev", "%s", rev);
        ADD("nvidia.com/cuda.driver-version.major", "%s", major);
        ADD("nvidia.com/cuda.driver-version.minor", "%s", minor);
        ADD("nvidia.com/cuda.driver-version.revision", "%s", rev);
        ADD("nvidia.com/cuda.driver-version.full", "%s", inv->driver_version);
    }
    if (inv->cuda_driver_version > 0) {
        int cmaj = inv->cuda_driver_version / 1000, cmin = inv->cuda_driver_version % 1000 / 10;
        ADD("nvidia.com/cuda.runtime.major", "%d", cmaj);
        ADD("nvidia.com/cuda.runtime.minor", "%d", cmin);
        ADD("nvidia.com/cuda.runtime-version.major", "%d", cmaj);
        ADD("nvidia.com/cuda.runtime-version.minor", "%d", cmin);
        ADD("nvidia.com/cuda.runtime-version.full", "%d.%d", cmaj, cmin);
    }
    return 0;
}

/* Slices per device of this memory an entry cuts (0 when none fit). */
static unsigned long long slices_per_device(const struct shared_resource *s,
                                            unsigned long long memory)
{
    return s->replicas ? s->replicas : memory / s->slice_bytes;
}

/* The replicas, product suffix and sharing strategy a resource's sharing
 * gives its labels: time-sliced or MPS replicas, or slices left under the
 * resource's own name (a resource is then all slices); memory: of the
 * device described. As NVIDIA's GFD, the strategy is the resource's own:
 * "none" unless it has more than one replica. */
static void sharing_of(const struct config *cfg, const char *resource,
                       unsigned long long memory, unsigned int *replicas, const char **suffix,
                       const char **strategy)
{
    const struct shared_resource *s = config_shared_for(cfg, resource);
    *replicas = s ? s->replicas : 1;
    *suffix = s && !s->rename[0] && !cfg->rename_by_default ? "-SHARED" : "";
    *strategy = s && s->replicas > 1 ? config_sharing_name(cfg->sharing) : "none";
    for (size_t i = 0; s == NULL && i < cfg->shared_count; i++) {
        const struct shared_resource *sl = &cfg->shared[i];
        if (sl->slices && !sl->rename[0] && strcmp(sl->name, resource) == 0) {
            *replicas = (unsigned int)slices_per_device(sl, memory);
            *suffix = "-SHARED";
            *strategy = config_sharing_name(SHARING_SLICES);
            return;
        }
    }
}

/* As NVIDIA's GFD: the PCI class says what the GPUs were built for, when
 * they all say the same. */
static const char *gpu_mode(const struct gpu_inventory *inv)
{
    unsigned int cls = inv->gpus[0].pci_class;
    for (size_t i = 1; i < inv->gpu_count; i++)
        if (inv->gpus[i].pci_class != cls)
            return "unknown";
    if (cls == 0x0300)
        return "graphics";
    if (cls == 0x0302)
        return "compute";
    return "unknown";
}

/* The GPU the nvidia.com/gpu.* labels describe. NVIDIA's GFD describes one
 * product name: a GPU not in MIG mode rather than one in MIG mode, and
 * among several names whichever its map iteration gives last (at random).
 * gpulet takes the first GPU, by index, of the preferred kind. */
static const struct gpu_device *described_gpu(const struct gpu_inventory *inv)
{
    const struct gpu_device *mig = NULL;
    for (size_t i = 0; i < inv->gpu_count; i++) {
        const struct gpu_device *g = &inv->gpus[i];
        if (g->lost)
            continue;
        if (!g->mig_enabled)
            return g;
        if (mig == NULL)
            mig = g;
    }
    return mig ? mig : &inv->gpus[0];
}

/* nvidia.com/gpu.*: one product name, counted over the GPUs of that name.
 * A GPU in MIG mode is described unshared, replicas 0: sharing applies to
 * what is advertised of it, its MIG devices. */
static int gpu_labels(const struct gpu_inventory *inv, const struct config *cfg,
                      struct label_set *set, struct gpulet_error *err)
{
    const struct gpu_device *g = described_gpu(inv);
    size_t count = 0;
    for (size_t i = 0; i < inv->gpu_count; i++)
        count += !inv->gpus[i].lost && strcmp(inv->gpus[i].name, g->name) == 0;
    unsigned int replicas = 0;
    const char *suffix = "", *strategy = "none";
    if (!g->mig_enabled)
        sharing_of(cfg, "nvidia.com/gpu", gpu_slice_memory(g), &replicas, &suffix, &strategy);
    char product[96];
    label_product(g->name, product, sizeof product);
    ADD("nvidia.com/gpu.count", "%zu", count);
    ADD("nvidia.com/gpu.replicas", "%u", replicas);
    ADD("nvidia.com/gpu.product", "%s%s", product, suffix);
    ADD("nvidia.com/gpu.sharing-strategy", "%s", strategy);
    if (g->memory_total_bytes >> 20)
        ADD("nvidia.com/gpu.memory", "%llu", g->memory_total_bytes >> 20);
    if (g->cc_major > 0) {
        ADD("nvidia.com/gpu.family", "%s", label_family(g->cc_major, g->cc_minor));
        ADD("nvidia.com/gpu.compute.major", "%d", g->cc_major);
        ADD("nvidia.com/gpu.compute.minor", "%d", g->cc_minor);
    }
    return 0;
}

/* <prefix>.count, .replicas, .product (with -SHARED when shared and not
 * renamed) and .sharing-strategy: what every per-resource family starts
 * with. */
static int resource_head(const struct config *cfg, const char *prefix, size_t count,
                         const char *product, unsigned long long memory, struct label_set *set,
                         struct gpulet_error *err)
{
    unsigned int replicas;
    const char *suffix, *strategy;
    sharing_of(cfg, prefix, memory, &replicas, &suffix, &strategy);
    char key[128];
#define KEY(name) (snprintf(key, sizeof key, "%s.%s", prefix, name), key)
    ADD(KEY("count"), "%zu", count);
    ADD(KEY("replicas"), "%u", replicas);
    ADD(KEY("product"), "%s%s", product, suffix);
    ADD(KEY("sharing-strategy"), "%s", strategy);
#undef KEY
    return 0;
}

/* The labels of one MIG profile under a prefix: "nvidia.com/gpu" (single)
 * or "nvidia.com/mig-1g.5gb" (mixed). */
static int mig_labels(const struct config *cfg, const char *prefix, const struct gpu_device *g,
                      const struct gpu_mig_device *m, size_t count, struct label_set *set,
                      struct gpulet_error *err)
{
    char product[96], mig_product[160], key[128];
    label_product(g->name, product, sizeof product);
    snprintf(mig_product, sizeof mig_product, "%s-MIG-%s", product, m->profile);
    if (resource_head(cfg, prefix, count, mig_product, m->memory_mib << 20, set, err) < 0)
        return -1;
#define KEY(name) (snprintf(key, sizeof key, "%s.%s", prefix, name), key)
    ADD(KEY("memory"), "%llu", m->memory_mib);
    ADD(KEY("multiprocessors"), "%u", m->multiprocessors);
    ADD(KEY("slices.gi"), "%u", m->gi_slices);
    ADD(KEY("slices.ci"), "%u", m->ci_slices);
    ADD(KEY("engines.copy"), "%u", m->copy_engines);
    ADD(KEY("engines.decoder"), "%u", m->decoders);
    ADD(KEY("engines.encoder"), "%u", m->encoders);
    ADD(KEY("engines.jpeg"), "%u", m->jpegs);
    ADD(KEY("engines.ofa"), "%u", m->ofas);
#undef KEY
    return 0;
}

static int mig_mixed(const struct gpu_inventory *inv, const struct config *cfg,
                     struct label_set *set, struct gpulet_error *err)
{
    /* One label family per profile, described by its first device. */
    for (size_t i = 0; i < inv->gpu_count; i++) {
        const struct gpu_device *g = &inv->gpus[i];
        for (size_t m = 0; m < g->mig_count; m++) {
            /* grouped by resource: resources.mig[] may join profiles */
            char prefix[CONFIG_NAME_MAX], other[CONFIG_NAME_MAX];
            config_mig_resource(cfg, g->migs[m].profile, prefix, sizeof prefix);
            bool first = true;
            size_t count = 0;
            for (size_t j = 0; j < inv->gpu_count; j++)
                for (size_t k = 0; k < inv->gpus[j].mig_count; k++) {
                    config_mig_resource(cfg, inv->gpus[j].migs[k].profile, other, sizeof other);
                    if (strcmp(other, prefix) != 0)
                        continue;
                    count++;
                    if (j < i || (j == i && k < m))
                        first = false;
                }
            if (!first)
                continue;
            if (mig_labels(cfg, prefix, g, &g->migs[m], count, set, err) < 0)
                return -1;
        }
    }
    return 0;
}

/* Whether g is advertised as its MIG devices rather than whole. */
static bool served_as_mig(const struct config *cfg, const struct gpu_device *g)
{
    return g->mig_enabled && cfg->mig_strategy != MIG_STRATEGY_NONE;
}

/* nvidia.com/<name>.* for each resources.gpus[] name GPUs are advertised
 * under, described by its first GPU, as mixed MIG profiles are. */
static int model_labels(const struct gpu_inventory *inv, const struct config *cfg,
                        struct label_set *set, struct gpulet_error *err)
{
    for (size_t i = 0; i < inv->gpu_count; i++) {
        const struct gpu_device *g = &inv->gpus[i];
        if (served_as_mig(cfg, g))
            continue;
        const char *name = config_gpu_resource(cfg, g->name);
        if (strcmp(name, "nvidia.com/gpu") == 0)
            continue;
        size_t count = 0;
        bool first = true;
        for (size_t j = 0; j < inv->gpu_count; j++) {
            const struct gpu_device *o = &inv->gpus[j];
            if (served_as_mig(cfg, o) || strcmp(config_gpu_resource(cfg, o->name), name) != 0)
                continue;
            count++;
            first &= j >= i;
        }
        if (!first)
            continue;
        char product[96], key[128];
        label_product(g->name, product, sizeof product);
        if (resource_head(cfg, name, count, product, gpu_slice_memory(g), set, err) < 0)
            return -1;
#define KEY(k) (snprintf(key, sizeof key, "%s.%s", name, k), key)
        ADD(KEY("memory"), "%llu", g->memory_total_bytes / (1024 * 1024));
        ADD(KEY("family"), "%s", label_family(g->cc_major, g->cc_minor));
        ADD(KEY("compute.major"), "%d", g->cc_major);
        ADD(KEY("compute.minor"), "%d", g->cc_minor);
#undef KEY
    }
    return 0;
}

/* nvidia.com/<rename>.* for each name whole GPUs are sliced under:
 * .count GPUs, .replicas slices per GPU, .product, .memory of one slice
 * (MiB) and .sharing-strategy=slices, described by its first GPU. */
static int slice_labels(const struct gpu_inventory *inv, const struct config *cfg,
                        struct label_set *set, struct gpulet_error *err)
{
    for (size_t e = 0; e < cfg->shared_count; e++) {
        const struct shared_resource *s = &cfg->shared[e];
        bool first_entry = s->slices && s->rename[0];
        for (size_t k = 0; k < e && first_entry; k++)
            first_entry = !(cfg->shared[k].slices && strcmp(cfg->shared[k].rename, s->rename) == 0);
        if (!first_entry)
            continue;
        size_t count = 0;
        const struct gpu_device *sample = NULL;
        const struct shared_resource *sample_entry = NULL;
        for (size_t k = e; k < cfg->shared_count; k++) {
            const struct shared_resource *o = &cfg->shared[k];
            if (!o->slices || strcmp(o->rename, s->rename) != 0)
                continue;
            size_t position = 0; /* among the GPUs of o->name, for devices: N */
            for (size_t i = 0; i < inv->gpu_count; i++) {
                const struct gpu_device *g = &inv->gpus[i];
                if (served_as_mig(cfg, g) ||
                    strcmp(config_gpu_resource(cfg, g->name), o->name) != 0)
                    continue;
                if (config_selects_gpu(o, position++, g->index, g->uuid) &&
                    slices_per_device(o, gpu_slice_memory(g)) > 0) {
                    count++;
                    if (sample == NULL) {
                        sample = g;
                        sample_entry = o;
                    }
                }
            }
        }
        if (sample == NULL)
            continue;
        unsigned long long n = slices_per_device(sample_entry, gpu_slice_memory(sample));
        unsigned long long mib = sample_entry->replicas
                                     ? (gpu_slice_memory(sample) / n) >> 20
                                     : sample_entry->slice_bytes >> 20;
        char product[96], key[128];
        label_product(sample->name, product, sizeof product);
#define KEY(k) (snprintf(key, sizeof key, "%s.%s", s->rename, k), key)
        ADD(KEY("count"), "%zu", count);
        ADD(KEY("replicas"), "%llu", n);
        ADD(KEY("product"), "%s", product);
        ADD(KEY("memory"), "%llu", mib);
        ADD(KEY("sharing-strategy"), "slices");
#undef KEY
    }
    return 0;
}

/* gpulet's short labels: nvidia.com/gpu.model=V100 when every GPU is one
 * model (else "mixed"), and nvidia.com/gpu.model.<model>=true for each. */
static int short_labels(const struct gpu_inventory *inv, struct label_set *set,
                        struct gpulet_error *err)
{
    char model[64], other[64], key[128];
    bool uniform = true;
    label_model(inv->gpus[0].name, model, sizeof model);
    for (size_t i = 0; i < inv->gpu_count; i++) {
        label_model(inv->gpus[i].name, other, sizeof other);
        uniform &= strcmp(model, other) == 0;
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++) {
            char earlier[64];
            label_model(inv->gpus[j].name, earlier, sizeof earlier);
            seen = strcmp(earlier, other) == 0;
        }
        if (!seen && other[0]) {
            snprintf(key, sizeof key, "nvidia.com/gpu.model.%s", other);
            ADD(key, "true");
        }
    }
    if (model[0])
        ADD("nvidia.com/gpu.model", "%s", uniform ? model : "mixed");
    return 0;
}

static int compare_labels(const void *a, const void *b)
{
    return strcmp(((const struct label *)a)->key, ((const struct label *)b)->key);
}

/* MIG single as NVIDIA's GFD judges it: valid when every GPU is in MIG
 * mode, none of them is empty, and all MIG devices have one profile. */
static bool mig_single_valid(const struct gpu_inventory *inv)
{
    const char *profile = NULL;
    for (size_t i = 0; i < inv->gpu_count; i++) {
        const struct gpu_device *g = &inv->gpus[i];
        if (!g->mig_enabled || g->mig_count == 0)
            return false;
        for (size_t m = 0; m < g->mig_count; m++) {
            if (profile && strcmp(profile, g->migs[m].profile) != 0)
                return false;
            profile = g->migs[m].profile;
        }
    }
    return true;
}

/* MIG single: the nvidia.com/gpu.* labels describe the MIG devices, which
 * are what nvidia.com/gpu serves. When the node cannot be served that way
 * (see mig_single_valid) GFD writes <model>-MIG-INVALID with count,
 * replicas and memory 0 and an empty sharing strategy, so nothing selects
 * devices no plugin advertises; gpulet does the same. */
static int mig_single(const struct gpu_inventory *inv, const struct config *cfg,
                      struct label_set *set, struct gpulet_error *err)
{
    const struct gpu_device *owner = NULL;
    for (size_t i = 0; i < inv->gpu_count && owner == NULL; i++)
        if (inv->gpus[i].mig_enabled)
            owner = &inv->gpus[i];
    if (owner == NULL)
        return 0; /* no GPU in MIG mode: as strategy none */
    if (!mig_single_valid(inv)) {
        char product[96];
        label_product(owner->name, product, sizeof product);
        ADD("nvidia.com/gpu.product", "%s-MIG-INVALID", product);
        ADD("nvidia.com/gpu.count", "0");
        ADD("nvidia.com/gpu.replicas", "0");
        ADD("nvidia.com/gpu.sharing-strategy", "%s", "");
        ADD("nvidia.com/gpu.memory", "0");
        return 0;
    }
    size_t count = 0;
    for (size_t i = 0; i < inv->gpu_count; i++)
        count += inv->gpus[i].mig_count;
    return mig_labels(cfg, "nvidia.com/gpu", owner, &owner->migs[0], count, set, err);
}

/* The node's fabric clique, when every GPU registered in one has the same. */
static int clique_label(const struct gpu_inventory *inv, struct label_set *set,
                        struct gpulet_error *err)
{
    const char *clique = NULL;
    for (size_t i = 0; i < inv->gpu_count; i++) {
        const char *c = inv->gpus[i].fabric_clique;
        if (c[0] == '\0')
            continue;
        if (clique && strcmp(clique, c) != 0)
            return 0; /* GFD writes none when GPUs disagree */
        clique = c;
    }
    if (clique)
        ADD("nvidia.com/gpu.clique", "%s", clique);
    return 0;
}

/* GFD's vGPU labeler, on every node: whether a GPU is a vGPU guest's, and
 * the host driver a vGPU says it runs under (the last one's). */
static int vgpu_labels(const struct gpu_inventory *inv, struct label_set *set,
                       struct gpulet_error *err)
{
    const struct gpu_device *vgpu = NULL;
    for (size_t i = 0; i < inv->gpu_count; i++)
        if (inv->gpus[i].vgpu)
            vgpu = &inv->gpus[i];
    ADD("nvidia.com/vgpu.present", "%s", vgpu ? "true" : "false");
    if (vgpu && vgpu->vgpu_host_driver_version[0]) {
        ADD("nvidia.com/vgpu.host-driver-version", "%s", vgpu->vgpu_host_driver_version);
        ADD("nvidia.com/vgpu.host-driver-branch", "%s", vgpu->vgpu_host_driver_branch);
    }
    return 0;
}

/* The labels in the order NVIDIA's GFD merges its labelers: a later one
 * overwrites an earlier one's key (add() replaces). */
static int compute(const struct gpu_inventory *inv, const struct config *cfg, bool timestamp,
                   time_t now, struct label_set *set, struct gpulet_error *err)
{
    if (timestamp)
        ADD("nvidia.com/gfd.timestamp", "%lld", (long long)now);
    if (vgpu_labels(inv, set, err) < 0)
        return -1;
    if (inv->gpu_count == 0)
        return 0; /* GFD writes nothing else on a node without GPUs */
    char machine[96];
    label_product(inv->machine[0] ? inv->machine : "unknown", machine, sizeof machine);
    ADD("nvidia.com/gpu.machine", "%s", machine);
    if (versions(inv, set, err) < 0)
        return -1;
    bool mig_capable = false, mig_on = false;
    for (size_t i = 0; i < inv->gpu_count; i++) {
        mig_capable |= inv->gpus[i].mig_capable;
        mig_on |= inv->gpus[i].mig_enabled;
    }
    ADD("nvidia.com/mig.capable", "%s", mig_capable ? "true" : "false");
    /* MPS does not run on GPUs in MIG mode (GFD stops with an error there) */
    ADD("nvidia.com/mps.capable", "%s", cfg->sharing == SHARING_MPS && !mig_on ? "true" : "false");
    if (cfg->short_labels && short_labels(inv, set, err) < 0)
        return -1;
    if (model_labels(inv, cfg, set, err) < 0 || slice_labels(inv, cfg, set, err) < 0)
        return -1;
    if (gpu_labels(inv, cfg, set, err) < 0)
        return -1;
    if (cfg->mig_strategy != MIG_STRATEGY_NONE)
        ADD("nvidia.com/mig.strategy", "%s", config_mig_strategy_name(cfg->mig_strategy));
    if (cfg->mig_strategy == MIG_STRATEGY_SINGLE && mig_single(inv, cfg, set, err) < 0)
        return -1;
    if (cfg->mig_strategy == MIG_STRATEGY_MIXED && mig_mixed(inv, cfg, set, err) < 0)
        return -1;
    ADD("nvidia.com/gpu.mode", "%s", gpu_mode(inv));
    return clique_label(inv, set, err);
}

int labels_compute(const struct gpu_inventory *inv, const struct config *cfg, bool timestamp,
                   time_t now, struct label_set *out, struct gpulet_error *err)
{
    struct label_set set = {0};
    if (compute(inv, cfg, timestamp, now, &set, err) < 0) {
        labels_free(&set);
        return -1;
    }
    if (set.count)
        qsort(set.items, set.count, sizeof *set.items, compare_labels);
    *out = set;
    return 0;
}

void labels_free(struct label_set *set)
{
    free(set->items);
    set->items = NULL;
    set->count = 0;
}

void labels_print(const struct label_set *set, FILE *out)
{
    for (size_t i = 0; i < set->count; i++)
        fprintf(out, "%s=%s\n", set->items[i].key, set->items[i].value);
}

int labels_write(const struct label_set *set, const char *path, struct gpulet_error *err)
{
    char copy[4096], dir[4096];
    snprintf(copy, sizeof copy, "%s", path);
    snprintf(dir, sizeof dir, "%s", dirname(copy));
    if (fileio_mkdirs(dir, 0755, 0755, err) < 0)
        return -1;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL)
        return gpulet_error_errno(err, errno, "cannot write %s", path);
    labels_print(set, f);
    if (fclose(f) != 0) {
        free(text);
        return gpulet_error_errno(err, errno, "cannot write %s", path);
    }
    int rc = fileio_replace(path, text, len, FILEIO_DURABLE, err);
    free(text);
    return rc;
}
