/* The simulated NVML itself: moving values, the state file, events, GPM,
 * processes and field values, seen through src/nvml/ as gpulet sees them. */
#include "helpers.h"

#include <dlfcn.h>
#include <time.h>

static char dir[64], state_path[128];

static int setup(void **state)
{
    (void)state;
    temp_dir(dir, sizeof dir);
    snprintf(state_path, sizeof state_path, "%s/state.yaml", dir);
    write_file(state_path, "frozen_seconds: 10\n");
    setenv("GPULET_SIM_STATE", state_path, 1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unsetenv("GPULET_SIM_STATE");
    unlink(state_path);
    rmdir(dir);
    return 0;
}

static struct nvml_device gpu(struct nvml *n, unsigned int index)
{
    struct nvml_device d;
    struct gpulet_error err = {0};
    if (nvml_device_by_index(n, index, &d, &err) < 0)
        fail_msg("%s", err.msg);
    return d;
}

static void values_are_deterministic_in_simulated_time(void **state)
{
    (void)state;
    write_file(state_path, "frozen_seconds: 10\n");
    struct nvml *n = open_sim("dgx-a100", SIM_LIB_CURRENT);
    struct nvml_device d = gpu(n, 0);
    struct gpulet_error err = {0};
    nvmlUtilization_t u1, u2;
    unsigned int t1, t2, p1;
    unsigned long long e1, e2;
    assert_int_equal(nvml_device_utilization(n, &d, &u1, &err), 0);
    assert_int_equal(nvml_device_utilization(n, &d, &u2, &err), 0);
    assert_int_equal(u1.gpu, u2.gpu);
    assert_in_range(u1.gpu, 70, 100); /* GPU 0 of the fixture is busy, around 85 % */
    assert_int_equal(nvml_device_temperature(n, &d, &t1, &err), 0);
    assert_int_equal(nvml_device_power_usage(n, &d, &p1, &err), 0);
    assert_in_range(p1, 62000, 400000);
    assert_int_equal(nvml_device_energy(n, &d, &e1, &err), 0);

    /* Later in simulated time: values move, energy only grows. */
    write_file(state_path, "frozen_seconds: 25\n");
    assert_int_equal(nvml_device_utilization(n, &d, &u2, &err), 0);
    assert_int_equal(nvml_device_temperature(n, &d, &t2, &err), 0);
    assert_int_equal(nvml_device_energy(n, &d, &e2, &err), 0);
    assert_true(u1.gpu != u2.gpu);
    assert_true(e2 > e1);

    /* An idle GPU stays idle. */
    struct nvml_device idle = gpu(n, 7);
    assert_int_equal(nvml_device_utilization(n, &idle, &u1, &err), 0);
    assert_int_equal(u1.gpu, 0);
    nvml_close(n);
}

static void state_file_overrides_values(void **state)
{
    (void)state;
    write_file(state_path, "gpus:\n  1: {temperature_c: 91, utilization_pct: 100, pcie_replays: 7, "
                           "remapped_uncorrectable: 2, encoder_pct: 33}\n");
    struct nvml *n = open_sim("dgx-a100", SIM_LIB_CURRENT);
    struct nvml_device d = gpu(n, 1);
    struct gpulet_error err = {0};
    unsigned int t, replays, enc, corr, unc, pending, failed;
    nvmlUtilization_t u;
    assert_int_equal(nvml_device_temperature(n, &d, &t, &err), 0);
    assert_int_equal(t, 91);
    assert_int_equal(nvml_device_utilization(n, &d, &u, &err), 0);
    assert_int_equal(u.gpu, 100);
    assert_int_equal(nvml_device_pcie_replays(n, &d, &replays, &err), 0);
    assert_int_equal(replays, 7);
    assert_int_equal(nvml_device_encoder_utilization(n, &d, &enc, &err), 0);
    assert_int_equal(enc, 33);
    assert_int_equal(nvml_device_remapped_rows(n, &d, &corr, &unc, &pending, &failed, &err), 0);
    assert_int_equal(unc, 2);
    assert_int_equal(corr, 0);

    /* A broken state file is ignored; the last good state stays. */
    write_file(state_path, "gpus:\n  1: {temperature_c: hot}\n");
    assert_int_equal(nvml_device_temperature(n, &d, &t, &err), 0);
    assert_int_equal(t, 91);
    write_file(state_path, "gpus:\n  1: {temperature_c: 45}\n");
    assert_int_equal(nvml_device_temperature(n, &d, &t, &err), 0);
    assert_int_equal(t, 45);
    nvml_close(n);
}

static void xid_events_reach_registered_sets(void **state)
{
    (void)state;
    write_file(state_path, "events: []\n");
    struct nvml *n = open_sim("dgx-a100", SIM_LIB_CURRENT);
    struct gpulet_error err = {0};
    nvmlEventSet_t set;
    assert_int_equal(nvml_event_set_create(n, &set, &err), 0);
    struct nvml_device d0 = gpu(n, 0);
    unsigned long long types;
    assert_int_equal(nvml_device_supported_events(n, &d0, &types, &err), 0);
    assert_true(types & nvmlEventTypeXidCriticalError);
    assert_int_equal(nvml_device_register_events(n, &d0, nvmlEventTypeXidCriticalError, set, &err), 0);

    nvmlEventData_t ev;
    assert_int_equal(nvml_event_wait(n, set, &ev, 0, &err), -1);
    assert_int_equal(err.nvml, NVML_ERROR_TIMEOUT);

    /* GPU 5 is not registered: its event is skipped; GPU 0's arrives. */
    write_file(state_path, "events:\n  - {gpu: 5, xid: 48}\n  - {gpu: 0, xid: 79}\n");
    assert_int_equal(nvml_event_wait(n, set, &ev, 1000, &err), 0);
    assert_int_equal(ev.eventType, nvmlEventTypeXidCriticalError);
    assert_int_equal(ev.eventData, 79);
    assert_ptr_equal(ev.device, d0.handle);
    assert_int_equal(ev.gpuInstanceId, NVML_INSTANCE_ID_NONE);
    assert_int_equal(nvml_event_wait(n, set, &ev, 0, &err), -1);
    assert_int_equal(err.nvml, NVML_ERROR_TIMEOUT);
    nvml_event_set_free(n, set);
    nvml_close(n);
}

static void mig_event_carries_instance_ids(void **state)
{
    (void)state;
    write_file(state_path, "events: []\n");
    struct nvml *n = open_sim("a100-mig", SIM_LIB_CURRENT);
    struct gpulet_error err = {0};
    nvmlEventSet_t set;
    assert_int_equal(nvml_event_set_create(n, &set, &err), 0);
    struct nvml_device d1 = gpu(n, 1);
    assert_int_equal(nvml_device_register_events(n, &d1, nvmlEventTypeXidCriticalError, set, &err), 0);
    write_file(state_path, "events:\n  - {gpu: 1, xid: 31, gpu_instance_id: 3, compute_instance_id: 0}\n");
    nvmlEventData_t ev;
    assert_int_equal(nvml_event_wait(n, set, &ev, 1000, &err), 0);
    assert_int_equal(ev.gpuInstanceId, 3);
    assert_int_equal(ev.computeInstanceId, 0);
    nvml_event_set_free(n, set);
    nvml_close(n);
}

static void gpm_only_on_hopper(void **state)
{
    (void)state;
    write_file(state_path, "frozen_seconds: 10\n");
    struct nvml *n = open_sim("h100-sxm", SIM_LIB_CURRENT);
    struct nvml_device d = gpu(n, 0);
    struct gpulet_error err = {0};
    bool supported;
    assert_int_equal(nvml_device_gpm_supported(n, &d, &supported, &err), 0);
    assert_true(supported);
    nvmlGpmSample_t s1, s2;
    assert_int_equal(nvml_gpm_sample_alloc(n, &s1, &err), 0);
    assert_int_equal(nvml_gpm_sample_alloc(n, &s2, &err), 0);
    assert_int_equal(nvml_device_gpm_sample(n, &d, s1, &err), 0);
    assert_int_equal(nvml_device_gpm_sample(n, &d, s2, &err), 0);
    static nvmlGpmMetricsGet_t m;
    memset(&m, 0, sizeof m);
    m.numMetrics = 2;
    m.sample1 = s1;
    m.sample2 = s2;
    m.metrics[0].metricId = NVML_GPM_METRIC_SM_UTIL;
    m.metrics[1].metricId = 99;
    assert_int_equal(nvml_gpm_metrics(n, &d, &m, &err), 0);
    assert_int_equal(m.metrics[0].nvmlReturn, NVML_SUCCESS);
    assert_true(m.metrics[0].value > 50.0);
    assert_int_equal(m.metrics[1].nvmlReturn, NVML_ERROR_NOT_SUPPORTED);
    nvml_gpm_sample_free(n, s1);
    nvml_gpm_sample_free(n, s2);
    nvml_close(n);

    n = open_sim("dgx-a100", SIM_LIB_CURRENT);
    d = gpu(n, 0);
    assert_int_equal(nvml_device_gpm_supported(n, &d, &supported, &err), 0);
    assert_false(supported);
    nvml_close(n);
}

/* Activity of one MIG GPU instance: samples of one instance go together,
 * an unknown instance is NOT_FOUND, a GPU without GPM NOT_SUPPORTED. */
static void gpm_per_mig_instance(void **state)
{
    (void)state;
    write_file(state_path, "frozen_seconds: 10\n");
    struct nvml *n = open_sim("h100-mig", SIM_LIB_CURRENT);
    struct nvml_device d = gpu(n, 0);
    struct gpulet_error err = {0};
    nvmlGpmSample_t s1, s2, whole;
    assert_int_equal(nvml_gpm_sample_alloc(n, &s1, &err), 0);
    assert_int_equal(nvml_gpm_sample_alloc(n, &s2, &err), 0);
    assert_int_equal(nvml_gpm_sample_alloc(n, &whole, &err), 0);
    assert_int_equal(nvml_device_gpm_mig_sample(n, &d, 2, s1, &err), 0);
    assert_int_equal(nvml_device_gpm_mig_sample(n, &d, 2, s2, &err), 0);
    assert_int_equal(nvml_device_gpm_sample(n, &d, whole, &err), 0);
    static nvmlGpmMetricsGet_t m;
    memset(&m, 0, sizeof m);
    m.numMetrics = 1;
    m.sample1 = s1;
    m.sample2 = s2;
    m.metrics[0].metricId = NVML_GPM_METRIC_SM_UTIL;
    assert_int_equal(nvml_gpm_metrics(n, &d, &m, &err), 0);
    double instance = m.metrics[0].value;
    assert_true(instance > 0 && instance < 100);
    m.sample1 = whole; /* the GPU and one of its instances do not make a rate */
    assert_int_equal(nvml_gpm_metrics(n, &d, &m, &err), -1);
    assert_int_equal(err.nvml, NVML_ERROR_INVALID_ARGUMENT);
    assert_int_equal(nvml_device_gpm_mig_sample(n, &d, 5, s1, &err), -1);
    assert_int_equal(err.nvml, NVML_ERROR_NOT_FOUND);
    nvml_gpm_sample_free(n, s1);
    nvml_gpm_sample_free(n, s2);
    nvml_gpm_sample_free(n, whole);
    nvml_close(n);

    n = open_sim("a100-mig", SIM_LIB_CURRENT);
    d = gpu(n, 0);
    assert_int_equal(nvml_gpm_sample_alloc(n, &s1, &err), 0);
    assert_int_equal(nvml_device_gpm_mig_sample(n, &d, 7, s1, &err), -1);
    assert_true(nvml_unsupported(&err));
    nvml_gpm_sample_free(n, s1);
    nvml_close(n);
}

/* Fabric state, supported reasons and VBIOS, through the newest call and
 * through the old driver's. */
static void fabric_reasons_and_vbios(void **state)
{
    (void)state;
    const char *const libs[] = {SIM_LIB_CURRENT, SIM_LIB_OLD};
    for (size_t k = 0; k < 2; k++) {
        struct nvml *n = open_sim("h100-sxm", libs[k]);
        struct nvml_device d = gpu(n, 7);
        struct gpulet_error err = {0};
        /* A single HGX H100 board, as a real one answers: registered,
         * clique 0 of the all-zero cluster (no multi-node NVLink domain). */
        struct nvml_fabric fabric;
        memset(&fabric, 0xFF, sizeof fabric);
        assert_int_equal(nvml_device_fabric(n, &d, &fabric, &err), 0);
        assert_int_equal(fabric.state, NVML_GPU_FABRIC_STATE_COMPLETED);
        assert_int_equal(fabric.status, NVML_SUCCESS);
        assert_int_equal(fabric.clique_id, 0);
        static const unsigned char zero[16];
        assert_memory_equal(fabric.cluster_uuid, zero, sizeof zero);
        unsigned long long reasons = 0;
        assert_int_equal(nvml_device_supported_clock_event_reasons(n, &d, &reasons, &err), 0);
        assert_int_equal(reasons, 0x1FF);
        char vbios[NVML_DEVICE_VBIOS_VERSION_BUFFER_SIZE];
        assert_int_equal(nvml_device_vbios_version(n, &d, vbios, sizeof vbios, &err), 0);
        assert_string_equal(vbios, "96.00.89.00.01");
        assert_int_equal(nvml_device_vbios_version(n, &d, vbios, 4, &err), -1);
        assert_int_equal(err.nvml, NVML_ERROR_INSUFFICIENT_SIZE);
        nvml_close(n);
    }
    /* NVSwitches without Hopper, Hopper without NVSwitches: no fabric */
    const char *const nodes[] = {"dgx-a100", "h100-mig"};
    for (size_t k = 0; k < 2; k++) {
        struct nvml *n = open_sim(nodes[k], SIM_LIB_CURRENT);
        struct nvml_device d = gpu(n, 0);
        struct gpulet_error err = {0};
        struct nvml_fabric fabric;
        assert_int_equal(nvml_device_fabric(n, &d, &fabric, &err), -1);
        assert_true(nvml_unsupported(&err));
        nvml_close(n);
    }
}

static void processes_per_gpu_and_mig(void **state)
{
    (void)state;
    write_file(state_path, "gpus:\n  1:\n    processes:\n      - {pid: 100, used_mib: 2000, mig: 0}\n"
                           "      - {pid: 101, used_mib: 500, mig: 2}\n");
    struct nvml *n = open_sim("a100-mig", SIM_LIB_CURRENT);
    struct nvml_device d = gpu(n, 1), mig;
    struct gpulet_error err = {0};
    nvmlProcessInfo_t infos[4];
    unsigned int count = 1;
    assert_int_equal(nvml_device_compute_processes(n, &d, &count, infos, &err), -1);
    assert_int_equal(err.nvml, NVML_ERROR_INSUFFICIENT_SIZE);
    assert_int_equal(count, 2);
    count = 4;
    assert_int_equal(nvml_device_compute_processes(n, &d, &count, infos, &err), 0);
    assert_int_equal(count, 2);
    assert_int_equal(infos[1].pid, 101);
    assert_int_equal(infos[1].usedGpuMemory, 500ULL << 20);
    assert_int_equal(infos[1].gpuInstanceId, 9);
    assert_int_equal(nvml_device_mig_by_index(n, &d, 2, &mig, &err), 0);
    count = 4;
    assert_int_equal(nvml_device_compute_processes(n, &mig, &count, infos, &err), 0);
    assert_int_equal(count, 1);
    assert_int_equal(infos[0].pid, 101);
    struct nvml_memory mem;
    assert_int_equal(nvml_device_memory(n, &mig, &mem, &err), 0);
    assert_int_equal(mem.total, 4864ULL << 20);
    assert_int_equal(mem.used, 500ULL << 20);
    char name[96];
    assert_int_equal(nvml_device_name(n, &mig, name, sizeof name, &err), 0);
    assert_string_equal(name, "NVIDIA A100-SXM4-40GB MIG 1g.5gb");
    /* Utilisation is not reported per MIG device, as on real GPUs. */
    nvmlUtilization_t u;
    assert_int_equal(nvml_device_utilization(n, &mig, &u, &err), -1);
    assert_true(nvml_unsupported(&err));
    nvml_close(n);
}

typedef nvmlReturn_t (*list_fn)(nvmlDevice_t, unsigned int *, void *);
typedef nvmlReturn_t (*putil_fn)(nvmlDevice_t, nvmlProcessUtilizationSample_t *, unsigned int *,
                                 unsigned long long);

/* A symbol of the simulated library gpulet's loader already opened: the
 * calls gpulet itself does not make, as other tools (HAMi-core's watcher,
 * pynvml) make them. */
static void *sim_symbol(const char *name)
{
    void *h = dlopen(SIM_LIB_CURRENT, RTLD_NOW | RTLD_NOLOAD);
    assert_non_null(h);
    void *f = dlsym(h, name);
    dlclose(h);
    if (f == NULL)
        fail_msg("%s is not exported", name);
    return f;
}

static list_fn list_symbol(const char *name)
{
    void *sym = sim_symbol(name);
    list_fn f;
    memcpy(&f, &sym, sizeof f);
    return f;
}

static void process_lists_of_every_version(void **state)
{
    (void)state;
    write_file(state_path, "frozen_seconds: 10\ngpus:\n  0:\n    processes:\n"
                           "      - {pid: 200, used_mib: 1000}\n      - {pid: 201, used_mib: 3000}\n");
    struct nvml *n = open_sim("dgx-a100", SIM_LIB_CURRENT);
    nvmlDevice_t d = gpu(n, 0).handle;
    /* unversioned: the two-field v1 structure, 16 bytes apart */
    list_fn v1 = list_symbol("nvmlDeviceGetComputeRunningProcesses");
    nvmlProcessInfo_v1_t p1[3];
    unsigned int count = 0;
    assert_int_equal(v1(d, &count, NULL), NVML_ERROR_INSUFFICIENT_SIZE);
    assert_int_equal(count, 2);
    count = 3;
    assert_int_equal(v1(d, &count, p1), NVML_SUCCESS);
    assert_int_equal(count, 2);
    assert_int_equal(p1[1].pid, 201);
    assert_int_equal(p1[1].usedGpuMemory, 3000ULL << 20);
    /* v2 and v3: the four-field structure */
    const char *const versioned[] = {"nvmlDeviceGetComputeRunningProcesses_v2",
                                     "nvmlDeviceGetComputeRunningProcesses_v3"};
    for (size_t k = 0; k < 2; k++) {
        nvmlProcessInfo_t p[3];
        count = 3;
        assert_int_equal(list_symbol(versioned[k])(d, &count, p), NVML_SUCCESS);
        assert_int_equal(count, 2);
        assert_int_equal(p[0].pid, 200);
        assert_int_equal(p[0].gpuInstanceId, 0xFFFFFFFFU);
    }
    /* graphics and MPS clients: none on the simulated node */
    const char *const empty[] = {
        "nvmlDeviceGetGraphicsRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses_v2",
        "nvmlDeviceGetGraphicsRunningProcesses_v3", "nvmlDeviceGetMPSComputeRunningProcesses",
        "nvmlDeviceGetMPSComputeRunningProcesses_v2", "nvmlDeviceGetMPSComputeRunningProcesses_v3"};
    for (size_t k = 0; k < 6; k++) {
        nvmlProcessInfo_t p[2];
        count = 2;
        assert_int_equal(list_symbol(empty[k])(d, &count, p), NVML_SUCCESS);
        assert_int_equal(count, 0);
    }
    nvml_close(n);
}

static void process_utilization(void **state)
{
    (void)state;
    write_file(state_path, "frozen_seconds: 10\ngpus:\n  0:\n    processes:\n"
                           "      - {pid: 200, used_mib: 1000}\n      - {pid: 201, used_mib: 3000}\n");
    struct nvml *n = open_sim("dgx-a100", SIM_LIB_CURRENT);
    struct nvml_device d = gpu(n, 0);
    struct gpulet_error err = {0};
    nvmlUtilization_t u;
    assert_int_equal(nvml_device_utilization(n, &d, &u, &err), 0);
    void *sym = sim_symbol("nvmlDeviceGetProcessUtilization");
    putil_fn putil;
    memcpy(&putil, &sym, sizeof putil);
    nvmlProcessUtilizationSample_t s[4];
    unsigned int count = 0;
    assert_int_equal(putil(d.handle, NULL, &count, 0), NVML_ERROR_INSUFFICIENT_SIZE);
    assert_int_equal(count, 2);
    /* HAMi-core asks for the samples of the last second */
    unsigned long long now_us = (unsigned long long)time(NULL) * 1000000ULL;
    count = 4;
    assert_int_equal(putil(d.handle, s, &count, now_us - 1000000ULL), NVML_SUCCESS);
    assert_int_equal(count, 2);
    /* no simulated CUDA program: the state file's two share the GPU's load */
    assert_int_equal(s[0].pid, 200);
    assert_int_equal(s[1].pid, 201);
    assert_int_equal(s[0].smUtil, u.gpu / 2);
    assert_int_equal(s[1].smUtil, u.gpu / 2);
    assert_int_equal(s[0].memUtil, u.gpu / 2 * 6 / 10);
    assert_in_range(s[0].timeStamp, now_us - 1000000ULL, now_us + 5000000ULL);
    /* nothing newer than a time to come, nothing on an idle GPU */
    count = 4;
    assert_int_equal(putil(d.handle, s, &count, now_us + 60000000ULL), NVML_ERROR_NOT_FOUND);
    count = 4;
    assert_int_equal(putil(gpu(n, 7).handle, s, &count, 0), NVML_ERROR_NOT_FOUND);
    nvml_close(n);
}

static void field_values(void **state)
{
    (void)state;
    write_file(state_path, "frozen_seconds: 100\ngpus:\n  0: {remapped_failure: 1}\n");
    struct nvml *n = open_sim("dgx-a100", SIM_LIB_CURRENT);
    struct nvml_device d = gpu(n, 0);
    struct gpulet_error err = {0};
    nvmlFieldValue_t f[5] = {{0}};
    f[0].fieldId = NVML_FI_DEV_MEMORY_TEMP;
    f[1].fieldId = NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX;
    f[1].scopeId = 0xFFFFFFFFU;
    f[2].fieldId = NVML_FI_DEV_REMAPPED_FAILURE;
    f[3].fieldId = 9999;
    f[4].fieldId = NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION;
    assert_int_equal(nvml_device_field_values(n, &d, 5, f, &err), 0);
    assert_int_equal(f[0].nvmlReturn, NVML_SUCCESS);
    assert_int_equal(f[0].valueType, NVML_VALUE_TYPE_UNSIGNED_INT);
    assert_in_range(f[0].value.uiVal, 30, 110);
    assert_int_equal(f[1].nvmlReturn, NVML_SUCCESS);
    assert_true(f[1].value.ullVal > 0);
    assert_int_equal(f[2].value.uiVal, 1);
    assert_int_equal(f[3].nvmlReturn, NVML_ERROR_NOT_SUPPORTED);
    assert_int_equal(f[4].valueType, NVML_VALUE_TYPE_UNSIGNED_LONG_LONG);
    nvml_close(n);

    /* V100 has no row remapping; T4 has no NVLink. */
    n = open_sim("dgx1-v100", SIM_LIB_CURRENT);
    d = gpu(n, 0);
    unsigned int a, b, c, e;
    assert_int_equal(nvml_device_remapped_rows(n, &d, &a, &b, &c, &e, &err), -1);
    assert_true(nvml_unsupported(&err));
    nvml_close(n);
    n = open_sim("t4-pcie", SIM_LIB_CURRENT);
    d = gpu(n, 0);
    bool active;
    assert_int_equal(nvml_device_nvlink_active(n, &d, 0, &active, &err), -1);
    assert_true(nvml_unsupported(&err));
    nvml_close(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(values_are_deterministic_in_simulated_time),
        cmocka_unit_test(state_file_overrides_values),
        cmocka_unit_test(xid_events_reach_registered_sets),
        cmocka_unit_test(mig_event_carries_instance_ids),
        cmocka_unit_test(gpm_only_on_hopper),
        cmocka_unit_test(gpm_per_mig_instance),
        cmocka_unit_test(fabric_reasons_and_vbios),
        cmocka_unit_test(processes_per_gpu_and_mig),
        cmocka_unit_test(process_lists_of_every_version),
        cmocka_unit_test(process_utilization),
        cmocka_unit_test(field_values),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
