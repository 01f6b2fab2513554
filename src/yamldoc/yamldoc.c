#include "yamldoc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yaml.h>

#include "fileio/fileio.h"

struct ydoc {
    char *name;
    bool loaded;
    yaml_document_t doc;
};

/* A ynode is libyaml's own node; the cast keeps libyaml out of the header. */
static const yaml_node_t *Y(const struct ynode *n)
{
    return (const yaml_node_t *)n;
}

static const struct ynode *N(const yaml_node_t *n)
{
    return (const struct ynode *)n;
}

static int parse_error(const struct ydoc *d, const yaml_parser_t *parser,
                       struct gpulet_error *err)
{
    return gpulet_error_set(err, GPULET_ERR_INPUT, "%s line %lu: %s%s%s", d->name,
                            (unsigned long)parser->problem_mark.line + 1,
                            parser->problem ? parser->problem : "malformed YAML",
                            parser->context ? " " : "", parser->context ? parser->context : "");
}

/* One streaming pass over the first document's events, in constant
 * memory, before libyaml builds it: the bounds of the header. */
static int check_bounds(const struct ydoc *d, const char *text, size_t len,
                        struct gpulet_error *err)
{
    yaml_parser_t parser;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    size_t depth = 0, nodes = 0, anchors = 0;
    int rc = 0;
    bool done = false;
    while (rc == 0 && !done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = parse_error(d, &parser, err);
            break;
        }
        unsigned long line = (unsigned long)ev.start_mark.line + 1;
        const yaml_char_t *anchor = ev.type == YAML_SCALAR_EVENT ? ev.data.scalar.anchor
                                    : ev.type == YAML_SEQUENCE_START_EVENT
                                        ? ev.data.sequence_start.anchor
                                    : ev.type == YAML_MAPPING_START_EVENT
                                        ? ev.data.mapping_start.anchor
                                        : NULL;
        if (anchor != NULL && ++anchors > YDOC_MAX_ANCHORS)
            rc = gpulet_error_set(err, GPULET_ERR_INPUT,
                                  "%s line %lu: more than %d YAML anchors (&name) in one document",
                                  d->name, line, YDOC_MAX_ANCHORS);
        switch (ev.type) {
        case YAML_ALIAS_EVENT:
            rc = gpulet_error_set(err, GPULET_ERR_INPUT,
                                  "%s line %lu: YAML aliases (*%.64s) are not accepted; write "
                                  "the value out",
                                  d->name, line, (const char *)ev.data.alias.anchor);
            break;
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            if (++depth > YDOC_MAX_DEPTH)
                rc = gpulet_error_set(err, GPULET_ERR_INPUT,
                                      "%s line %lu: nested deeper than %d levels", d->name, line,
                                      YDOC_MAX_DEPTH);
            /* fall through - a collection is a node too */
        case YAML_SCALAR_EVENT:
            if (rc == 0 && ++nodes > YDOC_MAX_NODES)
                rc = gpulet_error_set(err, GPULET_ERR_INPUT,
                                      "%s line %lu: more than %d values in one document", d->name,
                                      line, YDOC_MAX_NODES);
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            depth--;
            break;
        case YAML_DOCUMENT_END_EVENT: /* yaml_parser_load reads the first only */
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    return rc;
}

static struct ydoc *new_doc(const char *name, struct gpulet_error *err)
{
    struct ydoc *d = calloc(1, sizeof *d);
    if (d == NULL || (d->name = strdup(name)) == NULL) {
        free(d);
        gpulet_error_errno(err, ENOMEM, "cannot load %s", name);
        return NULL;
    }
    return d;
}

int ydoc_load_file(const char *path, struct ydoc **out, struct gpulet_error *err)
{
    char *text;
    size_t len;
    if (fileio_read(path, YDOC_MAX_BYTES, &text, &len, err) < 0)
        return -1;
    int rc = ydoc_load_string(path, text, len, out, err);
    free(text);
    return rc;
}

int ydoc_load_string(const char *name, const char *text, size_t len, struct ydoc **out,
                     struct gpulet_error *err)
{
    struct ydoc *d = new_doc(name, err);
    if (d == NULL)
        return -1;
    if (len > YDOC_MAX_BYTES) {
        gpulet_error_set(err, GPULET_ERR_INPUT, "%s: larger than %u bytes", name, YDOC_MAX_BYTES);
        ydoc_free(d);
        return -1;
    }
    if (check_bounds(d, text, len, err) < 0) {
        ydoc_free(d);
        return -1;
    }
    yaml_parser_t parser;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    int rc = 0;
    if (!yaml_parser_load(&parser, &d->doc))
        rc = parse_error(d, &parser, err);
    else
        d->loaded = true;
    yaml_parser_delete(&parser);
    if (rc < 0) {
        ydoc_free(d);
        return -1;
    }
    *out = d;
    return 0;
}

void ydoc_free(struct ydoc *d)
{
    if (d == NULL)
        return;
    if (d->loaded)
        yaml_document_delete(&d->doc);
    free(d->name);
    free(d);
}

const char *ydoc_name(const struct ydoc *d)
{
    return d->name;
}

const struct ynode *ydoc_root(const struct ydoc *d)
{
    yaml_node_t *root = yaml_document_get_root_node((yaml_document_t *)&d->doc);
    if (root == NULL || ynode_is_null(N(root)))
        return NULL;
    return N(root);
}

bool ynode_is_map(const struct ynode *n)
{
    return n && Y(n)->type == YAML_MAPPING_NODE;
}

bool ynode_is_seq(const struct ynode *n)
{
    return n && Y(n)->type == YAML_SEQUENCE_NODE;
}

bool ynode_is_scalar(const struct ynode *n)
{
    return n && Y(n)->type == YAML_SCALAR_NODE;
}

const char *ynode_text(const struct ynode *n)
{
    return ynode_is_scalar(n) ? (const char *)Y(n)->data.scalar.value : NULL;
}

bool ynode_is_null(const struct ynode *n)
{
    if (!ynode_is_scalar(n))
        return false;
    const char *t = ynode_text(n);
    if (Y(n)->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    return t[0] == '\0' || strcmp(t, "~") == 0 || strcmp(t, "null") == 0 ||
           strcmp(t, "Null") == 0 || strcmp(t, "NULL") == 0;
}

unsigned long ynode_line(const struct ynode *n)
{
    return (unsigned long)Y(n)->start_mark.line + 1;
}

size_t ynode_count(const struct ydoc *d, const struct ynode *n)
{
    (void)d;
    if (ynode_is_seq(n))
        return (size_t)(Y(n)->data.sequence.items.top - Y(n)->data.sequence.items.start);
    if (ynode_is_map(n))
        return (size_t)(Y(n)->data.mapping.pairs.top - Y(n)->data.mapping.pairs.start);
    return 0;
}

static const struct ynode *node_at(const struct ydoc *d, int id)
{
    return N(yaml_document_get_node((yaml_document_t *)&d->doc, id));
}

const struct ynode *ynode_item(const struct ydoc *d, const struct ynode *seq, size_t i)
{
    return node_at(d, Y(seq)->data.sequence.items.start[i]);
}

const struct ynode *ynode_key(const struct ydoc *d, const struct ynode *map, size_t i)
{
    return node_at(d, Y(map)->data.mapping.pairs.start[i].key);
}

const struct ynode *ynode_value(const struct ydoc *d, const struct ynode *map, size_t i)
{
    return node_at(d, Y(map)->data.mapping.pairs.start[i].value);
}

const struct ynode *ynode_get(const struct ydoc *d, const struct ynode *map, const char *key)
{
    if (!ynode_is_map(map))
        return NULL;
    size_t count = ynode_count(d, map);
    for (size_t i = 0; i < count; i++) {
        const char *k = ynode_text(ynode_key(d, map, i));
        if (k && strcmp(k, key) == 0)
            return ynode_value(d, map, i);
    }
    return NULL;
}

int ydoc_fail(const struct ydoc *d, const struct ynode *n, struct gpulet_error *err,
              const char *fmt, ...)
{
    char msg[GPULET_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n)
        return gpulet_error_set(err, GPULET_ERR_INPUT, "%s line %lu: %s", d->name, ynode_line(n),
                                msg);
    return gpulet_error_set(err, GPULET_ERR_INPUT, "%s: %s", d->name, msg);
}

static const char *shown(const struct ynode *n)
{
    if (ynode_is_map(n))
        return "a mapping";
    if (ynode_is_seq(n))
        return "a list";
    return NULL;
}

int ynode_expect_map(const struct ydoc *d, const struct ynode *n, const char *what,
                     struct gpulet_error *err)
{
    if (ynode_is_map(n))
        return 0;
    return ydoc_fail(d, n, err, "%s must be a mapping of key: value", what);
}

int ynode_expect_seq(const struct ydoc *d, const struct ynode *n, const char *what,
                     struct gpulet_error *err)
{
    if (ynode_is_seq(n))
        return 0;
    return ydoc_fail(d, n, err, "%s must be a list", what);
}

static int scalar_or_fail(const struct ydoc *d, const struct ynode *n, const char *what,
                          const char *kind, struct gpulet_error *err)
{
    if (ynode_is_scalar(n))
        return 0;
    return ydoc_fail(d, n, err, "%s must be %s, not %s", what, kind, shown(n));
}

int ynode_uint(const struct ydoc *d, const struct ynode *n, const char *what,
               unsigned long long min, unsigned long long max, unsigned long long *out,
               struct gpulet_error *err)
{
    if (scalar_or_fail(d, n, what, "a whole number", err) < 0)
        return -1;
    const char *t = ynode_text(n);
    char *end;
    errno = 0;
    unsigned long long v = strtoull(t, &end, 0);
    if (t[0] == '\0' || t[0] == '-' || *end != '\0' || errno == ERANGE || v < min || v > max)
        return ydoc_fail(d, n, err, "%s must be a whole number from %llu to %llu, not \"%s\"",
                         what, min, max, t);
    *out = v;
    return 0;
}

int ynode_int(const struct ydoc *d, const struct ynode *n, const char *what, long long min,
              long long max, long long *out, struct gpulet_error *err)
{
    if (scalar_or_fail(d, n, what, "a whole number", err) < 0)
        return -1;
    const char *t = ynode_text(n);
    char *end;
    errno = 0;
    long long v = strtoll(t, &end, 0);
    if (t[0] == '\0' || *end != '\0' || errno == ERANGE || v < min || v > max)
        return ydoc_fail(d, n, err, "%s must be a whole number from %lld to %lld, not \"%s\"",
                         what, min, max, t);
    *out = v;
    return 0;
}

int ynode_bool(const struct ydoc *d, const struct ynode *n, const char *what, bool *out,
               struct gpulet_error *err)
{
    if (scalar_or_fail(d, n, what, "true or false", err) < 0)
        return -1;
    const char *t = ynode_text(n);
    if (strcasecmp(t, "true") == 0 || strcasecmp(t, "yes") == 0 || strcasecmp(t, "on") == 0) {
        *out = true;
        return 0;
    }
    if (strcasecmp(t, "false") == 0 || strcasecmp(t, "no") == 0 || strcasecmp(t, "off") == 0) {
        *out = false;
        return 0;
    }
    return ydoc_fail(d, n, err, "%s must be true or false, not \"%s\"", what, t);
}

int ynode_string(const struct ydoc *d, const struct ynode *n, const char *what, char *buf,
                 size_t len, struct gpulet_error *err)
{
    if (scalar_or_fail(d, n, what, "a string", err) < 0)
        return -1;
    const char *t = ynode_text(n);
    if (t[0] == '\0')
        return ydoc_fail(d, n, err, "%s must not be empty", what);
    if (strlen(t) >= len)
        return ydoc_fail(d, n, err, "%s is too long (at most %zu characters)", what, len - 1);
    memcpy(buf, t, strlen(t) + 1);
    return 0;
}

int ynode_check_keys(const struct ydoc *d, const struct ynode *map,
                     const char *const *allowed, const char *where, struct gpulet_error *err)
{
    size_t count = ynode_count(d, map);
    for (size_t i = 0; i < count; i++) {
        const struct ynode *key = ynode_key(d, map, i);
        const char *k = ynode_text(key);
        if (k == NULL)
            return ydoc_fail(d, key, err, "%s: keys must be plain names", where);
        bool known = false;
        for (size_t a = 0; allowed[a] && !known; a++)
            known = strcmp(k, allowed[a]) == 0;
        for (size_t j = 0; j < i && known; j++) {
            const char *other = ynode_text(ynode_key(d, map, j));
            if (other && strcmp(other, k) == 0)
                return ydoc_fail(d, key, err, "%s: key \"%s\" appears twice", where, k);
        }
        if (!known) {
            char list[GPULET_ERROR_MSG_MAX / 2] = "";
            size_t used = 0;
            for (size_t a = 0; allowed[a] && used < sizeof list; a++)
                used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", a ? ", " : "",
                                         allowed[a]);
            return ydoc_fail(d, key, err, "%s: unknown key \"%s\" (known keys: %s)", where, k,
                             list);
        }
    }
    return 0;
}
