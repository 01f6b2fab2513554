/*
 * libFuzzer target for the CDI specs gpulet-runtime loads from /etc/cdi
 * and /var/run/cdi: the YAML (or JSON) text through yamldoc and its bounds
 * into the JSON tree, then its edits applied to a bundle's config.json
 * that asks for GPU 0 and, on an odd first byte, for all of them.
 *
 *   make fuzz            (long run)   ·   make test runs it for 20 s
 */
#include <stddef.h>
#include <stdint.h>

#include "runtime/runtime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    struct gpulet_error err = {0};
    json_t *spec;
    if (runtime_parse_spec("fuzz.yaml", (const char *)data + 1, size - 1, &spec, &err) < 0)
        return 0;
    json_t *config = json_pack("{s:{s:[s]}, s:[], s:{}}", "process", "env",
                               "NVIDIA_VISIBLE_DEVICES=0", "mounts", "linux");
    struct runtime_request req;
    if (runtime_find_request(config, &req, &err) == 0) {
        req.all = data[0] & 1;
        runtime_apply(config, spec, "fuzz.yaml", &req, &err);
    }
    json_decref(config);
    json_decref(spec);
    return 0;
}
