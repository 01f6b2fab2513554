#include "gpu.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LINKS NVML_NVLINK_MAX_LINKS_LIMIT

/* Per GPU, the PCI address at the far end of each active NVLink (0 = none). */
struct nvlink_ends {
    uint64_t remote[MAX_LINKS];
};

/* A PCI address as one comparable number: NVML writes the domain with
 * eight digits for GPUs and sometimes four for switches, so strings do not
 * compare. Returns 0 for an unparsable address. */
static uint64_t pci_address_key(const char *bus_id)
{
    unsigned int domain, bus, dev, fn;
    if (sscanf(bus_id, "%x:%x:%x.%x", &domain, &bus, &dev, &fn) != 4)
        return 0;
    return ((uint64_t)domain << 24 | (uint64_t)bus << 16 | (uint64_t)dev << 8 | fn) + 1;
}

const char *gpu_brand_name(int brand)
{
    /* NVIDIA's DRA driver's spelling of each NVML brand. */
    static const char *const names[] = {
        "Unknown", "Quadro", "Tesla", "NVS", "Grid", "GeForce", "Titan", "NvidiaVApps",
        "NvidiaVPC", "NvidiaVCS", "NvidiaVWS", "NvidiaCloudGaming", "QuadroRTX", "NvidiaRTX",
        "Nvidia", "GeForceRTX", "TitanRTX"};
    if (brand < 0 || (size_t)brand >= sizeof names / sizeof names[0])
        return "Unknown";
    return names[brand];
}

static long mig_minor(FILE *f, const char *cap)
{
    char name[128];
    long minor;
    rewind(f);
    while (fscanf(f, "%127s %ld", name, &minor) == 2)
        if (strcmp(name, cap) == 0)
            return minor;
    return -1;
}

const char *const gpu_control_nodes[] = {
    "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset", NULL,
};

size_t gpu_mig_cap_nodes(const char *driver_root, unsigned int gpu_minor, unsigned int gi,
                         unsigned int ci, char paths[2][64])
{
    char file[4200];
    snprintf(file, sizeof file, "%s/proc/driver/nvidia-caps/mig-minors",
             driver_root && strcmp(driver_root, "/") != 0 ? driver_root : "");
    FILE *f = fopen(file, "r");
    if (f == NULL)
        return 0;
    char cap[96];
    size_t n = 0;
    for (int level = 0; level < 2; level++) {
        if (level == 0)
            snprintf(cap, sizeof cap, "gpu%u/gi%u/access", gpu_minor, gi);
        else
            snprintf(cap, sizeof cap, "gpu%u/gi%u/ci%u/access", gpu_minor, gi, ci);
        long minor = mig_minor(f, cap);
        if (minor >= 0)
            snprintf(paths[n++], 64, "/dev/nvidia-caps/nvidia-cap%ld", minor);
    }
    fclose(f);
    return n;
}

unsigned long long gpu_slice_memory(const struct gpu_device *g)
{
    return g->memory_total_bytes - g->memory_reserved_bytes;
}

void gpu_mig_profile_name(unsigned int slices, unsigned long long memory_mib, char *buf, size_t len)
{
    snprintf(buf, len, "%ug.%llugb", slices, (memory_mib + 1023) / 1024);
}

const char *gpu_pcie_level_name(int level)
{
    switch (level) {
    case NVML_TOPOLOGY_INTERNAL: return "INTERNAL";
    case NVML_TOPOLOGY_SINGLE: return "SINGLE";
    case NVML_TOPOLOGY_MULTIPLE: return "MULTIPLE";
    case NVML_TOPOLOGY_HOSTBRIDGE: return "HOSTBRIDGE";
    case NVML_TOPOLOGY_NODE: return "NODE";
    case NVML_TOPOLOGY_SYSTEM: return "SYSTEM";
    default: return "UNKNOWN";
    }
}

const char *gpu_link_label(const struct gpu_link *link, char *buf, size_t len)
{
    if (link->nvlinks > 0) {
        snprintf(buf, len, "NV%u", link->nvlinks);
        return buf;
    }
    /* The abbreviations nvidia-smi topo -m uses. */
    switch (link->pcie_level) {
    case NVML_TOPOLOGY_INTERNAL: snprintf(buf, len, "BRD"); break;
    case NVML_TOPOLOGY_SINGLE: snprintf(buf, len, "PIX"); break;
    case NVML_TOPOLOGY_MULTIPLE: snprintf(buf, len, "PXB"); break;
    case NVML_TOPOLOGY_HOSTBRIDGE: snprintf(buf, len, "PHB"); break;
    case NVML_TOPOLOGY_NODE: snprintf(buf, len, "NODE"); break;
    case NVML_TOPOLOGY_SYSTEM: snprintf(buf, len, "SYS"); break;
    default: snprintf(buf, len, "?"); break;
    }
    return buf;
}

const struct gpu_link *gpu_inventory_link(const struct gpu_inventory *inv, size_t a, size_t b)
{
    return &inv->links[a * inv->gpu_count + b];
}

void gpu_inventory_free(struct gpu_inventory *inv)
{
    if (inv == NULL)
        return;
    for (size_t i = 0; i < inv->gpu_count; i++)
        free(inv->gpus[i].migs);
    free(inv->gpus);
    free(inv->links);
    free(inv);
}

/* NOT_SUPPORTED leaves the field at its default; GPU_IS_LOST marks the GPU;
 * anything else fails the load. Returns 1 when the GPU is lost. */
static int field_result(int rc, struct gpu_device *g, struct gpulet_error *err)
{
    if (rc == 0)
        return 0;
    if (nvml_unsupported(err)) {
        gpulet_error_clear(err);
        return 0;
    }
    if (nvml_gpu_lost(err)) {
        gpulet_error_clear(err);
        g->lost = true;
        return 1;
    }
    return -1;
}

/* Bails out of the caller: -1 on a real failure, 0 (done with this GPU) when lost. */
#define READ_FIELD(call)                                                                     \
    do {                                                                                     \
        int r_ = field_result((call), g, err);                                               \
        if (r_ != 0)                                                                         \
            return r_ < 0 ? -1 : 0;                                                          \
    } while (0)

/* A number from the GPU's sysfs entry (numa_node, class) under root, or
 * fallback. */
static FILE *pci_sysfs_open(const char *root, const char *bus_id, const char *file)
{
    unsigned int domain, bus, dev, fn;
    if (root == NULL || sscanf(bus_id, "%x:%x:%x.%x", &domain, &bus, &dev, &fn) != 4)
        return NULL;
    char path[4200];
    snprintf(path, sizeof path, "%s/bus/pci/devices/%04x:%02x:%02x.%x/%s", root, domain, bus,
             dev, fn, file);
    return fopen(path, "r");
}

static long pci_sysfs_number(const char *root, const char *bus_id, const char *file,
                             long fallback)
{
    FILE *f = pci_sysfs_open(root, bus_id, file);
    if (f == NULL)
        return fallback;
    long value = fallback;
    if (fscanf(f, "%li", &value) != 1)
        value = fallback;
    fclose(f);
    return value;
}

/* A 10-byte field of a vGPU record, NUL padded; "" unless printable ASCII
 * (the hypervisor writes it, and it goes into labels and log lines). */
static void vgpu_field(const unsigned char *p, char *buf, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < 10 && n + 1 < len; i++) {
        if (p[i] == '\0')
            continue;
        if (p[i] < 0x21 || p[i] > 0x7e) {
            n = 0;
            break;
        }
        buf[n++] = (char)p[i];
    }
    buf[n] = '\0';
}

/* As NVIDIA's GFD finds a vGPU guest: the first vendor-specific capability
 * (id 9) in the GPU's PCI config space, signed "VF"; its records, each
 * [type, length, ...], end at one of type 0 that holds the host driver's
 * version and branch. The whole 256 bytes are needed (root can read them). */
static void read_vgpu(const char *root, struct gpu_device *g)
{
    unsigned char cfg[256];
    FILE *f = pci_sysfs_open(root, g->pci_bus_id, "config");
    if (f == NULL)
        return;
    size_t got = fread(cfg, 1, sizeof cfg, f);
    fclose(f);
    if (got != sizeof cfg || !(cfg[0x06] & 0x10))
        return;
    bool seen[256] = {false};
    for (unsigned int pos = cfg[0x34]; pos != 0 && pos < 254 && !seen[pos]; pos = cfg[pos + 1]) {
        seen[pos] = true;
        if (cfg[pos] == 0xff)
            return;
        if (cfg[pos] != 0x09)
            continue;
        const unsigned char *cap = cfg + pos;
        unsigned int len = cap[2];
        if (len < 5 || pos + len > sizeof cfg || cap[3] != 'V' || cap[4] != 'F')
            return;
        g->vgpu = true;
        unsigned int r = 5;
        while (r + 1 < len && cap[r] != 0 && cap[r + 1] != 0)
            r += cap[r + 1];
        if (r + 22 <= len && cap[r] == 0) {
            vgpu_field(cap + r + 2, g->vgpu_host_driver_version,
                       sizeof g->vgpu_host_driver_version);
            vgpu_field(cap + r + 12, g->vgpu_host_driver_branch,
                       sizeof g->vgpu_host_driver_branch);
        }
        return;
    }
}

static void read_machine(struct nvml *nvml, char *buf, size_t len)
{
    const char *sim = nvml_simulated_machine(nvml);
    buf[0] = '\0';
    if (sim) {
        snprintf(buf, len, "%s", sim);
        return;
    }
    if (nvml_simulated_node(nvml))
        return; /* a simulated node without a machine name has none */
    FILE *f = fopen("/sys/class/dmi/id/product_name", "r");
    if (f == NULL)
        return;
    if (fgets(buf, (int)len, f) == NULL)
        buf[0] = '\0';
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
}

static int load_mig_devices(struct nvml *nvml, const struct nvml_device *dev, struct gpu_device *g,
                            struct gpulet_error *err)
{
    unsigned int max = 0;
    READ_FIELD(nvml_device_max_mig_count(nvml, dev, &max, err));
    if (max == 0)
        return 0;
    g->migs = calloc(max, sizeof *g->migs);
    if (g->migs == NULL)
        return gpulet_error_errno(err, ENOMEM, "cannot allocate MIG devices of GPU %u", g->index);
    for (unsigned int i = 0; i < max; i++) {
        struct nvml_device mig;
        if (nvml_device_mig_by_index(nvml, dev, i, &mig, err) < 0) {
            /* Slots are not dense: an empty one answers NOT_FOUND. */
            if (err->nvml == NVML_ERROR_NOT_FOUND || err->nvml == NVML_ERROR_INVALID_ARGUMENT) {
                gpulet_error_clear(err);
                continue;
            }
            READ_FIELD(-1);
        }
        struct gpu_mig_device *m = &g->migs[g->mig_count];
        m->index = i;
        READ_FIELD(nvml_device_uuid(nvml, &mig, m->uuid, sizeof m->uuid, err));
        READ_FIELD(nvml_device_gpu_instance_id(nvml, &mig, &m->gpu_instance_id, err));
        READ_FIELD(nvml_device_compute_instance_id(nvml, &mig, &m->compute_instance_id, err));
        m->gi_profile_id = -1;
        nvmlGpuInstanceInfo_t gi = {0};
        int rc = nvml_gpu_instance_info(nvml, dev, m->gpu_instance_id, &gi, err);
        if (rc == 0) {
            m->gi_profile_id = (int)gi.profileId;
            m->placement_start = (int)gi.placement.start;
            m->placement_size = gi.placement.size;
        }
        READ_FIELD(rc);
        nvmlDeviceAttributes_t attr;
        READ_FIELD(nvml_device_attributes(nvml, &mig, &attr, err));
        m->memory_mib = attr.memorySizeMB;
        m->multiprocessors = attr.multiprocessorCount;
        m->gi_slices = attr.gpuInstanceSliceCount;
        m->ci_slices = attr.computeInstanceSliceCount;
        m->copy_engines = attr.sharedCopyEngineCount;
        m->decoders = attr.sharedDecoderCount;
        m->encoders = attr.sharedEncoderCount;
        m->jpegs = attr.sharedJpegCount;
        m->ofas = attr.sharedOfaCount;
        gpu_mig_profile_name(m->gi_slices, m->memory_mib, m->profile, sizeof m->profile);
        g->mig_count++;
    }
    return 0;
}

static int load_nvlinks(struct nvml *nvml, const struct nvml_device *dev, struct gpu_device *g,
                        struct nvlink_ends *ends, struct gpulet_error *err)
{
    for (unsigned int link = 0; link < MAX_LINKS; link++) {
        bool active = false;
        if (nvml_device_nvlink_active(nvml, dev, link, &active, err) < 0) {
            /* Past the GPU's last link NVML answers INVALID_ARGUMENT or
             * NOT_SUPPORTED; a GPU without NVLink answers NOT_SUPPORTED. */
            if (err->nvml == NVML_ERROR_INVALID_ARGUMENT) {
                gpulet_error_clear(err);
                return 0;
            }
            READ_FIELD(-1);
            return 0;
        }
        if (!active)
            continue;
        nvmlPciInfo_t pci;
        READ_FIELD(nvml_device_nvlink_remote_pci(nvml, dev, link, &pci, err));
        ends->remote[link] = pci_address_key(pci.busId);
    }
    return 0;
}

/* The fabric clique, as NVIDIA's tools count a GPU fabric-attached: the
 * registration completed and succeeded with a cluster UUID that is not all
 * zero. The clique is optional, so only a lost GPU is an error worth
 * keeping. */
static void load_fabric(struct nvml *nvml, const struct nvml_device *dev, struct gpu_device *g,
                        struct gpulet_error *err)
{
    struct nvml_fabric f;
    if (nvml_device_fabric(nvml, dev, &f, err) < 0) {
        g->lost = nvml_gpu_lost(err);
        gpulet_error_clear(err);
        return;
    }
    bool zero = true;
    for (size_t i = 0; i < sizeof f.cluster_uuid; i++)
        zero &= f.cluster_uuid[i] == 0;
    if (f.state != NVML_GPU_FABRIC_STATE_COMPLETED || f.status != NVML_SUCCESS || zero)
        return;
    const unsigned char *u = f.cluster_uuid;
    snprintf(g->fabric_clique, sizeof g->fabric_clique,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x.%u", u[0], u[1],
             u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
             u[15], f.clique_id);
}

static int load_gpu(struct nvml *nvml, unsigned int index, struct gpu_device *g,
                    struct nvlink_ends *ends, struct gpulet_error *err)
{
    g->index = index;
    g->minor = index;
    g->numa_node = -1;
    g->cc_major = g->cc_minor = -1;
    struct nvml_device dev;
    READ_FIELD(nvml_device_by_index(nvml, index, &dev, err));
    READ_FIELD(nvml_device_uuid(nvml, &dev, g->uuid, sizeof g->uuid, err));
    READ_FIELD(nvml_device_name(nvml, &dev, g->name, sizeof g->name, err));
    READ_FIELD(nvml_device_serial(nvml, &dev, g->serial, sizeof g->serial, err));
    READ_FIELD(nvml_device_minor(nvml, &dev, &g->minor, err));
    nvmlPciInfo_t pci;
    READ_FIELD(nvml_device_pci(nvml, &dev, &pci, err));
    snprintf(g->pci_bus_id, sizeof g->pci_bus_id, "%s", pci.busId);
    g->pci_device_id = pci.pciDeviceId;
    unsigned int numa;
    int rc = nvml_device_numa_node(nvml, &dev, &numa, err);
    if (rc == 0)
        g->numa_node = (int)numa;
    else if (field_result(rc, g, err) != 0)
        return g->lost ? 0 : -1;
    else
        g->numa_node = (int)pci_sysfs_number(nvml_sysfs_root(nvml), g->pci_bus_id, "numa_node",
                                             -1);
    g->pci_class = (unsigned int)pci_sysfs_number(nvml_sysfs_root(nvml), g->pci_bus_id, "class",
                                                  0) >> 8;
    read_vgpu(nvml_sysfs_root(nvml), g);
    struct nvml_memory mem = {0};
    READ_FIELD(nvml_device_memory(nvml, &dev, &mem, err));
    g->memory_total_bytes = mem.total;
    g->memory_reserved_bytes = mem.reserved < mem.total ? mem.reserved : 0;
    READ_FIELD(nvml_device_compute_capability(nvml, &dev, &g->cc_major, &g->cc_minor, err));
    nvmlBrandType_t brand = NVML_BRAND_UNKNOWN;
    READ_FIELD(nvml_device_brand(nvml, &dev, &brand, err));
    snprintf(g->brand, sizeof g->brand, "%s", gpu_brand_name(brand));
    unsigned int mode;
    rc = nvml_device_addressing_mode(nvml, &dev, &mode, err);
    if (rc == 0)
        snprintf(g->addressing_mode, sizeof g->addressing_mode, "%s",
                 mode == NVML_DEVICE_ADDRESSING_MODE_ATS   ? "ATS"
                 : mode == NVML_DEVICE_ADDRESSING_MODE_HMM ? "HMM"
                                                           : "None");
    READ_FIELD(rc);
    unsigned int current = 0, pending = 0;
    rc = nvml_device_mig_mode(nvml, &dev, &current, &pending, err);
    if (rc == 0) {
        g->mig_capable = true;
        g->mig_enabled = current == 1;
        g->mig_pending_enabled = pending == 1;
    } else if (field_result(rc, g, err) != 0) {
        return g->lost ? 0 : -1;
    }
    if (g->mig_enabled && load_mig_devices(nvml, &dev, g, err) < 0)
        return -1;
    if (g->lost)
        return 0;
    load_fabric(nvml, &dev, g, err);
    if (g->lost)
        return 0;
    return load_nvlinks(nvml, &dev, g, ends, err);
}

/* Links to another GPU count directly; links to an NVSwitch count for a
 * pair as the links both GPUs have to that same switch. */
static unsigned int count_nvlinks(const struct gpu_inventory *inv, const struct nvlink_ends *ends,
                                  const uint64_t *gpu_keys, size_t a, size_t b)
{
    unsigned int direct = 0, via_switch = 0;
    for (size_t l = 0; l < MAX_LINKS; l++)
        if (ends[a].remote[l] && ends[a].remote[l] == gpu_keys[b])
            direct++;
    uint64_t seen[MAX_LINKS];
    size_t n_seen = 0;
    for (size_t l = 0; l < MAX_LINKS; l++) {
        uint64_t sw = ends[a].remote[l];
        if (sw == 0)
            continue;
        bool is_gpu = false, already = false;
        for (size_t g = 0; g < inv->gpu_count; g++)
            is_gpu |= gpu_keys[g] == sw;
        for (size_t s = 0; s < n_seen; s++)
            already |= seen[s] == sw;
        if (is_gpu || already)
            continue;
        seen[n_seen++] = sw;
        unsigned int from_a = 0, from_b = 0;
        for (size_t k = 0; k < MAX_LINKS; k++) {
            from_a += ends[a].remote[k] == sw;
            from_b += ends[b].remote[k] == sw;
        }
        via_switch += from_a < from_b ? from_a : from_b;
    }
    return direct + via_switch;
}

static int load_topology(struct nvml *nvml, struct gpu_inventory *inv,
                         const struct nvlink_ends *ends, struct gpulet_error *err)
{
    size_t n = inv->gpu_count;
    uint64_t *keys = calloc(n ? n : 1, sizeof *keys);
    if (keys == NULL)
        return gpulet_error_errno(err, ENOMEM, "cannot allocate the topology");
    for (size_t i = 0; i < n; i++)
        keys[i] = inv->gpus[i].lost ? UINT64_MAX : pci_address_key(inv->gpus[i].pci_bus_id);
    int rc = 0;
    for (size_t a = 0; a < n && rc == 0; a++) {
        inv->links[a * n + a] = (struct gpu_link){.pcie_level = -1, .nvlinks = 0};
        for (size_t b = a + 1; b < n; b++) {
            struct gpu_link link = {.pcie_level = -1, .nvlinks = 0};
            if (!inv->gpus[a].lost && !inv->gpus[b].lost) {
                struct nvml_device da, db;
                if (nvml_device_by_index(nvml, (unsigned int)a, &da, err) < 0 ||
                    nvml_device_by_index(nvml, (unsigned int)b, &db, err) < 0 ||
                    nvml_device_common_ancestor(nvml, &da, &db, &link.pcie_level, err) < 0) {
                    link.pcie_level = -1;
                    if (!nvml_unsupported(err) && !nvml_gpu_lost(err) &&
                        err->nvml != NVML_ERROR_INVALID_ARGUMENT) {
                        rc = -1;
                        break;
                    }
                    gpulet_error_clear(err);
                }
                link.nvlinks = count_nvlinks(inv, ends, keys, a, b);
            }
            inv->links[a * n + b] = link;
            inv->links[b * n + a] = link;
        }
    }
    free(keys);
    return rc;
}

int gpu_inventory_load(struct nvml *nvml, struct gpu_inventory **out, struct gpulet_error *err)
{
    struct gpu_inventory *inv = calloc(1, sizeof *inv);
    if (inv == NULL)
        return gpulet_error_errno(err, ENOMEM, "cannot allocate the GPU inventory");
    struct nvlink_ends *ends = NULL;
    const char *sim = nvml_simulated_node(nvml);
    if (sim)
        snprintf(inv->simulated_node, sizeof inv->simulated_node, "%s", sim);
    read_machine(nvml, inv->machine, sizeof inv->machine);

    if (nvml_system_driver_version(nvml, inv->driver_version, sizeof inv->driver_version, err) < 0 &&
        !nvml_unsupported(err))
        goto fail;
    if (nvml_system_nvml_version(nvml, inv->nvml_version, sizeof inv->nvml_version, err) < 0 &&
        !nvml_unsupported(err))
        goto fail;
    if (nvml_system_cuda_driver_version(nvml, &inv->cuda_driver_version, err) < 0 &&
        !nvml_unsupported(err))
        goto fail;
    gpulet_error_clear(err);

    unsigned int count = 0;
    if (nvml_device_count(nvml, &count, err) < 0)
        goto fail;
    inv->gpu_count = count;
    inv->gpus = calloc(count ? count : 1, sizeof *inv->gpus);
    inv->links = calloc(count ? (size_t)count * count : 1, sizeof *inv->links);
    ends = calloc(count ? count : 1, sizeof *ends);
    if (inv->gpus == NULL || inv->links == NULL || ends == NULL) {
        gpulet_error_errno(err, ENOMEM, "cannot allocate the GPU inventory");
        goto fail;
    }
    for (unsigned int i = 0; i < count; i++)
        if (load_gpu(nvml, i, &inv->gpus[i], &ends[i], err) < 0)
            goto fail;
    if (load_topology(nvml, inv, ends, err) < 0)
        goto fail;
    free(ends);
    *out = inv;
    return 0;

fail:
    free(ends);
    gpu_inventory_free(inv);
    return -1;
}

static json_t *json_string_or_null(const char *s)
{
    return s && s[0] ? json_string(s) : json_null();
}

static json_t *mig_to_json(const struct gpu_mig_device *m)
{
    return json_pack("{s:i, s:s, s:i, s:i, s:s, s:I, s:i, s:i, s:i, s:{s:i, s:i, s:i, s:i, s:i}}",
                     "index", (int)m->index, "uuid", m->uuid, "gpu_instance_id",
                     (int)m->gpu_instance_id, "compute_instance_id", (int)m->compute_instance_id,
                     "profile", m->profile, "memory_mib", (json_int_t)m->memory_mib,
                     "multiprocessors", (int)m->multiprocessors, "gi_slices", (int)m->gi_slices,
                     "ci_slices", (int)m->ci_slices, "engines", "copy", (int)m->copy_engines,
                     "decoder", (int)m->decoders, "encoder", (int)m->encoders, "jpeg",
                     (int)m->jpegs, "ofa", (int)m->ofas);
}

static json_t *gpu_to_json(const struct gpu_device *g)
{
    char cc[16] = "";
    if (g->cc_major >= 0)
        snprintf(cc, sizeof cc, "%d.%d", g->cc_major, g->cc_minor);
    char device_id[16];
    snprintf(device_id, sizeof device_id, "0x%08X", g->pci_device_id);
    json_t *migs = json_array();
    for (size_t i = 0; i < g->mig_count; i++)
        json_array_append_new(migs, mig_to_json(&g->migs[i]));
    return json_pack("{s:i, s:i, s:b, s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:I, s:o, s:{s:b, s:b, "
                     "s:b, s:o}}",
                     "index", (int)g->index, "minor", (int)g->minor, "lost", g->lost, "uuid",
                     json_string_or_null(g->uuid), "name", json_string_or_null(g->name), "serial",
                     json_string_or_null(g->serial), "pci_bus_id",
                     json_string_or_null(g->pci_bus_id), "pci_device_id",
                     g->pci_device_id ? json_string(device_id) : json_null(), "numa_node",
                     g->numa_node >= 0 ? json_integer(g->numa_node) : json_null(),
                     "memory_total_mib", (json_int_t)(g->memory_total_bytes / (1024 * 1024)),
                     "memory_reserved_mib", (json_int_t)(g->memory_reserved_bytes / (1024 * 1024)),
                     "compute_capability", json_string_or_null(cc), "mig", "capable",
                     g->mig_capable, "enabled", g->mig_enabled, "pending_enabled",
                     g->mig_pending_enabled, "devices", migs);
}

json_t *gpu_inventory_to_json(const struct gpu_inventory *inv)
{
    char cuda[16] = "";
    if (inv->cuda_driver_version > 0)
        snprintf(cuda, sizeof cuda, "%d.%d", inv->cuda_driver_version / 1000,
                 (inv->cuda_driver_version % 1000) / 10);
    json_t *gpus = json_array();
    for (size_t i = 0; i < inv->gpu_count; i++)
        json_array_append_new(gpus, gpu_to_json(&inv->gpus[i]));
    json_t *links = json_array();
    for (size_t a = 0; a < inv->gpu_count; a++) {
        for (size_t b = a + 1; b < inv->gpu_count; b++) {
            const struct gpu_link *l = gpu_inventory_link(inv, a, b);
            char label[16];
            json_array_append_new(
                links, json_pack("{s:i, s:i, s:s, s:i, s:s}", "a", (int)a, "b", (int)b, "pcie",
                                 gpu_pcie_level_name(l->pcie_level), "nvlinks", (int)l->nvlinks,
                                 "label", gpu_link_label(l, label, sizeof label)));
        }
    }
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "machine",
                     json_string_or_null(inv->machine), "driver_version",
                     json_string_or_null(inv->driver_version), "nvml_version",
                     json_string_or_null(inv->nvml_version), "cuda_driver_version",
                     json_string_or_null(cuda), "simulated_node",
                     json_string_or_null(inv->simulated_node), "gpus", gpus, "topology", links);
}
