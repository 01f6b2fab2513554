#include "devices.h"

#include <stdlib.h>
#include <string.h>

void *arena_alloc(struct arena *a, size_t size)
{
    if (a->count == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 32;
        void **ptrs = realloc(a->ptrs, cap * sizeof *ptrs);
        if (ptrs == NULL)
            abort(); /* a few bytes for a reply; nothing sensible to do without them */
        a->ptrs = ptrs;
        a->cap = cap;
    }
    void *p = calloc(1, size ? size : 1);
    if (p == NULL)
        abort();
    a->ptrs[a->count++] = p;
    return p;
}

char *arena_strdup(struct arena *a, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = arena_alloc(a, n);
    memcpy(p, s, n);
    return p;
}

void arena_free(struct arena *a)
{
    for (size_t i = 0; i < a->count; i++)
        free(a->ptrs[i]);
    free(a->ptrs);
    a->ptrs = NULL;
    a->count = a->cap = 0;
}

/* Room for one more item of size bytes in a list of n: the list itself,
 * or a copy twice as large (the old one stays in the arena until it is
 * freed). */
static void *room(struct arena *a, void *items, size_t n, size_t *cap, size_t size)
{
    if (n < *cap)
        return items;
    *cap = *cap ? *cap * 2 : 8;
    void *bigger = arena_alloc(a, *cap * size);
    if (n)
        memcpy(bigger, items, n * size);
    return bigger;
}

static void add_pair(struct arena *a, struct devices_pair **list, size_t *n, size_t *cap,
                     const char *key, const char *value)
{
    *list = room(a, *list, *n, cap, sizeof **list);
    (*list)[(*n)++] = (struct devices_pair){arena_strdup(a, key), arena_strdup(a, value)};
}

void devices_edits_env(struct devices_edits *e, const char *key, const char *value)
{
    add_pair(e->arena, &e->env, &e->n_env, &e->cap_env, key, value);
}

void devices_edits_annotation(struct devices_edits *e, const char *key, const char *value)
{
    add_pair(e->arena, &e->annotations, &e->n_annotations, &e->cap_annotations, key, value);
}

void devices_edits_mount(struct devices_edits *e, const char *host, const char *container,
                         bool read_only)
{
    e->mounts = room(e->arena, e->mounts, e->n_mounts, &e->cap_mounts, sizeof *e->mounts);
    e->mounts[e->n_mounts++] = (struct devices_mount){
        arena_strdup(e->arena, host), arena_strdup(e->arena, container), read_only};
}

void devices_edits_node(struct devices_edits *e, const char *host, const char *container)
{
    e->nodes = room(e->arena, e->nodes, e->n_nodes, &e->cap_nodes, sizeof *e->nodes);
    e->nodes[e->n_nodes++] =
        (struct devices_node){arena_strdup(e->arena, host), arena_strdup(e->arena, container)};
}

void devices_edits_cdi_device(struct devices_edits *e, const char *name)
{
    e->cdi_devices = room(e->arena, e->cdi_devices, e->n_cdi_devices, &e->cap_cdi_devices,
                          sizeof *e->cdi_devices);
    e->cdi_devices[e->n_cdi_devices++] = arena_strdup(e->arena, name);
}
