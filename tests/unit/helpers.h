/* Helpers shared by the unit tests: run NVML on a simulated node, write
 * files atomically, check messages. Header-only so each test stays one
 * program. */
#ifndef GPULET_TEST_HELPERS_H
#define GPULET_TEST_HELPERS_H

#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "nvml/nvml.h"

/* Fails the test, showing both, unless needle occurs in haystack. */
#define assert_contains(haystack, needle)                                                     \
    do {                                                                                      \
        const char *h_ = (haystack), *n_ = (needle);                                          \
        if (strstr(h_, n_) == NULL)                                                           \
            fail_msg("expected \"%s\" in \"%s\"", n_, h_);                                    \
    } while (0)

static inline void write_file(const char *path, const char *text)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    /* rename, as the simulator's users are told to, so no reader sees half a file */
    assert_int_equal(rename(tmp, path), 0);
}

/* A fresh temporary directory; the caller removes what it puts there. */
static inline void temp_dir(char *buf, size_t len)
{
    snprintf(buf, len, "/tmp/gpulet-unit-XXXXXX");
    assert_non_null(mkdtemp(buf));
}

static inline int remove_entry(const char *path, const struct stat *st, int flag,
                               struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes a temp_dir and what is in it, links not followed, so a test run
 * leaves nothing in /tmp. */
static inline void remove_tree(const char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static inline void use_node(const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.yaml", SIM_NODES_DIR, name);
    setenv("GPULET_SIM_NODE", path, 1);
}

/* Opens the simulator (current or old flavour) on a fixture. */
static inline struct nvml *open_sim(const char *node, const char *lib)
{
    use_node(node);
    struct nvml_options opts = {.library_path = lib};
    struct gpulet_error err = {0};
    struct nvml *n = NULL;
    if (nvml_open(&opts, &n, &err) < 0)
        fail_msg("nvml_open on %s: %s", node, err.msg);
    return n;
}

#endif
