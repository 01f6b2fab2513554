/*
 * grpc_probe: drives src/grpc/ from the command line for the interop tests
 * (tests/integration/test_grpc.py), against Python grpcio on the other end.
 *
 *   grpc_probe serve SOCKET                     test service, "ready" when up
 *   grpc_probe call SOCKET METHOD PAYLOAD [MS]   one unary call
 *   grpc_probe stream SOCKET METHOD PAYLOAD [MS] one server-streaming call
 *   grpc_probe many SOCKET N                     N concurrent calls, one channel
 *
 * PAYLOAD "@N" stands for N pattern bytes. Results are printed one per
 * line: "msg LEN HASH" per message, then "status CODE MESSAGE".
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/grpc.h"

static uint32_t fnv1a(const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static uint8_t *payload(const char *spec, size_t *len)
{
    if (spec[0] == '@') {
        *len = strtoul(spec + 1, NULL, 10);
        uint8_t *p = malloc(*len ? *len : 1);
        for (size_t i = 0; i < *len; i++)
            p[i] = (uint8_t)(i * 7 + 3);
        return p;
    }
    *len = strlen(spec);
    uint8_t *p = malloc(*len + 1);
    memcpy(p, spec, *len + 1);
    return p;
}

/* ---- serve ---- */

struct endless {
    struct grpc_call *call;
    struct event *tick;
    unsigned int sent;
};

static struct event_base *base;
static struct grpc_server *server;

static void closed_cb(struct grpc_call *call, enum grpc_status why, void *user)
{
    (void)call;
    struct endless *e = user;
    printf("closed %s\n", grpc_status_name(why));
    fflush(stdout);
    if (e) {
        event_free(e->tick);
        free(e);
    }
}

static void unary(struct grpc_call *call, const uint8_t *req, size_t len, void *user)
{
    (void)user;
    grpc_call_reply(call, req, len);
}

static void fail(struct grpc_call *call, const uint8_t *req, size_t len, void *user)
{
    (void)user;
    char text[512];
    snprintf(text, sizeof text, "%.*s", (int)len, (const char *)req);
    char *rest;
    long code = strtol(text, &rest, 10);
    grpc_call_finish(call, (enum grpc_status)code, *rest ? rest + 1 : "");
}

static void stream(struct grpc_call *call, const uint8_t *req, size_t len, void *user)
{
    (void)user;
    char text[64];
    snprintf(text, sizeof text, "%.*s", (int)len, (const char *)req);
    unsigned long n = 0, size = 0;
    sscanf(text, "%lu %lu", &n, &size);
    uint8_t *buf = malloc(size ? size : 1);
    for (unsigned long m = 0; m < n; m++) {
        for (unsigned long i = 0; i < size; i++)
            buf[i] = (uint8_t)(m + i);
        grpc_call_send(call, buf, size);
    }
    free(buf);
    grpc_call_finish(call, GRPC_OK, NULL);
}

static void hold(struct grpc_call *call, const uint8_t *req, size_t len, void *user)
{
    (void)req;
    (void)len;
    (void)user;
    grpc_call_on_close(call, closed_cb, NULL);
}

static void endless_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct endless *e = arg;
    char msg[32];
    int n = snprintf(msg, sizeof msg, "tick %u", e->sent++);
    grpc_call_send(e->call, (const uint8_t *)msg, (size_t)n);
}

static void endless(struct grpc_call *call, const uint8_t *req, size_t len, void *user)
{
    (void)req;
    (void)len;
    (void)user;
    struct endless *e = calloc(1, sizeof *e);
    e->call = call;
    e->tick = event_new(base, -1, EV_PERSIST, endless_tick, e);
    struct timeval tv = {0, 10000};
    event_add(e->tick, &tv);
    grpc_call_on_close(call, closed_cb, e);
    endless_tick(-1, 0, e);
}

struct delayed {
    struct grpc_call *call;
    uint8_t *msg;
    size_t len;
    struct event *timer;
};

static void delayed_fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct delayed *d = arg;
    grpc_call_reply(d->call, d->msg, d->len);
    event_free(d->timer);
    free(d->msg);
    free(d);
}

/* Replies with the request after (first byte % 20) ms: out of order. */
static void delay(struct grpc_call *call, const uint8_t *req, size_t len, void *user)
{
    (void)user;
    struct delayed *d = calloc(1, sizeof *d);
    d->call = call;
    d->msg = malloc(len ? len : 1);
    memcpy(d->msg, req, len);
    d->len = len;
    d->timer = evtimer_new(base, delayed_fire, d);
    struct timeval tv = {0, (len ? req[0] % 20 : 0) * 1000};
    evtimer_add(d->timer, &tv);
}

static struct event *term_event, *int_event;

/* Shut down gracefully: the loop ends by itself once the last connection
 * has said goodbye and nothing else is waiting. */
static void stop_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    (void)arg;
    grpc_server_shutdown(server);
    event_del(term_event);
    event_del(int_event);
}

static int serve(const char *path)
{
    struct gpulet_error err = {0};
    if (grpc_server_listen(base, path, NULL, &server, &err) < 0) {
        fprintf(stderr, "grpc_probe: %s\n", err.msg);
        return 2;
    }
    grpc_server_handle(server, "/test.Echo/Unary", unary, NULL, &err);
    grpc_server_handle(server, "/test.Echo/Fail", fail, NULL, &err);
    grpc_server_handle(server, "/test.Echo/Stream", stream, NULL, &err);
    grpc_server_handle(server, "/test.Echo/Hold", hold, NULL, &err);
    grpc_server_handle(server, "/test.Echo/Endless", endless, NULL, &err);
    grpc_server_handle(server, "/test.Echo/Delay", delay, NULL, &err);
    term_event = evsignal_new(base, SIGTERM, stop_cb, NULL);
    int_event = evsignal_new(base, SIGINT, stop_cb, NULL);
    event_add(term_event, NULL);
    event_add(int_event, NULL);
    printf("ready\n");
    fflush(stdout);
    event_base_dispatch(base);
    printf("bye connections=%zu\n", grpc_server_connections(server));
    fflush(stdout);
    grpc_server_free(server);
    event_free(term_event);
    event_free(int_event);
    return 0;
}

/* ---- client ---- */

static int final_status = -1;

static void on_message(const uint8_t *msg, size_t len, void *user)
{
    (void)user;
    printf("msg %zu %08x\n", len, fnv1a(msg, len));
    fflush(stdout);
}

static void on_done(enum grpc_status status, const char *message, const uint8_t *reply,
                    size_t len, void *user)
{
    (void)user;
    if (reply)
        printf("msg %zu %08x\n", len, fnv1a(reply, len));
    printf("status %d %s\n", (int)status, message ? message : "");
    fflush(stdout);
    final_status = (int)status;
    event_base_loopbreak(base);
}

static int call(const char *path, const char *method, const char *spec, long timeout, bool streaming)
{
    struct gpulet_error err = {0};
    struct grpc_channel *ch;
    if (grpc_channel_open(base, path, &ch, &err) < 0) {
        fprintf(stderr, "grpc_probe: %s\n", err.msg);
        return 2;
    }
    size_t len;
    uint8_t *req = payload(spec, &len);
    if (grpc_channel_call(ch, method, req, len, timeout, streaming ? on_message : NULL, on_done,
                          NULL) == NULL) {
        fprintf(stderr, "grpc_probe: cannot start the call\n");
        free(req);
        grpc_channel_close(ch);
        return 2;
    }
    free(req);
    event_base_dispatch(base);
    grpc_channel_close(ch);
    return final_status == 0 ? 0 : 1;
}

struct many_call {
    uint8_t req[32];
    size_t len;
    int *left, *bad;
};

static void many_done(enum grpc_status status, const char *message, const uint8_t *reply,
                      size_t len, void *user)
{
    struct many_call *c = user;
    if (status != GRPC_OK || len != c->len || memcmp(reply, c->req, len) != 0) {
        (*c->bad)++;
        fprintf(stderr, "grpc_probe: call %.*s: status %d %s\n", (int)c->len, c->req, status,
                message ? message : "");
    }
    if (--*c->left == 0)
        event_base_loopbreak(base);
}

static int many(const char *path, int n)
{
    struct gpulet_error err = {0};
    struct grpc_channel *ch;
    if (grpc_channel_open(base, path, &ch, &err) < 0) {
        fprintf(stderr, "grpc_probe: %s\n", err.msg);
        return 2;
    }
    struct many_call *calls = calloc((size_t)n, sizeof *calls);
    int left = n, bad = 0;
    for (int i = 0; i < n; i++) {
        calls[i].len = (size_t)snprintf((char *)calls[i].req, sizeof calls[i].req, "%c-call-%d",
                                        'A' + i % 26, i);
        calls[i].left = &left;
        calls[i].bad = &bad;
        if (grpc_channel_call(ch, "/test.Echo/Delay", calls[i].req, calls[i].len, 10000, NULL,
                              many_done, &calls[i]) == NULL) {
            bad++;
            left--;
        }
    }
    if (left > 0)
        event_base_dispatch(base);
    printf("ok %d bad %d\n", n - bad, bad);
    grpc_channel_close(ch);
    free(calls);
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    base = event_base_new();
    int rc = 2;
    if (argc == 3 && strcmp(argv[1], "serve") == 0)
        rc = serve(argv[2]);
    else if ((argc == 5 || argc == 6) && strcmp(argv[1], "call") == 0)
        rc = call(argv[2], argv[3], argv[4], argc == 6 ? atol(argv[5]) : 0, false);
    else if ((argc == 5 || argc == 6) && strcmp(argv[1], "stream") == 0)
        rc = call(argv[2], argv[3], argv[4], argc == 6 ? atol(argv[5]) : 0, true);
    else if (argc == 4 && strcmp(argv[1], "many") == 0)
        rc = many(argv[2], atoi(argv[3]));
    else
        fprintf(stderr, "usage: grpc_probe serve SOCKET | call|stream SOCKET METHOD PAYLOAD [MS] "
                        "| many SOCKET N\n");
    event_base_free(base);
    return rc;
}
