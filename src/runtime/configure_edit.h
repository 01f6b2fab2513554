/* Inside the runtime module: the engine editors of `gpulet runtime
 * configure` on text, so the fuzz target can drive them without files.
 * Each returns the new text (malloc'ed) only after checking that it parses
 * and keeps every setting of the old one but those gpulet sets; NULL with
 * an error that ends "nothing was changed" otherwise. */
#ifndef GPULET_RUNTIME_CONFIGURE_EDIT_H
#define GPULET_RUNTIME_CONFIGURE_EDIT_H

#include <stdbool.h>

#include "error/error.h"
#include "runtime.h"

char *configure_docker_text(const char *path, const char *old, const struct configure_options *opts,
                            struct gpulet_error *err);

/* old: "" when there is no file yet. */
char *configure_crio_text(const char *path, const char *old, const struct configure_options *opts,
                          struct gpulet_error *err);

/* The drop-in (*new_drop) and the main file (*new_main) for containerd.
 * Files the main one imports are read from disk, as containerd would;
 * drop_path itself never is (it is gpulet's, and rewritten). */
int configure_containerd_text(const char *main_path, const char *old_main, bool existed,
                              const char *drop_path, const char *drop_glob,
                              const struct configure_options *opts, char **new_main,
                              char **new_drop, struct gpulet_error *err);

#endif
