/*
 * libFuzzer target for the limits file the CUDA interposer reads from
 * /etc/gpulet/cuda-limits (src/cuda/cuda_limits.c): any text either parses
 * to limits within their bounds or is refused with a message; a parsed
 * file's UUIDs compare against themselves.
 *
 *   make fuzz            (long run)   ·   make test runs it for 20 s
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_limits.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct glc_limits l;
    char msg[256] = "";
    if (glc_parse_limits((const char *)data, size, &l, msg, sizeof msg) < 0) {
        if (msg[0] == '\0')
            abort(); /* a refusal always says why */
        return 0;
    }
    if (size > GLC_LIMITS_MAX_BYTES)
        abort();
    for (int i = 0; i < GLC_MAX_DEVS; i++) {
        if (l.dev[i].share >= 10000 || memchr(l.dev[i].uuid, '\0', sizeof l.dev[i].uuid) == NULL)
            abort();
        if (l.by_uuid && l.dev[i].uuid[0] && !glc_same_uuid(l.dev[i].uuid, l.dev[i].uuid))
            abort();
    }
    if (l.state_dir[0] && l.state_dir[0] != '/')
        abort();
    return 0;
}
