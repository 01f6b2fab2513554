#include "dra_internal.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "devices/devices.h"
#include "fileio/fileio.h"

/* ---- devices ---- */

static int compare_devices(const void *a, const void *b)
{
    return strcmp(((const struct dra_device *)a)->name, ((const struct dra_device *)b)->name);
}

/* NVIDIA's form: the profile without dots, anything else not fit for a
 * DNS label as '-'. */
static void mig_name(const struct gpu_device *g, const struct gpu_mig_device *m, char *buf,
                     size_t len)
{
    char profile[sizeof m->profile];
    size_t o = 0;
    for (const char *p = m->profile; *p && o + 1 < sizeof profile; p++) {
        if (*p == '.')
            continue;
        unsigned char ch = (unsigned char)tolower((unsigned char)*p);
        profile[o++] = isalnum(ch) ? (char)ch : '-';
    }
    profile[o] = '\0';
    if (m->gi_profile_id >= 0)
        snprintf(buf, len, "gpu-%u-mig-%s-%d-%d", g->minor, profile, m->gi_profile_id,
                 m->placement_start);
    else /* a driver without the instance calls: still unique on the GPU */
        snprintf(buf, len, "gpu-%u-mig-%s-gi%u-ci%u", g->minor, profile, m->gpu_instance_id,
                 m->compute_instance_id);
}

void dra_device_name(const struct gpu_device *g, int mig, char *buf, size_t len)
{
    if (mig < 0)
        snprintf(buf, len, "gpu-%u", g->minor);
    else
        mig_name(g, &g->migs[mig], buf, len);
}

int dra_devices_build(const struct gpu_inventory *inv, const struct config *cfg,
                      struct dra_device **out, size_t *count, struct gpulet_error *err)
{
    size_t room = inv->gpu_count;
    for (size_t i = 0; i < inv->gpu_count; i++)
        room += inv->gpus[i].mig_count;
    struct dra_device *devs = calloc(room ? room : 1, sizeof *devs);
    if (devs == NULL)
        return gpulet_error_errno(err, ENOMEM, "cannot list the DRA devices");
    size_t n = 0;
    for (size_t i = 0; i < inv->gpu_count; i++) {
        const struct gpu_device *g = &inv->gpus[i];
        if (g->lost || (cfg && devices_gpu_front(cfg, g) != DEVICES_FRONT_DRA))
            continue;
        if (!g->mig_enabled) {
            devs[n] = (struct dra_device){.gpu = (unsigned)i, .mig = -1, .healthy = true};
            devs[n].shared = cfg && config_dra_slice(cfg, g->index, g->uuid) &&
                             g->memory_total_bytes >= DRA_MEMORY_STEP;
            dra_device_name(g, -1, devs[n].name, sizeof devs[n].name);
            n++;
            continue;
        }
        for (size_t m = 0; m < g->mig_count; m++) {
            devs[n] = (struct dra_device){.gpu = (unsigned)i, .mig = (int)m, .healthy = true};
            dra_device_name(g, (int)m, devs[n].name, sizeof devs[n].name);
            n++;
        }
    }
    qsort(devs, n, sizeof *devs, compare_devices);
    *out = devs;
    *count = n;
    return 0;
}

const struct dra_device *dra_device_find(const struct dra_device *devs, size_t count,
                                         const char *name)
{
    struct dra_device key;
    if (strlen(name) >= sizeof key.name)
        return NULL;
    snprintf(key.name, sizeof key.name, "%s", name);
    return bsearch(&key, devs, count, sizeof *devs, compare_devices);
}

void dra_quantity(unsigned long long n, char *buf, size_t len)
{
    static const char *const suffix[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
    size_t s = 0;
    while (n && n % 1024 == 0 && s + 1 < sizeof suffix / sizeof suffix[0]) {
        n /= 1024;
        s++;
    }
    snprintf(buf, len, "%llu%s", n, suffix[s]);
}

/* What NVIDIA calls the architecture, by compute capability. */
static const char *architecture(int major, int minor)
{
    switch (major) {
    case 3: return "Kepler";
    case 5: return "Maxwell";
    case 6: return "Pascal";
    case 7: return minor < 5 ? "Volta" : "Turing";
    case 8: return minor < 9 ? "Ampere" : "Ada Lovelace";
    case 9: return "Hopper";
    case 10:
    case 12: return "Blackwell";
    default: return "Unknown";
    }
}

/* "550.90.07" -> "550.90.7": a semantic version has no leading zeros. */
static void semver(const char *text, char *buf, size_t len)
{
    unsigned long part[3] = {0, 0, 0};
    int n = sscanf(text, "%lu.%lu.%lu", &part[0], &part[1], &part[2]);
    if (n < 1)
        part[0] = 0;
    snprintf(buf, len, "%lu.%lu.%lu", part[0], part[1], part[2]);
}

static json_t *attr_string(const char *s)
{
    return json_pack("{s:s}", "string", s);
}

static json_t *attr_version(const char *s)
{
    return json_pack("{s:s}", "version", s);
}

static json_t *capacity(unsigned long long n)
{
    char q[32];
    dra_quantity(n, q, sizeof q);
    return json_pack("{s:s}", "value", q);
}

/* A shared GPU's memory: whole GiB of it, consumed a GiB at least and in
 * steps of one, 1Gi for a claim that names no amount. */
static json_t *shared_memory(unsigned long long bytes)
{
    char total[32], step[32];
    dra_quantity(bytes / DRA_MEMORY_STEP * DRA_MEMORY_STEP, total, sizeof total);
    dra_quantity(DRA_MEMORY_STEP, step, sizeof step);
    return json_pack("{s:s, s:{s:s, s:{s:s, s:s, s:s}}}", "value", total, "requestPolicy",
                     "default", step, "validRange", "min", step, "max", total, "step", step);
}

/* "0000:47:00.0", sysfs's form of NVML's "00000000:47:00.0". */
static void pci_bus_id(const char *nvml_id, char *buf, size_t len)
{
    unsigned int domain = 0, bus = 0, dev = 0, fn = 0;
    sscanf(nvml_id, "%x:%x:%x.%x", &domain, &bus, &dev, &fn);
    snprintf(buf, len, "%04x:%02x:%02x.%x", domain, bus, dev, fn);
}

/* The PCIe root complex of a device, "pci0000:40": the first component
 * of where its /sys/bus/pci/devices link points under /sys/devices. */
static bool pcie_root(const char *sysfs, const char *bus_id, char *buf, size_t len)
{
    char link[4200], target[PATH_MAX];
    snprintf(link, sizeof link, "%s/bus/pci/devices/%s", sysfs, bus_id);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0)
        return false;
    target[n] = '\0';
    const char *p = strstr(target, "/devices/pci");
    if (p == NULL)
        return false;
    p += strlen("/devices/");
    size_t l = strcspn(p, "/");
    if (l == 0 || l >= len)
        return false;
    memcpy(buf, p, l);
    buf[l] = '\0';
    return true;
}

static void common_attributes(json_t *attrs, const struct gpu_inventory *inv,
                              const struct gpu_device *g, const char *sysfs)
{
    char text[96];
    json_object_set_new(attrs, "productName", attr_string(g->name));
    json_object_set_new(attrs, "brand", attr_string(g->brand[0] ? g->brand : "Unknown"));
    json_object_set_new(attrs, "architecture",
                        attr_string(architecture(g->cc_major, g->cc_minor)));
    snprintf(text, sizeof text, "%d.%d.0", g->cc_major < 0 ? 0 : g->cc_major,
             g->cc_minor < 0 ? 0 : g->cc_minor);
    json_object_set_new(attrs, "cudaComputeCapability", attr_version(text));
    semver(inv->driver_version, text, sizeof text);
    json_object_set_new(attrs, "driverVersion", attr_version(text));
    snprintf(text, sizeof text, "%d.%d.0", inv->cuda_driver_version / 1000,
             inv->cuda_driver_version % 1000 / 10);
    json_object_set_new(attrs, "cudaDriverVersion", attr_version(text));
    if (g->addressing_mode[0])
        json_object_set_new(attrs, "addressingMode", attr_string(g->addressing_mode));
    char bus[32], root[64];
    pci_bus_id(g->pci_bus_id, bus, sizeof bus);
    json_object_set_new(attrs, "resource.kubernetes.io/pciBusID", attr_string(bus));
    if (pcie_root(sysfs, bus, root, sizeof root))
        json_object_set_new(attrs, "resource.kubernetes.io/pcieRoot", attr_string(root));
}

json_t *dra_device_json(const struct gpu_inventory *inv, const struct dra_device *d,
                        const char *sysfs)
{
    const struct gpu_device *g = &inv->gpus[d->gpu];
    json_t *attrs = json_object(), *caps = json_object();
    if (d->mig < 0) {
        json_object_set_new(attrs, "type", attr_string("gpu"));
        json_object_set_new(attrs, "uuid", attr_string(g->uuid));
        common_attributes(attrs, inv, g, sysfs);
        if (d->shared)
            json_object_set_new(caps, "memory", shared_memory(g->memory_total_bytes));
        else
            json_object_set_new(caps, "memory", capacity(g->memory_total_bytes));
    } else {
        const struct gpu_mig_device *m = &g->migs[d->mig];
        json_object_set_new(attrs, "type", attr_string("mig"));
        json_object_set_new(attrs, "uuid", attr_string(m->uuid));
        json_object_set_new(attrs, "parentUUID", attr_string(g->uuid));
        json_object_set_new(attrs, "profile", attr_string(m->profile));
        common_attributes(attrs, inv, g, sysfs);
        json_object_set_new(caps, "multiprocessors", capacity(m->multiprocessors));
        json_object_set_new(caps, "copyEngines", capacity(m->copy_engines));
        json_object_set_new(caps, "decoders", capacity(m->decoders));
        json_object_set_new(caps, "encoders", capacity(m->encoders));
        json_object_set_new(caps, "jpegEngines", capacity(m->jpegs));
        json_object_set_new(caps, "ofaEngines", capacity(m->ofas));
        json_object_set_new(caps, "memory", capacity(m->memory_mib << 20));
        for (int s = m->placement_start; m->gi_profile_id >= 0 &&
                                         s < m->placement_start + (int)m->placement_size;
             s++) {
            char name[32];
            snprintf(name, sizeof name, "memorySlice%d", s);
            json_object_set_new(caps, name, capacity(1));
        }
    }
    json_t *dev = json_pack("{s:s, s:o, s:o}", "name", d->name, "attributes", attrs, "capacity",
                            caps);
    if (d->shared)
        json_object_set_new(dev, "allowMultipleAllocations", json_true());
    if (d->taint_key[0]) {
        json_t *taint = json_pack("{s:s, s:s, s:s}", "key", d->taint_key, "effect", "NoSchedule",
                                  "timeAdded", d->taint_time);
        if (d->taint_value[0])
            json_object_set_new(taint, "value", json_string(d->taint_value));
        json_object_set_new(dev, "taints", json_pack("[o]", taint));
    }
    return dev;
}

void dra_device_taint(struct dra_device *d, const char *reason, time_t when)
{
    d->taint_key[0] = d->taint_value[0] = d->taint_time[0] = '\0';
    if (reason == NULL)
        return;
    unsigned long long xid;
    char end;
    /* NoSchedule, not NoExecute: the pods on the device keep running, as
     * with the device plugin; the XID's own handling decides their fate. */
    if (sscanf(reason, "XID %llu%c", &xid, &end) == 1) {
        snprintf(d->taint_key, sizeof d->taint_key, DRA_DRIVER "/xid");
        snprintf(d->taint_value, sizeof d->taint_value, "%llu", xid);
    } else if (strncmp(reason, "GPU is lost", 11) == 0) {
        snprintf(d->taint_key, sizeof d->taint_key, DRA_DRIVER "/gpu-lost");
    } else {
        snprintf(d->taint_key, sizeof d->taint_key, DRA_DRIVER "/unhealthy");
    }
    struct tm tm;
    gmtime_r(&when, &tm);
    strftime(d->taint_time, sizeof d->taint_time, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

bool dra_slice_has(json_t *slice, const char *field)
{
    size_t i;
    json_t *dev;
    json_array_foreach(json_object_get(json_object_get(slice, "spec"), "devices"), i, dev) {
        json_t *v = json_object_get(dev, field);
        if (json_is_true(v) || json_array_size(v))
            return true;
    }
    return false;
}

void dra_json_hash(json_t *value, char out[17])
{
    char *text = json_dumps(value, JSON_COMPACT | JSON_SORT_KEYS);
    unsigned long long h = 1469598103934665603ULL; /* FNV-1a */
    for (const char *p = text ? text : ""; *p; p++) {
        h ^= (unsigned char)*p;
        h *= 1099511628211ULL;
    }
    free(text);
    snprintf(out, 17, "%016llx", h);
}

json_t *dra_slices_json(const char *node, const char *node_uid, long long generation,
                        json_t *devices, const char *hash)
{
    size_t total = json_array_size(devices);
    size_t slices = total ? (total + DRA_SLICE_DEVICES - 1) / DRA_SLICE_DEVICES : 1;
    json_t *out = json_array();
    char prefix[300];
    snprintf(prefix, sizeof prefix, "%s-%s-", node, DRA_DRIVER);
    for (size_t s = 0; s < slices; s++) {
        json_t *part = json_array();
        for (size_t i = s * DRA_SLICE_DEVICES; i < total && i < (s + 1) * DRA_SLICE_DEVICES; i++)
            json_array_append(part, json_array_get(devices, i));
        json_t *meta = json_pack("{s:s, s:{s:s}}", "generateName", prefix, "annotations",
                                 "gpulet.nvidia.com/content", hash);
        if (node_uid && node_uid[0])
            json_object_set_new(meta, "ownerReferences",
                                json_pack("[{s:s, s:s, s:s, s:s, s:b}]", "apiVersion", "v1",
                                          "kind", "Node", "name", node, "uid", node_uid,
                                          "controller", 1));
        json_array_append_new(
            out, json_pack("{s:s, s:s, s:o, s:{s:s, s:s, s:{s:s, s:I, s:I}, s:o}}",
                           "apiVersion", "resource.k8s.io/v1", "kind", "ResourceSlice",
                           "metadata", meta, "spec", "driver", DRA_DRIVER, "nodeName", node,
                           "pool", "name", node, "generation", (json_int_t)generation,
                           "resourceSliceCount", (json_int_t)slices, "devices", part));
    }
    return out;
}

/* ---- claims ---- */

bool dra_uid_valid(const char *uid)
{
    size_t n = strlen(uid);
    if (n == 0 || n >= DRA_UID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)uid[i]) || isdigit((unsigned char)uid[i]) || uid[i] == '-'))
            return false;
    return true;
}

static const char *str_at(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

int dra_claim_parse(const char *text, size_t len, const char *uid, const char *pool,
                    struct dra_result **out, size_t *count, struct dra_mps *mps,
                    struct gpulet_error *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL || !json_is_object(root)) {
        json_decref(root);
        return gpulet_error_set(err, GPULET_ERR_INPUT, "the API server's answer is not a "
                                "ResourceClaim (JSON: %s)", root ? "not an object" : jerr.text);
    }
    int rc = -1;
    struct dra_result *results = NULL;
    size_t n = 0;
    const char *got = str_at(json_object_get(root, "metadata"), "uid");
    if (got == NULL) {
        gpulet_error_set(err, GPULET_ERR_INPUT, "the ResourceClaim has no metadata.uid");
        goto out;
    }
    if (strcmp(got, uid) != 0) {
        gpulet_error_set(err, GPULET_ERR_INPUT, "the claim's UID is now %.64s, not %s as the "
                         "kubelet asked: it was deleted and made again; the kubelet retries "
                         "with the new one", got, uid);
        goto out;
    }
    json_t *alloc = json_object_get(json_object_get(root, "status"), "allocation");
    json_t *list = json_object_get(json_object_get(alloc, "devices"), "results");
    if (!json_is_object(alloc) || !json_is_array(list)) {
        gpulet_error_set(err, GPULET_ERR_INPUT, "the claim is not allocated (no "
                         "status.allocation.devices.results); the scheduler allocates it "
                         "before the kubelet may prepare it");
        goto out;
    }
    size_t total = json_array_size(list);
    results = calloc(total ? total : 1, sizeof *results);
    if (results == NULL) {
        gpulet_error_errno(err, ENOMEM, "cannot read the claim");
        goto out;
    }
    size_t i;
    json_t *r;
    json_array_foreach(list, i, r) {
        const char *driver = str_at(r, "driver");
        const char *rpool = str_at(r, "pool");
        const char *device = str_at(r, "device");
        const char *request = str_at(r, "request");
        if (!driver || !rpool || !device || !request) {
            gpulet_error_set(err, GPULET_ERR_INPUT, "allocation result %zu lacks driver, pool, "
                             "device or request", i);
            goto out;
        }
        if (strcmp(driver, DRA_DRIVER) != 0)
            continue; /* another driver's part of the claim */
        if (strcmp(rpool, pool) != 0) {
            gpulet_error_set(err, GPULET_ERR_INPUT, "device %.64s of the claim is in pool "
                             "%.64s, not this node's (%s): the claim was allocated for "
                             "another node", device, rpool, pool);
            goto out;
        }
        if (strlen(device) >= DRA_NAME_MAX || strlen(request) >= DRA_REQUEST_MAX) {
            gpulet_error_set(err, GPULET_ERR_INPUT, "allocation result %zu has a device or "
                             "request name too long to be one of gpulet's", i);
            goto out;
        }
        if (n == DRA_CLAIM_DEVICES) {
            gpulet_error_set(err, GPULET_ERR_INPUT, "the claim has more than %d devices of "
                             "%s", DRA_CLAIM_DEVICES, DRA_DRIVER);
            goto out;
        }
        json_t *consumed = json_object_get(json_object_get(r, "consumedCapacity"), "memory");
        if (consumed && (!json_is_string(consumed) ||
                         config_parse_size(json_string_value(consumed), &results[n].memory) < 0 ||
                         results[n].memory == 0)) {
            gpulet_error_set(err, GPULET_ERR_INPUT, "allocation result %zu: consumedCapacity "
                             "memory is not a positive quantity in bytes, Ki, Mi, Gi or Ti", i);
            goto out;
        }
        snprintf(results[n].request, sizeof results[n].request, "%s", request);
        snprintf(results[n].device, sizeof results[n].device, "%s", device);
        n++;
    }
    json_t *config = json_object_get(json_object_get(alloc, "devices"), "config");
    if (dra_sharing_apply(config, results, n, mps, err) < 0)
        goto out;
    rc = 0;
out:
    json_decref(root);
    if (rc < 0) {
        free(results);
        return -1;
    }
    *out = results;
    *count = n;
    return 0;
}

void dra_cdi_id(const char *uid, const char *device, char *buf, size_t len)
{
    snprintf(buf, len, DRA_CDI_KIND "=%s-%s", uid, device);
}

/* ---- checkpoint ---- */

void dra_claims_free(struct dra_claim *claims, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(claims[i].results);
    free(claims);
}

int dra_checkpoint_write(const char *path, const struct dra_claim *claims, size_t count,
                         struct gpulet_error *err)
{
    json_t *list = json_array();
    for (size_t i = 0; i < count; i++) {
        json_t *devs = json_array();
        for (size_t j = 0; j < claims[i].count; j++) {
            const struct dra_result *r = &claims[i].results[j];
            json_t *dev = json_pack("{s:s, s:s}", "request", r->request, "device", r->device);
            if (r->memory)
                json_object_set_new(dev, "memory", json_integer((json_int_t)r->memory));
            if (r->timeslice)
                json_object_set_new(dev, "timeslice", json_integer(r->interval));
            if (r->mps)
                json_object_set_new(dev, "mps", json_true());
            json_array_append_new(devs, dev);
        }
        json_t *claim = json_pack("{s:s, s:s, s:s, s:o}", "uid", claims[i].uid, "namespace",
                                  claims[i].namespace, "name", claims[i].name, "devices", devs);
        if (claims[i].alloc[0])
            json_object_set_new(claim, "alloc", json_string(claims[i].alloc));
        if (claims[i].mps.on)
            json_object_set_new(claim, "mps", dra_mps_json(&claims[i].mps));
        json_array_append_new(list, claim);
    }
    json_t *doc = json_pack("{s:i, s:o}", "version", 1, "claims", list);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (text == NULL)
        return gpulet_error_errno(err, ENOMEM, "cannot write the DRA checkpoint %s", path);
    /* Atomic, not fsync'ed: a process crash leaves the old or the new
     * file; a power loss also ends every container and empties
     * /var/run/cdi, and the kubelet prepares its claims again, which
     * reads any claim the file lost from the API server. */
    int rc = fileio_replace(path, text, strlen(text), FILEIO_PRIVATE, err);
    free(text);
    return rc;
}

static int copy_field(json_t *obj, const char *key, char *buf, size_t len)
{
    const char *s = str_at(obj, key);
    if (s == NULL || strlen(s) >= len)
        return -1;
    snprintf(buf, len, "%s", s);
    return 0;
}

static int compare_uids(const void *a, const void *b)
{
    return strcmp((*(const struct dra_claim *const *)a)->uid,
                  (*(const struct dra_claim *const *)b)->uid);
}

/* gpulet records a claim once; a UID twice (a hand edit, pasted files)
 * leaves no right answer: which entry's devices and slice folder hold?
 * Refused, so that neither is dropped unseen nor prepared twice. */
static int check_unique(const char *path, const struct dra_claim *claims, size_t n,
                        struct gpulet_error *err)
{
    const struct dra_claim **sorted = malloc((n ? n : 1) * sizeof *sorted);
    if (sorted == NULL)
        return gpulet_error_errno(err, ENOMEM, "cannot read %s", path);
    for (size_t i = 0; i < n; i++)
        sorted[i] = &claims[i];
    qsort(sorted, n, sizeof *sorted, compare_uids);
    int rc = 0;
    for (size_t i = 1; i < n && rc == 0; i++)
        if (strcmp(sorted[i - 1]->uid, sorted[i]->uid) == 0)
            rc = gpulet_error_set(err, GPULET_ERR_INPUT, "%s names claim %s twice (entries %zu "
                                  "and %zu); gpulet writes each claim once: keep the entry "
                                  "that matches the claim's CDI spec, or move the file away "
                                  "to start afresh", path, sorted[i]->uid,
                                  (size_t)(sorted[i - 1] < sorted[i] ? sorted[i - 1] - claims
                                                                     : sorted[i] - claims),
                                  (size_t)(sorted[i - 1] < sorted[i] ? sorted[i] - claims
                                                                     : sorted[i - 1] - claims));
    free(sorted);
    return rc;
}

int dra_checkpoint_read(const char *path, struct dra_claim **out, size_t *count,
                        struct gpulet_error *err)
{
    *out = NULL;
    *count = 0;
    char *text;
    size_t len;
    if (fileio_read(path, DRA_CHECKPOINT_MAX, &text, &len, err) < 0) {
        if (err->kind == GPULET_ERR_SYSTEM && err->sys_errno == ENOENT) {
            gpulet_error_clear(err);
            return 0; /* nothing prepared yet */
        }
        return -1;
    }
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    json_t *list = json_object_get(doc, "claims");
    if (!json_is_array(list) || json_integer_value(json_object_get(doc, "version")) != 1 ||
        json_array_size(list) > DRA_MAX_CLAIMS) {
        json_decref(doc);
        return gpulet_error_set(err, GPULET_ERR_INPUT, "%s is not a gpulet DRA checkpoint "
                                "(version 1, at most %d claims); move it away to start afresh",
                                path, DRA_MAX_CLAIMS);
    }
    size_t n = json_array_size(list);
    struct dra_claim *claims = calloc(n ? n : 1, sizeof *claims);
    if (claims == NULL) {
        json_decref(doc);
        return gpulet_error_errno(err, ENOMEM, "cannot read %s", path);
    }
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c) {
        struct dra_claim *dc = &claims[i];
        json_t *devs = json_object_get(c, "devices");
        json_t *alloc = json_object_get(c, "alloc");
        bool ok = copy_field(c, "uid", dc->uid, sizeof dc->uid) == 0 && dra_uid_valid(dc->uid) &&
                  (alloc == NULL || (copy_field(c, "alloc", dc->alloc, sizeof dc->alloc) == 0 &&
                                     strspn(dc->alloc, "0123456789abcdef") == strlen(dc->alloc))) &&
                  copy_field(c, "namespace", dc->namespace, sizeof dc->namespace) == 0 &&
                  copy_field(c, "name", dc->name, sizeof dc->name) == 0 && json_is_array(devs) &&
                  json_array_size(devs) <= DRA_CLAIM_DEVICES;
        json_t *mps = json_object_get(c, "mps");
        ok = ok && (mps == NULL || dra_mps_from_json(mps, &dc->mps) == 0);
        if (ok) {
            dc->results = calloc(json_array_size(devs) + 1, sizeof *dc->results);
            ok = dc->results != NULL;
        }
        size_t j;
        json_t *d;
        json_array_foreach(devs, j, d) {
            if (!ok)
                break;
            json_t *memory = json_object_get(d, "memory");
            json_t *ts = json_object_get(d, "timeslice");
            dc->results[j].timeslice = ts && json_is_integer(ts) &&
                                       json_integer_value(ts) >= 0 &&
                                       json_integer_value(ts) <= 3;
            if (dc->results[j].timeslice)
                dc->results[j].interval = (unsigned char)json_integer_value(ts);
            dc->results[j].mps = json_is_true(json_object_get(d, "mps"));
            ok = (ts == NULL || dc->results[j].timeslice) &&
                 copy_field(d, "request", dc->results[j].request,
                            sizeof dc->results[j].request) == 0 &&
                 copy_field(d, "device", dc->results[j].device,
                            sizeof dc->results[j].device) == 0 &&
                 (memory == NULL || (json_is_integer(memory) && json_integer_value(memory) > 0));
            if (ok && memory)
                dc->results[j].memory = (unsigned long long)json_integer_value(memory);
            dc->count = j + 1;
        }
        if (!ok) {
            dra_claims_free(claims, n);
            json_decref(doc);
            return gpulet_error_set(err, GPULET_ERR_INPUT, "%s: claim %zu is malformed; move "
                                    "the file away to start afresh", path, i);
        }
    }
    json_decref(doc);
    if (check_unique(path, claims, n, err) < 0) {
        dra_claims_free(claims, n);
        return -1;
    }
    *out = claims;
    *count = n;
    return 0;
}
