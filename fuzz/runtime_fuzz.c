/*
 * libFuzzer target for what gpulet-runtime and `gpulet runtime configure`
 * read from outside: a bundle's config.json (the request and the CDI edits
 * applied to it) and container engines' TOML (fuzz/toml_fuzz.c also drives
 * the engine editors). The first byte picks which.
 *
 *   make fuzz            (long run)   ·   make test runs it for 20 s
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime.h"
#include "toml/toml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    struct gpulet_error err = {0};
    if (data[0] & 1) {
        toml_free(toml_parse("fuzz.toml", (const char *)data + 1, size - 1, &err));
        return 0;
    }
    json_t *config = json_loadb((const char *)data + 1, size - 1, JSON_REJECT_DUPLICATES, NULL);
    if (config == NULL)
        return 0;
    struct runtime_request req;
    if (runtime_find_request(config, &req, &err) == 0 && (req.count || req.all)) {
        /* /dev/null is a character device on every Linux machine. */
        json_t *spec = json_pack("{s:s, s:[{s:s, s:{s:[{s:s}]}}, {s:s, s:{s:[{s:s}]}}], "
                                 "s:{s:[s], s:[{s:s, s:s, s:[s]}]}}",
                                 "kind", "nvidia.com/gpu", "devices", "name", "0",
                                 "containerEdits", "deviceNodes", "path", "/dev/null", "name",
                                 "all", "containerEdits", "deviceNodes", "path", "/dev/null",
                                 "containerEdits", "env", "NVIDIA_VISIBLE_DEVICES=void", "mounts",
                                 "hostPath", "/etc/hostname", "containerPath", "/x", "options",
                                 "ro");
        runtime_apply(config, spec, "fuzz.yaml", &req, &err);
        json_decref(spec);
    }
    json_decref(config);
    return 0;
}
