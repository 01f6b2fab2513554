/* The HTTP request parser: what it accepts, what it refuses with which
 * status, and that it asks for more bytes only while within the limits. */
#include "helpers.h"

#include "http/http.h"

static const struct http_parse_limits LIM = {
    .max_line = 64, .max_head = 256, .max_headers = 4, .max_body = 100};

static enum http_parse_status parse(const char *text, struct http_request *req)
{
    return http_parse_request(text, strlen(text), &LIM, req);
}

static void test_requests(void **state)
{
    (void)state;
    struct http_request r;
    assert_int_equal(parse("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\nGET /", &r),
                     HTTP_PARSE_DONE);
    assert_int_equal(r.method, HTTP_GET);
    assert_string_equal(r.path, "/metrics");
    assert_true(r.keep_alive && r.http11);
    assert_int_equal(r.head_len, strlen("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert_int_equal(parse("\r\nHEAD / HTTP/1.0\n\n", &r), HTTP_PARSE_DONE); /* bare LF too */
    assert_int_equal(r.method, HTTP_HEAD);
    assert_false(r.keep_alive);
    assert_int_equal(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &r),
                     HTTP_PARSE_DONE);
    assert_true(r.keep_alive);
    assert_int_equal(parse("GET / HTTP/1.1\r\nConnection: te, close\r\n\r\n", &r),
                     HTTP_PARSE_DONE);
    assert_false(r.keep_alive);
    assert_int_equal(parse("POST /x HTTP/1.1\r\nContent-Length: 12\r\n\r\n", &r),
                     HTTP_PARSE_DONE);
    assert_int_equal(r.method, HTTP_OTHER);
    assert_int_equal(r.content_length, 12);
    assert_int_equal(parse("get / HTTP/1.1\r\n\r\n", &r), HTTP_PARSE_DONE);
    assert_int_equal(r.method, HTTP_OTHER); /* methods are case-sensitive */
}

static bool gzip_accepted(const char *value)
{
    char text[200];
    struct http_request r;
    snprintf(text, sizeof text, "GET /metrics HTTP/1.1\r\nAccept-Encoding: %s\r\n\r\n", value);
    assert_int_equal(parse(text, &r), HTTP_PARSE_DONE);
    return r.accepts_gzip;
}

static void test_accept_encoding(void **state)
{
    (void)state;
    struct http_request r;
    assert_int_equal(parse("GET / HTTP/1.1\r\n\r\n", &r), HTTP_PARSE_DONE);
    assert_false(r.accepts_gzip);
    assert_true(gzip_accepted("gzip"));          /* Prometheus */
    assert_true(gzip_accepted("GZip"));
    assert_true(gzip_accepted("deflate, gzip;q=0.5"));
    assert_true(gzip_accepted("x-gzip"));
    assert_true(gzip_accepted("*"));
    assert_true(gzip_accepted("br ; q=1, gzip ; q = 1.0"));
    assert_false(gzip_accepted("identity"));
    assert_false(gzip_accepted("gzip;q=0"));
    assert_false(gzip_accepted("gzip;q=0.000"));
    assert_false(gzip_accepted("gzip;q=0, *"));   /* named beats the wildcard */
    assert_false(gzip_accepted("*;q=0"));
    assert_false(gzip_accepted("gzipped, xgzip"));
    assert_false(gzip_accepted(""));
    assert_true(gzip_accepted("gzip;q=0.001"));
}

static void test_incomplete(void **state)
{
    (void)state;
    struct http_request r;
    assert_int_equal(parse("", &r), HTTP_PARSE_INCOMPLETE);
    assert_int_equal(parse("GET /metrics HTT", &r), HTTP_PARSE_INCOMPLETE);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\n", &r), HTTP_PARSE_INCOMPLETE);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\n\r", &r), HTTP_PARSE_INCOMPLETE);
}

static void refused(const char *text, int status)
{
    struct http_request r;
    if (parse(text, &r) != HTTP_PARSE_ERROR || r.error_status != status)
        fail_msg("expected %d for \"%s\", got status %d", status, text, r.error_status);
}

static void test_refused(void **state)
{
    (void)state;
    char big[512];
    refused("GET / HTTP/1.1 extra\r\n\r\n", 400);
    refused(" GET / HTTP/1.1\r\n\r\n", 400);
    refused("GET metrics HTTP/1.1\r\n\r\n", 400);        /* not origin-form */
    refused("GET /a\x01 HTTP/1.1\r\n\r\n", 400);
    refused("GET / HTTP/2.0\r\n\r\n", 505);
    refused("GET / HTTP/1.1\r\nHost a\r\n\r\n", 400);    /* no colon */
    refused("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400);  /* space before the colon */
    refused("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413);
    refused("GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n", 413);
    refused("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501);
    refused("GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\ne: 5\r\n\r\n", 431);
    /* a request line beyond its limit, finished or not */
    snprintf(big, sizeof big, "GET /%070d HTTP/1.1\r\n\r\n", 0);
    refused(big, 414);
    snprintf(big, sizeof big, "GET /%070d", 0);
    refused(big, 414);
    /* a path beyond HTTP_MAX_PATH inside a line the limits allow */
    static const struct http_parse_limits wide = {4096, 8192, 4, 100};
    char path[600];
    snprintf(path, sizeof path, "GET /%0300d HTTP/1.1\r\n\r\n", 0);
    struct http_request r;
    assert_int_equal(http_parse_request(path, strlen(path), &wide, &r), HTTP_PARSE_ERROR);
    assert_int_equal(r.error_status, 414);
    /* a head that never ends */
    snprintf(big, sizeof big, "GET / HTTP/1.1\r\n");
    while (strlen(big) < 300)
        strcat(big, "X: 0123456789\r\n");
    refused(big, 431);
}

static void test_reasons(void **state)
{
    (void)state;
    assert_string_equal(http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(http_reason(299), "Unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requests),
        cmocka_unit_test(test_accept_encoding),
        cmocka_unit_test(test_incomplete),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_reasons),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
