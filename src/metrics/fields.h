/* Inside the metrics module: the fields gpulet can export and the counters
 * CSV that selects them. */
#ifndef GPULET_METRICS_FIELDS_H
#define GPULET_METRICS_FIELDS_H

#include <stdbool.h>
#include <stddef.h>

#include "error/error.h"

enum field_id {
    F_SM_CLOCK,
    F_MEM_CLOCK,
    F_MEMORY_TEMP,
    F_GPU_TEMP,
    F_POWER_USAGE,
    F_TOTAL_ENERGY,
    F_PCIE_REPLAY,
    F_GPU_UTIL,
    F_MEM_COPY_UTIL,
    F_ENC_UTIL,
    F_DEC_UTIL,
    F_XID_ERRORS,
    F_FB_FREE,
    F_FB_USED,
    F_FB_RESERVED,
    F_NVLINK_BANDWIDTH,
    F_REMAP_UNC,
    F_REMAP_COR,
    F_REMAP_FAILURE,
    F_PROF_GR_ENGINE,
    F_PROF_TENSOR,
    F_PROF_DRAM,
    F_PROF_PCIE_TX,
    F_PROF_PCIE_RX,
    F_PROF_SM_ACTIVE,
    F_PROF_SM_OCCUPANCY,
    F_PROF_FP64,
    F_PROF_FP32,
    F_PROF_FP16,
    /* read for the nvidia-smi schema, and in the dcgm schema when a
     * counters file names them */
    F_FB_TOTAL,
    F_GRAPHICS_CLOCK,
    F_VIDEO_CLOCK,
    F_MAX_GRAPHICS_CLOCK,
    F_MAX_SM_CLOCK,
    F_MAX_MEM_CLOCK,
    F_POWER_LIMIT,
    F_POWER_DEFAULT_LIMIT,
    F_POWER_MIN_LIMIT,
    F_POWER_MAX_LIMIT,
    F_ENFORCED_POWER_LIMIT,
    F_PSTATE,
    F_FAN_SPEED,
    F_COMPUTE_MODE,
    F_CLOCK_EVENT_REASONS,
    F_REMAP_PENDING,
    F_MIG_MODE_CURRENT,
    F_MIG_MODE_PENDING,
    F_ECC_MODE_CURRENT,
    F_ECC_MODE_PENDING,
    F_ECC_SBE_VOL,
    F_ECC_DBE_VOL,
    F_ECC_SBE_AGG,
    F_ECC_DBE_AGG,
    F_RETIRED_SBE,
    F_RETIRED_DBE,
    F_RETIRED_PENDING,
    F_NVLINK_CRC_FLIT,
    F_NVLINK_CRC_DATA,
    F_NVLINK_REPLAY,
    F_NVLINK_RECOVERY,
    F_RECOVERY_ACTION,
    /* the nvidia-smi schema only: dcgm-exporter has no such field */
    F_CLOCK_EVENT_REASONS_SUPPORTED,
    F_FABRIC_STATE,
    FIELD_COUNT,
    /* label fields: a label on every sample, not a series */
    F_LABEL_DRIVER_VERSION = 100,
    F_LABEL_DEV_NAME,
    F_LABEL_DEV_SERIAL,
    F_LABEL_DEV_UUID,
    F_LABEL_PCI_BUSID,
    /* names dcgm-exporter knows that NVML cannot give gpulet */
    F_UNAVAILABLE = 200,
};

enum field_type { FIELD_GAUGE, FIELD_COUNTER, FIELD_LABEL };

struct field {
    const char *name;
    enum field_id id;
    enum field_type type;
    const char *help;
    bool mig; /* also reported for MIG devices */
    bool help_owned; /* help was copied from a counters file: free it */
};

struct field_selection {
    size_t count;
    struct field items[64];        /* series and labels, in file order */
    size_t unavailable_count;
    char unavailable[64][64];      /* names NVML cannot provide */
};

/* dcgm-exporter's default counters. */
void fields_default(struct field_selection *sel);
/* A counters CSV: "NAME, type, help" lines, '#' comments. */
int fields_load(const char *path, struct field_selection *sel, struct gpulet_error *err);
int fields_parse(const char *name, const char *text, struct field_selection *sel,
                 struct gpulet_error *err);
const struct field *fields_lookup(const char *name);
void fields_free(struct field_selection *sel);

#endif
