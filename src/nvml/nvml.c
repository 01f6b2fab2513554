#include "nvml.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One pointer per NVML entry point gpulet uses; NULL when the loaded
 * library lacks every version of an optional symbol. */
struct nvml_functions {
    nvmlReturn_t (*Init)(void);
    nvmlReturn_t (*Shutdown)(void);
    const char *(*ErrorString)(nvmlReturn_t);
    nvmlReturn_t (*SystemGetDriverVersion)(char *, unsigned int);
    nvmlReturn_t (*SystemGetNVMLVersion)(char *, unsigned int);
    nvmlReturn_t (*SystemGetCudaDriverVersion)(int *);
    nvmlReturn_t (*DeviceGetCount)(unsigned int *);
    nvmlReturn_t (*DeviceGetHandleByIndex)(unsigned int, nvmlDevice_t *);
    nvmlReturn_t (*DeviceGetName)(nvmlDevice_t, char *, unsigned int);
    nvmlReturn_t (*DeviceGetUUID)(nvmlDevice_t, char *, unsigned int);
    nvmlReturn_t (*DeviceGetSerial)(nvmlDevice_t, char *, unsigned int);
    nvmlReturn_t (*DeviceGetMinorNumber)(nvmlDevice_t, unsigned int *);
    nvmlReturn_t (*DeviceGetPciInfo)(nvmlDevice_t, nvmlPciInfo_t *);
    nvmlReturn_t (*DeviceGetMemoryInfo_v2)(nvmlDevice_t, nvmlMemory_v2_t *);
    nvmlReturn_t (*DeviceGetMemoryInfo)(nvmlDevice_t, nvmlMemory_t *);
    nvmlReturn_t (*DeviceGetCudaComputeCapability)(nvmlDevice_t, int *, int *);
    nvmlReturn_t (*DeviceGetNumaNodeId)(nvmlDevice_t, unsigned int *);
    nvmlReturn_t (*DeviceGetUtilizationRates)(nvmlDevice_t, nvmlUtilization_t *);
    nvmlReturn_t (*DeviceGetTemperature)(nvmlDevice_t, int, unsigned int *);
    nvmlReturn_t (*DeviceGetPowerUsage)(nvmlDevice_t, unsigned int *);
    nvmlReturn_t (*DeviceGetEnforcedPowerLimit)(nvmlDevice_t, unsigned int *);
    nvmlReturn_t (*DeviceGetTotalEnergyConsumption)(nvmlDevice_t, unsigned long long *);
    nvmlReturn_t (*DeviceGetClockInfo)(nvmlDevice_t, int, unsigned int *);
    nvmlReturn_t (*DeviceGetPcieReplayCounter)(nvmlDevice_t, unsigned int *);
    nvmlReturn_t (*DeviceGetEncoderUtilization)(nvmlDevice_t, unsigned int *, unsigned int *);
    nvmlReturn_t (*DeviceGetDecoderUtilization)(nvmlDevice_t, unsigned int *, unsigned int *);
    nvmlReturn_t (*DeviceGetFieldValues)(nvmlDevice_t, int, nvmlFieldValue_t *);
    nvmlReturn_t (*DeviceGetRemappedRows)(nvmlDevice_t, unsigned int *, unsigned int *,
                                          unsigned int *, unsigned int *);
    nvmlReturn_t (*DeviceGetCurrentClocksEventReasons)(nvmlDevice_t, unsigned long long *);
    nvmlReturn_t (*DeviceGetComputeRunningProcesses)(nvmlDevice_t, unsigned int *,
                                                     nvmlProcessInfo_t *);
    nvmlReturn_t (*DeviceGetTopologyCommonAncestor)(nvmlDevice_t, nvmlDevice_t, int *);
    nvmlReturn_t (*DeviceGetNvLinkState)(nvmlDevice_t, unsigned int, int *);
    nvmlReturn_t (*DeviceGetNvLinkRemotePciInfo)(nvmlDevice_t, unsigned int, nvmlPciInfo_t *);
    nvmlReturn_t (*DeviceGetMigMode)(nvmlDevice_t, unsigned int *, unsigned int *);
    nvmlReturn_t (*DeviceGetMaxMigDeviceCount)(nvmlDevice_t, unsigned int *);
    nvmlReturn_t (*DeviceGetMigDeviceHandleByIndex)(nvmlDevice_t, unsigned int, nvmlDevice_t *);
    nvmlReturn_t (*DeviceGetGpuInstanceId)(nvmlDevice_t, unsigned int *);
    nvmlReturn_t (*DeviceGetComputeInstanceId)(nvmlDevice_t, unsigned int *);
    nvmlReturn_t (*DeviceGetAttributes)(nvmlDevice_t, nvmlDeviceAttributes_t *);
    nvmlReturn_t (*EventSetCreate)(nvmlEventSet_t *);
    nvmlReturn_t (*DeviceGetSupportedEventTypes)(nvmlDevice_t, unsigned long long *);
    nvmlReturn_t (*DeviceRegisterEvents)(nvmlDevice_t, unsigned long long, nvmlEventSet_t);
    nvmlReturn_t (*EventSetWait)(nvmlEventSet_t, nvmlEventData_t *, unsigned int);
    nvmlReturn_t (*EventSetFree)(nvmlEventSet_t);
    nvmlReturn_t (*DeviceGetPowerManagementLimit)(nvmlDevice_t, unsigned int *);
    nvmlReturn_t (*DeviceGetPowerManagementDefaultLimit)(nvmlDevice_t, unsigned int *);
    nvmlReturn_t (*DeviceGetPowerManagementLimitConstraints)(nvmlDevice_t, unsigned int *,
                                                             unsigned int *);
    nvmlReturn_t (*DeviceGetPerformanceState)(nvmlDevice_t, int *);
    nvmlReturn_t (*DeviceGetFanSpeed)(nvmlDevice_t, unsigned int *);
    nvmlReturn_t (*DeviceGetMaxClockInfo)(nvmlDevice_t, int, unsigned int *);
    nvmlReturn_t (*DeviceGetComputeMode)(nvmlDevice_t, int *);
    nvmlReturn_t (*GpmQueryDeviceSupport)(nvmlDevice_t, nvmlGpmSupport_t *);
    nvmlReturn_t (*GpmSampleAlloc)(nvmlGpmSample_t *);
    nvmlReturn_t (*GpmSampleFree)(nvmlGpmSample_t);
    nvmlReturn_t (*GpmSampleGet)(nvmlDevice_t, nvmlGpmSample_t);
    nvmlReturn_t (*GpmMetricsGet)(nvmlGpmMetricsGet_t *);
    nvmlReturn_t (*GpmMigSampleGet)(nvmlDevice_t, unsigned int, nvmlGpmSample_t);
    nvmlReturn_t (*DeviceGetSupportedClocksEventReasons)(nvmlDevice_t, unsigned long long *);
    nvmlReturn_t (*DeviceGetVbiosVersion)(nvmlDevice_t, char *, unsigned int);
    nvmlReturn_t (*DeviceGetGpuFabricInfoV)(nvmlDevice_t, nvmlGpuFabricInfo_v2_t *);
    nvmlReturn_t (*DeviceGetGpuFabricInfo)(nvmlDevice_t, nvmlGpuFabricInfo_t *);
};

#define MAX_SYMBOL_VERSIONS 3

/* Symbol names newest first: the first one the library has is bound. */
struct nvml_symbol {
    size_t offset;
    bool required;
    const char *names[MAX_SYMBOL_VERSIONS];
};

#define SYM(field, required, ...) {offsetof(struct nvml_functions, field), required, {__VA_ARGS__}}

static const struct nvml_symbol nvml_symbols[] = {
    SYM(Init, true, "nvmlInit_v2", "nvmlInit"),
    SYM(Shutdown, true, "nvmlShutdown"),
    SYM(ErrorString, true, "nvmlErrorString"),
    SYM(DeviceGetCount, true, "nvmlDeviceGetCount_v2", "nvmlDeviceGetCount"),
    SYM(DeviceGetHandleByIndex, true, "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex"),
    SYM(SystemGetDriverVersion, false, "nvmlSystemGetDriverVersion"),
    SYM(SystemGetNVMLVersion, false, "nvmlSystemGetNVMLVersion"),
    SYM(SystemGetCudaDriverVersion, false, "nvmlSystemGetCudaDriverVersion_v2",
        "nvmlSystemGetCudaDriverVersion"),
    SYM(DeviceGetName, false, "nvmlDeviceGetName"),
    SYM(DeviceGetUUID, false, "nvmlDeviceGetUUID"),
    SYM(DeviceGetSerial, false, "nvmlDeviceGetSerial"),
    SYM(DeviceGetMinorNumber, false, "nvmlDeviceGetMinorNumber"),
    SYM(DeviceGetPciInfo, false, "nvmlDeviceGetPciInfo_v3", "nvmlDeviceGetPciInfo_v2",
        "nvmlDeviceGetPciInfo"),
    SYM(DeviceGetMemoryInfo_v2, false, "nvmlDeviceGetMemoryInfo_v2"),
    SYM(DeviceGetMemoryInfo, false, "nvmlDeviceGetMemoryInfo"),
    SYM(DeviceGetCudaComputeCapability, false, "nvmlDeviceGetCudaComputeCapability"),
    SYM(DeviceGetNumaNodeId, false, "nvmlDeviceGetNumaNodeId"),
    SYM(DeviceGetUtilizationRates, false, "nvmlDeviceGetUtilizationRates"),
    SYM(DeviceGetTemperature, false, "nvmlDeviceGetTemperature"),
    SYM(DeviceGetPowerUsage, false, "nvmlDeviceGetPowerUsage"),
    SYM(DeviceGetEnforcedPowerLimit, false, "nvmlDeviceGetEnforcedPowerLimit"),
    SYM(DeviceGetTotalEnergyConsumption, false, "nvmlDeviceGetTotalEnergyConsumption"),
    SYM(DeviceGetClockInfo, false, "nvmlDeviceGetClockInfo"),
    SYM(DeviceGetPcieReplayCounter, false, "nvmlDeviceGetPcieReplayCounter"),
    SYM(DeviceGetEncoderUtilization, false, "nvmlDeviceGetEncoderUtilization"),
    SYM(DeviceGetDecoderUtilization, false, "nvmlDeviceGetDecoderUtilization"),
    SYM(DeviceGetFieldValues, false, "nvmlDeviceGetFieldValues"),
    SYM(DeviceGetRemappedRows, false, "nvmlDeviceGetRemappedRows"),
    SYM(DeviceGetCurrentClocksEventReasons, false, "nvmlDeviceGetCurrentClocksEventReasons",
        "nvmlDeviceGetCurrentClocksThrottleReasons"),
    /* The v1 struct lacks the instance ids, so only v3 and v2 fit ours. */
    SYM(DeviceGetComputeRunningProcesses, false, "nvmlDeviceGetComputeRunningProcesses_v3",
        "nvmlDeviceGetComputeRunningProcesses_v2"),
    SYM(DeviceGetTopologyCommonAncestor, false, "nvmlDeviceGetTopologyCommonAncestor"),
    SYM(DeviceGetNvLinkState, false, "nvmlDeviceGetNvLinkState"),
    SYM(DeviceGetNvLinkRemotePciInfo, false, "nvmlDeviceGetNvLinkRemotePciInfo_v2",
        "nvmlDeviceGetNvLinkRemotePciInfo"),
    SYM(DeviceGetMigMode, false, "nvmlDeviceGetMigMode"),
    SYM(DeviceGetMaxMigDeviceCount, false, "nvmlDeviceGetMaxMigDeviceCount"),
    SYM(DeviceGetMigDeviceHandleByIndex, false, "nvmlDeviceGetMigDeviceHandleByIndex"),
    SYM(DeviceGetGpuInstanceId, false, "nvmlDeviceGetGpuInstanceId"),
    SYM(DeviceGetComputeInstanceId, false, "nvmlDeviceGetComputeInstanceId"),
    SYM(DeviceGetAttributes, false, "nvmlDeviceGetAttributes_v2", "nvmlDeviceGetAttributes"),
    SYM(EventSetCreate, false, "nvmlEventSetCreate"),
    SYM(DeviceGetSupportedEventTypes, false, "nvmlDeviceGetSupportedEventTypes"),
    SYM(DeviceRegisterEvents, false, "nvmlDeviceRegisterEvents"),
    SYM(EventSetWait, false, "nvmlEventSetWait_v2", "nvmlEventSetWait"),
    SYM(EventSetFree, false, "nvmlEventSetFree"),
    SYM(DeviceGetPowerManagementLimit, false, "nvmlDeviceGetPowerManagementLimit"),
    SYM(DeviceGetPowerManagementDefaultLimit, false, "nvmlDeviceGetPowerManagementDefaultLimit"),
    SYM(DeviceGetPowerManagementLimitConstraints, false,
        "nvmlDeviceGetPowerManagementLimitConstraints"),
    SYM(DeviceGetPerformanceState, false, "nvmlDeviceGetPerformanceState"),
    SYM(DeviceGetFanSpeed, false, "nvmlDeviceGetFanSpeed"),
    SYM(DeviceGetMaxClockInfo, false, "nvmlDeviceGetMaxClockInfo"),
    SYM(DeviceGetComputeMode, false, "nvmlDeviceGetComputeMode"),
    SYM(GpmQueryDeviceSupport, false, "nvmlGpmQueryDeviceSupport"),
    SYM(GpmSampleAlloc, false, "nvmlGpmSampleAlloc"),
    SYM(GpmSampleFree, false, "nvmlGpmSampleFree"),
    SYM(GpmSampleGet, false, "nvmlGpmSampleGet"),
    SYM(GpmMetricsGet, false, "nvmlGpmMetricsGet"),
    SYM(GpmMigSampleGet, false, "nvmlGpmMigSampleGet"),
    SYM(DeviceGetSupportedClocksEventReasons, false, "nvmlDeviceGetSupportedClocksEventReasons",
        "nvmlDeviceGetSupportedClocksThrottleReasons"),
    SYM(DeviceGetVbiosVersion, false, "nvmlDeviceGetVbiosVersion"),
    /* the versioned struct is preferred; the plain one stays for older drivers */
    SYM(DeviceGetGpuFabricInfoV, false, "nvmlDeviceGetGpuFabricInfoV"),
    SYM(DeviceGetGpuFabricInfo, false, "nvmlDeviceGetGpuFabricInfo"),
};

struct nvml {
    void *dl;
    char path[4096];
    char sim_node[256];
    char sim_machine[96];
    const char *(*sim_sysfs_root)(void); /* the simulator's, else NULL */
    struct nvml_functions fn;
    /* Which symbol name each entry was bound to, for messages. */
    const char *bound[sizeof nvml_symbols / sizeof nvml_symbols[0]];
};

/* Library folders under a driver root, in the order distributions and the
 * NVIDIA installers use them. */
static const char *const driver_root_dirs[] = {
    "/usr/lib64",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib",
    "/lib64",
    "/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/lib",
    "/usr/local/nvidia/lib64",
};

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

void nvml_describe_search(const struct nvml_options *opts, char *buf, size_t len)
{
    if (opts->library_path) {
        snprintf(buf, len, "%s", opts->library_path);
        return;
    }
    size_t used = 0;
    buf[0] = '\0';
    if (opts->driver_root && opts->driver_root[0]) {
        const char *root = strcmp(opts->driver_root, "/") == 0 ? "" : opts->driver_root;
        for (size_t i = 0; i < N_ELEMS(driver_root_dirs) && used < len; i++) {
            int w = snprintf(buf + used, len - used, "%s%s", root, driver_root_dirs[i]);
            used += w > 0 ? (size_t)w : 0;
            if (used < len)
                used += (size_t)snprintf(buf + used, len - used, ", ");
        }
    }
    if (used < len)
        snprintf(buf + used, len - used,
                 "the dynamic loader's path: LD_LIBRARY_PATH, /etc/ld.so.cache, /lib, /usr/lib");
}

static const char *nvml_return_text(const struct nvml *n, nvmlReturn_t ret)
{
    switch (ret) {
    case NVML_ERROR_UNINITIALIZED: return "NVML is not initialised";
    case NVML_ERROR_INVALID_ARGUMENT: return "invalid argument";
    case NVML_ERROR_NOT_SUPPORTED: return "not supported";
    case NVML_ERROR_NO_PERMISSION: return "permission denied";
    case NVML_ERROR_NOT_FOUND: return "not found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "buffer too small";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "driver not loaded";
    case NVML_ERROR_TIMEOUT: return "timed out";
    case NVML_ERROR_LIBRARY_NOT_FOUND: return "library not found";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "function not found";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_RESET_REQUIRED: return "GPU requires a reset";
    case NVML_ERROR_OPERATING_SYSTEM: return "the operating system refused the call";
    case NVML_ERROR_LIB_RM_VERSION_MISMATCH: return "driver library and kernel module versions differ";
    case NVML_ERROR_NO_DATA: return "no data";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "structure version mismatch";
    case NVML_ERROR_GPU_NOT_FOUND: return "GPU not found";
    default: break;
    }
    if (n && n->fn.ErrorString) {
        const char *s = n->fn.ErrorString(ret);
        if (s)
            return s;
    }
    return "unknown error";
}

/* What a user can do about each failure. */
static const char *nvml_return_hint(nvmlReturn_t ret)
{
    switch (ret) {
    case NVML_ERROR_NOT_SUPPORTED:
        return "this GPU or driver does not provide it";
    case NVML_ERROR_NO_PERMISSION:
        return "run gpulet as root or give it read-write access to /dev/nvidia*";
    case NVML_ERROR_DRIVER_NOT_LOADED:
        return "the NVIDIA kernel module is not loaded: run `modprobe nvidia` and check `dmesg`";
    case NVML_ERROR_GPU_IS_LOST:
        return "the GPU has fallen off the bus: check `dmesg` for Xid 79, then reset the GPU or "
               "reboot the node";
    case NVML_ERROR_RESET_REQUIRED:
        return "reset the GPU (`nvidia-smi -r -i <gpu>`) or reboot the node";
    case NVML_ERROR_LIB_RM_VERSION_MISMATCH:
        return "the driver was upgraded without a reboot: reboot the node";
    case NVML_ERROR_FUNCTION_NOT_FOUND:
        return "the driver is older than this call: upgrade the NVIDIA driver";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH:
        return "gpulet and the driver disagree on a structure version: please report it with "
               "the driver version";
    case NVML_ERROR_TIMEOUT:
        return "the driver did not answer in time: check `dmesg` and the GPU's state";
    case NVML_ERROR_UNINITIALIZED:
        return "this is a gpulet bug: please report it";
    case NVML_ERROR_GPU_NOT_FOUND:
    case NVML_ERROR_NOT_FOUND:
        return "the GPU may have been removed or MIG reconfigured: rerun to rescan";
    default:
        return "check `nvidia-smi` and `dmesg` on this node";
    }
}

static void describe_device(const struct nvml_device *d, char *buf, size_t len)
{
    if (d == NULL)
        snprintf(buf, len, "the node");
    else if (d->mig >= 0)
        snprintf(buf, len, "GPU %u MIG device %d", d->gpu, d->mig);
    else
        snprintf(buf, len, "GPU %u", d->gpu);
}

static int nvml_check(const struct nvml *n, nvmlReturn_t ret, const char *call,
                      const struct nvml_device *d, struct gpulet_error *err)
{
    if (ret == NVML_SUCCESS)
        return 0;
    char who[64];
    describe_device(d, who, sizeof who);
    gpulet_error_set(err, GPULET_ERR_NVML, "%s on %s failed: %s (NVML error %d); %s", call, who,
                     nvml_return_text(n, ret), ret, nvml_return_hint(ret));
    if (err)
        err->nvml = ret;
    return -1;
}

static const char *bound_name(const struct nvml *n, size_t offset)
{
    for (size_t i = 0; i < N_ELEMS(nvml_symbols); i++)
        if (nvml_symbols[i].offset == offset)
            return n->bound[i] ? n->bound[i] : nvml_symbols[i].names[0];
    return "nvml";
}

static int nvml_absent(const struct nvml *n, size_t offset, const struct nvml_device *d,
                       struct gpulet_error *err)
{
    char who[64];
    describe_device(d, who, sizeof who);
    gpulet_error_set(err, GPULET_ERR_NVML,
                     "%s on %s failed: not supported (the driver's NVML has no such function); "
                     "upgrade the NVIDIA driver to use it",
                     bound_name(n, offset), who);
    if (err)
        err->nvml = NVML_ERROR_NOT_SUPPORTED;
    return -1;
}

/* Calls fn.FIELD(args...) if bound, naming the bound symbol in errors. */
#define NVML_CALL(n, field, dev, err, ...)                                                  \
    ((n)->fn.field == NULL                                                                  \
         ? nvml_absent((n), offsetof(struct nvml_functions, field), (dev), (err))           \
         : nvml_check((n), (n)->fn.field(__VA_ARGS__),                                      \
                      bound_name((n), offsetof(struct nvml_functions, field)), (dev), (err)))

bool nvml_unsupported(const struct gpulet_error *err)
{
    return err && err->kind == GPULET_ERR_NVML && err->nvml == NVML_ERROR_NOT_SUPPORTED;
}

bool nvml_gpu_lost(const struct gpulet_error *err)
{
    return err && err->kind == GPULET_ERR_NVML && err->nvml == NVML_ERROR_GPU_IS_LOST;
}

static void bind_symbols(struct nvml *n, const char **missing)
{
    *missing = NULL;
    for (size_t i = 0; i < N_ELEMS(nvml_symbols); i++) {
        const struct nvml_symbol *s = &nvml_symbols[i];
        void *sym = NULL;
        for (size_t v = 0; v < MAX_SYMBOL_VERSIONS && s->names[v] && sym == NULL; v++) {
            sym = dlsym(n->dl, s->names[v]);
            if (sym)
                n->bound[i] = s->names[v];
        }
        /* POSIX guarantees function and object pointers convert through
         * dlsym's void *; memcpy keeps ISO C quiet about it. */
        memcpy((char *)&n->fn + s->offset, &sym, sizeof sym);
        if (sym == NULL && s->required && *missing == NULL)
            *missing = s->names[0];
    }
}

static void *try_dlopen(const char *path, char *why, size_t why_len)
{
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL) {
        const char *e = dlerror();
        snprintf(why, why_len, "%s", e ? e : "unknown dlopen error");
    }
    return dl;
}

static int load_library(struct nvml *n, const struct nvml_options *opts, struct gpulet_error *err)
{
    char why[1024];
    if (opts->library_path) {
        n->dl = try_dlopen(opts->library_path, why, sizeof why);
        if (n->dl == NULL) {
            gpulet_error_set(err, GPULET_ERR_NO_DRIVER,
                             "cannot load the NVML library given with --nvml-lib: %s", why);
            return -1;
        }
        snprintf(n->path, sizeof n->path, "%s", opts->library_path);
        return 0;
    }
    if (opts->driver_root && opts->driver_root[0]) {
        const char *root = strcmp(opts->driver_root, "/") == 0 ? "" : opts->driver_root;
        for (size_t i = 0; i < N_ELEMS(driver_root_dirs); i++) {
            char path[4096];
            snprintf(path, sizeof path, "%s%s/%s", root, driver_root_dirs[i], NVML_LIBRARY_NAME);
            if (access(path, F_OK) != 0)
                continue;
            n->dl = try_dlopen(path, why, sizeof why);
            if (n->dl == NULL) {
                /* Present but unloadable (wrong architecture, broken file):
                 * say so rather than silently trying the next folder. */
                gpulet_error_set(err, GPULET_ERR_NO_DRIVER, "cannot load %s: %s", path, why);
                return -1;
            }
            snprintf(n->path, sizeof n->path, "%s", path);
            return 0;
        }
    }
    n->dl = try_dlopen(NVML_LIBRARY_NAME, why, sizeof why);
    if (n->dl == NULL) {
        char searched[2048];
        nvml_describe_search(opts, searched, sizeof searched);
        gpulet_error_set(err, GPULET_ERR_NO_DRIVER,
                         "NVIDIA driver library %s not found (looked in %s). Is the NVIDIA "
                         "driver installed? To try gpulet without a GPU: "
                         "gpulet --simulate dgx-a100 info",
                         NVML_LIBRARY_NAME, searched);
        return -1;
    }
    Dl_info info;
    void *sym = dlsym(n->dl, "nvmlShutdown");
    if (sym && dladdr(sym, &info) && info.dli_fname)
        snprintf(n->path, sizeof n->path, "%s", info.dli_fname);
    else
        snprintf(n->path, sizeof n->path, "%s", NVML_LIBRARY_NAME);
    return 0;
}

/* gpulet's simulator exports these extra symbols; a real driver does not. */
static void read_simulator_details(struct nvml *n, char *detail, size_t len)
{
    const char *(*node_name)(void) = NULL;
    const char *(*last_error)(void) = NULL;
    const char *(*machine)(void) = NULL;
    void *sym = dlsym(n->dl, "gpuletSimNodeName");
    memcpy(&node_name, &sym, sizeof sym);
    sym = dlsym(n->dl, "gpuletSimMachine");
    memcpy(&machine, &sym, sizeof sym);
    sym = dlsym(n->dl, "gpuletSimLastError");
    memcpy(&last_error, &sym, sizeof sym);
    sym = dlsym(n->dl, "gpuletSimSysfsRoot");
    memcpy(&n->sim_sysfs_root, &sym, sizeof sym);
    if (node_name && node_name())
        snprintf(n->sim_node, sizeof n->sim_node, "%s", node_name());
    if (machine && machine())
        snprintf(n->sim_machine, sizeof n->sim_machine, "%s", machine());
    detail[0] = '\0';
    if (last_error && last_error() && last_error()[0])
        snprintf(detail, len, "%s", last_error());
}

int nvml_open(const struct nvml_options *opts, struct nvml **out, struct gpulet_error *err)
{
    struct nvml *n = calloc(1, sizeof *n);
    if (n == NULL)
        return gpulet_error_errno(err, ENOMEM, "cannot allocate the NVML state");
    if (load_library(n, opts, err) < 0) {
        free(n);
        return -1;
    }
    const char *missing;
    bind_symbols(n, &missing);
    if (missing) {
        gpulet_error_set(err, GPULET_ERR_NO_DRIVER,
                         "%s is not a usable NVML library: it has no %s. Is it the NVIDIA "
                         "driver's libnvidia-ml.so.1?",
                         n->path, missing);
        dlclose(n->dl);
        free(n);
        return -1;
    }
    nvmlReturn_t ret = n->fn.Init();
    char detail[1024];
    read_simulator_details(n, detail, sizeof detail);
    if (ret != NVML_SUCCESS) {
        if (detail[0])
            gpulet_error_set(err, GPULET_ERR_NO_DRIVER, "%s", detail);
        else
            gpulet_error_set(err, GPULET_ERR_NO_DRIVER,
                             "%s failed (library %s): %s (NVML error %d); %s", n->bound[0],
                             n->path, nvml_return_text(n, ret), ret, nvml_return_hint(ret));
        if (err)
            err->nvml = ret;
        dlclose(n->dl);
        free(n);
        return -1;
    }
    *out = n;
    return 0;
}

void nvml_close(struct nvml *n)
{
    if (n == NULL)
        return;
    n->fn.Shutdown();
    dlclose(n->dl);
    free(n);
}

const char *nvml_library(const struct nvml *n)
{
    return n->path;
}

const char *nvml_simulated_node(const struct nvml *n)
{
    return n->sim_node[0] ? n->sim_node : NULL;
}

const char *nvml_simulated_machine(const struct nvml *n)
{
    return n->sim_machine[0] ? n->sim_machine : NULL;
}

const char *nvml_sysfs_root(struct nvml *n)
{
    if (n->sim_sysfs_root)
        return n->sim_sysfs_root();
    return n->sim_node[0] ? NULL : "/sys";
}

int nvml_system_driver_version(struct nvml *n, char *buf, unsigned int len, struct gpulet_error *err)
{
    return NVML_CALL(n, SystemGetDriverVersion, NULL, err, buf, len);
}

int nvml_system_nvml_version(struct nvml *n, char *buf, unsigned int len, struct gpulet_error *err)
{
    return NVML_CALL(n, SystemGetNVMLVersion, NULL, err, buf, len);
}

int nvml_system_cuda_driver_version(struct nvml *n, int *version, struct gpulet_error *err)
{
    return NVML_CALL(n, SystemGetCudaDriverVersion, NULL, err, version);
}

int nvml_device_count(struct nvml *n, unsigned int *count, struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetCount, NULL, err, count);
}

int nvml_device_by_index(struct nvml *n, unsigned int index, struct nvml_device *out,
                         struct gpulet_error *err)
{
    out->gpu = index;
    out->mig = -1;
    out->handle = NULL;
    return NVML_CALL(n, DeviceGetHandleByIndex, out, err, index, &out->handle);
}

int nvml_device_name(struct nvml *n, const struct nvml_device *d, char *buf, unsigned int len,
                     struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetName, d, err, d->handle, buf, len);
}

int nvml_device_uuid(struct nvml *n, const struct nvml_device *d, char *buf, unsigned int len,
                     struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetUUID, d, err, d->handle, buf, len);
}

int nvml_device_serial(struct nvml *n, const struct nvml_device *d, char *buf, unsigned int len,
                       struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetSerial, d, err, d->handle, buf, len);
}

int nvml_device_minor(struct nvml *n, const struct nvml_device *d, unsigned int *minor,
                      struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetMinorNumber, d, err, d->handle, minor);
}

int nvml_device_pci(struct nvml *n, const struct nvml_device *d, nvmlPciInfo_t *pci,
                    struct gpulet_error *err)
{
    memset(pci, 0, sizeof *pci);
    return NVML_CALL(n, DeviceGetPciInfo, d, err, d->handle, pci);
}

int nvml_device_memory(struct nvml *n, const struct nvml_device *d, struct nvml_memory *mem,
                       struct gpulet_error *err)
{
    if (n->fn.DeviceGetMemoryInfo_v2) {
        nvmlMemory_v2_t m = {.version = nvmlMemory_v2};
        nvmlReturn_t ret = n->fn.DeviceGetMemoryInfo_v2(d->handle, &m);
        if (ret == NVML_SUCCESS) {
            *mem = (struct nvml_memory){m.total, m.reserved, m.free, m.used};
            return 0;
        }
        /* Drivers before 510 export the symbol but refuse the v2 struct. */
        if (ret != NVML_ERROR_ARGUMENT_VERSION_MISMATCH && ret != NVML_ERROR_FUNCTION_NOT_FOUND &&
            ret != NVML_ERROR_NOT_SUPPORTED)
            return nvml_check(n, ret, "nvmlDeviceGetMemoryInfo_v2", d, err);
    }
    nvmlMemory_t m = {0};
    if (NVML_CALL(n, DeviceGetMemoryInfo, d, err, d->handle, &m) < 0)
        return -1;
    *mem = (struct nvml_memory){m.total, 0, m.free, m.used};
    return 0;
}

int nvml_device_compute_capability(struct nvml *n, const struct nvml_device *d, int *major,
                                   int *minor, struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetCudaComputeCapability, d, err, d->handle, major, minor);
}

int nvml_device_numa_node(struct nvml *n, const struct nvml_device *d, unsigned int *node,
                          struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetNumaNodeId, d, err, d->handle, node);
}

int nvml_device_utilization(struct nvml *n, const struct nvml_device *d, nvmlUtilization_t *util,
                            struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetUtilizationRates, d, err, d->handle, util);
}

int nvml_device_temperature(struct nvml *n, const struct nvml_device *d, unsigned int *celsius,
                            struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetTemperature, d, err, d->handle, 0, celsius);
}

int nvml_device_power_usage(struct nvml *n, const struct nvml_device *d, unsigned int *milliwatts,
                            struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetPowerUsage, d, err, d->handle, milliwatts);
}

int nvml_device_power_limit(struct nvml *n, const struct nvml_device *d, unsigned int *milliwatts,
                            struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetEnforcedPowerLimit, d, err, d->handle, milliwatts);
}

int nvml_device_power_management_limit(struct nvml *n, const struct nvml_device *d,
                                       unsigned int *milliwatts, struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetPowerManagementLimit, d, err, d->handle, milliwatts);
}

int nvml_device_power_default_limit(struct nvml *n, const struct nvml_device *d,
                                    unsigned int *milliwatts, struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetPowerManagementDefaultLimit, d, err, d->handle, milliwatts);
}

int nvml_device_power_limit_range(struct nvml *n, const struct nvml_device *d, unsigned int *min_mw,
                                  unsigned int *max_mw, struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetPowerManagementLimitConstraints, d, err, d->handle, min_mw,
                     max_mw);
}

int nvml_device_pstate(struct nvml *n, const struct nvml_device *d, int *pstate,
                       struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetPerformanceState, d, err, d->handle, pstate);
}

int nvml_device_fan_speed(struct nvml *n, const struct nvml_device *d, unsigned int *pct,
                          struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetFanSpeed, d, err, d->handle, pct);
}

int nvml_device_max_clock(struct nvml *n, const struct nvml_device *d, int type, unsigned int *mhz,
                          struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetMaxClockInfo, d, err, d->handle, type, mhz);
}

int nvml_device_compute_mode(struct nvml *n, const struct nvml_device *d, int *mode,
                             struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetComputeMode, d, err, d->handle, mode);
}

int nvml_device_energy(struct nvml *n, const struct nvml_device *d, unsigned long long *millijoules,
                       struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetTotalEnergyConsumption, d, err, d->handle, millijoules);
}

int nvml_device_clock(struct nvml *n, const struct nvml_device *d, int type, unsigned int *mhz,
                      struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetClockInfo, d, err, d->handle, type, mhz);
}

int nvml_device_pcie_replays(struct nvml *n, const struct nvml_device *d, unsigned int *count,
                             struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetPcieReplayCounter, d, err, d->handle, count);
}

int nvml_device_encoder_utilization(struct nvml *n, const struct nvml_device *d, unsigned int *pct,
                                    struct gpulet_error *err)
{
    unsigned int period_us;
    return NVML_CALL(n, DeviceGetEncoderUtilization, d, err, d->handle, pct, &period_us);
}

int nvml_device_decoder_utilization(struct nvml *n, const struct nvml_device *d, unsigned int *pct,
                                    struct gpulet_error *err)
{
    unsigned int period_us;
    return NVML_CALL(n, DeviceGetDecoderUtilization, d, err, d->handle, pct, &period_us);
}

int nvml_device_field_values(struct nvml *n, const struct nvml_device *d, int count,
                             nvmlFieldValue_t *values, struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetFieldValues, d, err, d->handle, count, values);
}

int nvml_device_remapped_rows(struct nvml *n, const struct nvml_device *d, unsigned int *corr,
                              unsigned int *unc, unsigned int *pending, unsigned int *failed,
                              struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetRemappedRows, d, err, d->handle, corr, unc, pending, failed);
}

int nvml_device_clock_event_reasons(struct nvml *n, const struct nvml_device *d,
                                    unsigned long long *reasons, struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetCurrentClocksEventReasons, d, err, d->handle, reasons);
}

int nvml_device_compute_processes(struct nvml *n, const struct nvml_device *d, unsigned int *count,
                                  nvmlProcessInfo_t *infos, struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetComputeRunningProcesses, d, err, d->handle, count, infos);
}

int nvml_device_common_ancestor(struct nvml *n, const struct nvml_device *a,
                                const struct nvml_device *b, int *level, struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetTopologyCommonAncestor, a, err, a->handle, b->handle, level);
}

int nvml_device_nvlink_active(struct nvml *n, const struct nvml_device *d, unsigned int link,
                              bool *active, struct gpulet_error *err)
{
    int state = 0;
    int rc = NVML_CALL(n, DeviceGetNvLinkState, d, err, d->handle, link, &state);
    *active = rc == 0 && state != 0;
    return rc;
}

int nvml_device_nvlink_remote_pci(struct nvml *n, const struct nvml_device *d, unsigned int link,
                                  nvmlPciInfo_t *pci, struct gpulet_error *err)
{
    memset(pci, 0, sizeof *pci);
    return NVML_CALL(n, DeviceGetNvLinkRemotePciInfo, d, err, d->handle, link, pci);
}

int nvml_device_mig_mode(struct nvml *n, const struct nvml_device *d, unsigned int *current,
                         unsigned int *pending, struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetMigMode, d, err, d->handle, current, pending);
}

int nvml_device_max_mig_count(struct nvml *n, const struct nvml_device *d, unsigned int *count,
                              struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetMaxMigDeviceCount, d, err, d->handle, count);
}

int nvml_device_mig_by_index(struct nvml *n, const struct nvml_device *parent, unsigned int index,
                             struct nvml_device *out, struct gpulet_error *err)
{
    /* out may be parent itself: read the parent before writing. */
    nvmlDevice_t parent_handle = parent->handle;
    out->gpu = parent->gpu;
    out->mig = (int)index;
    out->handle = NULL;
    return NVML_CALL(n, DeviceGetMigDeviceHandleByIndex, out, err, parent_handle, index,
                     &out->handle);
}

int nvml_device_gpu_instance_id(struct nvml *n, const struct nvml_device *mig, unsigned int *id,
                                struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetGpuInstanceId, mig, err, mig->handle, id);
}

int nvml_device_compute_instance_id(struct nvml *n, const struct nvml_device *mig,
                                    unsigned int *id, struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetComputeInstanceId, mig, err, mig->handle, id);
}

int nvml_device_attributes(struct nvml *n, const struct nvml_device *mig,
                           nvmlDeviceAttributes_t *attr, struct gpulet_error *err)
{
    memset(attr, 0, sizeof *attr);
    return NVML_CALL(n, DeviceGetAttributes, mig, err, mig->handle, attr);
}

int nvml_event_set_create(struct nvml *n, nvmlEventSet_t *set, struct gpulet_error *err)
{
    return NVML_CALL(n, EventSetCreate, NULL, err, set);
}

int nvml_device_supported_events(struct nvml *n, const struct nvml_device *d,
                                 unsigned long long *types, struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetSupportedEventTypes, d, err, d->handle, types);
}

int nvml_device_register_events(struct nvml *n, const struct nvml_device *d,
                                unsigned long long types, nvmlEventSet_t set,
                                struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceRegisterEvents, d, err, d->handle, types, set);
}

int nvml_event_wait(struct nvml *n, nvmlEventSet_t set, nvmlEventData_t *data,
                    unsigned int timeout_ms, struct gpulet_error *err)
{
    return NVML_CALL(n, EventSetWait, NULL, err, set, data, timeout_ms);
}

void nvml_event_set_free(struct nvml *n, nvmlEventSet_t set)
{
    if (n->fn.EventSetFree && set)
        n->fn.EventSetFree(set);
}

int nvml_device_gpm_supported(struct nvml *n, const struct nvml_device *d, bool *supported,
                              struct gpulet_error *err)
{
    nvmlGpmSupport_t s = {.version = NVML_GPM_SUPPORT_VERSION};
    int rc = NVML_CALL(n, GpmQueryDeviceSupport, d, err, d->handle, &s);
    *supported = rc == 0 && s.isSupportedDevice;
    return rc;
}

int nvml_gpm_sample_alloc(struct nvml *n, nvmlGpmSample_t *sample, struct gpulet_error *err)
{
    return NVML_CALL(n, GpmSampleAlloc, NULL, err, sample);
}

void nvml_gpm_sample_free(struct nvml *n, nvmlGpmSample_t sample)
{
    if (n->fn.GpmSampleFree && sample)
        n->fn.GpmSampleFree(sample);
}

int nvml_device_gpm_sample(struct nvml *n, const struct nvml_device *d, nvmlGpmSample_t sample,
                           struct gpulet_error *err)
{
    return NVML_CALL(n, GpmSampleGet, d, err, d->handle, sample);
}

int nvml_gpm_metrics(struct nvml *n, const struct nvml_device *d, nvmlGpmMetricsGet_t *metrics,
                     struct gpulet_error *err)
{
    metrics->version = NVML_GPM_METRICS_GET_VERSION;
    return NVML_CALL(n, GpmMetricsGet, d, err, metrics);
}

int nvml_device_gpm_mig_sample(struct nvml *n, const struct nvml_device *gpu,
                               unsigned int gpu_instance_id, nvmlGpmSample_t sample,
                               struct gpulet_error *err)
{
    return NVML_CALL(n, GpmMigSampleGet, gpu, err, gpu->handle, gpu_instance_id, sample);
}

int nvml_device_supported_clock_event_reasons(struct nvml *n, const struct nvml_device *d,
                                              unsigned long long *reasons,
                                              struct gpulet_error *err)
{
    return NVML_CALL(n, DeviceGetSupportedClocksEventReasons, d, err, d->handle, reasons);
}

int nvml_device_vbios_version(struct nvml *n, const struct nvml_device *d, char *buf,
                              unsigned int len, struct gpulet_error *err)
{
    if (len > 0)
        buf[0] = '\0';
    return NVML_CALL(n, DeviceGetVbiosVersion, d, err, d->handle, buf, len);
}

static void fabric_of(struct nvml_fabric *out, unsigned int state, nvmlReturn_t status,
                      const unsigned char *uuid, unsigned int clique)
{
    out->state = state;
    out->status = status;
    memcpy(out->cluster_uuid, uuid, sizeof out->cluster_uuid);
    out->clique_id = clique;
}

int nvml_device_fabric(struct nvml *n, const struct nvml_device *d, struct nvml_fabric *out,
                       struct gpulet_error *err)
{
    *out = (struct nvml_fabric){0};
    if (n->fn.DeviceGetGpuFabricInfoV != NULL) {
        nvmlGpuFabricInfo_v2_t info = {.version = nvmlGpuFabricInfo_v2};
        int rc = NVML_CALL(n, DeviceGetGpuFabricInfoV, d, err, d->handle, &info);
        if (rc == 0)
            fabric_of(out, info.state, info.status, info.clusterUuid, info.cliqueId);
        return rc;
    }
    nvmlGpuFabricInfo_t info = {0};
    int rc = NVML_CALL(n, DeviceGetGpuFabricInfo, d, err, d->handle, &info);
    if (rc == 0)
        fabric_of(out, info.state, info.status, info.clusterUuid, info.cliqueId);
    return rc;
}
