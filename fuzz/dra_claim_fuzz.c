/*
 * libFuzzer target for a ResourceClaim as gpulet's DRA driver reads it from
 * the API server (dra_claim_parse), NVIDIA's opaque GpuConfig /
 * MigDeviceConfig included: any input is parsed or refused with a message;
 * a parsed claim keeps the bounds the driver relies on (device count, a
 * time slice of 0..3, an MPS percentage of -1..100, at most 16 limits of
 * at least 1 MiB).
 *
 *   make fuzz            (long run)   ·   make test runs it for 20 s
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dra/dra_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dra_result *r = NULL;
    size_t n = 0;
    struct dra_mps mps;
    struct gpulet_error err = {0};
    if (dra_claim_parse((const char *)data, size, "4a1e0b5c-2f0e-4c6b-9d3b-1b2a3c4d5e6f",
                        "node1", &r, &n, &mps, &err) < 0) {
        if (err.msg[0] == '\0')
            abort(); /* refused without a reason */
        return 0;
    }
    if (n > DRA_CLAIM_DEVICES)
        abort();
    for (size_t i = 0; i < n; i++)
        if ((r[i].timeslice && r[i].interval > 3) || (r[i].mps && !mps.on) ||
            strlen(r[i].device) >= DRA_NAME_MAX)
            abort();
    if (mps.on && (mps.thread_percentage < -1 || mps.thread_percentage > 100 ||
                   mps.n_limits > DRA_MPS_LIMITS || (mps.pinned && mps.pinned < (1u << 20))))
        abort();
    for (size_t i = 0; i < mps.n_limits; i++)
        if (mps.limits[i].bytes < (1u << 20))
            abort();
    free(r);
    return 0;
}
