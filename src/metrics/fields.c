#include "fields.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio/fileio.h"

/* The fields, with dcgm-exporter's names, types and help texts. */
static const struct field catalog[] = {
    {"DCGM_FI_DEV_SM_CLOCK", F_SM_CLOCK, FIELD_GAUGE, "SM clock frequency (in MHz).", false, false},
    {"DCGM_FI_DEV_MEM_CLOCK", F_MEM_CLOCK, FIELD_GAUGE, "Memory clock frequency (in MHz).", false, false},
    {"DCGM_FI_DEV_MEMORY_TEMP", F_MEMORY_TEMP, FIELD_GAUGE, "Memory temperature (in C).", false, false},
    {"DCGM_FI_DEV_GPU_TEMP", F_GPU_TEMP, FIELD_GAUGE, "GPU temperature (in C).", false, false},
    {"DCGM_FI_DEV_POWER_USAGE", F_POWER_USAGE, FIELD_GAUGE, "Power draw (in W).", false, false},
    {"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", F_TOTAL_ENERGY, FIELD_COUNTER,
     "Total energy consumption since boot (in mJ).", false, false},
    {"DCGM_FI_DEV_PCIE_REPLAY_COUNTER", F_PCIE_REPLAY, FIELD_COUNTER,
     "Total number of PCIe retries.", false, false},
    {"DCGM_FI_DEV_GPU_UTIL", F_GPU_UTIL, FIELD_GAUGE, "GPU utilization (in %).", false, false},
    {"DCGM_FI_DEV_MEM_COPY_UTIL", F_MEM_COPY_UTIL, FIELD_GAUGE, "Memory utilization (in %).",
     false, false},
    {"DCGM_FI_DEV_ENC_UTIL", F_ENC_UTIL, FIELD_GAUGE, "Encoder utilization (in %).", false, false},
    {"DCGM_FI_DEV_DEC_UTIL", F_DEC_UTIL, FIELD_GAUGE, "Decoder utilization (in %).", false, false},
    {"DCGM_FI_DEV_XID_ERRORS", F_XID_ERRORS, FIELD_GAUGE,
     "Value of the last XID error encountered.", false, false},
    {"DCGM_FI_DEV_FB_FREE", F_FB_FREE, FIELD_GAUGE, "Framebuffer memory free (in MiB).", true, false},
    {"DCGM_FI_DEV_FB_USED", F_FB_USED, FIELD_GAUGE, "Framebuffer memory used (in MiB).", true, false},
    {"DCGM_FI_DEV_FB_RESERVED", F_FB_RESERVED, FIELD_GAUGE,
     "Framebuffer memory reserved (in MiB).", true, false},
    {"DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", F_NVLINK_BANDWIDTH, FIELD_COUNTER,
     "Total number of NVLink bandwidth counters for all lanes", false, false},
    {"DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", F_REMAP_UNC, FIELD_COUNTER,
     "Number of remapped rows for uncorrectable errors", false, false},
    {"DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", F_REMAP_COR, FIELD_COUNTER,
     "Number of remapped rows for correctable errors", false, false},
    {"DCGM_FI_DEV_ROW_REMAP_FAILURE", F_REMAP_FAILURE, FIELD_GAUGE,
     "Whether remapping of rows has failed", false, false},
    {"DCGM_FI_PROF_GR_ENGINE_ACTIVE", F_PROF_GR_ENGINE, FIELD_GAUGE,
     "Ratio of time the graphics engine is active.", false, false},
    {"DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", F_PROF_TENSOR, FIELD_GAUGE,
     "Ratio of cycles the tensor (HMMA) pipe is active.", false, false},
    {"DCGM_FI_PROF_DRAM_ACTIVE", F_PROF_DRAM, FIELD_GAUGE,
     "Ratio of cycles the device memory interface is active sending or receiving data.", false, false},
    {"DCGM_FI_PROF_PCIE_TX_BYTES", F_PROF_PCIE_TX, FIELD_GAUGE,
     "The rate of data transmitted over the PCIe bus - including both protocol headers and "
     "data payloads - in bytes per second.",
     false, false},
    {"DCGM_FI_PROF_PCIE_RX_BYTES", F_PROF_PCIE_RX, FIELD_GAUGE,
     "The rate of data received over the PCIe bus - including both protocol headers and data "
     "payloads - in bytes per second.",
     false, false},
    {"DCGM_FI_PROF_SM_ACTIVE", F_PROF_SM_ACTIVE, FIELD_GAUGE,
     "The ratio of cycles an SM has at least 1 warp assigned (in %).", false, false},
    {"DCGM_FI_PROF_SM_OCCUPANCY", F_PROF_SM_OCCUPANCY, FIELD_GAUGE,
     "The ratio of number of warps resident on an SM (in %).", false, false},
    {"DCGM_FI_PROF_PIPE_FP64_ACTIVE", F_PROF_FP64, FIELD_GAUGE,
     "Ratio of cycles the fp64 pipes are active (in %).", false, false},
    {"DCGM_FI_PROF_PIPE_FP32_ACTIVE", F_PROF_FP32, FIELD_GAUGE,
     "Ratio of cycles the fp32 pipes are active (in %).", false, false},
    {"DCGM_FI_PROF_PIPE_FP16_ACTIVE", F_PROF_FP16, FIELD_GAUGE,
     "Ratio of cycles the fp16 pipes are active (in %).", false, false},
    /* Opt-in fields (docs/metrics.md): throttling, ECC, retirement,
     * NVLink errors, power, P-state, fan, recovery. */
    {"DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", F_CLOCK_EVENT_REASONS, FIELD_GAUGE,
     "Current clock throttle reasons (bitmask of NVML's reasons).", false, false},
    {"DCGM_FI_DEV_CLOCKS_EVENT_REASONS", F_CLOCK_EVENT_REASONS, FIELD_GAUGE,
     "Current clock event reasons (bitmask of NVML's reasons).", false, false},
    {"DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", F_ECC_SBE_VOL, FIELD_COUNTER,
     "Total number of single-bit volatile ECC errors.", false, false},
    {"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", F_ECC_DBE_VOL, FIELD_COUNTER,
     "Total number of double-bit volatile ECC errors.", false, false},
    {"DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", F_ECC_SBE_AGG, FIELD_COUNTER,
     "Total number of single-bit persistent ECC errors.", false, false},
    {"DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", F_ECC_DBE_AGG, FIELD_COUNTER,
     "Total number of double-bit persistent ECC errors.", false, false},
    {"DCGM_FI_DEV_RETIRED_SBE", F_RETIRED_SBE, FIELD_COUNTER,
     "Total number of retired pages due to single-bit errors.", false, false},
    {"DCGM_FI_DEV_RETIRED_DBE", F_RETIRED_DBE, FIELD_COUNTER,
     "Total number of retired pages due to double-bit errors.", false, false},
    {"DCGM_FI_DEV_RETIRED_PENDING", F_RETIRED_PENDING, FIELD_COUNTER,
     "Whether pages are pending retirement (1) or not (0).", false, false},
    {"DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", F_NVLINK_CRC_FLIT, FIELD_COUNTER,
     "Total number of NVLink flow-control CRC errors.", false, false},
    {"DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL", F_NVLINK_CRC_DATA, FIELD_COUNTER,
     "Total number of NVLink data CRC errors.", false, false},
    {"DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL", F_NVLINK_REPLAY, FIELD_COUNTER,
     "Total number of NVLink retries.", false, false},
    {"DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL", F_NVLINK_RECOVERY, FIELD_COUNTER,
     "Total number of NVLink recovery errors.", false, false},
    {"DCGM_FI_DEV_POWER_MGMT_LIMIT", F_POWER_LIMIT, FIELD_GAUGE,
     "Current power limit for the device (in W).", false, false},
    {"DCGM_FI_DEV_POWER_MGMT_LIMIT_MIN", F_POWER_MIN_LIMIT, FIELD_GAUGE,
     "Minimum power limit for the device (in W).", false, false},
    {"DCGM_FI_DEV_POWER_MGMT_LIMIT_MAX", F_POWER_MAX_LIMIT, FIELD_GAUGE,
     "Maximum power limit for the device (in W).", false, false},
    {"DCGM_FI_DEV_POWER_MGMT_LIMIT_DEF", F_POWER_DEFAULT_LIMIT, FIELD_GAUGE,
     "Default power limit for the device (in W).", false, false},
    {"DCGM_FI_DEV_ENFORCED_POWER_LIMIT", F_ENFORCED_POWER_LIMIT, FIELD_GAUGE,
     "Effective power limit that the driver enforces (in W).", false, false},
    {"DCGM_FI_DEV_PSTATE", F_PSTATE, FIELD_GAUGE, "Performance state (P-State) 0-15. 0=highest",
     false, false},
    {"DCGM_FI_DEV_FAN_SPEED", F_FAN_SPEED, FIELD_GAUGE,
     "Fan speed for the device in percent 0-100.", false, false},
    {"DCGM_FI_DEV_MAX_SM_CLOCK", F_MAX_SM_CLOCK, FIELD_GAUGE,
     "Maximum supported SM clock for the device (in MHz).", false, false},
    {"DCGM_FI_DEV_MAX_MEM_CLOCK", F_MAX_MEM_CLOCK, FIELD_GAUGE,
     "Maximum supported memory clock for the device (in MHz).", false, false},
    {"DCGM_FI_DEV_GET_GPU_RECOVERY_ACTION", F_RECOVERY_ACTION, FIELD_GAUGE,
     "GPU recovery action: 0 none, 1 GPU reset, 2 node reboot, 3 drain P2P, 4 drain and reset.",
     false, false},
    {"DCGM_FI_DEV_GPU_RECOVERY_ACTION", F_RECOVERY_ACTION, FIELD_GAUGE,
     "GPU recovery action: 0 none, 1 GPU reset, 2 node reboot, 3 drain P2P, 4 drain and reset.",
     false, false},
    {"DCGM_FI_DRIVER_VERSION", F_LABEL_DRIVER_VERSION, FIELD_LABEL, "Driver Version", true, false},
    {"DCGM_FI_DEV_NAME", F_LABEL_DEV_NAME, FIELD_LABEL, "Device name", true, false},
    {"DCGM_FI_DEV_SERIAL", F_LABEL_DEV_SERIAL, FIELD_LABEL, "Device serial number", true, false},
    {"DCGM_FI_DEV_UUID", F_LABEL_DEV_UUID, FIELD_LABEL, "Device UUID", true, false},
    {"DCGM_FI_DEV_PCI_BUSID", F_LABEL_PCI_BUSID, FIELD_LABEL, "PCI bus id", true, false},
};

/* Fields dcgm-exporter users list that NVML gives gpulet no way to read. */
static const char *const unavailable[] = {
    "DCGM_FI_DEV_VGPU_LICENSE_STATUS",
    "DCGM_FI_DEV_PCIE_TX_THROUGHPUT",
    "DCGM_FI_DEV_PCIE_RX_THROUGHPUT",
    "DCGM_FI_DEV_POWER_VIOLATION",
    "DCGM_FI_DEV_THERMAL_VIOLATION",
    "DCGM_FI_DEV_SYNC_BOOST_VIOLATION",
    "DCGM_FI_DEV_BOARD_LIMIT_VIOLATION",
    "DCGM_FI_DEV_LOW_UTIL_VIOLATION",
    "DCGM_FI_DEV_RELIABILITY_VIOLATION",
    "DCGM_FI_PROF_NVLINK_TX_BYTES",
    "DCGM_FI_PROF_NVLINK_RX_BYTES",
    NULL,
};

/* dcgm-exporter's default set (its default-counters.csv, with the
 * profiling fields its DCP build adds and the driver version label). */
static const char *const defaults[] = {
    "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_MEM_CLOCK", "DCGM_FI_DEV_MEMORY_TEMP",
    "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_MEM_COPY_UTIL",
    "DCGM_FI_DEV_ENC_UTIL", "DCGM_FI_DEV_DEC_UTIL", "DCGM_FI_DEV_XID_ERRORS",
    "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_RESERVED",
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "DCGM_FI_DEV_ROW_REMAP_FAILURE",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "DCGM_FI_PROF_DRAM_ACTIVE",
    "DCGM_FI_PROF_PCIE_TX_BYTES", "DCGM_FI_PROF_PCIE_RX_BYTES", "DCGM_FI_DRIVER_VERSION", NULL,
};

const struct field *fields_lookup(const char *name)
{
    for (size_t i = 0; i < sizeof catalog / sizeof catalog[0]; i++)
        if (strcmp(catalog[i].name, name) == 0)
            return &catalog[i];
    return NULL;
}

static bool is_unavailable(const char *name)
{
    for (size_t i = 0; unavailable[i]; i++)
        if (strcmp(unavailable[i], name) == 0)
            return true;
    return false;
}

void fields_default(struct field_selection *sel)
{
    memset(sel, 0, sizeof *sel);
    for (size_t i = 0; defaults[i]; i++)
        sel->items[sel->count++] = *fields_lookup(defaults[i]);
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' || end[-1] == '\n'))
        *--end = '\0';
    return s;
}

static int parse(const char *file, const char *text, struct field_selection *sel,
                 struct gpulet_error *err)
{
    unsigned long line_no = 0;
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char line[1024];
        line_no++;
        if (len >= sizeof line)
            return gpulet_error_set(err, GPULET_ERR_INPUT, "%s line %lu: the line is too long",
                                    file, line_no);
        memcpy(line, p, len);
        line[len] = '\0';
        p = nl ? nl + 1 : p + len;
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *c1 = strchr(s, ',');
        char *c2 = c1 ? strchr(c1 + 1, ',') : NULL;
        if (c1 == NULL || c2 == NULL)
            return gpulet_error_set(err, GPULET_ERR_INPUT,
                                    "%s line %lu: expected \"FIELD, type, help\" (two commas)",
                                    file, line_no);
        *c1 = *c2 = '\0';
        char *name = trim(s), *type = trim(c1 + 1), *help = trim(c2 + 1);
        enum field_type t;
        if (strcmp(type, "gauge") == 0)
            t = FIELD_GAUGE;
        else if (strcmp(type, "counter") == 0)
            t = FIELD_COUNTER;
        else if (strcmp(type, "label") == 0)
            t = FIELD_LABEL;
        else
            return gpulet_error_set(err, GPULET_ERR_INPUT,
                                    "%s line %lu: %s: type must be gauge, counter or label, not "
                                    "\"%s\"",
                                    file, line_no, name, type);
        const struct field *f = fields_lookup(name);
        if (f == NULL) {
            if (is_unavailable(name)) {
                if (sel->unavailable_count < 64)
                    snprintf(sel->unavailable[sel->unavailable_count++], 64, "%s", name);
                continue;
            }
            return gpulet_error_set(err, GPULET_ERR_INPUT, "%s line %lu: unknown field %s",
                                    file, line_no, name);
        }
        if ((t == FIELD_LABEL) != (f->type == FIELD_LABEL))
            return gpulet_error_set(err, GPULET_ERR_INPUT,
                                    "%s line %lu: %s is %s field, not a %s", file, line_no, name,
                                    f->type == FIELD_LABEL ? "a label" : "a series", type);
        for (size_t i = 0; i < sel->count; i++)
            if (sel->items[i].id == f->id)
                return gpulet_error_set(err, GPULET_ERR_INPUT, "%s line %lu: %s is listed twice",
                                        file, line_no, name);
        if (sel->count == sizeof sel->items / sizeof sel->items[0])
            return gpulet_error_set(err, GPULET_ERR_INPUT, "%s line %lu: too many fields", file,
                                    line_no);
        struct field chosen = *f;
        chosen.type = t;
        /* The user's help text wins, as with dcgm-exporter. Kept in the
         * catalog's storage only when equal; else in a copy we own. */
        if (help[0] && strcmp(help, f->help) != 0) {
            char *own = strdup(help);
            if (own == NULL)
                return gpulet_error_errno(err, ENOMEM, "cannot read %s", file);
            chosen.help = own;
            chosen.help_owned = true;
        }
        sel->items[sel->count++] = chosen;
    }
    return 0;
}

int fields_parse(const char *file, const char *text, struct field_selection *sel,
                 struct gpulet_error *err)
{
    memset(sel, 0, sizeof *sel);
    if (parse(file, text, sel, err) < 0) {
        fields_free(sel);
        return -1;
    }
    return 0;
}

void fields_free(struct field_selection *sel)
{
    for (size_t i = 0; i < sel->count; i++)
        if (sel->items[i].help_owned)
            free((char *)sel->items[i].help);
    sel->count = 0;
}

int fields_load(const char *path, struct field_selection *sel, struct gpulet_error *err)
{
    char *text;
    size_t len;
    if (fileio_read(path, 1u << 20, &text, &len, err) < 0) {
        gpulet_error_prefix(err, "counters file");
        return -1;
    }
    int rc = fields_parse(path, text, sel, err);
    free(text);
    return rc;
}
