/*
 * yamldoc: a YAML file loaded whole, walked with typed getters whose
 * errors name the file and line ("node.yaml line 12: memory_mib must be a
 * whole number from 1 to 4194304, not \"lots\"").
 *
 * Used for every YAML gpulet reads (node descriptions of the simulator,
 * the daemon's configuration), so all of them report problems the same
 * way. JSON is YAML, so JSON files load too. A document owns its nodes;
 * node pointers stay valid until ydoc_free().
 *
 * Every document is checked against bounds before it is built, so a
 * hostile file costs at most a few MiB: aliases (*name) are refused (an
 * alias makes the tree a graph: recursive aliases and "billion laughs"
 * expansions), and so is a file over YDOC_MAX_BYTES, nesting deeper than
 * YDOC_MAX_DEPTH, more than YDOC_MAX_NODES nodes or YDOC_MAX_ANCHORS
 * anchors. Files are read only if regular (a FIFO does not block the
 * reader).
 */
#ifndef GPULET_YAMLDOC_H
#define GPULET_YAMLDOC_H

#include <stdbool.h>
#include <stddef.h>

#include "error/error.h"

#define YDOC_MAX_BYTES (4u << 20)
#define YDOC_MAX_DEPTH 64
#define YDOC_MAX_NODES 100000
/* libyaml checks each new anchor against all earlier ones: n anchors cost
 * n^2/2 string compares (100,000 took minutes). Aliases are refused, so
 * anchors serve nothing; a few are let through for hand-written files. */
#define YDOC_MAX_ANCHORS 1024

struct ydoc;
struct ynode;

int ydoc_load_file(const char *path, struct ydoc **out, struct gpulet_error *err);
int ydoc_load_string(const char *name, const char *text, size_t len, struct ydoc **out,
                     struct gpulet_error *err);
void ydoc_free(struct ydoc *doc);

const char *ydoc_name(const struct ydoc *doc);
/* NULL for an empty document. */
const struct ynode *ydoc_root(const struct ydoc *doc);

bool ynode_is_map(const struct ynode *n);
bool ynode_is_seq(const struct ynode *n);
bool ynode_is_scalar(const struct ynode *n);
/* The scalar's text, or NULL for a map or sequence. */
const char *ynode_text(const struct ynode *n);
/* True for ~, null, Null, NULL or an empty plain scalar. */
bool ynode_is_null(const struct ynode *n);
unsigned long ynode_line(const struct ynode *n);

/* Items of a sequence, or pairs of a map. */
size_t ynode_count(const struct ydoc *doc, const struct ynode *n);
const struct ynode *ynode_item(const struct ydoc *doc, const struct ynode *seq, size_t i);
const struct ynode *ynode_key(const struct ydoc *doc, const struct ynode *map, size_t i);
const struct ynode *ynode_value(const struct ydoc *doc, const struct ynode *map, size_t i);
/* The value of a scalar key in a map, or NULL. */
const struct ynode *ynode_get(const struct ydoc *doc, const struct ynode *map, const char *key);

/* Sets "FILE line N: <message>" in err (kind INPUT); returns -1. */
int ydoc_fail(const struct ydoc *doc, const struct ynode *n, struct gpulet_error *err,
              const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Each of these checks the node's type and range and fails with a message
 * naming `what`, the file and the line. */
int ynode_expect_map(const struct ydoc *doc, const struct ynode *n, const char *what,
                     struct gpulet_error *err);
int ynode_expect_seq(const struct ydoc *doc, const struct ynode *n, const char *what,
                     struct gpulet_error *err);
int ynode_uint(const struct ydoc *doc, const struct ynode *n, const char *what,
               unsigned long long min, unsigned long long max, unsigned long long *out,
               struct gpulet_error *err);
int ynode_int(const struct ydoc *doc, const struct ynode *n, const char *what, long long min,
              long long max, long long *out, struct gpulet_error *err);
int ynode_bool(const struct ydoc *doc, const struct ynode *n, const char *what, bool *out,
               struct gpulet_error *err);
/* Copies a non-empty scalar; too long for buf is an error, not a cut. */
int ynode_string(const struct ydoc *doc, const struct ynode *n, const char *what, char *buf,
                 size_t len, struct gpulet_error *err);

/* Fails on the first key of map not in allowed (NULL-terminated), listing
 * the allowed ones; `where` names the map in the message ("gpu 3"). */
int ynode_check_keys(const struct ydoc *doc, const struct ynode *map,
                     const char *const *allowed, const char *where, struct gpulet_error *err);

#endif
