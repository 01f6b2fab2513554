#include "sim_sysfs.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fileio/fileio.h"
#include "owner/owner.h"

static const char *const device_files[] = {
    "vendor", "device", "subsystem_vendor", "subsystem_device", "class", "revision",
    "numa_node", "resource", "config", NULL};

/* sysfs names a device by its lower-case bus id with a 4-digit domain.
 * The device itself lives under its PCIe root complex,
 * devices/pci<domain>:<root bus>/<id>, and bus/pci/devices/<id> is a link
 * to it, as on a real node, so the root can be read from the link. Roots
 * are every 0x40 buses, as on AMD EPYC servers (a DGX A100's four pairs of
 * GPUs under four roots). */
static void device_name(const struct sim_gpu *g, char *id, size_t id_len, char *rc,
                        size_t rc_len)
{
    unsigned int domain = 0, bus = 0, dev = 0, fn = 0;
    sscanf(g->pci_bus_id, "%x:%x:%x.%x", &domain, &bus, &dev, &fn);
    snprintf(id, id_len, "%04x:%02x:%02x.%x", domain, bus, dev, fn);
    snprintf(rc, rc_len, "pci%04x:%02x", domain, bus & 0xc0);
}

static void device_dir(const char *root, const struct sim_gpu *g, char *buf, size_t len)
{
    char id[32], rc[32];
    device_name(g, id, sizeof id, rc, sizeof rc);
    snprintf(buf, len, "%s/devices/%s/%s", root, rc, id);
}

static void device_link(const char *root, const struct sim_gpu *g, char *link, size_t link_len,
                        char *target, size_t target_len)
{
    char id[32], rc[32];
    device_name(g, id, sizeof id, rc, sizeof rc);
    snprintf(link, link_len, "%s/bus/pci/devices/%s", root, id);
    snprintf(target, target_len, "../../../devices/%s/%s", rc, id);
}

static int put(const char *dir, const char *name, const void *data, size_t len,
               struct gpulet_error *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return fileio_replace(path, data, len, 0, err);
}

static int put_text(const char *dir, const char *name, const char *text, struct gpulet_error *err)
{
    return put(dir, name, text, strlen(text), err);
}

static unsigned long long pow2_at_least(unsigned long long x)
{
    unsigned long long p = 1;
    while (p < x)
        p <<= 1;
    return p;
}

/* BAR0 registers (16 MiB), BAR1 a window on the memory (64-bit,
 * prefetchable, a power of two at least as big), BAR3 32 MiB, at
 * addresses made unique by the GPU's index. */
struct bars {
    unsigned long long start[6], size[6], flags[6];
};

static void gpu_bars(const struct sim_gpu *g, size_t index, struct bars *b)
{
    memset(b, 0, sizeof *b);
    unsigned long long base = 0x380000000000ULL + (unsigned long long)index * 0x4000000000ULL;
    b->start[0] = 0x90000000ULL + (unsigned long long)index * 0x2000000ULL;
    b->size[0] = 16ULL << 20;
    b->flags[0] = 0x40200;
    b->start[1] = base;
    b->size[1] = pow2_at_least(g->memory_mib << 20);
    b->flags[1] = 0x14220c;
    b->start[3] = base + b->size[1];
    b->size[3] = 32ULL << 20;
    b->flags[3] = 0x14220c;
}

static void le16(unsigned char *p, unsigned int v)
{
    p[0] = (unsigned char)(v & 0xff);
    p[1] = (unsigned char)(v >> 8 & 0xff);
}

static void le32(unsigned char *p, unsigned long long v)
{
    le16(p, (unsigned int)(v & 0xffff));
    le16(p + 2, (unsigned int)(v >> 16 & 0xffff));
}

/* A type-0 header: ids, class, the BARs; no capability list. */
static void config_space(const struct sim_gpu *g, const struct bars *b, unsigned char cfg[256])
{
    memset(cfg, 0, 256);
    le16(cfg + 0x00, g->pci_device_id & 0xffff ? g->pci_device_id & 0xffff : 0x10de);
    le16(cfg + 0x02, g->pci_device_id >> 16);
    le16(cfg + 0x04, 0x0006); /* memory space, bus master */
    cfg[0x08] = 0xa1;         /* revision */
    cfg[0x09] = (unsigned char)(g->pci_class & 0xff);
    cfg[0x0a] = (unsigned char)(g->pci_class >> 8 & 0xff);
    cfg[0x0b] = (unsigned char)(g->pci_class >> 16 & 0xff);
    le32(cfg + 0x10, b->start[0]);
    le32(cfg + 0x14, (b->start[1] & 0xffffffffULL) | 0xc);
    le32(cfg + 0x18, b->start[1] >> 32);
    le32(cfg + 0x1c, (b->start[3] & 0xffffffffULL) | 0xc);
    le32(cfg + 0x20, b->start[3] >> 32);
    le16(cfg + 0x2c, g->pci_subsystem_id & 0xffff);
    le16(cfg + 0x2e, g->pci_subsystem_id >> 16);
    cfg[0x3d] = 0x01; /* interrupt pin A */
    if (g->vgpu_host_driver_version[0] == '\0')
        return;
    /* A vGPU guest: a capability list holding NVIDIA's vendor-specific
     * capability, signature "VF", then one record, type 0, with the host
     * driver's version and branch in 10 bytes each. */
    static const unsigned char at = 0x40, len = 27;
    cfg[0x06] |= 0x10; /* status: capability list */
    cfg[0x34] = at;
    unsigned char *cap = cfg + at;
    cap[0] = 0x09;
    cap[1] = 0x00; /* the last capability */
    cap[2] = len;
    cap[3] = 'V';
    cap[4] = 'F';
    cap[5] = 0x00;
    cap[6] = len - 5;
    memcpy(cap + 7, g->vgpu_host_driver_version, strlen(g->vgpu_host_driver_version));
    memcpy(cap + 17, g->vgpu_host_driver_branch, strlen(g->vgpu_host_driver_branch));
}

static int write_gpu(const char *root, const struct sim_gpu *g, size_t index,
                     struct gpulet_error *err)
{
    char dir[4096], text[1024];
    device_dir(root, g, dir, sizeof dir);
    if (fileio_mkdirs(dir, 0755, 0755, err) < 0)
        return -1;
    unsigned int vendor = g->pci_device_id & 0xffff ? g->pci_device_id & 0xffff : 0x10de;
    struct bars b;
    gpu_bars(g, index, &b);
    unsigned char cfg[256];
    config_space(g, &b, cfg);
    size_t o = 0;
    for (int r = 0; r < 13; r++) { /* 6 BARs, the ROM, 6 bridge windows */
        unsigned long long start = r < 6 ? b.start[r] : 0, size = r < 6 ? b.size[r] : 0;
        o += (size_t)snprintf(text + o, sizeof text - o, "0x%016llx 0x%016llx 0x%016llx\n", start,
                              size ? start + size - 1 : 0, r < 6 ? b.flags[r] : 0ULL);
    }
    char v[32], dv[32], sv[32], sd[32], cls[32], numa[32];
    snprintf(v, sizeof v, "0x%04x\n", vendor);
    snprintf(dv, sizeof dv, "0x%04x\n", g->pci_device_id >> 16);
    snprintf(sv, sizeof sv, "0x%04x\n", g->pci_subsystem_id & 0xffff);
    snprintf(sd, sizeof sd, "0x%04x\n", g->pci_subsystem_id >> 16);
    snprintf(cls, sizeof cls, "0x%06x\n", g->pci_class);
    snprintf(numa, sizeof numa, "%d\n", g->numa_node);
    if (put_text(dir, "vendor", v, err) < 0 || put_text(dir, "device", dv, err) < 0 ||
        put_text(dir, "subsystem_vendor", sv, err) < 0 ||
        put_text(dir, "subsystem_device", sd, err) < 0 || put_text(dir, "class", cls, err) < 0 ||
        put_text(dir, "revision", "0xa1\n", err) < 0 || put_text(dir, "numa_node", numa, err) < 0 ||
        put_text(dir, "resource", text, err) < 0 || put(dir, "config", cfg, sizeof cfg, err) < 0)
        return -1;
    char link[4200], target[128], links[4200];
    device_link(root, g, link, sizeof link, target, sizeof target);
    snprintf(links, sizeof links, "%s/bus/pci/devices", root);
    if (fileio_mkdirs(links, 0755, 0755, err) < 0)
        return -1;
    if (symlink(target, link) != 0 && errno != EEXIST)
        return gpulet_error_errno(err, errno, "cannot link %s to %s", link, target);
    return 0;
}

int sim_sysfs_write(const struct sim_node *node, const char *root, struct gpulet_error *err)
{
    for (size_t i = 0; i < node->gpu_count; i++)
        if (write_gpu(root, &node->gpus[i], i, err) < 0)
            return -1;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/bus/pci/devices", root);
    if (fileio_mkdirs(dir, 0755, 0755, err) < 0)
        return -1;
    if (node->machine[0] == '\0')
        return 0;
    snprintf(dir, sizeof dir, "%s/class/dmi/id", root);
    char line[128];
    snprintf(line, sizeof line, "%s\n", node->machine);
    if (fileio_mkdirs(dir, 0755, 0755, err) < 0 || put_text(dir, "product_name", line, err) < 0)
        return -1;
    return 0;
}

void sim_sysfs_remove(const struct sim_node *node, const char *root)
{
    char dir[4096], path[4200];
    for (size_t i = 0; i < node->gpu_count; i++) {
        device_dir(root, &node->gpus[i], dir, sizeof dir);
        for (const char *const *f = device_files; *f; f++) {
            snprintf(path, sizeof path, "%s/%s", dir, *f);
            unlink(path);
        }
        rmdir(dir);
        *strrchr(dir, '/') = '\0'; /* the root complex's folder, once empty */
        rmdir(dir);
        char target[128];
        device_link(root, &node->gpus[i], path, sizeof path, target, sizeof target);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/" OWNER_MARK, root);
    unlink(path);
    static const char *const dirs[] = {"/class/dmi/id/product_name", "/class/dmi/id", "/class/dmi",
                                       "/class", "/bus/pci/devices", "/bus/pci", "/bus",
                                       "/devices", "", NULL};
    for (const char *const *d = dirs; *d; d++) { /* folders go only once empty */
        snprintf(path, sizeof path, "%s%s", root, *d);
        remove(path);
    }
}
