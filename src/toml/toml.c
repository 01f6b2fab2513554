#include "toml/toml.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "text/text.h"

/* ---- nodes ---- */

struct toml_node *toml_new(enum toml_type type)
{
    struct toml_node *n = calloc(1, sizeof *n);
    if (n != NULL)
        n->type = type;
    return n;
}

struct toml_node *toml_new_string(const char *s)
{
    struct toml_node *n = toml_new(TOML_STRING);
    if (n == NULL || (n->text = strdup(s)) == NULL) {
        free(n);
        return NULL;
    }
    n->len = strlen(s);
    return n;
}

void toml_free(struct toml_node *n)
{
    if (n == NULL)
        return;
    for (size_t i = 0; i < n->count; i++) {
        if (n->type == TOML_TABLE) {
            free(n->pairs[i].key);
            toml_free(n->pairs[i].value);
        } else {
            toml_free(n->items[i]);
        }
    }
    free(n->pairs);
    free(n->items);
    free(n->slots);
    free(n->text);
    free(n);
}

static uint32_t hash(const char *key, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 16777619u;
    return h;
}

/* The slot holding key, or the empty slot where it would go. */
static uint32_t *slot(const struct toml_node *t, const char *key, size_t len)
{
    size_t mask = t->slots_cap - 1;
    for (size_t i = hash(key, len) & mask;; i = (i + 1) & mask) {
        uint32_t s = t->slots[i];
        if (s == 0)
            return &t->slots[i];
        const struct toml_pair *p = &t->pairs[s - 1];
        if (p->key_len == len && memcmp(p->key, key, len) == 0)
            return &t->slots[i];
    }
}

static int reindex(struct toml_node *t, size_t slots_cap)
{
    uint32_t *slots = calloc(slots_cap, sizeof *slots);
    if (slots == NULL)
        return -1;
    free(t->slots);
    t->slots = slots;
    t->slots_cap = slots_cap;
    for (size_t i = 0; i < t->count; i++)
        *slot(t, t->pairs[i].key, t->pairs[i].key_len) = (uint32_t)(i + 1);
    return 0;
}

static struct toml_node *get_n(const struct toml_node *t, const char *key, size_t len)
{
    if (t == NULL || t->type != TOML_TABLE || t->count == 0)
        return NULL;
    uint32_t s = *slot(t, key, len);
    return s ? t->pairs[s - 1].value : NULL;
}

struct toml_node *toml_get(const struct toml_node *table, const char *key)
{
    return get_n(table, key, strlen(key));
}

struct toml_node *toml_path(const struct toml_node *table, const char *const *keys)
{
    struct toml_node *n = NULL;
    for (; *keys != NULL; keys++) {
        if ((n = toml_get(table, *keys)) == NULL)
            return NULL;
        table = n;
    }
    return n;
}

/* Appends a pair the table does not have yet. */
static int add_pair(struct toml_node *t, const char *key, size_t len, struct toml_node *value)
{
    if (t->count == UINT32_MAX - 1)
        return -1;
    if (t->count == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 4;
        struct toml_pair *pairs = realloc(t->pairs, cap * sizeof *pairs);
        if (pairs == NULL)
            return -1;
        t->pairs = pairs;
        t->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return -1;
    memcpy(copy, key, len);
    copy[len] = '\0';
    t->pairs[t->count++] = (struct toml_pair){copy, len, value};
    if (t->count * 2 > t->slots_cap) {
        if (reindex(t, t->slots_cap ? t->slots_cap * 2 : 8) != 0) {
            free(copy);
            t->count--;
            return -1;
        }
    } else {
        *slot(t, key, len) = (uint32_t)t->count;
    }
    return 0;
}

static int add_item(struct toml_node *a, struct toml_node *item)
{
    if (a->count == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 4;
        struct toml_node **items = realloc(a->items, cap * sizeof *items);
        if (items == NULL)
            return -1;
        a->items = items;
        a->cap = cap;
    }
    a->items[a->count++] = item;
    return 0;
}

int toml_set(struct toml_node *table, const char *key, struct toml_node *value)
{
    size_t len = strlen(key);
    if (table->count > 0) {
        uint32_t s = *slot(table, key, len);
        if (s != 0) {
            toml_free(table->pairs[s - 1].value);
            table->pairs[s - 1].value = value;
            return 0;
        }
    }
    return add_pair(table, key, len, value);
}

void toml_remove(struct toml_node *table, const char *key)
{
    size_t len = strlen(key);
    if (table->type != TOML_TABLE || table->count == 0)
        return;
    uint32_t s = *slot(table, key, len);
    if (s == 0)
        return;
    free(table->pairs[s - 1].key);
    toml_free(table->pairs[s - 1].value);
    memmove(&table->pairs[s - 1], &table->pairs[s],
            (table->count - s) * sizeof *table->pairs);
    table->count--;
    /* Same capacity: cannot fail. */
    memset(table->slots, 0, table->slots_cap * sizeof *table->slots);
    for (size_t i = 0; i < table->count; i++)
        *slot(table, table->pairs[i].key, table->pairs[i].key_len) = (uint32_t)(i + 1);
}

struct toml_node *toml_copy(const struct toml_node *n)
{
    struct toml_node *c = toml_new(n->type);
    if (c == NULL)
        return NULL;
    c->file = n->file;
    c->line = n->line;
    c->flags = n->flags;
    c->depth = n->depth;
    if (n->text != NULL) {
        if ((c->text = malloc(n->len + 1)) == NULL)
            goto fail;
        memcpy(c->text, n->text, n->len + 1);
        c->len = n->len;
    }
    for (size_t i = 0; i < n->count; i++) {
        struct toml_node *v = toml_copy(n->type == TOML_TABLE ? n->pairs[i].value : n->items[i]);
        if (v == NULL)
            goto fail;
        int rc = n->type == TOML_TABLE ? add_pair(c, n->pairs[i].key, n->pairs[i].key_len, v)
                                       : add_item(c, v);
        if (rc != 0) {
            toml_free(v);
            goto fail;
        }
    }
    return c;
fail:
    toml_free(c);
    return NULL;
}

bool toml_equal(const struct toml_node *a, const struct toml_node *b)
{
    if (a->type != b->type || a->count != b->count)
        return false;
    if (a->type == TOML_TABLE) {
        for (size_t i = 0; i < a->count; i++) {
            const struct toml_node *v = get_n(b, a->pairs[i].key, a->pairs[i].key_len);
            if (v == NULL || !toml_equal(a->pairs[i].value, v))
                return false;
        }
        return true;
    }
    if (a->type == TOML_ARRAY) {
        for (size_t i = 0; i < a->count; i++)
            if (!toml_equal(a->items[i], b->items[i]))
                return false;
        return true;
    }
    return a->len == b->len && memcmp(a->text, b->text, a->len) == 0;
}

/* ---- parsing ---- */

struct parser {
    const char *name;
    const char *s;
    size_t len, pos;
    unsigned long line;
    struct toml_node *root, *current;
    size_t nodes; /* made so far, against TOML_MAX_NODES */
    struct gpulet_error *err;
};

struct buf {
    char *data;
    size_t len, cap;
};

__attribute__((format(printf, 2, 3))) static int fail(struct parser *p, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return gpulet_error_set(p->err, GPULET_ERR_INPUT, "%s:%lu: %s", p->name, p->line, msg);
}

static int oom(struct parser *p)
{
    return fail(p, "out of memory");
}

static int put(struct parser *p, struct buf *b, const char *data, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 32;
        while (cap < b->len + len + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (d == NULL)
            return oom(p);
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

static int peek(const struct parser *p, size_t ahead)
{
    return p->pos + ahead < p->len ? (unsigned char)p->s[p->pos + ahead] : -1;
}

static bool is_control(int c)
{
    return (c >= 0 && c < 0x20 && c != '\t') || c == 0x7f;
}

static void skip_ws(struct parser *p)
{
    while (peek(p, 0) == ' ' || peek(p, 0) == '\t')
        p->pos++;
}

/* A newline (LF or CRLF) at pos: consumed, true. */
static bool newline(struct parser *p)
{
    if (peek(p, 0) == '\n') {
        p->pos++;
        p->line++;
        return true;
    }
    if (peek(p, 0) == '\r' && peek(p, 1) == '\n') {
        p->pos += 2;
        p->line++;
        return true;
    }
    return false;
}

static int comment(struct parser *p)
{
    if (peek(p, 0) != '#')
        return 0;
    for (p->pos++; p->pos < p->len; p->pos++) {
        int c = peek(p, 0);
        if (c == '\n' || (c == '\r' && peek(p, 1) == '\n'))
            break;
        if (is_control(c))
            return fail(p, "a control character in a comment");
    }
    return 0;
}

/* Spaces, comments and newlines, as arrays allow between values. */
static int skip_blank(struct parser *p)
{
    for (;;) {
        skip_ws(p);
        if (comment(p) != 0)
            return -1;
        if (!newline(p))
            return 0;
    }
}

/* What must end a statement: spaces, a comment, then a newline or the end. */
static int end_of_line(struct parser *p)
{
    skip_ws(p);
    if (comment(p) != 0)
        return -1;
    if (p->pos == p->len || newline(p))
        return 0;
    if (peek(p, 0) == '\r')
        return fail(p, "a carriage return not followed by a newline");
    return fail(p, "unexpected text after the value");
}

static int put_utf8(struct parser *p, struct buf *b, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | cp >> 6);
        u[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | cp >> 12);
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (char)(0xf0 | cp >> 18);
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return put(p, b, u, n);
}

static int escape(struct parser *p, struct buf *b)
{
    int c = peek(p, 0);
    p->pos++;
    const char *simple = strchr("btnfr\"\\", c);
    if (c > 0 && simple != NULL) {
        static const char decoded[] = "\b\t\n\f\r\"\\";
        return put(p, b, &decoded[simple - "btnfr\"\\"], 1);
    }
    if (c != 'u' && c != 'U')
        return fail(p, "an unknown escape sequence in a string");
    int digits = c == 'u' ? 4 : 8;
    uint32_t cp = 0;
    for (int i = 0; i < digits; i++) {
        int h = text_hex_value(peek(p, 0));
        if (h < 0)
            return fail(p, "\\%c needs %d hexadecimal digits", c, digits);
        cp = cp << 4 | (uint32_t)h;
        p->pos++;
    }
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return fail(p, "\\%c%0*" PRIX32 " is not a Unicode scalar value", c, digits, cp);
    return put_utf8(p, b, cp);
}

/* A string of any of the four kinds at pos, decoded into b. */
static int string(struct parser *p, struct buf *b)
{
    char quote = (char)peek(p, 0);
    bool multi = peek(p, 1) == quote && peek(p, 2) == quote;
    p->pos += multi ? 3 : 1;
    if (multi)
        newline(p); /* a newline right after the delimiter is not part of it */
    if (put(p, b, "", 0) != 0)
        return -1;
    for (;;) {
        int c = peek(p, 0);
        if (c < 0)
            return fail(p, "a string that does not end");
        if (c == quote) {
            if (!multi) {
                p->pos++;
                return 0;
            }
            size_t run = 0;
            while (peek(p, (size_t)run) == quote)
                run++;
            if (run >= 3) {
                if (run > 5)
                    return fail(p, "too many quotes at the end of a string");
                if (put(p, b, p->s + p->pos, run - 3) != 0)
                    return -1;
                p->pos += run;
                return 0;
            }
            if (put(p, b, p->s + p->pos, run) != 0)
                return -1;
            p->pos += run;
            continue;
        }
        if (multi && (c == '\n' || c == '\r')) {
            size_t at = p->pos;
            if (!newline(p))
                return fail(p, "a carriage return not followed by a newline");
            if (put(p, b, p->s + at, p->pos - at) != 0)
                return -1;
            continue;
        }
        if (is_control(c))
            return fail(p, "a control character in a string (escape it)");
        if (c == '\\' && quote == '"') {
            p->pos++;
            if (multi) {
                /* A line-ending backslash trims the newline and the
                 * blanks that follow. */
                size_t at = p->pos;
                skip_ws(p);
                if (peek(p, 0) == '\n' || peek(p, 0) == '\r') {
                    while (newline(p) || peek(p, 0) == ' ' || peek(p, 0) == '\t')
                        if (peek(p, 0) == ' ' || peek(p, 0) == '\t')
                            p->pos++;
                    if (peek(p, 0) == '\r')
                        return fail(p, "a carriage return not followed by a newline");
                    continue;
                }
                p->pos = at;
            }
            if (escape(p, b) != 0)
                return -1;
            continue;
        }
        if (put(p, b, p->s + p->pos, 1) != 0)
            return -1;
        p->pos++;
    }
}

static bool is_bare(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
}

struct key {
    size_t n;
    struct buf parts[TOML_MAX_DEPTH];
};

static void key_free(struct key *k)
{
    for (size_t i = 0; i < k->n; i++)
        free(k->parts[i].data);
    k->n = 0;
}

/* A dotted key: simple keys joined by dots, blanks allowed around them. */
static int key(struct parser *p, struct key *k)
{
    k->n = 0;
    for (;;) {
        if (k->n == TOML_MAX_DEPTH)
            return fail(p, "a key of more than %d parts", TOML_MAX_DEPTH);
        struct buf *b = &k->parts[k->n];
        *b = (struct buf){0};
        k->n++;
        int c = peek(p, 0);
        if (c == '"' || c == '\'') {
            if (peek(p, 1) == c && peek(p, 2) == c)
                return fail(p, "a key cannot be a multi-line string");
            if (string(p, b) != 0)
                return -1;
        } else {
            size_t at = p->pos;
            while (is_bare(peek(p, 0)))
                p->pos++;
            if (p->pos == at)
                return fail(p, "a key is missing or has a character keys cannot have "
                               "(quote it)");
            if (put(p, b, p->s + at, p->pos - at) != 0)
                return -1;
        }
        if (b->len > TOML_MAX_KEY)
            return fail(p, "a key longer than %u bytes", TOML_MAX_KEY);
        skip_ws(p);
        if (peek(p, 0) != '.')
            return 0;
        p->pos++;
        skip_ws(p);
    }
}

static int value(struct parser *p, unsigned depth, struct toml_node **out);

/* Every node of the document is made here, so their number (and with it
 * the memory a document costs) has a bound: without it, a 4 MB "x = [1,1,…]"
 * took 1.3 GB. NULL with the error set. */
static struct toml_node *new_node(struct parser *p, enum toml_type type)
{
    if (p->nodes == TOML_MAX_NODES) {
        fail(p, "more than %u values and tables in one document", TOML_MAX_NODES);
        return NULL;
    }
    struct toml_node *n = toml_new(type);
    if (n == NULL) {
        oom(p);
        return NULL;
    }
    p->nodes++;
    return n;
}

static struct toml_node *new_table(struct parser *p, const struct toml_node *parent,
                                   unsigned flags)
{
    struct toml_node *t = new_node(p, TOML_TABLE);
    if (t == NULL)
        return NULL;
    t->file = p->name;
    t->line = p->line;
    t->flags = flags;
    t->depth = parent->depth + 1;
    return t;
}

static int too_deep(struct parser *p, unsigned depth)
{
    return depth >= TOML_MAX_DEPTH ? fail(p, "nested deeper than %d levels", TOML_MAX_DEPTH) : 0;
}

static const char *what(const struct toml_node *n)
{
    switch (n->type) {
    case TOML_TABLE:
        return n->flags & TOML_INLINE ? "an inline table" : "a table";
    case TOML_ARRAY:
        return n->flags & TOML_AOT ? "an array of tables" : "an array";
    default:
        return "a value";
    }
}

/* key = value into table t; dotted keys make (or extend) tables defined by
 * dotted keys only. */
static int assign(struct parser *p, struct toml_node *t, struct key *k, struct toml_node *v)
{
    for (size_t i = 0; i + 1 < k->n; i++) {
        struct toml_node *child = get_n(t, k->parts[i].data, k->parts[i].len);
        if (child == NULL) {
            if (too_deep(p, t->depth + 1) != 0 ||
                (child = new_table(p, t, TOML_DOTTED)) == NULL)
                return -1;
            if (add_pair(t, k->parts[i].data, k->parts[i].len, child) != 0) {
                toml_free(child);
                return oom(p);
            }
        } else if (child->type != TOML_TABLE ||
                   (child->flags & (TOML_HEADER | TOML_INLINE | TOML_AOT)) ||
                   !(child->flags & (TOML_DOTTED | TOML_IMPLICIT))) {
            return fail(p, "\"%s\" is already %s (line %lu); dotted keys cannot add to it",
                        k->parts[i].data, what(child), child->line);
        }
        child->flags |= TOML_DOTTED;
        t = child;
    }
    struct buf *last = &k->parts[k->n - 1];
    struct toml_node *old = get_n(t, last->data, last->len);
    if (old != NULL)
        return fail(p, "\"%s\" is defined twice (first on line %lu)", last->data, old->line);
    if (add_pair(t, last->data, last->len, v) != 0)
        return oom(p);
    return 0;
}

static void close_tables(struct toml_node *n)
{
    if (n->type == TOML_TABLE)
        n->flags |= TOML_INLINE;
    for (size_t i = 0; i < n->count; i++)
        close_tables(n->type == TOML_TABLE ? n->pairs[i].value : n->items[i]);
}

static int keyval(struct parser *p, struct toml_node *t)
{
    struct key k;
    int rc = -1;
    struct toml_node *v = NULL;
    if (key(p, &k) != 0)
        goto out;
    if (peek(p, 0) != '=') {
        fail(p, "a key must be followed by '='");
        goto out;
    }
    p->pos++;
    skip_ws(p);
    /* depth: where the value will sit in the tree */
    if (too_deep(p, t->depth + (unsigned)k.n) != 0 ||
        value(p, t->depth + (unsigned)k.n, &v) != 0)
        goto out;
    if (assign(p, t, &k, v) != 0) {
        toml_free(v);
        goto out;
    }
    rc = 0;
out:
    key_free(&k);
    return rc;
}

static int array(struct parser *p, unsigned depth, struct toml_node *a)
{
    unsigned long start = p->line;
    p->pos++;
    for (;;) {
        if (skip_blank(p) != 0)
            return -1;
        if (peek(p, 0) < 0) {
            p->line = start;
            return fail(p, "an array that is never closed with ']'");
        }
        if (peek(p, 0) == ']') {
            p->pos++;
            return 0;
        }
        struct toml_node *item;
        if (value(p, depth + 1, &item) != 0)
            return -1;
        if (add_item(a, item) != 0) {
            toml_free(item);
            return oom(p);
        }
        if (skip_blank(p) != 0)
            return -1;
        if (peek(p, 0) == ',') {
            p->pos++;
        } else if (peek(p, 0) != ']') {
            return fail(p, "an array's values must be separated by ',' and end with ']'");
        }
    }
}

static int inline_table(struct parser *p, struct toml_node *t)
{
    p->pos++;
    skip_ws(p);
    if (peek(p, 0) == '}') {
        p->pos++;
        return 0;
    }
    for (;;) {
        if (keyval(p, t) != 0)
            return -1;
        skip_ws(p);
        if (peek(p, 0) == '}') {
            p->pos++;
            close_tables(t);
            return 0;
        }
        if (peek(p, 0) != ',')
            return fail(p, "an inline table's pairs must be separated by ',' and end with "
                           "'}' on the same line");
        p->pos++;
        skip_ws(p);
    }
}

static bool digits_ok(const char *t, size_t n, int (*is_digit)(int))
{
    if (n == 0 || !is_digit((unsigned char)t[0]) || !is_digit((unsigned char)t[n - 1]))
        return false;
    for (size_t i = 1; i < n; i++) {
        if (t[i] == '_' ? t[i - 1] == '_' : !is_digit((unsigned char)t[i]))
            return false;
    }
    return true;
}

static int is_dec(int c) { return c >= '0' && c <= '9'; }
static int is_hex(int c) { return text_hex_value(c) >= 0; }
static int is_oct(int c) { return c >= '0' && c <= '7'; }
static int is_bin(int c) { return c == '0' || c == '1'; }

/* Whether the digits (underscores allowed) fit in a signed 64-bit integer. */
static bool fits(const char *t, size_t n, unsigned base, bool negative)
{
    uint64_t v = 0, limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (size_t i = 0; i < n; i++) {
        if (t[i] == '_')
            continue;
        uint64_t d = (uint64_t)text_hex_value((unsigned char)t[i]);
        if (v > (limit - d) / base)
            return false;
        v = v * base + d;
    }
    return true;
}

static enum toml_type number(const char *t, size_t n)
{
    if (n > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'o' || t[1] == 'b')) {
        int (*d)(int) = t[1] == 'x' ? is_hex : t[1] == 'o' ? is_oct : is_bin;
        unsigned base = t[1] == 'x' ? 16 : t[1] == 'o' ? 8 : 2;
        return digits_ok(t + 2, n - 2, d) && fits(t + 2, n - 2, base, false) ? TOML_INTEGER
                                                                             : TOML_TABLE;
    }
    bool negative = n > 0 && t[0] == '-';
    if (n > 0 && (t[0] == '+' || t[0] == '-')) {
        t++;
        n--;
    }
    if ((n == 3 && (memcmp(t, "inf", 3) == 0 || memcmp(t, "nan", 3) == 0)))
        return TOML_FLOAT;
    size_t int_end = 0;
    while (int_end < n && (is_dec((unsigned char)t[int_end]) || t[int_end] == '_'))
        int_end++;
    if (!digits_ok(t, int_end, is_dec) || (t[0] == '0' && int_end > 1))
        return TOML_TABLE; /* no digits, a misplaced '_' or a leading zero */
    if (int_end == n)
        return fits(t, n, 10, negative) ? TOML_INTEGER : TOML_TABLE;
    size_t i = int_end;
    if (t[i] == '.') {
        size_t at = ++i;
        while (i < n && (is_dec((unsigned char)t[i]) || t[i] == '_'))
            i++;
        if (!digits_ok(t + at, i - at, is_dec))
            return TOML_TABLE;
    }
    if (i < n && (t[i] == 'e' || t[i] == 'E')) {
        i++;
        if (i < n && (t[i] == '+' || t[i] == '-'))
            i++;
        size_t at = i;
        while (i < n && (is_dec((unsigned char)t[i]) || t[i] == '_'))
            i++;
        if (!digits_ok(t + at, i - at, is_dec))
            return TOML_TABLE;
    }
    return i == n ? TOML_FLOAT : TOML_TABLE;
}

static bool two(const char *t, int lo, int hi, int *v)
{
    if (!is_dec((unsigned char)t[0]) || !is_dec((unsigned char)t[1]))
        return false;
    *v = (t[0] - '0') * 10 + (t[1] - '0');
    return *v >= lo && *v <= hi;
}

/* HH:MM:SS[.frac]: the length read, or 0. */
static size_t time_part(const char *t, size_t n)
{
    int v;
    if (n < 8 || !two(t, 0, 23, &v) || t[2] != ':' || !two(t + 3, 0, 59, &v) || t[5] != ':' ||
        !two(t + 6, 0, 60, &v))
        return 0;
    size_t i = 8;
    if (i < n && t[i] == '.') {
        size_t at = ++i;
        while (i < n && is_dec((unsigned char)t[i]))
            i++;
        if (i == at)
            return 0;
    }
    return i;
}

static bool datetime(const char *t, size_t n)
{
    if (n >= 3 && t[2] == ':')
        return time_part(t, n) == n;
    int year, month, day;
    if (n < 10 || !two(t, 0, 99, &year) || !two(t + 2, 0, 99, &day) || t[4] != '-' ||
        !two(t + 5, 1, 12, &month) || t[7] != '-' || !two(t + 8, 1, 31, &day))
        return false;
    year = year * 100 + (t[2] - '0') * 10 + (t[3] - '0');
    static const int days[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day > days[month - 1] || (month == 2 && day == 29 && !leap))
        return false;
    if (n == 10)
        return true;
    if (t[10] != 'T' && t[10] != 't' && t[10] != ' ')
        return false;
    size_t i = 11, tl = time_part(t + i, n - i);
    if (tl == 0)
        return false;
    i += tl;
    if (i == n)
        return true;
    int v;
    if (n - i == 1)
        return t[i] == 'Z' || t[i] == 'z';
    return n - i == 6 && (t[i] == '+' || t[i] == '-') && two(t + i + 1, 0, 23, &v) &&
           t[i + 3] == ':' && two(t + i + 4, 0, 59, &v);
}

static bool is_token(int c)
{
    return is_bare(c) || c == '+' || c == '.' || c == ':';
}

static int scalar(struct parser *p, struct toml_node *v)
{
    size_t at = p->pos;
    while (is_token(peek(p, 0)))
        p->pos++;
    /* A date and a time may be separated by a space. */
    if (p->pos - at == 10 && peek(p, 0) == ' ' && is_dec(peek(p, 1)) && is_dec(peek(p, 2)) &&
        peek(p, 3) == ':' && p->s[at + 4] == '-') {
        p->pos++;
        while (is_token(peek(p, 0)))
            p->pos++;
    }
    const char *t = p->s + at;
    size_t n = p->pos - at;
    if (n == 0)
        return fail(p, "a value is missing");
    if ((n == 4 && memcmp(t, "true", 4) == 0) || (n == 5 && memcmp(t, "false", 5) == 0))
        v->type = TOML_BOOL;
    else if (memchr(t, ':', n) != NULL || (n >= 10 && t[4] == '-' && is_dec((unsigned char)t[0])))
        v->type = datetime(t, n) ? TOML_DATETIME : TOML_TABLE;
    else
        v->type = number(t, n);
    if (v->type == TOML_TABLE)
        return fail(p, "a value that does not parse: \"%.*s\"", (int)(n > 64 ? 64 : n), t);
    if ((v->text = strndup(t, n)) == NULL)
        return oom(p);
    v->len = n;
    return 0;
}

static int value(struct parser *p, unsigned depth, struct toml_node **out)
{
    *out = NULL;
    if (too_deep(p, depth) != 0)
        return -1;
    struct toml_node *v = new_node(p, TOML_STRING);
    if (v == NULL)
        return -1;
    v->file = p->name;
    v->line = p->line;
    v->start = p->pos;
    v->depth = depth;
    int c = peek(p, 0), rc;
    if (c == '"' || c == '\'') {
        struct buf b = {0};
        rc = string(p, &b);
        v->text = b.data;
        v->len = b.len;
    } else if (c == '[') {
        v->type = TOML_ARRAY;
        rc = array(p, depth, v);
    } else if (c == '{') {
        v->type = TOML_TABLE;
        v->flags = TOML_INLINE;
        rc = inline_table(p, v);
    } else {
        rc = scalar(p, v);
    }
    if (rc != 0) {
        toml_free(v);
        return -1;
    }
    v->end = p->pos;
    *out = v;
    return 0;
}

/* [header] or [[header]]: the table that the following pairs go into. */
static int header(struct parser *p)
{
    bool aot = peek(p, 1) == '[';
    p->pos += aot ? 2 : 1;
    skip_ws(p);
    struct key k;
    int rc = -1;
    if (key(p, &k) != 0)
        goto out;
    if (peek(p, 0) != ']' || (aot && peek(p, 1) != ']')) {
        fail(p, "a table header that does not parse (it must end with '%s')", aot ? "]]" : "]");
        goto out;
    }
    p->pos += aot ? 2 : 1;
    if (too_deep(p, (unsigned)k.n) != 0)
        goto out;
    struct toml_node *t = p->root;
    for (size_t i = 0; i < k.n; i++) {
        bool last = i + 1 == k.n;
        struct toml_node *child = get_n(t, k.parts[i].data, k.parts[i].len);
        if (child == NULL) {
            child = new_table(p, t, last ? TOML_HEADER : TOML_IMPLICIT);
            if (child == NULL)
                goto out;
            if (last && aot) {
                struct toml_node *a = toml_new(TOML_ARRAY);
                if (a == NULL || add_item(a, child) != 0) {
                    toml_free(a);
                    toml_free(child);
                    oom(p);
                    goto out;
                }
                a->flags = TOML_AOT;
                a->file = p->name;
                a->line = p->line;
                a->depth = child->depth;
                child = a;
            }
            if (add_pair(t, k.parts[i].data, k.parts[i].len, child) != 0) {
                toml_free(child);
                oom(p);
                goto out;
            }
            t = child->type == TOML_ARRAY ? child->items[0] : child;
            continue;
        }
        if (child->type == TOML_ARRAY && (child->flags & TOML_AOT)) {
            if (last && aot) {
                struct toml_node *n = new_table(p, t, TOML_HEADER);
                if (n == NULL)
                    goto out;
                if (add_item(child, n) != 0) {
                    toml_free(n);
                    oom(p);
                    goto out;
                }
                t = n;
                continue;
            }
            if (!last) {
                t = child->items[child->count - 1];
                continue;
            }
        } else if (child->type == TOML_TABLE && !(child->flags & TOML_INLINE)) {
            if (!last) {
                t = child;
                continue;
            }
            if (!aot && !(child->flags & (TOML_HEADER | TOML_DOTTED))) {
                child->flags = (child->flags & ~TOML_IMPLICIT) | TOML_HEADER;
                child->line = p->line;
                t = child;
                continue;
            }
        }
        fail(p, "\"%s\" is already %s (line %lu); it cannot be defined again as %s",
             k.parts[i].data, what(child), child->line,
             last ? (aot ? "an array of tables" : "a table") : "a table");
        goto out;
    }
    p->current = t;
    rc = 0;
out:
    key_free(&k);
    return rc;
}

/* Whole-document checks before parsing: valid UTF-8, so strings and
 * comments need not check it byte by byte. */
static int check_utf8(struct parser *p)
{
    const unsigned char *s = (const unsigned char *)p->s;
    for (size_t i = 0; i < p->len;) {
        unsigned char c = s[i];
        if (c == '\n')
            p->line++;
        size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
                              : (c & 0xf8) == 0xf0 ? 4 : 0;
        uint32_t cp = n == 1 ? c : n == 2 ? c & 0x1fu : n == 3 ? c & 0x0fu : c & 0x07u;
        bool ok = n > 0 && i + n <= p->len;
        for (size_t j = 1; ok && j < n; j++) {
            ok = (s[i + j] & 0xc0) == 0x80;
            cp = cp << 6 | (s[i + j] & 0x3fu);
        }
        static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
        if (!ok || cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return fail(p, "not valid UTF-8");
        i += n;
    }
    p->line = 1;
    return 0;
}

struct toml_node *toml_parse(const char *name, const char *text, size_t len,
                             struct gpulet_error *err)
{
    struct parser p = {.name = name, .s = text, .len = len, .line = 1, .err = err};
    if (len > TOML_MAX_BYTES) {
        gpulet_error_set(err, GPULET_ERR_INPUT, "%s: larger than %u bytes", name, TOML_MAX_BYTES);
        return NULL;
    }
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
        p.pos = 3;
    if (check_utf8(&p) != 0)
        return NULL;
    p.root = p.current = new_node(&p, TOML_TABLE);
    if (p.root == NULL)
        return NULL;
    p.root->file = name;
    p.root->line = 1;
    p.root->flags = TOML_HEADER;
    while (p.pos < p.len) {
        skip_ws(&p);
        int c = peek(&p, 0);
        int rc = 0;
        if (c == '[')
            rc = header(&p);
        else if (c != '#' && c != '\n' && c != '\r' && c != -1)
            rc = keyval(&p, p.current);
        if (rc != 0 || end_of_line(&p) != 0) {
            toml_free(p.root);
            return NULL;
        }
    }
    return p.root;
}

/* ---- writing ---- */

static void write_quoted(FILE *out, const char *s, size_t len)
{
    fputc('"', out);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", out);
        else if (c == '\t')
            fputs("\\t", out);
        else if (c < 0x20 || c == 0x7f)
            fprintf(out, "\\u%04X", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

void toml_write_key(FILE *out, const char *key, size_t len)
{
    bool bare = len > 0;
    for (size_t i = 0; i < len && bare; i++)
        bare = is_bare((unsigned char)key[i]);
    if (bare)
        fwrite(key, 1, len, out);
    else
        write_quoted(out, key, len);
}

void toml_write_value(FILE *out, const struct toml_node *v)
{
    switch (v->type) {
    case TOML_STRING:
        write_quoted(out, v->text, v->len);
        break;
    case TOML_ARRAY:
        fputc('[', out);
        for (size_t i = 0; i < v->count; i++) {
            if (i > 0)
                fputs(", ", out);
            toml_write_value(out, v->items[i]);
        }
        fputc(']', out);
        break;
    case TOML_TABLE:
        fputc('{', out);
        for (size_t i = 0; i < v->count; i++) {
            fputs(i > 0 ? ", " : " ", out);
            toml_write_key(out, v->pairs[i].key, v->pairs[i].key_len);
            fputs(" = ", out);
            toml_write_value(out, v->pairs[i].value);
        }
        fputs(v->count ? " }" : "}", out);
        break;
    default:
        fwrite(v->text, 1, v->len, out);
    }
}

/* Tables are written as sections; arrays of tables made by [[header]] too. */
static bool section(const struct toml_node *v)
{
    return v->type == TOML_TABLE || (v->type == TOML_ARRAY && (v->flags & TOML_AOT));
}

struct path {
    size_t n;
    const char *key[TOML_MAX_DEPTH + 8];
    size_t len[TOML_MAX_DEPTH + 8];
};

static void write_header(FILE *out, const struct path *path, bool aot)
{
    fputs(aot ? "\n[[" : "\n[", out);
    for (size_t i = 0; i < path->n; i++) {
        if (i > 0)
            fputc('.', out);
        toml_write_key(out, path->key[i], path->len[i]);
    }
    fputs(aot ? "]]\n" : "]\n", out);
}

static void write_body(FILE *out, const struct toml_node *t, struct path *path)
{
    for (size_t i = 0; i < t->count; i++) {
        const struct toml_pair *pr = &t->pairs[i];
        if (section(pr->value))
            continue;
        toml_write_key(out, pr->key, pr->key_len);
        fputs(" = ", out);
        toml_write_value(out, pr->value);
        fputc('\n', out);
    }
    for (size_t i = 0; i < t->count && path->n < sizeof path->key / sizeof path->key[0]; i++) {
        const struct toml_pair *pr = &t->pairs[i];
        if (!section(pr->value))
            continue;
        path->key[path->n] = pr->key;
        path->len[path->n++] = pr->key_len;
        const struct toml_node *v = pr->value;
        if (v->type == TOML_ARRAY) {
            for (size_t j = 0; j < v->count; j++) {
                write_header(out, path, true);
                write_body(out, v->items[j], path);
            }
        } else {
            bool plain = v->count == 0;
            for (size_t j = 0; j < v->count && !plain; j++)
                plain = !section(v->pairs[j].value);
            if (plain)
                write_header(out, path, false);
            write_body(out, v, path);
        }
        path->n--;
    }
}

void toml_write(FILE *out, const struct toml_node *table, const char *const *prefix)
{
    struct path path = {0};
    for (; prefix != NULL && *prefix != NULL && path.n < TOML_MAX_DEPTH; prefix++) {
        path.key[path.n] = *prefix;
        path.len[path.n++] = strlen(*prefix);
    }
    bool plain = table->count == 0;
    for (size_t j = 0; j < table->count && !plain; j++)
        plain = !section(table->pairs[j].value);
    if (path.n > 0 && plain)
        write_header(out, &path, false);
    write_body(out, table, &path);
}
