/*
 * NVML entry points the simulator knowingly does not answer. Each is
 * exported, so a consumer bound to it (go-nvml, DCGM, pynvml) is answered
 * instead of dying on an undefined symbol, and the simulator says once per
 * name on stderr which call it could not answer. A name missing from this
 * list as well as from the simulator is still an undefined symbol.
 * docs/simulator.md lists both sides.
 *
 * The answer is NOT_SUPPORTED, what a driver answers for a feature the GPU
 * lacks, not FUNCTION_NOT_FOUND: consumers look a symbol up before they
 * call it (go-nvlib's hasSymbol) and then skip NOT_SUPPORTED but fail on
 * any other error -- NVIDIA's GFD would stop at a GPU's fabric info.
 *
 * The stubs take no parameters: under the C calling convention the
 * caller owns its arguments, so ignoring them is safe whatever they are.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>

#include "nvml/nvml_abi.h"

#define SIM_API __attribute__((visibility("default")))

#define UNSIMULATED(X)                                                                        \
    X(nvmlSystemGetProcessName) X(nvmlSystemGetHicVersion) X(nvmlSystemGetTopologyGpuSet)     \
    X(nvmlSystemGetDriverBranch) X(nvmlSystemGetConfComputeState)                             \
    X(nvmlSystemGetConfComputeCapabilities) X(nvmlUnitGetCount) X(nvmlUnitGetHandleByIndex)   \
    X(nvmlUnitGetUnitInfo) X(nvmlUnitGetLedState) X(nvmlUnitGetPsuInfo)                       \
    X(nvmlUnitGetTemperature) X(nvmlUnitGetFanSpeedInfo) X(nvmlUnitGetDevices)                \
    X(nvmlUnitSetLedState) X(nvmlGetExcludedDeviceCount) X(nvmlGetExcludedDeviceInfoByIndex)  \
    X(nvmlDeviceGetHandleBySerial) X(nvmlDeviceGetBrand) X(nvmlDeviceGetBoardId)              \
    X(nvmlDeviceGetBoardPartNumber) X(nvmlDeviceGetInforomVersion)                            \
    X(nvmlDeviceGetInforomImageVersion) X(nvmlDeviceGetInforomConfigurationChecksum)          \
    X(nvmlDeviceValidateInforom)                                 \
    X(nvmlDeviceGetMultiGpuBoard) X(nvmlDeviceGetPersistenceMode) X(nvmlDeviceGetDisplayMode) \
    X(nvmlDeviceGetDisplayActive)                                                             \
    X(nvmlDeviceGetPowerState) X(nvmlDeviceGetPowerManagementMode)                            \
    X(nvmlDeviceGetPowerSource)                                                               \
    X(nvmlDeviceGetFanSpeed_v2) X(nvmlDeviceGetNumFans)                                       \
    X(nvmlDeviceGetTargetFanSpeed) X(nvmlDeviceGetMinMaxFanSpeed)                             \
    X(nvmlDeviceGetTemperatureThreshold) X(nvmlDeviceGetThermalSettings)                      \
    X(nvmlDeviceGetApplicationsClock)                                                         \
    X(nvmlDeviceGetDefaultApplicationsClock) X(nvmlDeviceGetClock)                            \
    X(nvmlDeviceGetMaxCustomerBoostClock) X(nvmlDeviceGetSupportedMemoryClocks)               \
    X(nvmlDeviceGetSupportedGraphicsClocks) X(nvmlDeviceGetAutoBoostedClocksEnabled)          \
    X(nvmlDeviceGetMinMaxClockOfPState) X(nvmlDeviceGetAdaptiveClockInfoStatus)               \
    \
    X(nvmlDeviceGetEccMode) X(nvmlDeviceGetTotalEccErrors) X(nvmlDeviceGetDetailedEccErrors)  \
    X(nvmlDeviceGetMemoryErrorCounter) X(nvmlDeviceGetRetiredPages)                           \
    X(nvmlDeviceGetRetiredPages_v2) X(nvmlDeviceGetRetiredPagesPendingStatus)                 \
    X(nvmlDeviceGetRowRemapperHistogram) X(nvmlDeviceGetBAR1MemoryInfo)                       \
    X(nvmlDeviceGetMemoryBusWidth) X(nvmlDeviceGetCurrPcieLinkGeneration)                     \
    X(nvmlDeviceGetCurrPcieLinkWidth) X(nvmlDeviceGetMaxPcieLinkGeneration)                   \
    X(nvmlDeviceGetGpuMaxPcieLinkGeneration) X(nvmlDeviceGetMaxPcieLinkWidth)                 \
    X(nvmlDeviceGetPcieThroughput) X(nvmlDeviceGetPcieSpeed) X(nvmlDeviceGetPcieLinkMaxSpeed) \
    X(nvmlDeviceGetBusType) X(nvmlDeviceGetIrqNum) X(nvmlDeviceGetNumGpuCores)                \
    X(nvmlDeviceGetSamples) X(nvmlDeviceGetViolationStatus) X(nvmlDeviceGetJpgUtilization)    \
    X(nvmlDeviceGetOfaUtilization) X(nvmlDeviceGetAccountingMode)                             \
    X(nvmlDeviceGetAccountingStats) X(nvmlDeviceGetAccountingPids)                            \
    X(nvmlDeviceGetAccountingBufferSize) X(nvmlDeviceGetCpuAffinity)                          \
    X(nvmlDeviceGetCpuAffinityWithinScope) X(nvmlDeviceGetMemoryAffinity)                     \
    X(nvmlDeviceGetTopologyNearestGpus) X(nvmlDeviceGetP2PStatus) X(nvmlDeviceOnSameBoard)    \
    X(nvmlDeviceGetNvLinkVersion) X(nvmlDeviceGetNvLinkCapability)                            \
    X(nvmlDeviceGetNvLinkErrorCounter) X(nvmlDeviceResetNvLinkErrorCounters)                  \
    X(nvmlDeviceGetNvLinkUtilizationCounter) X(nvmlDeviceGetNvLinkUtilizationControl)         \
    X(nvmlDeviceSetNvLinkUtilizationControl) X(nvmlDeviceFreezeNvLinkUtilizationCounter)      \
    X(nvmlDeviceResetNvLinkUtilizationCounter) X(nvmlDeviceGetNvLinkRemoteDeviceType)         \
    X(nvmlDeviceGetVirtualizationMode) X(nvmlDeviceGetHostVgpuMode)                           \
    X(nvmlDeviceGetGridLicensableFeatures) X(nvmlDeviceGetGridLicensableFeatures_v4)          \
    X(nvmlDeviceGetSupportedVgpus) X(nvmlDeviceGetCreatableVgpus) X(nvmlDeviceGetActiveVgpus) \
    X(nvmlDeviceGetEncoderCapacity) X(nvmlDeviceGetEncoderStats)                              \
    X(nvmlDeviceGetEncoderSessions) X(nvmlDeviceGetFBCStats) X(nvmlDeviceGetFBCSessions)      \
    X(nvmlDeviceGetGspFirmwareVersion) X(nvmlDeviceGetGspFirmwareMode)                        \
    X(nvmlDeviceGetDynamicPstatesInfo)                          \
    X(nvmlDeviceGetModuleId) X(nvmlDeviceGetBridgeChipInfo)    \
    X(nvmlDeviceGetDriverModel) X(nvmlDeviceGetAPIRestriction) X(nvmlDeviceGetGpuOperationMode) \
    X(nvmlDeviceGetClkMonStatus) X(nvmlDeviceGetGpcClkVfOffset) X(nvmlDeviceGetMemClkVfOffset) \
    X(nvmlDeviceGetGpcClkMinMaxVfOffset) X(nvmlDeviceGetMemClkMinMaxVfOffset)                 \
    X(nvmlDeviceQueryDrainState) X(nvmlDeviceSetPersistenceMode) X(nvmlDeviceSetComputeMode)  \
    X(nvmlDeviceSetEccMode) X(nvmlDeviceClearEccErrorCounts) X(nvmlDeviceSetDriverModel)      \
    X(nvmlDeviceSetGpuLockedClocks) X(nvmlDeviceResetGpuLockedClocks)                         \
    X(nvmlDeviceSetMemoryLockedClocks) X(nvmlDeviceResetMemoryLockedClocks)                   \
    X(nvmlDeviceSetApplicationsClocks) X(nvmlDeviceResetApplicationsClocks)                   \
    X(nvmlDeviceSetPowerManagementLimit) X(nvmlDeviceSetGpuOperationMode)                     \
    X(nvmlDeviceSetAPIRestriction) X(nvmlDeviceSetAccountingMode)                             \
    X(nvmlDeviceClearAccountingPids) X(nvmlDeviceSetAutoBoostedClocksEnabled)                 \
    X(nvmlDeviceSetDefaultAutoBoostedClocksEnabled) X(nvmlDeviceSetFanSpeed_v2)               \
    X(nvmlDeviceSetDefaultFanSpeed_v2) X(nvmlDeviceModifyDrainState) X(nvmlDeviceRemoveGpu)   \
    X(nvmlDeviceRemoveGpu_v2) X(nvmlDeviceDiscoverGpus) X(nvmlDeviceSetMigMode)               \
    X(nvmlDeviceCreateGpuInstance) X(nvmlDeviceCreateGpuInstanceWithPlacement)                \
    X(nvmlGpuInstanceDestroy) X(nvmlGpuInstanceCreateComputeInstance)                         \
    X(nvmlGpuInstanceCreateComputeInstanceWithPlacement) X(nvmlComputeInstanceDestroy)        \
    X(nvmlDeviceGetGpuInstancePossiblePlacements)                      \
    X(nvmlGpmQueryIfStreamingEnabled) X(nvmlGpmSetStreamingEnabled)                           \
    X(nvmlGetVgpuCompatibility) X(nvmlGetVgpuVersion) X(nvmlSetVgpuVersion)                   \
    X(nvmlVgpuTypeGetName) X(nvmlVgpuTypeGetClass) X(nvmlVgpuInstanceGetUUID)                 \
    X(nvmlVgpuInstanceGetFbUsage)

#define AS_ENUM(name) UNSIMULATED_##name,
enum { UNSIMULATED(AS_ENUM) UNSIMULATED_COUNT };

#define AS_NAME(name) #name,
static const char *const names[UNSIMULATED_COUNT + 1] = {UNSIMULATED(AS_NAME) NULL};

/* Whether each name was reported; a process-wide "said once" per call. */
static atomic_bool said[UNSIMULATED_COUNT];

static nvmlReturn_t unsimulated(unsigned int which)
{
    if (!atomic_exchange(&said[which], true))
        fprintf(stderr,
                "gpulet-sim: level=warn msg=\"NVML call not simulated, answering "
                "NOT_SUPPORTED\" call=%s\n",
                names[which]);
    return NVML_ERROR_NOT_SUPPORTED;
}

#define AS_STUB(name)                                                                         \
    SIM_API nvmlReturn_t name(void)                                                           \
    {                                                                                         \
        return unsimulated(UNSIMULATED_##name);                                               \
    }
UNSIMULATED(AS_STUB)

/* The list above, NULL-terminated, for tests and tools that check it. */
SIM_API const char *const *gpuletSimUnsimulated(void)
{
    return names;
}
