/* NVIDIA's opaque GpuConfig / MigDeviceConfig (resource.nvidia.com/v1beta1)
 * of a claim: read as NVIDIA's driver reads it (strictly: an unknown field
 * fails), and matched to the claim's devices as it matches them. */
#include "dra_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

static const char *const intervals[] = {"Default", "Short", "Medium", "Long"};

/* Every key of obj is one of allowed (NULL-terminated): NVIDIA decodes
 * strictly, so a misspelt field is an error, not a setting ignored. */
static int known_fields(json_t *obj, const char *what, const char *const *allowed,
                        struct gpulet_error *err)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(key, *a) == 0;
        if (!ok)
            return gpulet_error_set(err, GPULET_ERR_INPUT, "%s has an unknown field \"%.64s\"",
                                    what, key);
    }
    return 0;
}

/* A Kubernetes quantity as a JSON string; at least 1 MiB, which is what
 * NVIDIA requires of an MPS limit (it passes whole MiB). */
static int mps_limit(json_t *v, const char *what, unsigned long long *out,
                     struct gpulet_error *err)
{
    if (!json_is_string(v) || config_parse_size(json_string_value(v), out) < 0)
        return gpulet_error_set(err, GPULET_ERR_INPUT, "%s must be a quantity such as 10Gi or "
                                "512Mi (bytes, Ki, Mi, Gi, Ti)", what);
    if (*out < (1ULL << 20))
        return gpulet_error_set(err, GPULET_ERR_INPUT, "%s is under 1Mi: MPS limits are whole "
                                "MiB", what);
    return 0;
}

static int parse_mps(json_t *m, struct dra_mps *out, struct gpulet_error *err)
{
    *out = (struct dra_mps){.on = true, .thread_percentage = -1};
    if (m == NULL || json_is_null(m))
        return 0;
    static const char *const fields[] = {"defaultActiveThreadPercentage",
                                         "defaultPinnedDeviceMemoryLimit",
                                         "defaultPerDevicePinnedMemoryLimit", NULL};
    if (!json_is_object(m))
        return gpulet_error_set(err, GPULET_ERR_INPUT, "mpsConfig must be an object");
    if (known_fields(m, "mpsConfig", fields, err) < 0)
        return -1;
    json_t *pct = json_object_get(m, "defaultActiveThreadPercentage");
    if (pct && !json_is_null(pct)) {
        if (!json_is_integer(pct))
            return gpulet_error_set(err, GPULET_ERR_INPUT, "mpsConfig."
                                    "defaultActiveThreadPercentage must be an integer");
        json_int_t p = json_integer_value(pct);
        if (p < 0)
            return gpulet_error_set(err, GPULET_ERR_INPUT, "active thread percentage must not "
                                    "be negative");
        if (p > 100)
            return gpulet_error_set(err, GPULET_ERR_INPUT, "active thread percentage must not "
                                    "be greater than 100");
        out->thread_percentage = (int)p;
    }
    json_t *pinned = json_object_get(m, "defaultPinnedDeviceMemoryLimit");
    if (pinned && !json_is_null(pinned) &&
        mps_limit(pinned, "mpsConfig.defaultPinnedDeviceMemoryLimit", &out->pinned, err) < 0)
        return -1;
    json_t *per = json_object_get(m, "defaultPerDevicePinnedMemoryLimit");
    if (per == NULL || json_is_null(per))
        return 0;
    if (!json_is_object(per))
        return gpulet_error_set(err, GPULET_ERR_INPUT, "mpsConfig.defaultPerDevicePinned"
                                "MemoryLimit must map device UUIDs or indexes to quantities");
    if (json_object_size(per) > DRA_MPS_LIMITS)
        return gpulet_error_set(err, GPULET_ERR_INPUT, "mpsConfig.defaultPerDevicePinned"
                                "MemoryLimit has more than %d devices", DRA_MPS_LIMITS);
    const char *key;
    json_t *v;
    json_object_foreach(per, key, v) {
        size_t n = strlen(key);
        bool index = n > 0 && n <= 3 && strspn(key, "0123456789") == n;
        bool uuid = n < DRA_NAME_MAX && (strncmp(key, "GPU-", 4) == 0 ||
                                         strncmp(key, "MIG-", 4) == 0) &&
                    strspn(key + 4, "0123456789abcdefABCDEF-/") == n - 4;
        if (!index && !uuid)
            return gpulet_error_set(err, GPULET_ERR_INPUT, "invalid device: \"%.64s\" in "
                                    "defaultPerDevicePinnedMemoryLimit is neither a device "
                                    "UUID nor an index", key);
        char what[128];
        snprintf(what, sizeof what, "defaultPerDevicePinnedMemoryLimit[%s]", key);
        snprintf(out->limits[out->n_limits].device, DRA_NAME_MAX, "%s", key);
        if (mps_limit(v, what, &out->limits[out->n_limits].bytes, err) < 0)
            return -1;
        out->n_limits++;
    }
    return 0;
}

int dra_gpu_config_parse(json_t *params, struct dra_gpu_config *out, struct gpulet_error *err)
{
    *out = (struct dra_gpu_config){.timeslice = -1};
    const char *api = json_string_value(json_object_get(params, "apiVersion"));
    const char *kind = json_string_value(json_object_get(params, "kind"));
    if (!json_is_object(params) || api == NULL || strcmp(api, "resource.nvidia.com/v1beta1") != 0)
        return gpulet_error_set(err, GPULET_ERR_INPUT, "the claim's opaque configuration for "
                                DRA_DRIVER " must be an object of apiVersion "
                                "resource.nvidia.com/v1beta1");
    if (kind == NULL || (strcmp(kind, "GpuConfig") != 0 && strcmp(kind, "MigDeviceConfig") != 0))
        return gpulet_error_set(err, GPULET_ERR_INPUT, "the claim's configuration kind \"%.64s\" "
                                "is not one gpulet knows (GpuConfig, MigDeviceConfig)",
                                kind ? kind : "");
    out->mig = strcmp(kind, "MigDeviceConfig") == 0;
    static const char *const top[] = {"apiVersion", "kind", "sharing", NULL};
    if (known_fields(params, kind, top, err) < 0)
        return -1;
    json_t *sharing = json_object_get(params, "sharing");
    if (sharing == NULL || json_is_null(sharing))
        return 0;
    static const char *const gpu_sharing[] = {"strategy", "timeSlicingConfig", "mpsConfig", NULL};
    static const char *const mig_sharing[] = {"strategy", "mpsConfig", NULL};
    if (!json_is_object(sharing))
        return gpulet_error_set(err, GPULET_ERR_INPUT, "sharing must be an object");
    if (known_fields(sharing, "sharing", out->mig ? mig_sharing : gpu_sharing, err) < 0)
        return -1;
    const char *strategy = json_string_value(json_object_get(sharing, "strategy"));
    json_t *ts = json_object_get(sharing, "timeSlicingConfig");
    json_t *mps = json_object_get(sharing, "mpsConfig");
    if (ts && json_is_null(ts))
        ts = NULL;
    if (mps && json_is_null(mps))
        mps = NULL;
    if (strategy && strcmp(strategy, "TimeSlicing") == 0) {
        if (mps)
            return gpulet_error_set(err, GPULET_ERR_INPUT, "cannot use MpsConfig with the "
                                    "'TimeSlicing' strategy");
        /* A MIG device has no time slice of its own: accepted, nothing set. */
        if (out->mig)
            return 0;
        out->timeslice = 0;
        if (ts == NULL)
            return 0;
        static const char *const ts_fields[] = {"interval", NULL};
        if (!json_is_object(ts))
            return gpulet_error_set(err, GPULET_ERR_INPUT, "timeSlicingConfig must be an object");
        if (known_fields(ts, "timeSlicingConfig", ts_fields, err) < 0)
            return -1;
        json_t *iv = json_object_get(ts, "interval");
        if (iv == NULL || json_is_null(iv))
            return 0;
        const char *interval = json_string_value(iv);
        for (int i = 0; interval && i < 4; i++)
            if (strcmp(interval, intervals[i]) == 0) {
                out->timeslice = i;
                return 0;
            }
        return gpulet_error_set(err, GPULET_ERR_INPUT, "unknown time-slice interval: %.32s, "
                                "supported time-slice intervals: Default, Short, Medium, Long",
                                interval ? interval : "(not a string)");
    }
    if (strategy && strcmp(strategy, "MPS") == 0) {
        if (ts)
            return gpulet_error_set(err, GPULET_ERR_INPUT, "cannot use TimeSlicingConfig with "
                                    "the 'MPS' strategy");
        return parse_mps(mps, &out->mps, err);
    }
    return gpulet_error_set(err, GPULET_ERR_INPUT, "unknown GPU sharing strategy: %.32s, "
                            "supported GPU sharing strategies: TimeSlicing, MPS",
                            strategy ? strategy : "(none)");
}

/* A config's requests name the result's request, or the request it is a
 * subrequest of ("gpu" for "gpu/small"). */
static bool names_request(json_t *requests, const char *request)
{
    size_t i, main = strcspn(request, "/");
    json_t *r;
    json_array_foreach(requests, i, r) {
        const char *s = json_string_value(r);
        if (s && (strcmp(s, request) == 0 || (strlen(s) == main && strncmp(s, request, main) == 0)))
            return true;
    }
    return false;
}

static bool same_mps(const struct dra_mps *a, const struct dra_mps *b)
{
    if (a->thread_percentage != b->thread_percentage || a->pinned != b->pinned ||
        a->n_limits != b->n_limits)
        return false;
    for (size_t i = 0; i < a->n_limits; i++)
        if (strcmp(a->limits[i].device, b->limits[i].device) != 0 ||
            a->limits[i].bytes != b->limits[i].bytes)
            return false;
    return true;
}

static bool is_mig(const char *device)
{
    return strstr(device, "-mig-") != NULL;
}

int dra_sharing_apply(json_t *configs, struct dra_result *results, size_t count,
                      struct dra_mps *mps, struct gpulet_error *err)
{
    *mps = (struct dra_mps){.thread_percentage = -1};
    for (size_t i = 0; i < count; i++) {
        results[i].timeslice = false;
        results[i].mps = false;
    }
    size_t total = json_array_size(configs);
    if (total > 64)
        return gpulet_error_set(err, GPULET_ERR_INPUT, "the claim has more than 64 device "
                                "configurations");
    struct dra_gpu_config parsed[64];
    json_t *requests[64];
    bool ours[64] = {false};
    /* NVIDIA's order: the class's configurations, then the claim's; the
     * last that applies to a device wins. */
    size_t order[64], n = 0;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < total; i++) {
            const char *source = json_string_value(json_object_get(json_array_get(configs, i),
                                                                   "source"));
            bool from_class = source && strcmp(source, "FromClass") == 0;
            if (from_class == (pass == 0))
                order[n++] = i;
        }
    for (size_t i = 0; i < total; i++) {
        json_t *c = json_array_get(configs, i);
        json_t *opaque = json_object_get(c, "opaque");
        const char *driver = json_string_value(json_object_get(opaque, "driver"));
        if (driver == NULL || strcmp(driver, DRA_DRIVER) != 0)
            continue;
        requests[i] = json_object_get(c, "requests");
        if (requests[i] && !json_is_array(requests[i]))
            return gpulet_error_set(err, GPULET_ERR_INPUT, "config %zu: requests must be a list",
                                    i);
        if (dra_gpu_config_parse(json_object_get(opaque, "parameters"), &parsed[i], err) < 0)
            return -1;
        ours[i] = true;
    }
    const struct dra_mps *chosen = NULL;
    for (size_t r = 0; r < count; r++) {
        bool mig = is_mig(results[r].device);
        for (size_t k = n; k-- > 0;) {
            size_t i = order[k];
            if (!ours[i])
                continue;
            bool named = names_request(requests[i], results[r].request);
            if (!named && json_array_size(requests[i]) > 0)
                continue;
            if (parsed[i].mig != mig) {
                if (!named)
                    continue; /* a config for all requests, of the other kind */
                return gpulet_error_set(err, GPULET_ERR_INPUT, "cannot apply %s to device %s "
                                        "of type %s (request: %s)",
                                        parsed[i].mig ? "MigDeviceConfig" : "GpuConfig",
                                        results[r].device, mig ? "mig" : "gpu",
                                        results[r].request);
            }
            results[r].timeslice = parsed[i].timeslice >= 0;
            if (results[r].timeslice)
                results[r].interval = (unsigned char)parsed[i].timeslice;
            if (parsed[i].mps.on) {
                results[r].mps = true;
                if (chosen && !same_mps(chosen, &parsed[i].mps))
                    return gpulet_error_set(err, GPULET_ERR_INPUT, "the claim's devices ask "
                                            "for two different MPS configurations; gpulet runs "
                                            "one MPS control daemon a claim: give its requests "
                                            "one mpsConfig, or use two claims");
                chosen = &parsed[i].mps;
            }
            break;
        }
    }
    if (chosen)
        *mps = *chosen;
    return 0;
}

void dra_mps_megabytes(unsigned long long bytes, char *buf, size_t len)
{
    snprintf(buf, len, "%lluM", bytes >> 20);
}

json_t *dra_mps_json(const struct dra_mps *mps)
{
    json_t *o = json_object();
    if (mps->thread_percentage >= 0)
        json_object_set_new(o, "threads", json_integer(mps->thread_percentage));
    if (mps->pinned)
        json_object_set_new(o, "pinned", json_integer((json_int_t)mps->pinned));
    json_t *limits = json_object();
    for (size_t i = 0; i < mps->n_limits; i++)
        json_object_set_new(limits, mps->limits[i].device,
                            json_integer((json_int_t)mps->limits[i].bytes));
    json_object_set_new(o, "limits", limits);
    return o;
}

int dra_mps_from_json(json_t *obj, struct dra_mps *out)
{
    *out = (struct dra_mps){.on = true, .thread_percentage = -1};
    json_t *t = json_object_get(obj, "threads"), *p = json_object_get(obj, "pinned");
    json_t *limits = json_object_get(obj, "limits");
    if (!json_is_object(obj) || (t && (!json_is_integer(t) || json_integer_value(t) < 0 ||
                                       json_integer_value(t) > 100)) ||
        (p && (!json_is_integer(p) || json_integer_value(p) <= 0)) ||
        (limits && (!json_is_object(limits) || json_object_size(limits) > DRA_MPS_LIMITS)))
        return -1;
    if (t)
        out->thread_percentage = (int)json_integer_value(t);
    if (p)
        out->pinned = (unsigned long long)json_integer_value(p);
    const char *key;
    json_t *v;
    json_object_foreach(limits, key, v) {
        if (strlen(key) >= DRA_NAME_MAX || !json_is_integer(v) || json_integer_value(v) <= 0)
            return -1;
        snprintf(out->limits[out->n_limits].device, DRA_NAME_MAX, "%s", key);
        out->limits[out->n_limits++].bytes = (unsigned long long)json_integer_value(v);
    }
    return 0;
}
