/* Inside the runtime module: scanning container engines' TOML. */
#ifndef GPULET_RUNTIME_TOML_SCAN_H
#define GPULET_RUNTIME_TOML_SCAN_H

#include <stdbool.h>
#include <stddef.h>

#include "error/error.h"

enum toml_item { TOML_TABLE, TOML_TOP_KEY };

/* key: the dotted path with parts joined by '\x1f' (quotes removed);
 * at: where the statement starts in the text. */
typedef int (*toml_scan_fn)(enum toml_item item, const char *key, const char *at,
                            unsigned long line, void *user);

/* Checks the syntax of text and reports tables and top-level keys in
 * order; errors name the file and line. */
int toml_scan(const char *name, const char *text, toml_scan_fn fn, void *user,
              struct gpulet_error *err);

#endif
