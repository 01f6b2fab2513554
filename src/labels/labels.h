/*
 * labels: the nvidia.com/... node labels NVIDIA's gpu-feature-discovery
 * writes, computed from the GPU inventory and the sharing / MIG
 * configuration, and written for NFD's local feature source.
 *
 * labels_compute() gives the set, sorted by key; a label whose key or
 * value is not a valid Kubernetes label is left out (and logged), so
 * nothing invalid is ever written. labels_write() replaces the file
 * atomically: a temporary file in the same folder, fsync, rename, fsync of
 * the folder — a reader sees the old set or the new, never half of one.
 */
#ifndef GPULET_LABELS_H
#define GPULET_LABELS_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "config/config.h"
#include "error/error.h"
#include "gpu/gpu.h"

#define LABELS_DEFAULT_FILE "/etc/kubernetes/node-feature-discovery/features.d/gfd"

struct label {
    char key[128];
    char value[64];
};

struct label_set {
    size_t count;
    struct label *items;
};

/* timestamp: add nvidia.com/gfd.timestamp = now. */
int labels_compute(const struct gpu_inventory *inv, const struct config *cfg, bool timestamp,
                   time_t now, struct label_set *out, struct gpulet_error *err);
void labels_free(struct label_set *set);

/* "key=value\n" lines, the NFD local feature file format. */
void labels_print(const struct label_set *set, FILE *out);
int labels_write(const struct label_set *set, const char *path, struct gpulet_error *err);

/* Kubernetes label syntax: an optional DNS prefix and "/", a name of at
 * most 63 characters; values of at most 63 characters. */
bool label_key_valid(const char *key);
bool label_value_valid(const char *value);

/* NVIDIA's product label: the NVML name with characters outside
 * [A-Za-z0-9-_. ] removed and spaces turned into '-'. */
void label_product(const char *name, char *buf, size_t len);
/* gpulet's short model name: vendor words (NVIDIA, Tesla, GeForce, Quadro)
 * dropped, up to the first word with a digit, cut before its first '-':
 * "Tesla V100-SXM2-16GB" -> "V100", "NVIDIA GeForce RTX 4090" -> "RTX-4090". */
void label_model(const char *name, char *buf, size_t len);
/* "volta", "ampere", ... from the compute capability; "undefined" if unknown. */
const char *label_family(int major, int minor);

#endif
