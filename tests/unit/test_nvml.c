#include "helpers.h"

#include <dlfcn.h>
#include <sys/stat.h>

static bool real_driver_present(void)
{
    void *dl = dlopen(NVML_LIBRARY_NAME, RTLD_NOW | RTLD_LOCAL);
    if (dl)
        dlclose(dl);
    return dl != NULL;
}

static void explicit_library_that_is_missing(void **state)
{
    (void)state;
    struct nvml_options opts = {.library_path = "/nonexistent/libnvidia-ml.so.1"};
    struct gpulet_error err = {0};
    struct nvml *n = NULL;
    assert_int_equal(nvml_open(&opts, &n, &err), -1);
    assert_null(n);
    assert_int_equal(err.kind, GPULET_ERR_NO_DRIVER);
    assert_contains(err.msg, "cannot load the NVML library given with --nvml-lib: "
                             "/nonexistent/libnvidia-ml.so.1");
}

static void no_driver_anywhere(void **state)
{
    (void)state;
    if (real_driver_present())
        skip();
    char root[64];
    temp_dir(root, sizeof root);
    struct nvml_options opts = {.driver_root = root};
    struct gpulet_error err = {0};
    struct nvml *n = NULL;
    assert_int_equal(nvml_open(&opts, &n, &err), -1);
    assert_int_equal(err.kind, GPULET_ERR_NO_DRIVER);
    char expect[256];
    snprintf(expect, sizeof expect, "looked in %s/usr/lib64, %s/usr/lib/x86_64-linux-gnu", root,
             root);
    assert_contains(err.msg, "NVIDIA driver library libnvidia-ml.so.1 not found");
    assert_contains(err.msg, expect);
    assert_contains(err.msg, "the dynamic loader's path");
    assert_contains(err.msg, "Is the NVIDIA driver installed? To try gpulet without a GPU: "
                             "gpulet --simulate dgx-a100 info");
    rmdir(root);
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb");
    FILE *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

static void found_under_driver_root(void **state)
{
    (void)state;
    char root[64], dir[256], lib[512];
    temp_dir(root, sizeof root);
    snprintf(dir, sizeof dir, "%s/usr", root);
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(dir, sizeof dir, "%s/usr/lib", root);
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(dir, sizeof dir, "%s/usr/lib/x86_64-linux-gnu", root);
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(lib, sizeof lib, "%s/libnvidia-ml.so.1", dir);
    copy_file(SIM_LIB_CURRENT, lib);

    use_node("t4-pcie");
    struct nvml_options opts = {.driver_root = root};
    struct gpulet_error err = {0};
    struct nvml *n = NULL;
    if (nvml_open(&opts, &n, &err) < 0)
        fail_msg("%s", err.msg);
    assert_string_equal(nvml_library(n), lib);
    assert_string_equal(nvml_simulated_node(n), "t4-pcie");
    nvml_close(n);

    /* A file that is there but is no library: say so, do not look further. */
    write_file(lib, "not an ELF file\n");
    assert_int_equal(nvml_open(&opts, &n, &err), -1);
    char expect[600];
    snprintf(expect, sizeof expect, "cannot load %s: ", lib);
    assert_contains(err.msg, expect);
    unlink(lib);
    rmdir(dir);
    snprintf(dir, sizeof dir, "%s/usr/lib", root);
    rmdir(dir);
    snprintf(dir, sizeof dir, "%s/usr", root);
    rmdir(dir);
    rmdir(root);
}

static void library_without_nvml_symbols(void **state)
{
    (void)state;
    struct nvml_options opts = {.library_path = "libm.so.6"};
    struct gpulet_error err = {0};
    struct nvml *n = NULL;
    assert_int_equal(nvml_open(&opts, &n, &err), -1);
    assert_contains(err.msg, "libm.so.6 is not a usable NVML library: it has no nvmlInit_v2");
}

static void simulator_needs_a_node(void **state)
{
    (void)state;
    unsetenv("GPULET_SIM_NODE");
    struct nvml_options opts = {.library_path = SIM_LIB_CURRENT};
    struct gpulet_error err = {0};
    struct nvml *n = NULL;
    assert_int_equal(nvml_open(&opts, &n, &err), -1);
    assert_contains(err.msg, "GPULET_SIM_NODE");
    assert_contains(err.msg, "--simulate");
}

static void simulated_driver_not_loaded(void **state)
{
    (void)state;
    char dir[64], path[128];
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/off.yaml", dir);
    write_file(path, "driver_loaded: false\ngpus: []\n");
    setenv("GPULET_SIM_NODE", path, 1);
    struct nvml_options opts = {.library_path = SIM_LIB_CURRENT};
    struct gpulet_error err = {0};
    struct nvml *n = NULL;
    assert_int_equal(nvml_open(&opts, &n, &err), -1);
    assert_int_equal(err.kind, GPULET_ERR_NO_DRIVER);
    assert_int_equal(err.nvml, NVML_ERROR_DRIVER_NOT_LOADED);
    assert_contains(err.msg, "nvmlInit_v2 failed");
    assert_contains(err.msg, "driver not loaded (NVML error 9)");
    assert_contains(err.msg, "modprobe nvidia");

    write_file(path, "gpus:\n  - {uuid: nope}\n");
    assert_int_equal(nvml_open(&opts, &n, &err), -1);
    char expect[256];
    snprintf(expect, sizeof expect, "cannot load the simulated node: %s line 2: ", path);
    assert_contains(err.msg, expect);
    unlink(path);
    rmdir(dir);
}

static void errors_name_call_gpu_and_remedy(void **state)
{
    (void)state;
    char dir[64], path[128];
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/state.yaml", dir);
    write_file(path, "gpus:\n  2: {lost: true}\n");
    setenv("GPULET_SIM_STATE", path, 1);
    struct nvml *n = open_sim("dgx-a100", SIM_LIB_CURRENT);
    struct nvml_device dev = {0};
    struct gpulet_error err = {0};
    assert_int_equal(nvml_device_by_index(n, 2, &dev, &err), -1);
    assert_true(nvml_gpu_lost(&err));
    assert_contains(err.msg, "nvmlDeviceGetHandleByIndex_v2 on GPU 2 failed: GPU is lost "
                             "(NVML error 15); the GPU has fallen off the bus");
    assert_contains(err.msg, "Xid 79");

    assert_int_equal(nvml_device_by_index(n, 1, &dev, &err), 0);
    unsigned int mode, pending;
    assert_int_equal(nvml_device_mig_mode(n, &dev, &mode, &pending, &err), 0);
    assert_int_equal(nvml_device_mig_by_index(n, &dev, 0, &dev, &err), -1);
    assert_int_equal(err.nvml, NVML_ERROR_NOT_FOUND);
    assert_contains(err.msg, "on GPU 1 MIG device 0 failed");

    /* The GPU comes back when the state file says so. */
    write_file(path, "gpus:\n  2: {lost: false}\n");
    assert_int_equal(nvml_device_by_index(n, 2, &dev, &err), 0);
    nvml_close(n);
    unsetenv("GPULET_SIM_STATE");
    unlink(path);
    rmdir(dir);
}

static void newest_symbols_and_versioned_memory(void **state)
{
    (void)state;
    struct nvml *n = open_sim("dgx-a100", SIM_LIB_CURRENT);
    struct nvml_device dev;
    struct gpulet_error err = {0};
    assert_int_equal(nvml_device_by_index(n, 0, &dev, &err), 0);
    struct nvml_memory mem;
    assert_int_equal(nvml_device_memory(n, &dev, &mem, &err), 0);
    assert_int_equal(mem.total, 81920ULL << 20);
    assert_int_equal(mem.reserved, 591ULL << 20);
    assert_int_equal(mem.used + mem.free + mem.reserved, mem.total);
    unsigned int numa;
    assert_int_equal(nvml_device_numa_node(n, &dev, &numa, &err), 0);
    assert_int_equal(numa, 0);
    bool gpm;
    assert_int_equal(nvml_device_gpm_supported(n, &dev, &gpm, &err), 0);
    assert_false(gpm);
    nvml_close(n);
}

static void old_driver_falls_back(void **state)
{
    (void)state;
    struct nvml *n = open_sim("dgx-a100", SIM_LIB_OLD);
    struct nvml_device dev;
    struct gpulet_error err = {0};
    unsigned int count;
    assert_int_equal(nvml_device_count(n, &count, &err), 0);
    assert_int_equal(count, 8);
    assert_int_equal(nvml_device_by_index(n, 3, &dev, &err), 0);
    /* the old call has no reserved figure and counts it as used */
    struct nvml_memory mem;
    assert_int_equal(nvml_device_memory(n, &dev, &mem, &err), 0);
    assert_int_equal(mem.total, 81920ULL << 20);
    assert_int_equal(mem.reserved, 0);
    assert_true(mem.used >= 591ULL << 20);
    nvmlPciInfo_t pci;
    assert_int_equal(nvml_device_pci(n, &dev, &pci, &err), 0);
    assert_string_equal(pci.busId, "00000000:4E:00.0");
    /* absent optional symbols answer NOT_SUPPORTED, naming the call */
    unsigned int numa;
    assert_int_equal(nvml_device_numa_node(n, &dev, &numa, &err), -1);
    assert_true(nvml_unsupported(&err));
    assert_contains(err.msg, "nvmlDeviceGetNumaNodeId on GPU 3 failed: not supported");
    bool gpm = true;
    assert_int_equal(nvml_device_gpm_supported(n, &dev, &gpm, &err), -1);
    assert_true(nvml_unsupported(&err));
    assert_false(gpm);
    unsigned long long reasons;
    assert_int_equal(nvml_device_clock_event_reasons(n, &dev, &reasons, &err), 0);
    nvml_close(n);
}

static void search_description_lists_order(void **state)
{
    (void)state;
    char buf[2048];
    struct nvml_options opts = {.library_path = "/x/lib.so"};
    nvml_describe_search(&opts, buf, sizeof buf);
    assert_string_equal(buf, "/x/lib.so");
    opts = (struct nvml_options){.driver_root = "/run/nvidia/driver"};
    nvml_describe_search(&opts, buf, sizeof buf);
    assert_contains(buf, "/run/nvidia/driver/usr/lib64, ");
    assert_contains(buf, "/run/nvidia/driver/usr/local/nvidia/lib64, the dynamic loader's path");
    opts = (struct nvml_options){.driver_root = "/"};
    nvml_describe_search(&opts, buf, sizeof buf);
    assert_int_equal(strncmp(buf, "/usr/lib64, ", 12), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(explicit_library_that_is_missing),
        cmocka_unit_test(no_driver_anywhere),
        cmocka_unit_test(found_under_driver_root),
        cmocka_unit_test(library_without_nvml_symbols),
        cmocka_unit_test(simulator_needs_a_node),
        cmocka_unit_test(simulated_driver_not_loaded),
        cmocka_unit_test(errors_name_call_gpu_and_remedy),
        cmocka_unit_test(newest_symbols_and_versioned_memory),
        cmocka_unit_test(old_driver_falls_back),
        cmocka_unit_test(search_description_lists_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
