/*
 * http: a small HTTP/1.1 server on libevent for gpulet's own endpoints
 * (/metrics, /health), written for a port any pod can reach.
 *
 * GET and HEAD (other methods reach the handler, which answers 405),
 * keep-alive, pipelining one request at a time, every answer with a
 * Content-Length. Each bound is in struct http_limits: connections,
 * request line, head, header count and body sizes, one deadline for a
 * whole request (from its first byte until its answer is written, so a
 * client trickling bytes gains nothing), an idle limit between requests.
 * Accept errors (EMFILE ...) pause the listener with a backoff instead of
 * spinning, and every such condition is logged once per interval.
 *
 * The parser (http_parse_request) is separate from the server so that
 * fuzzing reaches it without sockets.
 */
#ifndef GPULET_HTTP_H
#define GPULET_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "error/error.h"

/* ---- parsing ---- */

struct http_parse_limits {
    size_t max_line;    /* request line, bytes (414 beyond) */
    size_t max_head;    /* request line + headers, bytes (431 beyond) */
    size_t max_headers; /* header fields (431 beyond) */
    size_t max_body;    /* Content-Length (413 beyond) */
};

enum http_method { HTTP_GET, HTTP_HEAD, HTTP_OTHER };

#define HTTP_MAX_PATH 256

struct http_request {
    enum http_method method;
    char path[HTTP_MAX_PATH]; /* the target up to '?', as sent */
    bool http11;           /* HTTP/1.1 (else 1.0) */
    bool keep_alive;
    bool accepts_gzip;     /* Accept-Encoding names gzip (or *) with a q above 0 */
    size_t head_len;       /* bytes of request line and headers, the blank line included */
    size_t content_length; /* body bytes that follow the head */
    int error_status;      /* on HTTP_PARSE_ERROR: 400, 413, 414, 431, 501 or 505 */
};

enum http_parse_status { HTTP_PARSE_ERROR = -1, HTTP_PARSE_INCOMPLETE = 0, HTTP_PARSE_DONE = 1 };

/* Parses the head of the request at the start of buf[0, len). INCOMPLETE:
 * more bytes needed (and len is within the limits); ERROR: answer
 * req->error_status and close. Cost linear in len. */
enum http_parse_status http_parse_request(const char *buf, size_t len,
                                          const struct http_parse_limits *lim,
                                          struct http_request *req);

/* "Not Found" for 404 ...; "Unknown" for a status it does not know. */
const char *http_reason(int status);

/* ---- serving ---- */

struct http_limits {
    struct http_parse_limits parse;
    size_t max_connections;  /* open at once; the listener pauses at the cap */
    long request_timeout_ms; /* first byte of a request until its answer is written */
    long idle_timeout_ms;    /* a kept-alive connection between requests */
    long accept_backoff_ms;  /* first pause after an accept error; doubles up to 10 x */
    long log_interval_s;     /* conditions (cap reached, accept errors) logged once per interval */
};

/* What the handler fills: the body goes in `body` (empty on entry). The
 * server writes the status line, Content-Type, Content-Length, Allow and
 * Content-Encoding when set, Vary: Accept-Encoding when the answer
 * depends on it, and the body unless the request was HEAD. */
struct http_answer {
    int status;
    const char *content_type;
    const char *allow;
    const char *content_encoding;
    bool vary_encoding;
    struct evbuffer *body;
};

typedef void (*http_handler_fn)(const struct http_request *req, struct http_answer *answer,
                                void *user);

struct http_server;

/* Listens on host:port ("0.0.0.0", "::", a name; port 0: any). Every
 * event of the server gets `priority` (-1: the base's default), so the
 * caller can put it below more important work on the same loop. */
struct http_server *http_server_start(struct event_base *base, const char *host, int port,
                                      const struct http_limits *limits, int priority,
                                      http_handler_fn handler, void *user,
                                      struct gpulet_error *err);
int http_server_port(const struct http_server *s);
/* Closes the listener and every connection. */
void http_server_free(struct http_server *s);

#endif
