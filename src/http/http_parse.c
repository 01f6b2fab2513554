/* The request head parser: request line, header fields, the few fields
 * the server acts on (Connection, Content-Length, Transfer-Encoding). */
#include "http.h"

#include <string.h>
#include <strings.h>

struct line {
    const char *at;
    size_t len; /* without the line end */
};

/* The next line of buf from *pos; false when no line end is there yet.
 * A bare LF ends a line too; a CR before it is not part of the line. */
static bool next_line(const char *buf, size_t len, size_t *pos, struct line *l)
{
    const char *nl = memchr(buf + *pos, '\n', len - *pos);
    if (nl == NULL)
        return false;
    l->at = buf + *pos;
    l->len = (size_t)(nl - l->at);
    if (l->len && l->at[l->len - 1] == '\r')
        l->len--;
    *pos = (size_t)(nl - buf) + 1;
    return true;
}

static bool is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static enum http_parse_status fail(struct http_request *req, int status)
{
    req->error_status = status;
    return HTTP_PARSE_ERROR;
}

static bool token_is(const char *at, size_t len, const char *word)
{
    return len == strlen(word) && strncasecmp(at, word, len) == 0;
}

static enum http_parse_status request_line(const struct line *l, struct http_request *req,
                                           bool *http11)
{
    const char *sp1 = memchr(l->at, ' ', l->len);
    if (sp1 == NULL || sp1 == l->at)
        return fail(req, 400);
    size_t mlen = (size_t)(sp1 - l->at);
    for (size_t i = 0; i < mlen; i++)
        if (!is_tchar((unsigned char)l->at[i]))
            return fail(req, 400);
    const char *target = sp1 + 1;
    const char *end = l->at + l->len;
    const char *sp2 = memchr(target, ' ', (size_t)(end - target));
    if (sp2 == NULL || sp2 == target)
        return fail(req, 400);
    const char *version = sp2 + 1;
    size_t vlen = (size_t)(end - version);
    if (vlen != 8 || strncmp(version, "HTTP/", 5) != 0 || version[6] != '.' ||
        version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9')
        return fail(req, 400);
    if (version[5] != '1')
        return fail(req, 505);
    *http11 = version[7] != '0';
    /* methods are case-sensitive */
    req->method = mlen == 3 && memcmp(l->at, "GET", 3) == 0    ? HTTP_GET
                  : mlen == 4 && memcmp(l->at, "HEAD", 4) == 0 ? HTTP_HEAD
                                                               : HTTP_OTHER;
    /* origin-form only: a path, an optional query */
    size_t tlen = (size_t)(sp2 - target);
    if (target[0] != '/')
        return fail(req, 400);
    for (size_t i = 0; i < tlen; i++)
        if ((unsigned char)target[i] <= ' ' || (unsigned char)target[i] >= 0x7f)
            return fail(req, 400);
    const char *q = memchr(target, '?', tlen);
    size_t plen = q ? (size_t)(q - target) : tlen;
    if (plen >= sizeof req->path)
        return fail(req, 414);
    memcpy(req->path, target, plen);
    req->path[plen] = '\0';
    return HTTP_PARSE_DONE;
}

/* Connection: a comma-separated list of options. */
static void connection_options(const char *v, size_t len, struct http_request *req)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (v[i] == ',' || v[i] == ' ' || v[i] == '\t'))
            i++;
        size_t start = i;
        while (i < len && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
            i++;
        if (token_is(v + start, i - start, "close"))
            req->keep_alive = false;
        else if (token_is(v + start, i - start, "keep-alive"))
            req->keep_alive = true;
    }
}

/* Accept-Encoding: "gzip", "gzip;q=0.5", "*"; q=0 refuses (RFC 9110 12.5.3). */
static void accept_encoding(const char *v, size_t len, struct http_request *req)
{
    bool named = false;
    size_t i = 0;
    while (i < len) {
        while (i < len && (v[i] == ',' || v[i] == ' ' || v[i] == '\t'))
            i++;
        size_t start = i;
        while (i < len && v[i] != ',' && v[i] != ';' && v[i] != ' ' && v[i] != '\t')
            i++;
        size_t name_len = i - start;
        /* parameters up to the next comma; only q matters */
        bool refused = false;
        while (i < len && v[i] != ',') {
            if (v[i] == 'q' || v[i] == 'Q') {
                size_t k = i + 1;
                while (k < len && (v[k] == ' ' || v[k] == '\t'))
                    k++;
                if (k < len && v[k] == '=') {
                    k++;
                    while (k < len && (v[k] == ' ' || v[k] == '\t'))
                        k++;
                    /* q=0, q=0., q=0.0, q=0.000: no digit 1-9 */
                    refused = k < len && v[k] == '0';
                    for (k++; refused && k < len && v[k] != ',' && v[k] != ';'; k++)
                        if (v[k] >= '1' && v[k] <= '9')
                            refused = false;
                    i = k;
                    continue;
                }
            }
            i++;
        }
        if (token_is(v + start, name_len, "gzip") || token_is(v + start, name_len, "x-gzip")) {
            req->accepts_gzip = !refused;
            named = true; /* "gzip;q=0, *" refuses gzip */
        } else if (name_len == 1 && v[start] == '*' && !named) {
            req->accepts_gzip = !refused;
        }
    }
}

static enum http_parse_status header(const struct line *l, const struct http_parse_limits *lim,
                                     struct http_request *req, bool *has_length)
{
    /* obs-fold and whitespace before the colon are refused (RFC 9112 5) */
    const char *colon = memchr(l->at, ':', l->len);
    if (colon == NULL || colon == l->at)
        return fail(req, 400);
    size_t nlen = (size_t)(colon - l->at);
    for (size_t i = 0; i < nlen; i++)
        if (!is_tchar((unsigned char)l->at[i]))
            return fail(req, 400);
    const char *v = colon + 1;
    const char *end = l->at + l->len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t vlen = (size_t)(end - v);
    for (size_t i = 0; i < vlen; i++)
        if ((unsigned char)v[i] < ' ' && v[i] != '\t')
            return fail(req, 400);
    if (token_is(l->at, nlen, "Connection")) {
        connection_options(v, vlen, req);
    } else if (token_is(l->at, nlen, "Accept-Encoding")) {
        accept_encoding(v, vlen, req);
    } else if (token_is(l->at, nlen, "Transfer-Encoding")) {
        return fail(req, 501); /* no request here has a body worth a transfer coding */
    } else if (token_is(l->at, nlen, "Content-Length")) {
        if (vlen == 0)
            return fail(req, 400);
        size_t n = 0;
        for (size_t i = 0; i < vlen; i++) {
            if (v[i] < '0' || v[i] > '9')
                return fail(req, 400);
            if (n > lim->max_body)
                return fail(req, 413);
            n = n * 10 + (size_t)(v[i] - '0');
        }
        if (n > lim->max_body)
            return fail(req, 413);
        if (*has_length && n != req->content_length)
            return fail(req, 400);
        *has_length = true;
        req->content_length = n;
    }
    return HTTP_PARSE_DONE;
}

enum http_parse_status http_parse_request(const char *buf, size_t len,
                                          const struct http_parse_limits *lim,
                                          struct http_request *req)
{
    memset(req, 0, sizeof *req);
    size_t pos = 0;
    struct line l;
    /* Empty lines before a request are ignored (RFC 9112 2.2), within the head limit. */
    for (;;) {
        size_t start = pos;
        if (!next_line(buf, len, &pos, &l)) {
            if (len - start > lim->max_line)
                return fail(req, 414);
            return len >= lim->max_head ? fail(req, 431) : HTTP_PARSE_INCOMPLETE;
        }
        if (pos > lim->max_head)
            return fail(req, 431);
        if (l.len > lim->max_line)
            return fail(req, 414);
        if (l.len)
            break;
    }
    bool http11 = false;
    if (request_line(&l, req, &http11) != HTTP_PARSE_DONE)
        return HTTP_PARSE_ERROR;
    req->http11 = http11;
    req->keep_alive = http11;
    size_t headers = 0;
    bool has_length = false;
    for (;;) {
        if (!next_line(buf, len, &pos, &l))
            return len >= lim->max_head ? fail(req, 431) : HTTP_PARSE_INCOMPLETE;
        if (pos > lim->max_head)
            return fail(req, 431);
        if (l.len == 0)
            break;
        if (l.at[0] == ' ' || l.at[0] == '\t')
            return fail(req, 400);
        if (++headers > lim->max_headers)
            return fail(req, 431);
        if (header(&l, lim, req, &has_length) != HTTP_PARSE_DONE)
            return HTTP_PARSE_ERROR;
    }
    req->head_len = pos;
    return HTTP_PARSE_DONE;
}

const char *http_reason(int status)
{
    static const struct {
        int status;
        const char *reason;
    } reasons[] = {{200, "OK"},
                   {400, "Bad Request"},
                   {404, "Not Found"},
                   {405, "Method Not Allowed"},
                   {413, "Content Too Large"},
                   {414, "URI Too Long"},
                   {431, "Request Header Fields Too Large"},
                   {500, "Internal Server Error"},
                   {501, "Not Implemented"},
                   {503, "Service Unavailable"},
                   {505, "HTTP Version Not Supported"}};
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        if (reasons[i].status == status)
            return reasons[i].reason;
    return "Unknown";
}
