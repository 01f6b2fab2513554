/* The simulated NVML as a foreign consumer sees it: loaded with dlopen and
 * called by symbol name, the way NVIDIA's device plugin, GFD and DCGM
 * (through go-nvml or their own loaders) call a driver. Covers the MIG
 * instance and profile calls, the simulated sysfs and the stubs for calls
 * the simulator does not answer. */
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "helpers.h"

static void *lib;

/* Looks a symbol up by name and calls it with the given prototype (the
 * union turns dlsym's void * into a function pointer without a cast ISO C
 * frowns on). */
#define CALL(type, name) (((union { void *p; type f; }){.p = sym(#name)}).f)

typedef nvmlReturn_t (*fn_void)(void);
typedef nvmlReturn_t (*fn_index)(unsigned int, nvmlDevice_t *);
typedef nvmlReturn_t (*fn_mig_by_index)(nvmlDevice_t, unsigned int, nvmlDevice_t *);
typedef nvmlReturn_t (*fn_dev_uint)(nvmlDevice_t, unsigned int *);
typedef nvmlReturn_t (*fn_dev_dev)(nvmlDevice_t, nvmlDevice_t *);
typedef nvmlReturn_t (*fn_gi_by_id)(nvmlDevice_t, unsigned int, nvmlGpuInstance_t *);
typedef nvmlReturn_t (*fn_gi_info)(nvmlGpuInstance_t, nvmlGpuInstanceInfo_t *);
typedef nvmlReturn_t (*fn_ci_by_id)(nvmlGpuInstance_t, unsigned int, nvmlComputeInstance_t *);
typedef nvmlReturn_t (*fn_ci_info)(nvmlComputeInstance_t, nvmlComputeInstanceInfo_t *);
typedef nvmlReturn_t (*fn_gi_profile)(nvmlDevice_t, unsigned int, nvmlGpuInstanceProfileInfo_t *);
typedef nvmlReturn_t (*fn_gi_profile_v)(nvmlDevice_t, unsigned int,
                                        nvmlGpuInstanceProfileInfo_v2_t *);
typedef nvmlReturn_t (*fn_ci_profile)(nvmlGpuInstance_t, unsigned int, unsigned int,
                                      nvmlComputeInstanceProfileInfo_t *);
typedef nvmlReturn_t (*fn_ci_profile_v)(nvmlGpuInstance_t, unsigned int, unsigned int,
                                        nvmlComputeInstanceProfileInfo_v2_t *);
typedef nvmlReturn_t (*fn_gi_places)(nvmlDevice_t, unsigned int, nvmlGpuInstancePlacement_t *,
                                     unsigned int *);
typedef nvmlReturn_t (*fn_ci_places)(nvmlGpuInstance_t, unsigned int,
                                     nvmlComputeInstancePlacement_t *, unsigned int *);
typedef nvmlReturn_t (*fn_dev_uint_uint)(nvmlDevice_t, unsigned int, unsigned int *);
typedef nvmlReturn_t (*fn_gi_uint_uint)(nvmlGpuInstance_t, unsigned int, unsigned int *);
typedef nvmlReturn_t (*fn_gis)(nvmlDevice_t, unsigned int, nvmlGpuInstance_t *, unsigned int *);
typedef nvmlReturn_t (*fn_cis)(nvmlGpuInstance_t, unsigned int, nvmlComputeInstance_t *,
                               unsigned int *);
typedef const char *(*fn_text)(void);
typedef const char *const *(*fn_names)(void);

static void *sym(const char *name)
{
    void *s = dlsym(lib, name);
    if (s == NULL)
        fail_msg("the simulator does not export %s", name);
    return s;
}

static void open_node(const char *node)
{
    use_node(node);
    lib = dlopen(SIM_LIB_CURRENT, RTLD_NOW | RTLD_LOCAL);
    assert_non_null(lib);
    assert_int_equal(CALL(fn_void, nvmlInit_v2)(), NVML_SUCCESS);
}

static void close_node(void)
{
    assert_int_equal(CALL(fn_void, nvmlShutdown)(), NVML_SUCCESS);
    dlclose(lib);
    lib = NULL;
}

static nvmlDevice_t gpu(unsigned int i)
{
    nvmlDevice_t d;
    assert_int_equal(CALL(fn_index, nvmlDeviceGetHandleByIndex_v2)(i, &d), NVML_SUCCESS);
    return d;
}

/* GFD's and the device plugin's walk from a MIG device to its profiles:
 * parent, GPU instance by id, compute instance by id, then the profile
 * loops that skip NOT_SUPPORTED and INVALID_ARGUMENT. */
static void mig_device_to_profile_as_gfd_does(void **state)
{
    (void)state;
    open_node("a100-mig");
    nvmlDevice_t mig, parent;
    assert_int_equal(CALL(fn_mig_by_index, nvmlDeviceGetMigDeviceHandleByIndex)(gpu(1), 0, &mig),
                     NVML_SUCCESS);
    assert_int_equal(CALL(fn_dev_dev, nvmlDeviceGetDeviceHandleFromMigDeviceHandle)(mig, &parent),
                     NVML_SUCCESS);
    unsigned int gi_id, ci_id;
    assert_int_equal(CALL(fn_dev_uint, nvmlDeviceGetGpuInstanceId)(mig, &gi_id), NVML_SUCCESS);
    assert_int_equal(CALL(fn_dev_uint, nvmlDeviceGetComputeInstanceId)(mig, &ci_id), NVML_SUCCESS);
    assert_int_equal(gi_id, 2);
    assert_int_equal(ci_id, 0);

    nvmlGpuInstance_t gi;
    nvmlGpuInstanceInfo_t gi_info;
    assert_int_equal(CALL(fn_gi_by_id, nvmlDeviceGetGpuInstanceById)(parent, gi_id, &gi),
                     NVML_SUCCESS);
    assert_int_equal(CALL(fn_gi_info, nvmlGpuInstanceGetInfo)(gi, &gi_info), NVML_SUCCESS);
    assert_ptr_equal(gi_info.device, parent);
    assert_int_equal(gi_info.id, 2);
    assert_int_equal(gi_info.profileId, 9); /* 3g, the driver's number */
    assert_int_equal(gi_info.placement.start, 0);
    assert_int_equal(gi_info.placement.size, 4); /* 4 of 8 memory slices */

    nvmlComputeInstance_t ci;
    nvmlComputeInstanceInfo_t ci_info;
    assert_int_equal(CALL(fn_ci_by_id, nvmlGpuInstanceGetComputeInstanceById)(gi, ci_id, &ci),
                     NVML_SUCCESS);
    assert_int_equal(CALL(fn_ci_info, nvmlComputeInstanceGetInfo_v2)(ci, &ci_info),
                     NVML_SUCCESS);
    assert_ptr_equal(ci_info.device, mig);
    assert_ptr_equal(ci_info.gpuInstance, gi);
    assert_int_equal(ci_info.profileId, NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE);
    assert_int_equal(ci_info.placement.start, 0);
    assert_int_equal(ci_info.placement.size, 3);

    int matched = -1;
    for (unsigned int i = 0; i < 32; i++) {
        nvmlGpuInstanceProfileInfo_t p;
        nvmlReturn_t ret = CALL(fn_gi_profile, nvmlDeviceGetGpuInstanceProfileInfo)(parent, i, &p);
        if (i <= NVML_GPU_INSTANCE_PROFILE_7_SLICE)
            assert_int_equal(ret, NVML_SUCCESS);
        else
            assert_int_equal(ret, i < 10 ? NVML_ERROR_NOT_SUPPORTED : NVML_ERROR_INVALID_ARGUMENT);
        if (ret == NVML_SUCCESS && p.id == gi_info.profileId) {
            matched = (int)i;
            assert_int_equal(p.sliceCount, 3);
            assert_int_equal(p.instanceCount, 2);
            assert_int_equal(p.memorySizeMB, 19968); /* the fixture's 3g.20gb device */
            assert_int_equal(p.multiprocessorCount, 42);
        }
    }
    assert_int_equal(matched, NVML_GPU_INSTANCE_PROFILE_3_SLICE);

    matched = -1;
    for (unsigned int j = 0; j < NVML_COMPUTE_INSTANCE_PROFILE_COUNT; j++) {
        nvmlComputeInstanceProfileInfo_t p;
        nvmlReturn_t ret =
            CALL(fn_ci_profile, nvmlGpuInstanceGetComputeInstanceProfileInfo)(gi, j, 0, &p);
        /* a 3-slice GPU instance holds compute instances of 1, 2 or 3 slices */
        assert_int_equal(ret, j <= 2 ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED);
        if (ret == NVML_SUCCESS && p.id == ci_info.profileId) {
            matched = (int)j;
            assert_int_equal(p.sliceCount, 3);
            assert_int_equal(p.instanceCount, 1);
        }
    }
    assert_int_equal(matched, 2);
    nvmlComputeInstanceProfileInfo_t p;
    assert_int_equal(CALL(fn_ci_profile, nvmlGpuInstanceGetComputeInstanceProfileInfo)(gi, 0, 1,
                          &p),
                     NVML_ERROR_INVALID_ARGUMENT); /* only the shared engine profile exists */
    close_node();
}

static void versioned_profile_structs(void **state)
{
    (void)state;
    open_node("a100-mig");
    nvmlGpuInstanceProfileInfo_v2_t v2 = {.version = nvmlGpuInstanceProfileInfo_v2};
    assert_int_equal(CALL(fn_gi_profile_v, nvmlDeviceGetGpuInstanceProfileInfoV)(gpu(0),
                          NVML_GPU_INSTANCE_PROFILE_1_SLICE, &v2),
                     NVML_SUCCESS);
    assert_int_equal(v2.id, 19);
    assert_int_equal(v2.instanceCount, 7);
    assert_string_equal(v2.name, "MIG 1g.5gb");
    nvmlGpuInstanceProfileInfo_v3_t v3 = {.version = nvmlGpuInstanceProfileInfo_v3};
    assert_int_equal(CALL(fn_gi_profile_v, nvmlDeviceGetGpuInstanceProfileInfoV)(gpu(0),
                          NVML_GPU_INSTANCE_PROFILE_7_SLICE,
                          (nvmlGpuInstanceProfileInfo_v2_t *)(void *)&v3),
                     NVML_SUCCESS);
    assert_int_equal(v3.sliceCount, 7);
    assert_string_equal(v3.name, "MIG 7g.40gb"); /* derived: no 7g device in the fixture */
    nvmlGpuInstanceProfileInfo_v2_t bare = {.version = 2};
    assert_int_equal(CALL(fn_gi_profile_v, nvmlDeviceGetGpuInstanceProfileInfoV)(gpu(0), 0, &bare),
                     NVML_ERROR_ARGUMENT_VERSION_MISMATCH);

    nvmlGpuInstance_t gi;
    assert_int_equal(CALL(fn_gi_by_id, nvmlDeviceGetGpuInstanceById)(gpu(0), 7, &gi),
                     NVML_SUCCESS);
    nvmlComputeInstanceProfileInfo_v2_t c2 = {.version = nvmlComputeInstanceProfileInfo_v2};
    assert_int_equal(CALL(fn_ci_profile_v, nvmlGpuInstanceGetComputeInstanceProfileInfoV)(gi, 0,
                          0, &c2),
                     NVML_SUCCESS);
    assert_string_equal(c2.name, "MIG 1g.5gb");
    assert_int_equal(c2.multiprocessorCount, 14);
    c2.version = 1;
    assert_int_equal(CALL(fn_ci_profile_v, nvmlGpuInstanceGetComputeInstanceProfileInfoV)(gi, 0,
                          0, &c2),
                     NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    close_node();
}

static void instances_placements_and_capacity(void **state)
{
    (void)state;
    open_node("a100-mig");
    nvmlDevice_t g0 = gpu(0), g1 = gpu(1);
    unsigned int count = 0;
    assert_int_equal(CALL(fn_gi_places, nvmlDeviceGetGpuInstancePossiblePlacements_v2)(g0, 19,
                          NULL, &count),
                     NVML_SUCCESS);
    assert_int_equal(count, 7);
    nvmlGpuInstancePlacement_t places[8];
    count = 3;
    assert_int_equal(CALL(fn_gi_places, nvmlDeviceGetGpuInstancePossiblePlacements_v2)(g0, 19,
                          places, &count),
                     NVML_ERROR_INSUFFICIENT_SIZE);
    count = 8;
    assert_int_equal(CALL(fn_gi_places, nvmlDeviceGetGpuInstancePossiblePlacements_v2)(g0, 14,
                          places, &count),
                     NVML_SUCCESS);
    assert_int_equal(count, 3); /* 2g: memory slices 0, 2 and 4 */
    assert_int_equal(places[2].start, 4);
    assert_int_equal(places[2].size, 2);

    /* GPU 0 holds seven 1g instances, GPU 1 a 3g, a 2g and a 1g: both full. */
    nvmlGpuInstance_t gis[8];
    assert_int_equal(CALL(fn_gis, nvmlDeviceGetGpuInstances)(g0, 19, gis, &count), NVML_SUCCESS);
    assert_int_equal(count, 7);
    assert_int_equal(CALL(fn_dev_uint_uint, nvmlDeviceGetGpuInstanceRemainingCapacity)(g0, 19,
                          &count),
                     NVML_SUCCESS);
    assert_int_equal(count, 0);
    assert_int_equal(CALL(fn_gis, nvmlDeviceGetGpuInstances)(g1, 14, gis, &count), NVML_SUCCESS);
    assert_int_equal(count, 1);
    nvmlGpuInstanceInfo_t info;
    assert_int_equal(CALL(fn_gi_info, nvmlGpuInstanceGetInfo)(gis[0], &info), NVML_SUCCESS);
    assert_int_equal(info.id, 3);
    assert_int_equal(info.placement.start, 4); /* after the 3g at 0..3 */
    assert_int_equal(CALL(fn_dev_uint_uint, nvmlDeviceGetGpuInstanceRemainingCapacity)(g1, 19,
                          &count),
                     NVML_SUCCESS);
    assert_int_equal(count, 0);
    assert_int_equal(CALL(fn_dev_uint_uint, nvmlDeviceGetGpuInstanceRemainingCapacity)(g1, 1234,
                          &count),
                     NVML_ERROR_INVALID_ARGUMENT);

    nvmlComputeInstance_t cis[8];
    assert_int_equal(CALL(fn_cis, nvmlGpuInstanceGetComputeInstances)(gis[0], 1, cis, &count),
                     NVML_SUCCESS);
    assert_int_equal(count, 1);
    assert_int_equal(CALL(fn_gi_uint_uint, nvmlGpuInstanceGetComputeInstanceRemainingCapacity)(gis[0], 0, &count),
                     NVML_SUCCESS);
    assert_int_equal(count, 0);
    nvmlComputeInstancePlacement_t cplaces[4];
    count = 4;
    assert_int_equal(CALL(fn_ci_places, nvmlGpuInstanceGetComputeInstancePossiblePlacements)(gis[0], 0, cplaces, &count),
                     NVML_SUCCESS);
    assert_int_equal(count, 2);
    assert_int_equal(cplaces[1].start, 1);
    nvmlComputeInstance_t ci;
    assert_int_equal(CALL(fn_ci_by_id, nvmlGpuInstanceGetComputeInstanceById)(gis[0], 5, &ci),
                     NVML_ERROR_NOT_FOUND);
    assert_int_equal(CALL(fn_gi_by_id, nvmlDeviceGetGpuInstanceById)(g1, 12, &gis[0]),
                     NVML_ERROR_NOT_FOUND);
    close_node();
}

static void without_mig_mode(void **state)
{
    (void)state;
    open_node("dgx-a100"); /* MIG-capable, MIG off */
    nvmlGpuInstanceProfileInfo_v2_t v2 = {.version = nvmlGpuInstanceProfileInfo_v2};
    assert_int_equal(CALL(fn_gi_profile_v, nvmlDeviceGetGpuInstanceProfileInfoV)(gpu(0), 0, &v2),
                     NVML_SUCCESS);
    assert_string_equal(v2.name, "MIG 1g.10gb"); /* derived from 80 GB */
    nvmlGpuInstance_t gi;
    assert_int_equal(CALL(fn_gi_by_id, nvmlDeviceGetGpuInstanceById)(gpu(0), 1, &gi),
                     NVML_ERROR_NOT_SUPPORTED);
    close_node();
    open_node("dgx1-v100"); /* no MIG at all */
    nvmlGpuInstanceProfileInfo_t p;
    assert_int_equal(CALL(fn_gi_profile, nvmlDeviceGetGpuInstanceProfileInfo)(gpu(0), 0, &p),
                     NVML_ERROR_NOT_SUPPORTED);
    close_node();
}

static void bad_handles_are_refused(void **state)
{
    (void)state;
    open_node("a100-mig");
    nvmlGpuInstanceInfo_t info;
    unsigned int junk[8] = {0};
    assert_int_equal(CALL(fn_gi_info, nvmlGpuInstanceGetInfo)(NULL, &info),
                     NVML_ERROR_INVALID_ARGUMENT);
    assert_int_equal(CALL(fn_gi_info, nvmlGpuInstanceGetInfo)((nvmlGpuInstance_t)(void *)junk,
                          &info),
                     NVML_ERROR_INVALID_ARGUMENT);
    nvmlComputeInstanceInfo_t ci_info;
    assert_int_equal(CALL(fn_ci_info, nvmlComputeInstanceGetInfo)((nvmlComputeInstance_t)(void *)junk, &ci_info),
                     NVML_ERROR_INVALID_ARGUMENT);
    nvmlGpuInstance_t gi;
    assert_int_equal(CALL(fn_gi_by_id, nvmlDeviceGetGpuInstanceById)(gpu(0), 7, &gi),
                     NVML_SUCCESS);
    assert_int_equal(CALL(fn_gi_info, nvmlGpuInstanceGetInfo)(gi, NULL),
                     NVML_ERROR_INVALID_ARGUMENT);
    close_node();
}

static void read_text(const char *dir, const char *name, char *buf, size_t len)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    fclose(f);
}

static void sysfs_named_by_the_environment(void **state)
{
    (void)state;
    char root[64], dev[256], text[2048];
    temp_dir(root, sizeof root);
    setenv("GPULET_SIM_SYSFS", root, 1);
    open_node("a100-mig");
    assert_string_equal(CALL(fn_text, gpuletSimSysfsRoot)(), root);
    snprintf(dev, sizeof dev, "%s/bus/pci/devices/0000:0f:00.0", root);
    read_text(dev, "class", text, sizeof text);
    assert_string_equal(text, "0x030200\n");
    read_text(dev, "vendor", text, sizeof text);
    assert_string_equal(text, "0x10de\n");
    read_text(dev, "device", text, sizeof text);
    assert_string_equal(text, "0x20b0\n");
    read_text(dev, "numa_node", text, sizeof text);
    assert_string_equal(text, "0\n");
    read_text(dev, "resource", text, sizeof text);
    size_t lines = 0;
    for (char *c = text; *c; c++)
        lines += *c == '\n';
    assert_int_equal(lines, 13);
    char path[512];
    snprintf(path, sizeof path, "%s/config", dev);
    unsigned char cfg[300];
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fread(cfg, 1, sizeof cfg, f), 256);
    fclose(f);
    assert_int_equal(cfg[0] | cfg[1] << 8, 0x10de);
    assert_int_equal(cfg[2] | cfg[3] << 8, 0x20b0);
    assert_int_equal(cfg[0x0b], 0x03);
    assert_int_equal(cfg[0x0a], 0x02);
    snprintf(path, sizeof path, "%s/class/dmi/id", root);
    read_text(path, "product_name", text, sizeof text);
    assert_string_equal(text, "DGX A100\n");
    close_node();
    unsetenv("GPULET_SIM_SYSFS");
    /* A folder the user named stays; remove it here. */
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -r %s", root);
    assert_int_equal(system(cmd), 0);
}

static void private_sysfs_goes_with_shutdown(void **state)
{
    (void)state;
    unsetenv("GPULET_SIM_SYSFS");
    char tmp[64];
    temp_dir(tmp, sizeof tmp);
    setenv("TMPDIR", tmp, 1);
    open_node("t4-pcie");
    const char *root = CALL(fn_text, gpuletSimSysfsRoot)();
    assert_non_null(root);
    assert_ptr_equal(CALL(fn_text, gpuletSimSysfsRoot)(), root); /* made once */
    char dev[4200], text[64];
    snprintf(dev, sizeof dev, "%s/bus/pci/devices/0000:af:00.0", root);
    read_text(dev, "numa_node", text, sizeof text);
    assert_string_equal(text, "1\n");
    close_node();
    unsetenv("TMPDIR");
    assert_int_equal(rmdir(tmp), 0); /* empty: the private tree went at shutdown */
}

/* Runs fn with stderr going to a file; returns what it wrote. */
static void capture_stderr(void (*fn)(void), char *out, size_t len)
{
    char path[] = "/tmp/gpulet-unit-stderr-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, out, len - 1);
    out[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
}

static void call_board_id_twice(void)
{
    for (int i = 0; i < 2; i++) {
        unsigned int board;
        nvmlReturn_t ret = CALL(fn_dev_uint, nvmlDeviceGetBoardId)(gpu(0), &board);
        assert_int_equal(ret, NVML_ERROR_NOT_SUPPORTED);
    }
}

static void unsimulated_calls_answer_and_say_so_once(void **state)
{
    (void)state;
    open_node("dgx-a100");
    char err[2048];
    capture_stderr(call_board_id_twice, err, sizeof err);
    const char *line = "msg=\"NVML call not simulated, answering NOT_SUPPORTED\" "
                       "call=nvmlDeviceGetBoardId\n";
    assert_contains(err, line);
    assert_null(strstr(strstr(err, line) + 1, line)); /* once */
    /* Every listed name is exported (a name both listed and simulated fails to link). */
    const char *const *names = CALL(fn_names, gpuletSimUnsimulated)();
    size_t n = 0;
    for (; names[n]; n++) {
        assert_non_null(dlsym(lib, names[n]));
        assert_int_equal(strncmp(names[n], "nvml", 4), 0);
    }
    assert_true(n > 150);
    close_node();
}

typedef nvmlReturn_t (*fn_by_bus_id)(const char *, nvmlDevice_t *);

/* Identity calls consumers use besides the ones gpulet needs. */
static void index_bus_id_and_architecture(void **state)
{
    (void)state;
    open_node("t4-pcie");
    nvmlDevice_t d;
    unsigned int index, arch;
    assert_int_equal(CALL(fn_by_bus_id, nvmlDeviceGetHandleByPciBusId_v2)("0000:af:00.0", &d),
                     NVML_SUCCESS);
    assert_ptr_equal(d, gpu(2));
    assert_int_equal(CALL(fn_by_bus_id, nvmlDeviceGetHandleByPciBusId)("00000000:AF:00.0", &d),
                     NVML_SUCCESS);
    assert_int_equal(CALL(fn_dev_uint, nvmlDeviceGetIndex)(d, &index), NVML_SUCCESS);
    assert_int_equal(index, 2);
    assert_int_equal(CALL(fn_by_bus_id, nvmlDeviceGetHandleByPciBusId_v2)("0000:af:01.0", &d),
                     NVML_ERROR_NOT_FOUND);
    assert_int_equal(CALL(fn_by_bus_id, nvmlDeviceGetHandleByPciBusId_v2)("af:00", &d),
                     NVML_ERROR_INVALID_ARGUMENT);
    assert_int_equal(CALL(fn_dev_uint, nvmlDeviceGetArchitecture)(gpu(0), &arch), NVML_SUCCESS);
    assert_int_equal(arch, NVML_DEVICE_ARCH_TURING);
    unsigned int brand, mode[2] = {0, 0};
    assert_int_equal(CALL(fn_dev_uint, nvmlDeviceGetBrand)(gpu(0), &brand), NVML_SUCCESS);
    assert_int_equal(brand, NVML_BRAND_TESLA); /* "Tesla T4" */
    assert_int_equal(CALL(fn_dev_uint, nvmlDeviceGetAddressingMode)(gpu(0), mode),
                     NVML_ERROR_NOT_SUPPORTED); /* x86: no HMM or ATS */
    close_node();
    open_node("h100-sxm");
    assert_int_equal(CALL(fn_dev_uint, nvmlDeviceGetArchitecture)(gpu(0), &arch), NVML_SUCCESS);
    assert_int_equal(arch, NVML_DEVICE_ARCH_HOPPER);
    assert_int_equal(CALL(fn_dev_uint, nvmlDeviceGetBrand)(gpu(0), &brand), NVML_SUCCESS);
    assert_int_equal(brand, NVML_BRAND_NVIDIA); /* "NVIDIA H100 80GB HBM3" */
    close_node();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mig_device_to_profile_as_gfd_does),
        cmocka_unit_test(versioned_profile_structs),
        cmocka_unit_test(instances_placements_and_capacity),
        cmocka_unit_test(without_mig_mode),
        cmocka_unit_test(bad_handles_are_refused),
        cmocka_unit_test(sysfs_named_by_the_environment),
        cmocka_unit_test(private_sysfs_goes_with_shutdown),
        cmocka_unit_test(unsimulated_calls_answer_and_say_so_once),
        cmocka_unit_test(index_bus_id_and_architecture),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
