/*
 * libFuzzer target for the daemon's configuration file (NVIDIA's config v1
 * and gpulet's keys, sharing.slices among them): any input either loads or
 * is refused with a message naming the file; a loaded configuration keeps
 * the invariants the plugin relies on.
 *
 *   make fuzz            (long run)   ·   make test runs it for 20 s
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config/config.h"

static const char *no_env(const char *name)
{
    (void)name;
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("config", 0);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size)
        abort();
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    struct config_flags flags = {.config_file = path};
    struct config *cfg = malloc(sizeof *cfg);
    struct gpulet_error err = {0};
    if (cfg == NULL)
        abort();
    if (config_load(&flags, no_env, cfg, &err) < 0) {
        if (strstr(err.msg, path) == NULL) {
            fprintf(stderr, "an error without the file's name: %s\n", err.msg);
            abort();
        }
    } else {
        if (cfg->shared_count > CONFIG_MAX_SHARED)
            abort();
        for (size_t i = 0; i < cfg->shared_count; i++) {
            const struct shared_resource *s = &cfg->shared[i];
            /* slices: exactly one of replicas and memory; time-slicing: replicas */
            if (s->slices ? (s->replicas == 0) == (s->slice_bytes == 0)
                          : s->replicas < 2 || s->slice_bytes != 0)
                abort();
            for (size_t j = 0; j < i; j++)
                if (strcmp(cfg->shared[j].name, s->name) == 0 &&
                    (s->selector_count == 0 || cfg->shared[j].selector_count == 0))
                    abort(); /* overlapping selections must have been refused */
        }
    }
    free(cfg);
    close(fd);
    return 0;
}
