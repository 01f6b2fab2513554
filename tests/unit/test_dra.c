/* The DRA driver's pure parts: devices and slice JSON, claim parsing, the
 * checkpoint; and the API client's kubeconfig, base64 and backoff. */
#include "helpers.h"

#include <sys/stat.h>
#include <unistd.h>

#include "dra/dra_internal.h"
#include "fileio/fileio.h"
#include "kube/kube.h"

#include "sim_inventory.h"

static const char *attr(json_t *dev, const char *name, const char *type)
{
    return json_string_value(
        json_object_get(json_object_get(json_object_get(dev, "attributes"), name), type));
}

/* The devices of a simulated node, loaded into inv; the caller frees them. */
static struct dra_device *devices_of(const char *node, const struct config *cfg, size_t *n)
{
    load(node);
    struct dra_device *devs;
    struct gpulet_error err = {0};
    if (dra_devices_build(inv, cfg, &devs, n, &err) < 0)
        fail_msg("%s", err.msg);
    return devs;
}

static void quantities(void **state)
{
    (void)state;
    char q[32];
    dra_quantity(80ULL << 30, q, sizeof q);
    assert_string_equal(q, "80Gi");
    dra_quantity(4864ULL << 20, q, sizeof q);
    assert_string_equal(q, "4864Mi");
    dra_quantity(7, q, sizeof q);
    assert_string_equal(q, "7");
    dra_quantity(0, q, sizeof q);
    assert_string_equal(q, "0");
    dra_quantity(1536, q, sizeof q);
    assert_string_equal(q, "1536"); /* 1.5Ki is not a whole number of Ki */
}

static void gpu_devices_as_nvidia_names_them(void **state)
{
    (void)state;
    size_t n;
    struct dra_device *devs = devices_of("dgx-a100", NULL, &n);
    assert_int_equal(n, 8);
    assert_string_equal(devs[0].name, "gpu-0");
    assert_non_null(dra_device_find(devs, n, "gpu-7"));
    assert_null(dra_device_find(devs, n, "gpu-8"));
    json_t *d = dra_device_json(inv, &devs[0], "/nonexistent");
    assert_string_equal(json_string_value(json_object_get(d, "name")), "gpu-0");
    assert_string_equal(attr(d, "type", "string"), "gpu");
    assert_string_equal(attr(d, "uuid", "string"), inv->gpus[0].uuid);
    assert_string_equal(attr(d, "productName", "string"), "NVIDIA A100-SXM4-80GB");
    assert_string_equal(attr(d, "brand", "string"), "Nvidia");
    assert_string_equal(attr(d, "architecture", "string"), "Ampere");
    assert_string_equal(attr(d, "cudaComputeCapability", "version"), "8.0.0");
    assert_string_equal(attr(d, "driverVersion", "version"), "550.90.7");
    assert_string_equal(attr(d, "cudaDriverVersion", "version"), "12.4.0");
    assert_non_null(attr(d, "resource.kubernetes.io/pciBusID", "string"));
    /* no sysfs link, no PCIe root; x86: no addressing mode */
    assert_null(json_object_get(json_object_get(d, "attributes"),
                                "resource.kubernetes.io/pcieRoot"));
    assert_null(json_object_get(json_object_get(d, "attributes"), "addressingMode"));
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(d, "capacity"), "memory"), "value")),
                        "80Gi");
    json_decref(d);
    free(devs);
}

static void pcie_root_from_sysfs(void **state)
{
    (void)state;
    load("dgx-a100");
    char dir[64], path[4200], target[4200];
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/bus/pci/devices", dir);
    struct gpulet_error err = {0};
    assert_int_equal(fileio_mkdirs(path, 0755, 0755, &err), 0);
    unsigned int domain, bus, dv, fn;
    sscanf(inv->gpus[0].pci_bus_id, "%x:%x:%x.%x", &domain, &bus, &dv, &fn);
    snprintf(path, sizeof path, "%s/bus/pci/devices/%04x:%02x:%02x.%x", dir, domain, bus, dv, fn);
    snprintf(target, sizeof target, "../../../devices/pci0000:40/0000:40:01.1/%04x:%02x:%02x.%x",
             domain, bus, dv, fn);
    assert_int_equal(symlink(target, path), 0);
    struct dra_device dev = {.name = "gpu-0", .gpu = 0, .mig = -1, .healthy = true};
    json_t *d = dra_device_json(inv, &dev, dir);
    assert_string_equal(attr(d, "resource.kubernetes.io/pcieRoot", "string"), "pci0000:40");
    json_decref(d);
    unlink(path);
    remove_tree(dir);
}

static void mig_devices_replace_their_gpu(void **state)
{
    (void)state;
    size_t n;
    struct dra_device *devs = devices_of("a100-mig", NULL, &n);
    assert_int_equal(n, 10);
    const struct dra_device *m = dra_device_find(devs, n, "gpu-0-mig-1g5gb-19-0");
    assert_non_null(m);
    for (size_t i = 0; i < n; i++)
        assert_non_null(strstr(devs[i].name, "-mig-"));
    json_t *d = dra_device_json(inv, m, "/nonexistent");
    assert_string_equal(attr(d, "type", "string"), "mig");
    assert_string_equal(attr(d, "profile", "string"), "1g.5gb");
    assert_string_equal(attr(d, "parentUUID", "string"), inv->gpus[0].uuid);
    json_t *caps = json_object_get(d, "capacity");
    assert_string_equal(json_string_value(json_object_get(json_object_get(caps, "multiprocessors"),
                                                          "value")), "14");
    assert_string_equal(json_string_value(json_object_get(json_object_get(caps, "memorySlice0"),
                                                          "value")), "1");
    assert_null(json_object_get(caps, "memorySlice1"));
    json_decref(d);
    free(devs);
}

static void slices_cut_at_128(void **state)
{
    (void)state;
    json_t *devices = json_array();
    for (int i = 0; i < 300; i++)
        json_array_append_new(devices, json_pack("{s:i}", "i", i));
    json_t *slices = dra_slices_json("node1", "uid-1", 4, devices, "abc");
    assert_int_equal(json_array_size(slices), 3);
    size_t total = 0;
    for (size_t s = 0; s < 3; s++) {
        json_t *spec = json_object_get(json_array_get(slices, s), "spec");
        json_t *pool = json_object_get(spec, "pool");
        assert_int_equal(json_integer_value(json_object_get(pool, "generation")), 4);
        assert_int_equal(json_integer_value(json_object_get(pool, "resourceSliceCount")), 3);
        assert_string_equal(json_string_value(json_object_get(pool, "name")), "node1");
        assert_true(json_array_size(json_object_get(spec, "devices")) <= DRA_SLICE_DEVICES);
        total += json_array_size(json_object_get(spec, "devices"));
    }
    assert_int_equal(total, 300);
    json_t *meta = json_object_get(json_array_get(slices, 0), "metadata");
    assert_string_equal(json_string_value(json_object_get(meta, "generateName")),
                        "node1-gpu.nvidia.com-");
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(meta, "ownerReferences"), 0), "uid")),
                        "uid-1");
    json_decref(slices);
    /* no devices: still one slice, so the pool is known empty; no owner */
    json_array_clear(devices);
    slices = dra_slices_json("node1", NULL, 1, devices, "abc");
    assert_int_equal(json_array_size(slices), 1);
    assert_null(json_object_get(json_object_get(json_array_get(slices, 0), "metadata"),
                                "ownerReferences"));
    json_decref(slices);
    char h1[17], h2[17];
    json_t *a = json_pack("{s:i, s:i}", "a", 1, "b", 2);
    json_t *b = json_pack("{s:i, s:i}", "b", 2, "a", 1);
    dra_json_hash(a, h1);
    dra_json_hash(b, h2);
    assert_string_equal(h1, h2); /* key order does not matter */
    json_object_set_new(b, "a", json_integer(3));
    dra_json_hash(b, h2);
    assert_string_not_equal(h1, h2);
    json_decref(a);
    json_decref(b);
    json_decref(devices);
}

#define UID "4a1e0b5c-2f0e-4c6b-9d3b-1b2a3c4d5e6f"

static int parse(const char *json, struct dra_result **out, size_t *n, struct gpulet_error *err)
{
    struct dra_mps mps;
    return dra_claim_parse(json, strlen(json), UID, "node1", out, n, &mps, err);
}

/* An allocated claim of gpu-0 with one opaque configuration for our driver. */
#define CONFIG(params)                                                                        \
    "{\"metadata\":{\"uid\":\"" UID "\"},\"status\":{\"allocation\":{\"devices\":"           \
    "{\"results\":[{\"request\":\"g\",\"driver\":\"gpu.nvidia.com\",\"pool\":\"node1\","       \
    "\"device\":\"gpu-0\"}],\"config\":[{\"source\":\"FromClaim\",\"opaque\":{\"driver\":"      \
    "\"gpu.nvidia.com\",\"parameters\":" params "}}]}}}}"

static void claims_parsed_and_checked(void **state)
{
    (void)state;
    struct dra_result *r;
    size_t n;
    struct gpulet_error err = {0};
    const char *ok = "{\"metadata\":{\"uid\":\"" UID "\"},\"status\":{\"allocation\":{\"devices\":"
                     "{\"results\":[{\"request\":\"gpu\",\"driver\":\"gpu.nvidia.com\","
                     "\"pool\":\"node1\",\"device\":\"gpu-1\"},{\"request\":\"nic\",\"driver\":"
                     "\"example.com\",\"pool\":\"x\",\"device\":\"eth0\"}]}}}}";
    assert_int_equal(parse(ok, &r, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(r[0].request, "gpu");
    assert_string_equal(r[0].device, "gpu-1");
    free(r);
    /* time-slicing, as NVIDIA's GpuConfig says it; another driver's config is not ours */
    const char *ts = CONFIG("{\"apiVersion\":\"resource.nvidia.com/v1beta1\",\"kind\":"
                            "\"GpuConfig\",\"sharing\":{\"strategy\":\"TimeSlicing\","
                            "\"timeSlicingConfig\":{\"interval\":\"Long\"}}}");
    assert_int_equal(parse(ts, &r, &n, &err), 0);
    assert_int_equal(n, 1);
    free(r);

    static const struct {
        const char *json, *says;
    } bad[] = {
        {"{not json", "JSON"},
        {"[1,2]", "not an object"},
        {"{}", "metadata.uid"},
        {"{\"metadata\":{\"uid\":\"other\"}}", "deleted and made again"},
        {"{\"metadata\":{\"uid\":\"" UID "\"}}", "not allocated"},
        {"{\"metadata\":{\"uid\":\"" UID "\"},\"status\":{\"allocation\":{\"devices\":"
         "{\"results\":{}}}}}", "not allocated"},
        {"{\"metadata\":{\"uid\":\"" UID "\"},\"status\":{\"allocation\":{\"devices\":"
         "{\"results\":[{\"driver\":1}]}}}}", "lacks"},
        {"{\"metadata\":{\"uid\":\"" UID "\"},\"status\":{\"allocation\":{\"devices\":"
         "{\"results\":[{\"request\":\"a\",\"driver\":\"gpu.nvidia.com\",\"pool\":\"node2\","
         "\"device\":\"gpu-0\"}]}}}}", "another node"},
        {"{\"metadata\":{\"uid\":\"" UID "\",\"uid\":\"x\"}}", "JSON"}, /* duplicate keys */
        {CONFIG("{\"apiVersion\":\"resource.nvidia.com/v1beta1\",\"kind\":\"GpuConfig\","
                "\"sharing\":{\"strategy\":\"Magic\"}}"), "TimeSlicing, MPS"},
        {CONFIG("{\"apiVersion\":\"resource.nvidia.com/v1beta1\",\"kind\":\"GpuConfig\","
                "\"sharing\":{\"strategy\":\"TimeSlicing\",\"timeSlicingConfig\":"
                "{\"interval\":7}}}"), "interval"},
        {CONFIG("{\"apiVersion\":\"v1\",\"kind\":\"GpuConfig\"}"), "apiVersion"},
        {CONFIG("{\"apiVersion\":\"resource.nvidia.com/v1beta1\",\"kind\":\"Other\"}"),
         "not one gpulet knows"},
        {CONFIG("[]"), "must be an object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gpulet_error_clear(&err);
        assert_int_equal(parse(bad[i].json, &r, &n, &err), -1);
        if (strstr(err.msg, bad[i].says) == NULL)
            fail_msg("case %zu: \"%s\" does not say %s", i, err.msg, bad[i].says);
    }
    /* more devices than a claim may have */
    size_t room = 200 * 120 + 200;
    char *many = malloc(room);
    size_t o = (size_t)snprintf(many, room, "{\"metadata\":{\"uid\":\"" UID "\"},\"status\":"
                                "{\"allocation\":{\"devices\":{\"results\":[");
    for (int i = 0; i < 200; i++)
        o += (size_t)snprintf(many + o, room - o, "%s{\"request\":\"r\",\"driver\":"
                              "\"gpu.nvidia.com\",\"pool\":\"node1\",\"device\":\"gpu-%d\"}",
                              i ? "," : "", i);
    snprintf(many + o, room - o, "]}}}}");
    assert_int_equal(parse(many, &r, &n, &err), -1);
    assert_non_null(strstr(err.msg, "more than"));
    free(many);
    assert_true(dra_uid_valid(UID));
    assert_false(dra_uid_valid(""));
    assert_false(dra_uid_valid("../etc"));
    assert_false(dra_uid_valid("ABC"));
    char cdi[160];
    dra_cdi_id(UID, "gpu-0", cdi, sizeof cdi);
    assert_string_equal(cdi, "k8s.gpu.nvidia.com/claim=" UID "-gpu-0");
}

/* dra.deviceTaints: an unhealthy device's taint, as NVIDIA's driver keys
 * them, in the slice's device object; none once healthy. */
static void unhealthy_device_tainted(void **state)
{
    (void)state;
    size_t n;
    struct dra_device *devs = devices_of("dgx-a100", NULL, &n);
    struct dra_device *dev = (struct dra_device *)dra_device_find(devs, n, "gpu-3");
    time_t when = 1796680800; /* 2026-12-07T22:00:00Z */
    dra_device_taint(dev, "XID 79", when);
    json_t *d = dra_device_json(inv, dev, "/nonexistent");
    json_t *taints = json_object_get(d, "taints");
    assert_int_equal(json_array_size(taints), 1);
    json_t *t = json_array_get(taints, 0);
    assert_string_equal(json_string_value(json_object_get(t, "key")), "gpu.nvidia.com/xid");
    assert_string_equal(json_string_value(json_object_get(t, "value")), "79");
    assert_string_equal(json_string_value(json_object_get(t, "effect")), "NoSchedule");
    assert_string_equal(json_string_value(json_object_get(t, "timeAdded")),
                        "2026-12-07T22:00:00Z");
    assert_int_equal(json_object_size(t), 4);
    json_t *list = json_pack("[O]", d); /* borrowed by dra_slices_json */
    json_t *slices = dra_slices_json("node1", NULL, 1, list, "h");
    assert_true(dra_slice_has(json_array_get(slices, 0), "taints"));
    json_decref(slices);
    json_decref(list);
    json_decref(d);

    dra_device_taint(dev, "GPU is lost (fell off the bus)", when);
    d = dra_device_json(inv, dev, "/nonexistent");
    t = json_array_get(json_object_get(d, "taints"), 0);
    assert_string_equal(json_string_value(json_object_get(t, "key")), "gpu.nvidia.com/gpu-lost");
    assert_null(json_object_get(t, "value")); /* no empty label value */
    json_decref(d);
    /* anything else, a trailing word after an XID included */
    const char *others[] = {"", "XID 79 and more", "ECC", "XID x"};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        dra_device_taint(dev, others[i], when);
        assert_string_equal(dev->taint_key, "gpu.nvidia.com/unhealthy");
        assert_string_equal(dev->taint_value, "");
    }
    /* an XID past any label value's length stays within one */
    dra_device_taint(dev, "XID 18446744073709551615", when);
    assert_string_equal(dev->taint_value, "18446744073709551615");

    dra_device_taint(dev, NULL, when);
    d = dra_device_json(inv, dev, "/nonexistent");
    assert_null(json_object_get(d, "taints"));
    list = json_pack("[O]", d);
    slices = dra_slices_json("node1", NULL, 1, list, "h");
    assert_false(dra_slice_has(json_array_get(slices, 0), "taints"));
    json_decref(slices);
    json_decref(list);
    json_decref(d);
    free(devs);
}

static const char *no_env(const char *name)
{
    (void)name;
    return NULL;
}

/* dra.slices: a GPU claims share, each consuming whole GiB of its memory. */
static void shared_gpu_consumable_memory(void **state)
{
    (void)state;
    char path[64] = "/tmp/gpulet-dra-cfg-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    const char *text = "version: v1\ndra:\n  enabled: true\n  slices: [1]\n";
    struct gpulet_error err = {0};
    assert_int_equal(fileio_replace(path, text, strlen(text), 0, &err), 0);
    struct config cfg;
    struct config_flags flags = {.config_file = path};
    assert_int_equal(config_load(&flags, no_env, &cfg, &err), 0);
    unlink(path);
    size_t n;
    struct dra_device *devs = devices_of("dgx-a100", &cfg, &n);
    const struct dra_device *shared = dra_device_find(devs, n, "gpu-1");
    const struct dra_device *whole = dra_device_find(devs, n, "gpu-0");
    assert_true(shared->shared);
    assert_false(whole->shared);
    json_t *d = dra_device_json(inv, shared, "/nonexistent");
    assert_true(json_is_true(json_object_get(d, "allowMultipleAllocations")));
    json_t *mem = json_object_get(json_object_get(d, "capacity"), "memory");
    assert_string_equal(json_string_value(json_object_get(mem, "value")), "80Gi");
    json_t *policy = json_object_get(mem, "requestPolicy");
    assert_string_equal(json_string_value(json_object_get(policy, "default")), "1Gi");
    json_t *range = json_object_get(policy, "validRange");
    assert_string_equal(json_string_value(json_object_get(range, "min")), "1Gi");
    assert_string_equal(json_string_value(json_object_get(range, "max")), "80Gi");
    assert_string_equal(json_string_value(json_object_get(range, "step")), "1Gi");
    json_decref(d);
    d = dra_device_json(inv, whole, "/nonexistent");
    assert_null(json_object_get(d, "allowMultipleAllocations"));
    assert_null(json_object_get(json_object_get(json_object_get(d, "capacity"), "memory"),
                                "requestPolicy"));
    json_decref(d);
    free(devs);

    /* What the scheduler records: the memory the claim consumes. */
#define CONSUMED(q)                                                                           \
    "{\"metadata\":{\"uid\":\"" UID "\"},\"status\":{\"allocation\":{\"devices\":"           \
    "{\"results\":[{\"request\":\"g\",\"driver\":\"gpu.nvidia.com\",\"pool\":\"node1\","       \
    "\"device\":\"gpu-1\",\"shareID\":\"" UID "\",\"consumedCapacity\":{\"memory\":" q "}}]}}}}"
    struct dra_result *r;
    assert_int_equal(parse(CONSUMED("\"10Gi\""), &r, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_true(r[0].memory == 10ULL << 30);
    free(r);
    assert_int_equal(parse(CONSUMED("\"10737418240\""), &r, &n, &err), 0);
    assert_true(r[0].memory == 10ULL << 30);
    free(r);
    static const char *const hostile[] = {CONSUMED("10"), CONSUMED("\"-1Gi\""),
                                          CONSUMED("\"0\""), CONSUMED("\"1.5Gi\""),
                                          CONSUMED("\"99999999999999999999Gi\""),
                                          CONSUMED("\"10Gix\"")};
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        struct gpulet_error e = {0};
        assert_int_equal(parse(hostile[i], &r, &n, &e), -1);
        assert_non_null(strstr(e.msg, "consumedCapacity"));
    }
#undef CONSUMED
}

static void checkpoint_round_trip(void **state)
{
    (void)state;
    char dir[64], path[128];
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/cp.json", dir);
    struct dra_claim *claims;
    size_t n;
    struct gpulet_error err = {0};
    assert_int_equal(dra_checkpoint_read(path, &claims, &n, &err), 0); /* none yet */
    assert_int_equal(n, 0);
    free(claims);
    struct dra_result results[2] = {{"a", "gpu-0", 10ULL << 30, true, 2, false},
                                    {"b", "gpu-1-mig-1g5gb-19-0", 0, false, 0, true}};
    struct dra_claim one = {.uid = UID, .namespace = "ns", .name = "c", .count = 2,
                            .results = results, .alloc = "0123abcd"};
    assert_int_equal(dra_checkpoint_write(path, &one, 1, &err), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(dra_checkpoint_read(path, &claims, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(claims[0].uid, UID);
    assert_string_equal(claims[0].name, "c");
    assert_int_equal(claims[0].count, 2);
    assert_string_equal(claims[0].results[1].device, "gpu-1-mig-1g5gb-19-0");
    assert_true(claims[0].results[0].memory == 10ULL << 30);
    assert_true(claims[0].results[1].memory == 0);
    assert_string_equal(claims[0].alloc, "0123abcd");
    assert_true(claims[0].results[0].timeslice);
    assert_int_equal(claims[0].results[0].interval, 2);
    assert_false(claims[0].results[0].mps);
    assert_false(claims[0].results[1].timeslice);
    assert_true(claims[0].results[1].mps);
    assert_false(claims[0].mps.on);
    dra_claims_free(claims, n);
    /* a claim's MPS settings */
    one.mps = (struct dra_mps){.on = true, .thread_percentage = 40, .pinned = 1ULL << 30,
                               .n_limits = 1};
    snprintf(one.mps.limits[0].device, sizeof one.mps.limits[0].device, "1");
    one.mps.limits[0].bytes = 2ULL << 30;
    assert_int_equal(dra_checkpoint_write(path, &one, 1, &err), 0);
    assert_int_equal(dra_checkpoint_read(path, &claims, &n, &err), 0);
    assert_true(claims[0].mps.on);
    assert_int_equal(claims[0].mps.thread_percentage, 40);
    assert_true(claims[0].mps.pinned == 1ULL << 30);
    assert_int_equal(claims[0].mps.n_limits, 1);
    assert_string_equal(claims[0].mps.limits[0].device, "1");
    assert_true(claims[0].mps.limits[0].bytes == 2ULL << 30);
    dra_claims_free(claims, n);
    static const char *const broken[] = {
        "{\"version\":1,\"claims\":[{\"uid\":\"" UID "\",\"namespace\":\"a\",\"name\":\"b\","
        "\"alloc\":\"../../etc\",\"devices\":[]}]}",
        "{\"version\":1,\"claims\":[{\"uid\":\"" UID "\",\"namespace\":\"a\",\"name\":\"b\","
        "\"devices\":[{\"request\":\"a\",\"device\":\"gpu-0\",\"memory\":-1}]}]}",
        "garbage", "{\"version\":2,\"claims\":[]}", "{\"version\":1,\"claims\":[{\"uid\":1}]}",
        "{\"version\":1,\"claims\":[{\"uid\":\"../x\",\"namespace\":\"a\",\"name\":\"b\","
        "\"devices\":[]}]}",
        "{\"version\":1,\"claims\":[{\"uid\":\"" UID "\",\"namespace\":\"a\",\"name\":\"b\","
        "\"devices\":[{\"request\":\"a\",\"device\":\"gpu-0\",\"timeslice\":9}]}]}",
        "{\"version\":1,\"claims\":[{\"uid\":\"" UID "\",\"namespace\":\"a\",\"name\":\"b\","
        "\"mps\":{\"threads\":101},\"devices\":[]}]}"};
    for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
        struct gpulet_error e = {0};
        assert_int_equal(fileio_replace(path, broken[i], strlen(broken[i]), 0, &e), 0);
        assert_int_equal(dra_checkpoint_read(path, &claims, &n, &e), -1);
        assert_non_null(strstr(e.msg, "move"));
    }
    /* gpulet records a claim once: the same UID twice (a hand edit, two
     * files pasted together) is refused, naming the file and the UID,
     * rather than one entry silently winning and the other's slice folder
     * being pruned, or the claim prepared twice. */
    static const char twice[] =
        "{\"version\":1,\"claims\":[{\"uid\":\"" UID "\",\"namespace\":\"a\",\"name\":\"b\","
        "\"devices\":[{\"request\":\"r\",\"device\":\"gpu-0\"}]},"
        "{\"uid\":\"4a1e0b5c-0000-4c6b-9d3b-1b2a3c4d5e6f\",\"namespace\":\"a\",\"name\":\"c\","
        "\"devices\":[]},"
        "{\"uid\":\"" UID "\",\"namespace\":\"a\",\"name\":\"b\","
        "\"devices\":[{\"request\":\"r\",\"device\":\"gpu-1\"}]}]}";
    assert_int_equal(fileio_replace(path, twice, strlen(twice), 0, &err), 0);
    claims = NULL;
    assert_int_equal(dra_checkpoint_read(path, &claims, &n, &err), -1);
    assert_null(claims);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, UID));
    assert_non_null(strstr(err.msg, "twice"));
    unlink(path);
    /* A FIFO in its place is refused at once, not waited on. */
    assert_int_equal(mkfifo(path, 0600), 0);
    gpulet_error_clear(&err);
    assert_int_equal(dra_checkpoint_read(path, &claims, &n, &err), -1);
    assert_non_null(strstr(err.msg, "not a regular file"));
    unlink(path);
    /* A link in its place is replaced, its target left alone. */
    char target[160];
    snprintf(target, sizeof target, "%s/target", dir);
    write_file(target, "not the checkpoint");
    assert_int_equal(symlink(target, path), 0);
    assert_int_equal(dra_checkpoint_write(path, &one, 1, &err), 0);
    struct stat lst;
    assert_int_equal(lstat(path, &lst), 0);
    assert_true(S_ISREG(lst.st_mode));
    char *text;
    size_t len;
    assert_int_equal(fileio_read(target, 1024, &text, &len, &err), 0);
    assert_string_equal(text, "not the checkpoint");
    free(text);
    unlink(target);
    unlink(path);
    rmdir(dir);
}

static void base64_and_backoff(void **state)
{
    (void)state;
    char *out;
    size_t len;
    assert_int_equal(kube_base64_decode("aGVsbG8=", &out, &len), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(out, "hello", 5);
    free(out);
    assert_int_equal(kube_base64_decode("aGVs\nbG8h", &out, &len), 0);
    assert_string_equal(out, "hello!");
    free(out);
    assert_int_equal(kube_base64_decode("a*b", &out, &len), -1);
    assert_int_equal(kube_base64_decode("aGVsbG8=x", &out, &len), -1);
    for (unsigned a = 0; a < 20; a++) {
        long ms = kube_backoff_ms(a, 500, 30000);
        long full = a >= 6 ? 30000 : 500L << a;
        assert_true(ms >= full / 2 && ms <= full);
    }
}

static void kubeconfigs(void **state)
{
    (void)state;
    char dir[64], path[128], ca[128];
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/config", dir);
    snprintf(ca, sizeof ca, "%s/ca.crt", dir);
    struct gpulet_error err = {0};
    assert_int_equal(fileio_replace(ca, "CA PEM\n", 7, 0, &err), 0);
    const char *text = "apiVersion: v1\nkind: Config\ncurrent-context: b\n"
                       "contexts:\n- name: a\n  context: {cluster: x, user: x}\n"
                       "- name: b\n  context: {cluster: c, user: u}\n"
                       "clusters:\n- name: c\n  cluster:\n    server: https://10.0.0.1:6443/\n"
                       "    certificate-authority: ca.crt\n"
                       "users:\n- name: u\n  user:\n    token: secret\n"
                       "    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZ\n";
    assert_int_equal(fileio_replace(path, text, strlen(text), 0, &err), 0);
    struct kube_config cfg;
    assert_int_equal(kube_config_load(path, &cfg, &err), 0);
    assert_string_equal(cfg.server, "https://10.0.0.1:6443");
    assert_string_equal(cfg.ca, "CA PEM\n"); /* relative to the kubeconfig */
    assert_string_equal(cfg.cert, "CERT");
    assert_string_equal(cfg.key, "KEY");
    assert_string_equal(cfg.token, "secret");
    kube_config_clear(&cfg);
    static const struct {
        const char *text, *says;
    } bad[] = {
        {"kind: Config\n", "current-context"},
        {"current-context: x\ncontexts: []\n", "no cluster"},
        {"current-context: b\ncontexts:\n- name: b\n  context: {cluster: c}\nclusters:\n"
         "- name: c\n  cluster: {server: 'http://x'}\n", "https://"},
        {"current-context: b\ncontexts:\n- name: b\n  context: {cluster: c, user: u}\n"
         "clusters:\n- name: c\n  cluster: {server: 'https://x'}\nusers:\n- name: u\n"
         "  user: {client-certificate-data: '%%%'}\n", "base64"},
        {"current-context: b\ncontexts:\n- name: b\n  context: {cluster: c, user: u}\n"
         "clusters:\n- name: c\n  cluster: {server: 'https://x'}\nusers:\n- name: u\n"
         "  user: {client-certificate-data: Q0VSVA==}\n", "without a key"},
        {"current-context: b\ncontexts:\n- name: b\n  context: {cluster: c}\nclusters:\n"
         "- name: c\n  cluster: {server: 'https://x', certificate-authority: /nonexistent}\n",
         "certificate-authority"},
        /* a token that would add a header to every request */
        {"current-context: b\ncontexts:\n- name: b\n  context: {cluster: c, user: u}\n"
         "clusters:\n- name: c\n  cluster: {server: 'https://x'}\nusers:\n- name: u\n"
         "  user: {token: \"abc\\r\\nX-Forged: 1\"}\n", "control characters"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gpulet_error_clear(&err);
        assert_int_equal(fileio_replace(path, bad[i].text, strlen(bad[i].text), 0, &err), 0);
        assert_int_equal(kube_config_load(path, &cfg, &err), -1);
        if (strstr(err.msg, bad[i].says) == NULL)
            fail_msg("case %zu: \"%s\" does not say %s", i, err.msg, bad[i].says);
    }
    /* in-cluster: service host and port, the account's CA and token file */
    setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
    setenv("KUBERNETES_SERVICE_PORT", "443", 1);
    char sa[256];
    snprintf(sa, sizeof sa, "%s/var/run/secrets/kubernetes.io/serviceaccount", dir);
    assert_int_equal(fileio_mkdirs(sa, 0755, 0755, &err), 0);
    char f[300];
    snprintf(f, sizeof f, "%s/ca.crt", sa);
    assert_int_equal(fileio_replace(f, "X", 1, 0, &err), 0);
    assert_int_equal(kube_config_in_cluster(dir, &cfg, &err), 0);
    assert_string_equal(cfg.server, "https://[fd00::1]:443");
    assert_non_null(strstr(cfg.token_file, "/serviceaccount/token"));
    kube_config_clear(&cfg);
    unsetenv("KUBERNETES_SERVICE_HOST");
    assert_int_equal(kube_config_in_cluster(dir, &cfg, &err), -1);
    assert_non_null(strstr(err.msg, "KUBERNETES_SERVICE_HOST"));
    remove_tree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(quantities),
        cmocka_unit_test_teardown(gpu_devices_as_nvidia_names_them, teardown),
        cmocka_unit_test_teardown(pcie_root_from_sysfs, teardown),
        cmocka_unit_test_teardown(mig_devices_replace_their_gpu, teardown),
        cmocka_unit_test(slices_cut_at_128),
        cmocka_unit_test(claims_parsed_and_checked),
        cmocka_unit_test_teardown(shared_gpu_consumable_memory, teardown),
        cmocka_unit_test_teardown(unhealthy_device_tainted, teardown),
        cmocka_unit_test(checkpoint_round_trip),
        cmocka_unit_test(base64_and_backoff),
        cmocka_unit_test(kubeconfigs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
