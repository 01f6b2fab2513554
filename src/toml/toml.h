/*
 * toml: TOML 1.0 documents, read into a tree and written back.
 *
 * Container engines (containerd, CRI-O) keep their configuration in TOML,
 * and `gpulet runtime configure` must understand every form they accept —
 * inline tables, dotted keys, arrays of tables, every string form — to
 * change one runtime without losing anything else. The parser follows the
 * TOML 1.0 specification, including its rules against redefining keys and
 * tables; every node carries the line it was defined on; numbers, booleans
 * and dates are checked and kept as their text, so they are written back
 * exactly as they were read. Input is hostile: size, nesting depth, key
 * length and the number of values are bounded, and each lookup in a table
 * is O(1), so a large file costs linear time and bounded memory.
 */
#ifndef GPULET_TOML_H
#define GPULET_TOML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error/error.h"

#define TOML_MAX_BYTES (16u << 20) /* a document */
#define TOML_MAX_DEPTH 64          /* nested tables, arrays and inline tables */
#define TOML_MAX_KEY 4096          /* bytes in one key part */
/* Values and tables in a document (containerd's whole default config has
 * ~300): with it, the tree of any document within TOML_MAX_BYTES costs at
 * most ~48 MiB besides the text itself (measured: 131,068 quoted 100-byte
 * keys in 15 MiB, +41 MiB), where a 4 MB "x = [1,1,…]" took 1.3 GB. */
#define TOML_MAX_NODES (1u << 17)

enum toml_type {
    TOML_TABLE,
    TOML_ARRAY,
    TOML_STRING,
    TOML_INTEGER,
    TOML_FLOAT,
    TOML_BOOL,
    TOML_DATETIME, /* offset or local date-time, local date or local time */
};

struct toml_pair;

struct toml_node {
    enum toml_type type;
    const char *file;     /* the name given to toml_parse (kept by the caller), or NULL */
    unsigned long line;   /* where it was defined (1-based; 0: made by a program) */
    size_t start, end;    /* a value's text in the document: [start, end) */
    /* TOML_STRING: the decoded bytes (NUL-terminated; may hold NULs);
     * numbers, booleans and dates: the text as written. */
    char *text;
    size_t len;
    /* TOML_TABLE: pairs in definition order; TOML_ARRAY: items. */
    size_t count;
    struct toml_pair *pairs;
    struct toml_node **items;
    /* How a table came to be (the rules against redefinition need it), and
     * whether an array is an array of tables ([[header]]). */
    unsigned flags;
    unsigned depth;
    /* private: the table's hash index */
    size_t cap, slots_cap;
    uint32_t *slots;
};

struct toml_pair {
    char *key;
    size_t key_len;
    struct toml_node *value;
};

enum toml_flags {
    TOML_IMPLICIT = 1u << 0, /* a table named only as part of a longer header */
    TOML_HEADER = 1u << 1,   /* defined by [header] */
    TOML_DOTTED = 1u << 2,   /* defined by dotted keys */
    TOML_INLINE = 1u << 3,   /* an inline table or anything inside a value: closed */
    TOML_AOT = 1u << 4,      /* an array of tables made by [[header]] */
};

/* Parses len bytes of text (a UTF-8 byte order mark is skipped). NULL on
 * error, with "NAME:LINE: what is wrong" in err. */
struct toml_node *toml_parse(const char *name, const char *text, size_t len,
                             struct gpulet_error *err);

void toml_free(struct toml_node *node);

/* The value of key in table, or NULL (also when table is not a table). */
struct toml_node *toml_get(const struct toml_node *table, const char *key);

/* Follows keys (a NULL-terminated list) from table; NULL when a part is
 * missing or not a table. */
struct toml_node *toml_path(const struct toml_node *table, const char *const *keys);

/* New nodes, and changes to a tree. toml_set replaces an existing value
 * (freeing it) or appends the pair; it takes ownership of value. */
struct toml_node *toml_new(enum toml_type type);
struct toml_node *toml_new_string(const char *s);
int toml_set(struct toml_node *table, const char *key, struct toml_node *value);
void toml_remove(struct toml_node *table, const char *key);
struct toml_node *toml_copy(const struct toml_node *node);

/* Equal values: same type, same decoded string or same text, equal items
 * and equal pairs (in any order). */
bool toml_equal(const struct toml_node *a, const struct toml_node *b);

/* Writes table's contents as a TOML document: its plain values first, then
 * each sub-table as [prefix.key] (arrays of tables as [[prefix.key]]).
 * prefix: the keys naming table itself (NULL-terminated; NULL for the
 * document's root). A sub-table that holds nothing but sub-tables gets no
 * header of its own, as people write them. */
void toml_write(FILE *out, const struct toml_node *table, const char *const *prefix);

/* Writes a key (bare when it can be) or a value. */
void toml_write_key(FILE *out, const char *key, size_t len);
void toml_write_value(FILE *out, const struct toml_node *value);

#endif
