#include "sim_node.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_mig.h"
#include "yamldoc/yamldoc.h"

/* The NVML event type bits, repeated here so the parser needs no NVML. */
#define EVENT_SINGLE_BIT_ECC 0x1ULL
#define EVENT_DOUBLE_BIT_ECC 0x2ULL
#define EVENT_XID 0x8ULL
#define INSTANCE_NONE 0xFFFFFFFFU

static const char *const node_keys[] = {
    "name", "machine", "driver_loaded", "driver_version", "nvml_version", "cuda_driver_version",
    "context_mib", "gpu_defaults", "gpus", "topology", "fabric", NULL};

static const char *const gpu_keys[] = {
    "name", "uuid", "serial", "minor", "pci_bus_id", "pci_device_id", "pci_subsystem_id",
    "pci_class", "numa_node", "memory_mib", "memory_reserved_mib", "compute_capability",
    "multiprocessors", "mig_capable", "mig_enabled", "gpm", "ecc", "power_limit_w", "idle_power_w",
    "max_sm_clock_mhz", "mem_clock_mhz", "utilization_pct", "temperature_c", "memory_used_mib",
    "vbios_version", "fan_speed_pct", "vgpu_host_driver_version", "vgpu_host_driver_branch",
    "mig_devices", NULL};

static const char *const mig_keys[] = {
    "uuid", "gpu_instance_id", "compute_instance_id", "slices", "ci_slices", "memory_mib",
    "multiprocessors", "copy_engines", "decoders", "encoders", "jpegs", "ofas", NULL};

static const char *const topology_keys[] = {"pcie_default", "pcie", "nvlinks", "nvswitch_links",
                                            NULL};

static const char *const override_keys[SIM_OVERRIDE_COUNT] = {
    [SIM_SET_TEMPERATURE] = "temperature_c",
    [SIM_SET_MEMORY_TEMPERATURE] = "memory_temperature_c",
    [SIM_SET_UTILIZATION] = "utilization_pct",
    [SIM_SET_MEMORY_UTILIZATION] = "memory_utilization_pct",
    [SIM_SET_MEMORY_USED] = "memory_used_mib",
    [SIM_SET_POWER] = "power_w",
    [SIM_SET_SM_CLOCK] = "sm_clock_mhz",
    [SIM_SET_MEM_CLOCK] = "mem_clock_mhz",
    [SIM_SET_ENCODER] = "encoder_pct",
    [SIM_SET_DECODER] = "decoder_pct",
    [SIM_SET_PCIE_REPLAYS] = "pcie_replays",
    [SIM_SET_REMAPPED_CORRECTABLE] = "remapped_correctable",
    [SIM_SET_REMAPPED_UNCORRECTABLE] = "remapped_uncorrectable",
    [SIM_SET_REMAPPED_PENDING] = "remapped_pending",
    [SIM_SET_REMAPPED_FAILURE] = "remapped_failure",
    [SIM_SET_CLOCK_EVENT_REASONS] = "clock_event_reasons",
};

static const char *const pcie_level_names[] = {"internal", "single", "multiple",
                                               "hostbridge", "node", "system"};

static int uint_field(const struct ydoc *d, const struct ynode *v, const char *what,
                      unsigned long long max, unsigned int *out, struct gpulet_error *err)
{
    unsigned long long x;
    if (ynode_uint(d, v, what, 0, max, &x, err) < 0)
        return -1;
    *out = (unsigned int)x;
    return 0;
}

static int pcie_level(const struct ydoc *d, const struct ynode *v, int *out,
                      struct gpulet_error *err)
{
    const char *t = ynode_text(v);
    for (size_t i = 0; t && i < sizeof pcie_level_names / sizeof pcie_level_names[0]; i++) {
        if (strcmp(t, pcie_level_names[i]) == 0) {
            *out = (int)i * 10;
            return 0;
        }
    }
    return ydoc_fail(d, v, err,
                     "PCIe level must be one of internal, single, multiple, hostbridge, node, "
                     "system, not \"%s\"",
                     t ? t : "a list or mapping");
}

static int parse_mig(const struct ydoc *d, const struct ynode *m, const char *where,
                     struct sim_mig *mig, struct gpulet_error *err)
{
    if (ynode_expect_map(d, m, where, err) < 0 || ynode_check_keys(d, m, mig_keys, where, err) < 0)
        return -1;
    memset(mig, 0, sizeof *mig);
    mig->copy_engines = 1;
    mig->decoders = mig->jpegs = mig->ofas = 0;
    size_t n = ynode_count(d, m);
    for (size_t i = 0; i < n; i++) {
        const char *k = ynode_text(ynode_key(d, m, i));
        const struct ynode *v = ynode_value(d, m, i);
        int rc = 0;
        unsigned long long x;
        if (strcmp(k, "uuid") == 0) {
            rc = ynode_string(d, v, "uuid", mig->uuid, sizeof mig->uuid, err);
            if (rc == 0 && strncmp(mig->uuid, "MIG-", 4) != 0)
                rc = ydoc_fail(d, v, err, "a MIG device uuid must start with \"MIG-\", not \"%s\"",
                               mig->uuid);
        } else if (strcmp(k, "gpu_instance_id") == 0) {
            rc = uint_field(d, v, k, 14, &mig->gpu_instance_id, err);
        } else if (strcmp(k, "compute_instance_id") == 0) {
            rc = uint_field(d, v, k, 7, &mig->compute_instance_id, err);
        } else if (strcmp(k, "slices") == 0) {
            rc = ynode_uint(d, v, k, 1, 8, &x, err);
            mig->slices = (unsigned int)x;
        } else if (strcmp(k, "ci_slices") == 0) {
            rc = ynode_uint(d, v, k, 1, 8, &x, err);
            mig->ci_slices = (unsigned int)x;
        } else if (strcmp(k, "memory_mib") == 0) {
            rc = ynode_uint(d, v, k, 1, 1ULL << 22, &mig->memory_mib, err);
        } else if (strcmp(k, "multiprocessors") == 0) {
            rc = uint_field(d, v, k, 1024, &mig->multiprocessors, err);
        } else if (strcmp(k, "copy_engines") == 0) {
            rc = uint_field(d, v, k, 64, &mig->copy_engines, err);
        } else if (strcmp(k, "decoders") == 0) {
            rc = uint_field(d, v, k, 64, &mig->decoders, err);
        } else if (strcmp(k, "encoders") == 0) {
            rc = uint_field(d, v, k, 64, &mig->encoders, err);
        } else if (strcmp(k, "jpegs") == 0) {
            rc = uint_field(d, v, k, 64, &mig->jpegs, err);
        } else if (strcmp(k, "ofas") == 0) {
            rc = uint_field(d, v, k, 64, &mig->ofas, err);
        }
        if (rc < 0)
            return -1;
    }
    const char *missing = !mig->uuid[0] ? "uuid" : !mig->slices ? "slices" :
                          !mig->memory_mib ? "memory_mib" : NULL;
    if (missing)
        return ydoc_fail(d, m, err, "%s: %s is missing", where, missing);
    if (!mig->ci_slices)
        mig->ci_slices = mig->slices;
    if (mig->ci_slices > mig->slices)
        return ydoc_fail(d, m, err, "%s: ci_slices (%u) cannot exceed slices (%u)", where,
                         mig->ci_slices, mig->slices);
    return 0;
}

static int parse_compute_capability(const struct ydoc *d, const struct ynode *v, struct sim_gpu *g,
                                    struct gpulet_error *err)
{
    const char *t = ynode_text(v);
    int major, minor;
    char extra;
    if (t == NULL || sscanf(t, "%d.%d%c", &major, &minor, &extra) != 2 || major < 1 ||
        major > 99 || minor < 0 || minor > 9)
        return ydoc_fail(d, v, err, "compute_capability must look like \"8.0\", not \"%s\"",
                         t ? t : "a list or mapping");
    g->cc_major = major;
    g->cc_minor = minor;
    return 0;
}

static int parse_bus_id(const struct ydoc *d, const struct ynode *v, char *buf, size_t len,
                        struct gpulet_error *err)
{
    if (ynode_string(d, v, "pci_bus_id", buf, len, err) < 0)
        return -1;
    unsigned int domain, bus, dev, fn;
    char extra;
    if (sscanf(buf, "%x:%x:%x.%x%c", &domain, &bus, &dev, &fn, &extra) != 4 || bus > 0xff ||
        dev > 0x1f || fn > 7)
        return ydoc_fail(d, v, err,
                         "pci_bus_id must look like \"00000000:07:00.0\" "
                         "(domain:bus:device.function), not \"%s\"",
                         buf);
    /* NVML's form: 8-digit domain, upper-case hex. */
    snprintf(buf, len, "%08X:%02X:%02X.%X", domain, bus, dev, fn);
    return 0;
}

/* Applies the keys of map m onto g (which may hold defaults already). */
static int parse_gpu(const struct ydoc *d, const struct ynode *m, const char *where,
                     struct sim_gpu *g, struct gpulet_error *err)
{
    if (ynode_expect_map(d, m, where, err) < 0 || ynode_check_keys(d, m, gpu_keys, where, err) < 0)
        return -1;
    size_t n = ynode_count(d, m);
    for (size_t i = 0; i < n; i++) {
        const char *k = ynode_text(ynode_key(d, m, i));
        const struct ynode *v = ynode_value(d, m, i);
        int rc = 0;
        unsigned long long x;
        long long sx;
        if (strcmp(k, "name") == 0) {
            rc = ynode_string(d, v, k, g->name, sizeof g->name, err);
        } else if (strcmp(k, "uuid") == 0) {
            rc = ynode_string(d, v, k, g->uuid, sizeof g->uuid, err);
            if (rc == 0 && strncmp(g->uuid, "GPU-", 4) != 0)
                rc = ydoc_fail(d, v, err, "a GPU uuid must start with \"GPU-\", not \"%s\"",
                               g->uuid);
        } else if (strcmp(k, "serial") == 0) {
            rc = ynode_string(d, v, k, g->serial, sizeof g->serial, err);
        } else if (strcmp(k, "vbios_version") == 0) {
            rc = ynode_string(d, v, k, g->vbios_version, sizeof g->vbios_version, err);
        } else if (strcmp(k, "vgpu_host_driver_version") == 0) {
            rc = ynode_string(d, v, k, g->vgpu_host_driver_version,
                              sizeof g->vgpu_host_driver_version, err);
        } else if (strcmp(k, "vgpu_host_driver_branch") == 0) {
            rc = ynode_string(d, v, k, g->vgpu_host_driver_branch,
                              sizeof g->vgpu_host_driver_branch, err);
        } else if (strcmp(k, "minor") == 0) {
            rc = uint_field(d, v, k, 254, &g->minor, err);
        } else if (strcmp(k, "pci_bus_id") == 0) {
            rc = parse_bus_id(d, v, g->pci_bus_id, sizeof g->pci_bus_id, err);
        } else if (strcmp(k, "pci_device_id") == 0) {
            rc = uint_field(d, v, k, 0xffffffffULL, &g->pci_device_id, err);
        } else if (strcmp(k, "pci_subsystem_id") == 0) {
            rc = uint_field(d, v, k, 0xffffffffULL, &g->pci_subsystem_id, err);
        } else if (strcmp(k, "pci_class") == 0) {
            rc = uint_field(d, v, k, 0xffffffULL, &g->pci_class, err);
        } else if (strcmp(k, "numa_node") == 0) {
            rc = ynode_int(d, v, k, -1, 1023, &sx, err);
            g->numa_node = (int)sx;
        } else if (strcmp(k, "fan_speed_pct") == 0) {
            rc = ynode_int(d, v, k, -1, 100, &sx, err);
            g->fan_speed_pct = (int)sx;
        } else if (strcmp(k, "memory_mib") == 0) {
            rc = ynode_uint(d, v, k, 1, 1ULL << 22, &g->memory_mib, err);
        } else if (strcmp(k, "memory_reserved_mib") == 0) {
            rc = ynode_uint(d, v, k, 0, 1ULL << 22, &g->memory_reserved_mib, err);
        } else if (strcmp(k, "compute_capability") == 0) {
            rc = parse_compute_capability(d, v, g, err);
        } else if (strcmp(k, "multiprocessors") == 0) {
            rc = uint_field(d, v, k, 1024, &g->multiprocessors, err);
        } else if (strcmp(k, "mig_capable") == 0) {
            rc = ynode_bool(d, v, k, &g->mig_capable, err);
        } else if (strcmp(k, "mig_enabled") == 0) {
            rc = ynode_bool(d, v, k, &g->mig_enabled, err);
        } else if (strcmp(k, "gpm") == 0) {
            rc = ynode_bool(d, v, k, &g->gpm, err);
        } else if (strcmp(k, "ecc") == 0) {
            rc = ynode_bool(d, v, k, &g->ecc, err);
        } else if (strcmp(k, "power_limit_w") == 0) {
            rc = ynode_uint(d, v, k, 1, 5000, &x, err);
            g->power_limit_w = (unsigned int)x;
        } else if (strcmp(k, "idle_power_w") == 0) {
            rc = uint_field(d, v, k, 5000, &g->idle_power_w, err);
        } else if (strcmp(k, "max_sm_clock_mhz") == 0) {
            rc = uint_field(d, v, k, 10000, &g->max_sm_clock_mhz, err);
        } else if (strcmp(k, "mem_clock_mhz") == 0) {
            rc = uint_field(d, v, k, 20000, &g->mem_clock_mhz, err);
        } else if (strcmp(k, "utilization_pct") == 0) {
            rc = uint_field(d, v, k, 100, &g->utilization_pct, err);
        } else if (strcmp(k, "temperature_c") == 0) {
            rc = uint_field(d, v, k, 150, &g->temperature_c, err);
        } else if (strcmp(k, "memory_used_mib") == 0) {
            rc = ynode_uint(d, v, k, 0, 1ULL << 22, &g->memory_used_mib, err);
        } else if (strcmp(k, "mig_devices") == 0) {
            rc = ynode_expect_seq(d, v, "mig_devices", err);
            size_t count = rc == 0 ? ynode_count(d, v) : 0;
            if (rc == 0 && count > SIM_MAX_MIGS)
                rc = ydoc_fail(d, v, err, "%s: at most %d MIG devices", where, SIM_MAX_MIGS);
            for (size_t j = 0; rc == 0 && j < count; j++) {
                char what[96];
                snprintf(what, sizeof what, "%s MIG device %zu", where, j);
                rc = parse_mig(d, ynode_item(d, v, j), what, &g->migs[j], err);
            }
            g->mig_count = rc == 0 ? count : 0;
        }
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int check_gpu(const struct ydoc *d, const struct ynode *m, const char *where,
                     const struct sim_gpu *g, struct gpulet_error *err)
{
    const char *missing = !g->uuid[0] ? "uuid" : !g->name[0] ? "name" :
                          !g->pci_bus_id[0] ? "pci_bus_id" : !g->memory_mib ? "memory_mib" :
                          g->cc_major < 0 ? "compute_capability" : NULL;
    if (missing)
        return ydoc_fail(d, m, err, "%s: %s is missing (give it here or in gpu_defaults)", where,
                         missing);
    if (g->memory_reserved_mib >= g->memory_mib)
        return ydoc_fail(d, m, err, "%s: memory_reserved_mib (%llu) must be less than memory_mib "
                         "(%llu)", where, g->memory_reserved_mib, g->memory_mib);
    if (g->memory_used_mib + g->memory_reserved_mib > g->memory_mib)
        return ydoc_fail(d, m, err, "%s: memory_used_mib plus memory_reserved_mib exceeds "
                         "memory_mib (%llu)", where, g->memory_mib);
    if (g->mig_enabled && !g->mig_capable)
        return ydoc_fail(d, m, err, "%s: mig_enabled needs mig_capable: true", where);
    if (g->mig_count && !g->mig_enabled)
        return ydoc_fail(d, m, err, "%s: mig_devices are given but mig_enabled is false", where);
    if (g->idle_power_w > g->power_limit_w)
        return ydoc_fail(d, m, err, "%s: idle_power_w (%u) exceeds power_limit_w (%u)", where,
                         g->idle_power_w, g->power_limit_w);
    unsigned int slices = 0;
    unsigned long long mig_memory = 0;
    for (size_t i = 0; i < g->mig_count; i++) {
        slices += g->migs[i].slices;
        mig_memory += g->migs[i].memory_mib;
        for (size_t j = 0; j < i; j++)
            if (g->migs[i].gpu_instance_id == g->migs[j].gpu_instance_id &&
                g->migs[i].compute_instance_id == g->migs[j].compute_instance_id)
                return ydoc_fail(d, m, err, "%s: MIG devices %zu and %zu have the same GPU and "
                                 "compute instance ids", where, j, i);
    }
    if (slices > 8)
        return ydoc_fail(d, m, err, "%s: the MIG devices use %u slices, more than a GPU has (7, "
                         "or 8 on some models)", where, slices);
    if (mig_memory > g->memory_mib)
        return ydoc_fail(d, m, err, "%s: the MIG devices hold %llu MiB, more than the GPU's %llu",
                         where, mig_memory, g->memory_mib);
    struct sim_gpu_instance gis[SIM_MAX_MIGS];
    size_t gi_count;
    struct gpulet_error why = {0};
    if (sim_gpu_instances(g, gis, &gi_count, &why) < 0)
        return ydoc_fail(d, m, err, "%s: %s", where, why.msg);
    return 0;
}

static int gpu_index(const struct ydoc *d, const struct ynode *v, const struct sim_node *node,
                     size_t *out, struct gpulet_error *err)
{
    unsigned long long x;
    if (node->gpu_count == 0)
        return ydoc_fail(d, v, err, "the topology names a GPU but the node has none");
    if (ynode_uint(d, v, "GPU index", 0, node->gpu_count - 1, &x, err) < 0)
        return -1;
    *out = (size_t)x;
    return 0;
}

static int parse_pcie_groups(const struct ydoc *d, const struct ynode *list, struct sim_node *node,
                             bool *set, struct gpulet_error *err)
{
    if (ynode_expect_seq(d, list, "topology.pcie", err) < 0)
        return -1;
    for (size_t e = 0; e < ynode_count(d, list); e++) {
        const struct ynode *entry = ynode_item(d, list, e);
        static const char *const keys[] = {"level", "groups", NULL};
        if (ynode_expect_map(d, entry, "a topology.pcie entry", err) < 0 ||
            ynode_check_keys(d, entry, keys, "topology.pcie entry", err) < 0)
            return -1;
        const struct ynode *lv = ynode_get(d, entry, "level");
        const struct ynode *groups = ynode_get(d, entry, "groups");
        int level;
        if (lv == NULL || groups == NULL)
            return ydoc_fail(d, entry, err, "a topology.pcie entry needs level and groups");
        if (pcie_level(d, lv, &level, err) < 0 ||
            ynode_expect_seq(d, groups, "groups", err) < 0)
            return -1;
        for (size_t gi = 0; gi < ynode_count(d, groups); gi++) {
            const struct ynode *group = ynode_item(d, groups, gi);
            if (ynode_expect_seq(d, group, "a PCIe group", err) < 0)
                return -1;
            size_t members = ynode_count(d, group);
            for (size_t a = 0; a < members; a++) {
                size_t ia;
                if (gpu_index(d, ynode_item(d, group, a), node, &ia, err) < 0)
                    return -1;
                for (size_t b = 0; b < members; b++) {
                    size_t ib;
                    if (gpu_index(d, ynode_item(d, group, b), node, &ib, err) < 0)
                        return -1;
                    /* The closest relation given wins. */
                    if (ia != ib && (!set[ia * SIM_MAX_GPUS + ib] ||
                                     level < node->pcie_level[ia][ib])) {
                        node->pcie_level[ia][ib] = level;
                        set[ia * SIM_MAX_GPUS + ib] = true;
                    }
                }
            }
        }
    }
    return 0;
}

static int add_link(struct sim_gpu *g, const char *remote)
{
    if (g->link_count >= SIM_MAX_LINKS)
        return -1;
    /* remote may be another GPU's bus id inside the same node: copy by length. */
    size_t len = strnlen(remote, sizeof g->link_remote[0] - 1);
    memmove(g->link_remote[g->link_count], remote, len);
    g->link_remote[g->link_count][len] = '\0';
    g->link_count++;
    return 0;
}

static int parse_nvlinks(const struct ydoc *d, const struct ynode *list, struct sim_node *node,
                         struct gpulet_error *err)
{
    if (ynode_expect_seq(d, list, "topology.nvlinks", err) < 0)
        return -1;
    for (size_t e = 0; e < ynode_count(d, list); e++) {
        const struct ynode *entry = ynode_item(d, list, e);
        if (!ynode_is_seq(entry) || ynode_count(d, entry) != 3)
            return ydoc_fail(d, entry, err, "a topology.nvlinks entry must be [gpu, gpu, links]");
        size_t a, b;
        unsigned long long links;
        if (gpu_index(d, ynode_item(d, entry, 0), node, &a, err) < 0 ||
            gpu_index(d, ynode_item(d, entry, 1), node, &b, err) < 0 ||
            ynode_uint(d, ynode_item(d, entry, 2), "NVLink count", 1, SIM_MAX_LINKS, &links,
                       err) < 0)
            return -1;
        if (a == b)
            return ydoc_fail(d, entry, err, "an NVLink must join two different GPUs");
        if (node->nvlinks[a][b])
            return ydoc_fail(d, entry, err, "GPUs %zu and %zu are listed twice", a, b);
        node->nvlinks[a][b] = node->nvlinks[b][a] = (unsigned int)links;
        for (unsigned long long l = 0; l < links; l++) {
            if (add_link(&node->gpus[a], node->gpus[b].pci_bus_id) < 0 ||
                add_link(&node->gpus[b], node->gpus[a].pci_bus_id) < 0)
                return ydoc_fail(d, entry, err, "a GPU has more than %d NVLinks", SIM_MAX_LINKS);
        }
    }
    return 0;
}

static int parse_nvswitches(const struct ydoc *d, const struct ynode *list, struct sim_node *node,
                            struct gpulet_error *err)
{
    if (ynode_expect_seq(d, list, "topology.nvswitch_links", err) < 0)
        return -1;
    size_t switches = ynode_count(d, list);
    if (switches > SIM_MAX_SWITCHES)
        return ydoc_fail(d, list, err, "at most %d NVSwitches", SIM_MAX_SWITCHES);
    for (size_t s = 0; s < switches; s++) {
        unsigned long long links;
        if (ynode_uint(d, ynode_item(d, list, s), "links to an NVSwitch", 1, SIM_MAX_LINKS,
                       &links, err) < 0)
            return -1;
        /* NVSwitches sit on their own PCI buses, apart from any GPU's. */
        char remote[32];
        snprintf(remote, sizeof remote, "00000000:%02zX:00.0", 0xE0 + s);
        for (size_t g = 0; g < node->gpu_count; g++) {
            node->gpus[g].nvswitch = true;
            for (unsigned long long l = 0; l < links; l++)
                if (add_link(&node->gpus[g], remote) < 0)
                    return ydoc_fail(d, list, err, "a GPU has more than %d NVLinks",
                                     SIM_MAX_LINKS);
        }
    }
    return 0;
}

static int parse_topology(const struct ydoc *d, const struct ynode *t, struct sim_node *node,
                          struct gpulet_error *err)
{
    int fallback = 50; /* across sockets, the farthest */
    bool *set = calloc(SIM_MAX_GPUS * SIM_MAX_GPUS, sizeof *set);
    if (set == NULL)
        return gpulet_error_set(err, GPULET_ERR_SYSTEM, "out of memory");
    int rc = 0;
    if (t) {
        rc = ynode_expect_map(d, t, "topology", err);
        if (rc == 0)
            rc = ynode_check_keys(d, t, topology_keys, "topology", err);
        const struct ynode *v;
        if (rc == 0 && (v = ynode_get(d, t, "pcie_default")))
            rc = pcie_level(d, v, &fallback, err);
        if (rc == 0 && (v = ynode_get(d, t, "pcie")))
            rc = parse_pcie_groups(d, v, node, set, err);
        if (rc == 0 && (v = ynode_get(d, t, "nvlinks")))
            rc = parse_nvlinks(d, v, node, err);
        if (rc == 0 && (v = ynode_get(d, t, "nvswitch_links")))
            rc = parse_nvswitches(d, v, node, err);
    }
    for (size_t a = 0; a < node->gpu_count; a++)
        for (size_t b = 0; b < node->gpu_count; b++)
            if (!set[a * SIM_MAX_GPUS + b])
                node->pcie_level[a][b] = a == b ? 0 : fallback;
    free(set);
    return rc;
}

static void gpu_defaults(struct sim_gpu *g)
{
    memset(g, 0, sizeof *g);
    g->numa_node = -1;
    g->fan_speed_pct = -1; /* passively cooled, as data-centre boards are */
    g->pci_class = 0x030200; /* 3D controller, as data-centre GPUs are */
    g->cc_major = g->cc_minor = -1;
    g->power_limit_w = 300;
    g->idle_power_w = 50;
    g->max_sm_clock_mhz = 1410;
    g->mem_clock_mhz = 1215;
    g->temperature_c = 35;
    g->ecc = true;
}

static int check_unique(const struct ydoc *d, const struct ynode *gpus, const struct sim_node *node,
                        struct gpulet_error *err)
{
    for (size_t i = 0; i < node->gpu_count; i++) {
        const struct sim_gpu *a = &node->gpus[i];
        for (size_t j = 0; j < i; j++) {
            const struct sim_gpu *b = &node->gpus[j];
            const char *same = strcmp(a->uuid, b->uuid) == 0 ? "uuid" :
                               strcmp(a->pci_bus_id, b->pci_bus_id) == 0 ? "pci_bus_id" :
                               a->minor == b->minor ? "minor" : NULL;
            if (same)
                return ydoc_fail(d, ynode_item(d, gpus, i), err, "gpu %zu has the same %s as gpu %zu",
                                 i, same, j);
        }
    }
    return 0;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
        return (c | 0x20) - 'a' + 10;
    return -1;
}

/* fabric: {cluster_uuid: "8-4-4-4-12 hex", clique_id: N}. */
static int parse_fabric(const struct ydoc *d, const struct ynode *f, struct sim_node *node,
                        struct gpulet_error *err)
{
    static const char *const keys[] = {"cluster_uuid", "clique_id", NULL};
    if (ynode_expect_map(d, f, "fabric", err) < 0 ||
        ynode_check_keys(d, f, keys, "fabric", err) < 0)
        return -1;
    const struct ynode *v;
    unsigned long long x;
    if ((v = ynode_get(d, f, "clique_id"))) {
        if (ynode_uint(d, v, "fabric.clique_id", 0, 0xFFFFFFFFULL, &x, err) < 0)
            return -1;
        node->fabric_clique_id = (unsigned int)x;
    }
    char text[64];
    if ((v = ynode_get(d, f, "cluster_uuid")) == NULL)
        return 0;
    if (ynode_string(d, v, "fabric.cluster_uuid", text, sizeof text, err) < 0)
        return -1;
    size_t n = 0;
    for (const char *p = text; *p; p++) {
        if (*p == '-' && (p - text == 8 || p - text == 13 || p - text == 18 || p - text == 23))
            continue;
        int nibble = hex_digit(*p);
        if (n >= 32 || nibble < 0)
            return ydoc_fail(d, v, err, "fabric.cluster_uuid: not a UUID (8-4-4-4-12 hex digits)");
        unsigned char *byte = &node->fabric_cluster_uuid[n++ / 2];
        *byte = (unsigned char)(*byte << 4 | nibble);
    }
    if (n != 32 || strlen(text) != 36)
        return ydoc_fail(d, v, err, "fabric.cluster_uuid: not a UUID (8-4-4-4-12 hex digits)");
    return 0;
}

static int parse_node(const struct ydoc *d, struct sim_node *node, struct gpulet_error *err)
{
    const struct ynode *root = ydoc_root(d);
    if (root == NULL)
        return ydoc_fail(d, NULL, err, "the node description is empty");
    if (ynode_expect_map(d, root, "a node description", err) < 0 ||
        ynode_check_keys(d, root, node_keys, "node", err) < 0)
        return -1;
    node->driver_loaded = true;
    snprintf(node->driver_version, sizeof node->driver_version, "550.107.02");
    snprintf(node->nvml_version, sizeof node->nvml_version, "12.550.107.02");
    node->cuda_driver_version = 12040;
    node->context_mib = 64;
    const struct ynode *v;
    unsigned long long x;
    if ((v = ynode_get(d, root, "name")) &&
        ynode_string(d, v, "name", node->name, sizeof node->name, err) < 0)
        return -1;
    if ((v = ynode_get(d, root, "machine")) &&
        ynode_string(d, v, "machine", node->machine, sizeof node->machine, err) < 0)
        return -1;
    if ((v = ynode_get(d, root, "fabric")) && parse_fabric(d, v, node, err) < 0)
        return -1;
    if ((v = ynode_get(d, root, "driver_loaded")) &&
        ynode_bool(d, v, "driver_loaded", &node->driver_loaded, err) < 0)
        return -1;
    if ((v = ynode_get(d, root, "driver_version")) &&
        ynode_string(d, v, "driver_version", node->driver_version, sizeof node->driver_version,
                     err) < 0)
        return -1;
    if ((v = ynode_get(d, root, "nvml_version")) &&
        ynode_string(d, v, "nvml_version", node->nvml_version, sizeof node->nvml_version, err) < 0)
        return -1;
    if ((v = ynode_get(d, root, "cuda_driver_version"))) {
        if (ynode_uint(d, v, "cuda_driver_version", 1000, 99999, &x, err) < 0)
            return -1;
        node->cuda_driver_version = (int)x;
    }
    if ((v = ynode_get(d, root, "context_mib")) &&
        ynode_uint(d, v, "context_mib", 1, 1ULL << 16, &node->context_mib, err) < 0)
        return -1;

    struct sim_gpu defaults;
    gpu_defaults(&defaults);
    if ((v = ynode_get(d, root, "gpu_defaults")) &&
        parse_gpu(d, v, "gpu_defaults", &defaults, err) < 0)
        return -1;

    const struct ynode *gpus = ynode_get(d, root, "gpus");
    if (gpus && !ynode_is_null(gpus)) {
        if (ynode_expect_seq(d, gpus, "gpus", err) < 0)
            return -1;
        node->gpu_count = ynode_count(d, gpus);
        if (node->gpu_count > SIM_MAX_GPUS)
            return ydoc_fail(d, gpus, err, "at most %d GPUs", SIM_MAX_GPUS);
    }
    for (size_t i = 0; i < node->gpu_count; i++) {
        char where[32];
        snprintf(where, sizeof where, "gpu %zu", i);
        struct sim_gpu *g = &node->gpus[i];
        *g = defaults;
        g->minor = (unsigned int)i;
        const struct ynode *m = ynode_item(d, gpus, i);
        if (parse_gpu(d, m, where, g, err) < 0 || check_gpu(d, m, where, g, err) < 0)
            return -1;
    }
    if (check_unique(d, gpus, node, err) < 0)
        return -1;
    return parse_topology(d, ynode_get(d, root, "topology"), node, err);
}

static void base_name(const char *path, char *buf, size_t len)
{
    const char *slash = strrchr(path, '/');
    const char *start = slash ? slash + 1 : path;
    snprintf(buf, len, "%s", start);
    char *dot = strrchr(buf, '.');
    if (dot && (strcmp(dot, ".yaml") == 0 || strcmp(dot, ".yml") == 0 || strcmp(dot, ".json") == 0))
        *dot = '\0';
}

static int node_from_doc(struct ydoc *d, const char *path, struct sim_node *node,
                         struct gpulet_error *err)
{
    memset(node, 0, sizeof *node);
    int rc = parse_node(d, node, err);
    if (rc == 0 && node->name[0] == '\0')
        base_name(path, node->name, sizeof node->name);
    ydoc_free(d);
    return rc;
}

int sim_node_load(const char *path, struct sim_node *node, struct gpulet_error *err)
{
    struct ydoc *d;
    if (ydoc_load_file(path, &d, err) < 0)
        return -1;
    return node_from_doc(d, path, node, err);
}

int sim_node_parse(const char *name, const char *text, size_t len, struct sim_node *node,
                   struct gpulet_error *err)
{
    struct ydoc *d;
    if (ydoc_load_string(name, text, len, &d, err) < 0)
        return -1;
    return node_from_doc(d, name, node, err);
}

static int parse_processes(const struct ydoc *d, const struct ynode *list,
                           const struct sim_gpu *gpu, struct sim_gpu_state *gs,
                           struct gpulet_error *err)
{
    static const char *const keys[] = {"pid", "used_mib", "mig", NULL};
    if (ynode_expect_seq(d, list, "processes", err) < 0)
        return -1;
    gs->process_count = ynode_count(d, list);
    if (gs->process_count > SIM_MAX_PROCESSES)
        return ydoc_fail(d, list, err, "at most %d processes per GPU", SIM_MAX_PROCESSES);
    for (size_t i = 0; i < gs->process_count; i++) {
        const struct ynode *p = ynode_item(d, list, i);
        struct sim_process *proc = &gs->processes[i];
        unsigned long long x;
        proc->mig = -1;
        if (ynode_expect_map(d, p, "a process", err) < 0 ||
            ynode_check_keys(d, p, keys, "process", err) < 0)
            return -1;
        const struct ynode *v = ynode_get(d, p, "pid");
        if (v == NULL)
            return ydoc_fail(d, p, err, "a process needs a pid");
        if (ynode_uint(d, v, "pid", 1, 4194304, &x, err) < 0)
            return -1;
        proc->pid = (unsigned int)x;
        if ((v = ynode_get(d, p, "used_mib"))) {
            if (ynode_uint(d, v, "used_mib", 0, gpu->memory_mib, &proc->used_mib, err) < 0)
                return -1;
        }
        if ((v = ynode_get(d, p, "mig"))) {
            if (gpu->mig_count == 0)
                return ydoc_fail(d, v, err, "this GPU has no MIG devices");
            if (ynode_uint(d, v, "mig", 0, gpu->mig_count - 1, &x, err) < 0)
                return -1;
            proc->mig = (int)x;
        }
    }
    return 0;
}

static int parse_gpu_state(const struct ydoc *d, const struct ynode *m, const struct sim_gpu *gpu,
                           struct sim_gpu_state *gs, struct gpulet_error *err)
{
    if (ynode_expect_map(d, m, "a GPU's state", err) < 0)
        return -1;
    for (size_t i = 0; i < ynode_count(d, m); i++) {
        const struct ynode *key = ynode_key(d, m, i);
        const struct ynode *v = ynode_value(d, m, i);
        const char *k = ynode_text(key);
        if (k && strcmp(k, "lost") == 0) {
            if (ynode_bool(d, v, "lost", &gs->lost, err) < 0)
                return -1;
            continue;
        }
        if (k && strcmp(k, "processes") == 0) {
            if (parse_processes(d, v, gpu, gs, err) < 0)
                return -1;
            continue;
        }
        bool known = false;
        for (int o = 0; o < SIM_OVERRIDE_COUNT && k && !known; o++) {
            if (strcmp(k, override_keys[o]) != 0)
                continue;
            known = true;
            bool pct = o == SIM_SET_UTILIZATION || o == SIM_SET_MEMORY_UTILIZATION ||
                       o == SIM_SET_ENCODER || o == SIM_SET_DECODER;
            unsigned long long max = pct ? 100 : o == SIM_SET_MEMORY_USED ? gpu->memory_mib :
                                     o == SIM_SET_CLOCK_EVENT_REASONS ? ~0ULL : 0xffffffffULL;
            if (ynode_uint(d, v, k, 0, max, &gs->value[o], err) < 0)
                return -1;
            gs->has[o] = true;
        }
        if (!known)
            return ydoc_fail(d, key, err,
                             "unknown GPU state key \"%s\" (known: lost, processes, "
                             "temperature_c, memory_temperature_c, utilization_pct, "
                             "memory_utilization_pct, memory_used_mib, power_w, sm_clock_mhz, "
                             "mem_clock_mhz, encoder_pct, decoder_pct, pcie_replays, "
                             "remapped_correctable, remapped_uncorrectable, remapped_pending, "
                             "remapped_failure, clock_event_reasons)",
                             k ? k : "?");
    }
    return 0;
}

static int parse_event(const struct ydoc *d, const struct ynode *m, const struct sim_node *node,
                       struct sim_event *ev, struct gpulet_error *err)
{
    static const char *const keys[] = {"gpu", "xid", "type", "gpu_instance_id",
                                       "compute_instance_id", NULL};
    if (ynode_expect_map(d, m, "an event", err) < 0 ||
        ynode_check_keys(d, m, keys, "event", err) < 0)
        return -1;
    const struct ynode *v = ynode_get(d, m, "gpu");
    size_t gpu;
    unsigned long long x;
    if (v == NULL)
        return ydoc_fail(d, m, err, "an event needs a gpu");
    if (gpu_index(d, v, node, &gpu, err) < 0)
        return -1;
    ev->gpu = (unsigned int)gpu;
    ev->type = EVENT_XID;
    ev->data = 0;
    ev->gpu_instance_id = ev->compute_instance_id = INSTANCE_NONE;
    if ((v = ynode_get(d, m, "type"))) {
        const char *t = ynode_text(v);
        if (t && strcmp(t, "xid") == 0)
            ev->type = EVENT_XID;
        else if (t && strcmp(t, "double_bit_ecc") == 0)
            ev->type = EVENT_DOUBLE_BIT_ECC;
        else if (t && strcmp(t, "single_bit_ecc") == 0)
            ev->type = EVENT_SINGLE_BIT_ECC;
        else
            return ydoc_fail(d, v, err,
                             "event type must be xid, double_bit_ecc or single_bit_ecc");
    }
    if ((v = ynode_get(d, m, "xid"))) {
        if (ynode_uint(d, v, "xid", 1, 9999, &ev->data, err) < 0)
            return -1;
    } else if (ev->type == EVENT_XID) {
        return ydoc_fail(d, m, err, "an xid event needs an xid number");
    }
    if ((v = ynode_get(d, m, "gpu_instance_id"))) {
        if (ynode_uint(d, v, "gpu_instance_id", 0, 14, &x, err) < 0)
            return -1;
        ev->gpu_instance_id = (unsigned int)x;
    }
    if ((v = ynode_get(d, m, "compute_instance_id"))) {
        if (ynode_uint(d, v, "compute_instance_id", 0, 7, &x, err) < 0)
            return -1;
        ev->compute_instance_id = (unsigned int)x;
    }
    return 0;
}

static int parse_state(const struct ydoc *d, const struct sim_node *node, struct sim_state *state,
                       struct gpulet_error *err)
{
    static const char *const keys[] = {"frozen_seconds", "gpus", "events", NULL};
    memset(state, 0, sizeof *state);
    const struct ynode *root = ydoc_root(d);
    if (root == NULL)
        return 0;
    if (ynode_expect_map(d, root, "a state file", err) < 0 ||
        ynode_check_keys(d, root, keys, "state", err) < 0)
        return -1;
    const struct ynode *v;
    if ((v = ynode_get(d, root, "frozen_seconds"))) {
        unsigned long long x;
        if (ynode_uint(d, v, "frozen_seconds", 0, 1ULL << 40, &x, err) < 0)
            return -1;
        state->frozen = true;
        state->frozen_seconds = (double)x;
    }
    const struct ynode *gpus = ynode_get(d, root, "gpus");
    if (gpus && !ynode_is_null(gpus)) {
        if (ynode_expect_map(d, gpus, "gpus (a mapping of GPU index to state)", err) < 0)
            return -1;
        for (size_t i = 0; i < ynode_count(d, gpus); i++) {
            size_t gpu;
            if (gpu_index(d, ynode_key(d, gpus, i), node, &gpu, err) < 0 ||
                parse_gpu_state(d, ynode_value(d, gpus, i), &node->gpus[gpu], &state->gpus[gpu],
                                err) < 0)
                return -1;
        }
    }
    const struct ynode *events = ynode_get(d, root, "events");
    if (events && !ynode_is_null(events)) {
        if (ynode_expect_seq(d, events, "events", err) < 0)
            return -1;
        state->event_count = ynode_count(d, events);
        if (state->event_count > SIM_MAX_EVENTS)
            return ydoc_fail(d, events, err, "at most %d events", SIM_MAX_EVENTS);
        for (size_t i = 0; i < state->event_count; i++)
            if (parse_event(d, ynode_item(d, events, i), node, &state->events[i], err) < 0)
                return -1;
    }
    return 0;
}

int sim_state_parse(const char *name, const char *text, size_t len, const struct sim_node *node,
                    struct sim_state *state, struct gpulet_error *err)
{
    struct ydoc *d;
    if (ydoc_load_string(name, text, len, &d, err) < 0)
        return -1;
    int rc = parse_state(d, node, state, err);
    ydoc_free(d);
    return rc;
}

int sim_state_load(const char *path, const struct sim_node *node, struct sim_state *state,
                   struct gpulet_error *err)
{
    struct ydoc *d;
    if (ydoc_load_file(path, &d, err) < 0) {
        if (err->kind == GPULET_ERR_SYSTEM && err->sys_errno == ENOENT) {
            gpulet_error_clear(err);
            memset(state, 0, sizeof *state);
            return 0;
        }
        return -1;
    }
    int rc = parse_state(d, node, state, err);
    ydoc_free(d);
    return rc;
}
