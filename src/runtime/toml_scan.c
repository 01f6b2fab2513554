/* A scanner for the TOML that container engines write (part of the
 * runtime module): it checks the syntax line by line and reports each
 * table header and top-level key with where it is, so the configurer can
 * edit text without losing a comment or a key it does not know. */
#include "toml_scan.h"

#include <stdio.h>
#include <string.h>

static const char *skip_space(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

static bool bare_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
}

/* A dotted key: bare or quoted parts. Writes the parts joined by '\x1f'. */
static const char *parse_key(const char *p, char *out, size_t len)
{
    size_t o = 0;
    for (;;) {
        p = skip_space(p);
        if (*p == '"' || *p == '\'') {
            char q = *p++;
            while (*p && *p != q) {
                if (q == '"' && *p == '\\' && p[1])
                    p++;
                if (o + 1 < len)
                    out[o++] = *p;
                p++;
            }
            if (*p != q)
                return NULL;
            p++;
        } else if (bare_char(*p)) {
            while (bare_char(*p)) {
                if (o + 1 < len)
                    out[o++] = *p;
                p++;
            }
        } else {
            return NULL;
        }
        p = skip_space(p);
        if (*p != '.')
            break;
        p++;
        if (o + 1 < len)
            out[o++] = '\x1f';
    }
    out[o] = '\0';
    return p;
}

/* Skips one value starting at p, possibly across lines (arrays, multi-line
 * strings). Updates *line. NULL on a syntax error. */
static const char *skip_value(const char *p, unsigned long *line, int depth)
{
    p = skip_space(p);
    if (depth > 32)
        return NULL;
    if (strncmp(p, "\"\"\"", 3) == 0 || strncmp(p, "'''", 3) == 0) {
        char q[4] = {p[0], p[0], p[0], 0};
        p += 3;
        const char *end = strstr(p, q);
        if (end == NULL)
            return NULL;
        for (const char *c = p; c < end; c++)
            *line += *c == '\n';
        return end + 3;
    }
    if (*p == '"' || *p == '\'') {
        char q = *p++;
        while (*p && *p != q && *p != '\n') {
            if (q == '"' && *p == '\\' && p[1])
                p++;
            p++;
        }
        return *p == q ? p + 1 : NULL;
    }
    if (*p == '[' || *p == '{') {
        char close = *p == '[' ? ']' : '}';
        bool inline_table = *p == '{';
        p++;
        for (;;) {
            while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '#') {
                if (*p == '#') {
                    while (*p && *p != '\n')
                        p++;
                    continue;
                }
                *line += *p == '\n';
                p++;
            }
            if (*p == close)
                return p + 1;
            if (*p == '\0')
                return NULL;
            if (inline_table) {
                char key[256];
                p = parse_key(p, key, sizeof key);
                if (p == NULL || *(p = skip_space(p)) != '=')
                    return NULL;
                p++;
            }
            p = skip_value(p, line, depth + 1);
            if (p == NULL)
                return NULL;
            while (*p == ' ' || *p == '\t' || (!inline_table && (*p == '\n' || *p == '\r'))) {
                *line += *p == '\n';
                p++;
            }
            if (*p == ',')
                p++;
            else if (*p != close && *p != '#' && *p != '\n')
                return NULL;
        }
    }
    /* numbers, booleans, dates */
    const char *start = p;
    while (*p && (bare_char(*p) || *p == '.' || *p == ':' || *p == '+'))
        p++;
    return p > start ? p : NULL;
}

int toml_scan(const char *name, const char *text, toml_scan_fn fn, void *user,
              struct gpulet_error *err)
{
    const char *p = text;
    unsigned long line = 1;
    char table[512] = "";
    while (*p) {
        const char *start = p;
        unsigned long first = line;
        p = skip_space(p);
        if (*p == '\n' || *p == '\r' || *p == '#' || *p == '\0') {
            while (*p && *p != '\n')
                p++;
        } else if (*p == '[') {
            bool array = p[1] == '[';
            p = parse_key(p + (array ? 2 : 1), table, sizeof table);
            if (p == NULL || *p != ']' || (array && p[1] != ']'))
                return gpulet_error_set(err, GPULET_ERR_INPUT,
                                        "%s line %lu: a table header that does not parse", name,
                                        first);
            p += array ? 2 : 1;
            if (fn(TOML_TABLE, table, start, first, user) < 0)
                return gpulet_error_set(err, GPULET_ERR_INPUT, "%s line %lu: stopped", name, first);
        } else {
            char key[512];
            p = parse_key(p, key, sizeof key);
            if (p == NULL || *p != '=')
                return gpulet_error_set(err, GPULET_ERR_INPUT,
                                        "%s line %lu: expected key = value", name, first);
            p = skip_value(p + 1, &line, 0);
            if (p == NULL)
                return gpulet_error_set(err, GPULET_ERR_INPUT,
                                        "%s line %lu: a value that does not parse", name, first);
            if (table[0] == '\0' && fn(TOML_TOP_KEY, key, start, first, user) < 0)
                return gpulet_error_set(err, GPULET_ERR_INPUT, "%s line %lu: stopped", name, first);
        }
        p = skip_space(p);
        if (*p == '#')
            while (*p && *p != '\n')
                p++;
        if (*p == '\r')
            p++;
        if (*p != '\n' && *p != '\0')
            return gpulet_error_set(err, GPULET_ERR_INPUT,
                                    "%s line %lu: unexpected text after the value", name, line);
        if (*p == '\n') {
            p++;
            line++;
        }
    }
    return 0;
}
