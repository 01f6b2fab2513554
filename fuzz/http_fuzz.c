/*
 * libFuzzer target for what a client of the metrics port sends: the
 * request head parser, with the limits gpulet serves with and with tight
 * ones, plus the invariants the server relies on.
 *
 *   make fuzz            (long run)   ·   make test runs it for 20 s
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"

static void check(const uint8_t *data, size_t size, const struct http_parse_limits *lim)
{
    struct http_request req;
    enum http_parse_status st = http_parse_request((const char *)data, size, lim, &req);
    if (st == HTTP_PARSE_DONE) {
        if (req.head_len == 0 || req.head_len > size || req.head_len > lim->max_head ||
            req.content_length > lim->max_body || req.path[0] != '/' ||
            memchr(req.path, '\0', sizeof req.path) == NULL)
            abort();
    } else if (st == HTTP_PARSE_ERROR) {
        if (req.error_status < 400 || req.error_status > 505)
            abort();
    } else if (size >= lim->max_head) {
        abort(); /* the server's buffer is full: it must decide */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct http_parse_limits served = {4096, 8192, 64, 1024};
    static const struct http_parse_limits tight = {16, 48, 2, 4};
    check(data, size, &served);
    check(data, size, &tight);
    return 0;
}
