/*
 * libFuzzer target for engines' configuration files: the TOML parser and
 * writer, and each editor of `gpulet runtime configure` (containerd and
 * CRI-O TOML, Docker JSON). The first byte picks which. A document that
 * parses must be written back to one that parses to the same tree; an
 * edit that succeeds must give files that parse.
 *
 *   make fuzz            (long run)   ·   make test runs it for 20 s
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/configure_edit.h"
#include "toml/toml.h"

static void must_parse(const char *name, const char *text)
{
    struct gpulet_error err = {0};
    struct toml_node *t = toml_parse(name, text, strlen(text), &err);
    if (t == NULL) {
        fprintf(stderr, "an edit gave TOML that does not parse: %s\n%s\n", err.msg, text);
        abort();
    }
    toml_free(t);
}

static void round_trip(const uint8_t *data, size_t size)
{
    struct gpulet_error err = {0};
    struct toml_node *t = toml_parse("fuzz.toml", (const char *)data, size, &err);
    if (t == NULL)
        return;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    toml_write(f, t, NULL);
    fclose(f);
    struct toml_node *again = toml_parse("written.toml", text, len, &err);
    if (again == NULL || !toml_equal(t, again)) {
        fprintf(stderr, "written back differently (%s):\n%s\n", again ? "" : err.msg, text);
        abort();
    }
    toml_free(again);
    toml_free(t);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] % 4 == 0) {
        round_trip(data + 1, size - 1);
        return 0;
    }
    char *old = malloc(size);
    memcpy(old, data + 1, size - 1);
    old[size - 1] = '\0';
    struct configure_options opts = {.runtime_path = "/usr/local/bin/gpulet-runtime",
                                     .set_as_default = data[0] & 4};
    struct gpulet_error err = {0};
    const char *dir = "/nonexistent-gpulet-fuzz";
    if (data[0] % 4 == 1) {
        char *new_main, *new_drop;
        if (configure_containerd_text("/nonexistent-gpulet-fuzz/config.toml", old, data[0] & 8,
                                      "/nonexistent-gpulet-fuzz/conf.d/99-gpulet.toml",
                                      "/nonexistent-gpulet-fuzz/conf.d/*.toml", &opts, &new_main,
                                      &new_drop, &err) == 0) {
            must_parse(dir, new_main);
            must_parse(dir, new_drop);
            free(new_main);
            free(new_drop);
        }
    } else if (data[0] % 4 == 2) {
        char *text = configure_crio_text("fuzz.toml", old, &opts, &err);
        if (text != NULL)
            must_parse("crio.toml", text);
        free(text);
    } else {
        free(configure_docker_text("daemon.json", old, &opts, &err));
    }
    free(old);
    return 0;
}
