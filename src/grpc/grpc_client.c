#include "grpc_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct grpc_channel {
    struct event_base *base;
    struct grpc_conn *conn; /* NULL once the connection is gone */
};

struct grpc_client_call {
    struct grpc_stream s; /* first: the stream pointer is the call pointer */
    grpc_message_fn on_message;
    grpc_done_fn done;
    void *user;
    bool reported; /* done has been called, or the caller cancelled */
    long timeout_ms;
    int http_status;
    bool has_status;
    enum grpc_status status;
    char message[512];
    uint8_t *reply;
    size_t reply_len;
    bool bad;
    enum grpc_status bad_status;
    const char *bad_why;
};

static struct grpc_client_call *ccall_of(struct grpc_stream *s)
{
    return (struct grpc_client_call *)s;
}

static void report(struct grpc_client_call *call, enum grpc_status status, const char *message)
{
    if (call->reported)
        return;
    call->reported = true;
    if (call->s.deadline)
        event_del(call->s.deadline);
    const uint8_t *reply = status == GRPC_OK ? call->reply : NULL;
    size_t len = status == GRPC_OK ? call->reply_len : 0;
    call->done(status, message, reply, len, call->user);
}

static int client_begin_headers(struct grpc_conn *c, const nghttp2_frame *frame)
{
    (void)c;
    (void)frame;
    return 0;
}

static int client_header(struct grpc_stream *s, const nghttp2_frame *frame, const char *name,
                         size_t name_len, const char *value, size_t value_len)
{
    (void)frame;
    struct grpc_client_call *call = ccall_of(s);
#define IS(lit) (name_len == sizeof(lit) - 1 && memcmp(name, lit, name_len) == 0)
    if (IS(":status")) {
        call->http_status = 0;
        for (size_t i = 0; i < value_len && value[i] >= '0' && value[i] <= '9'; i++)
            call->http_status = call->http_status * 10 + (value[i] - '0');
    } else if (IS("grpc-status")) {
        int code = 0;
        for (size_t i = 0; i < value_len && i < 4 && value[i] >= '0' && value[i] <= '9'; i++)
            code = code * 10 + (value[i] - '0');
        call->has_status = true;
        call->status = code <= GRPC_UNAUTHENTICATED ? (enum grpc_status)code : GRPC_UNKNOWN;
    } else if (IS("grpc-message")) {
        grpc_percent_decode(value, value_len, call->message, sizeof call->message);
    }
#undef IS
    return 0;
}

static int client_frame_recv(struct grpc_conn *c, struct grpc_stream *s,
                             const nghttp2_frame *frame)
{
    (void)c;
    (void)s;
    (void)frame;
    return 0;
}

static int client_data(struct grpc_stream *s)
{
    struct grpc_client_call *call = ccall_of(s);
    for (;;) {
        uint8_t *msg;
        size_t len;
        int got = grpc_take_message(s->in, &msg, &len, &call->bad_status, &call->bad_why);
        if (got == 0)
            return 0;
        if (got < 0 || (call->on_message == NULL && call->reply != NULL)) {
            if (got > 0) {
                free(msg);
                call->bad_status = GRPC_INTERNAL;
                call->bad_why = "the server sent more than one response to a unary call";
            }
            call->bad = true;
            evbuffer_drain(s->in, evbuffer_get_length(s->in));
            nghttp2_submit_rst_stream(s->conn->h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
            return 0;
        }
        if (call->on_message == NULL) {
            call->reply = msg;
            call->reply_len = len;
            continue;
        }
        if (!call->reported)
            call->on_message(msg, len, call->user);
        free(msg);
    }
}

static enum grpc_status from_http_status(int http)
{
    switch (http) {
    case 400: return GRPC_INTERNAL;
    case 401: return GRPC_UNAUTHENTICATED;
    case 403: return GRPC_PERMISSION_DENIED;
    case 404: return GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504: return GRPC_UNAVAILABLE;
    default: return GRPC_UNKNOWN;
    }
}

/* A reply larger than one message may be (requests are ours, never too big). */
static void client_overflow(struct grpc_stream *s, int dir)
{
    struct grpc_client_call *call = ccall_of(s);
    call->bad = true;
    call->bad_status = GRPC_RESOURCE_EXHAUSTED;
    call->bad_why = dir == GRPC_IN ? "the server's reply is larger than 4 MiB"
                                   : "the request is larger than 4 MiB";
    grpc_stream_abort(s, NGHTTP2_CANCEL);
}

static void client_stream_closed(struct grpc_stream *s, uint32_t error_code)
{
    struct grpc_client_call *call = ccall_of(s);
    if (!call->reported) {
        char text[96];
        if (call->bad) {
            report(call, call->bad_status, call->bad_why);
        } else if (call->has_status) {
            if (call->status == GRPC_OK && call->on_message == NULL && call->reply == NULL)
                report(call, GRPC_INTERNAL, "the server sent no response message");
            else
                report(call, call->status, call->message);
        } else if (s->conn->dead) {
            report(call, GRPC_UNAVAILABLE, "the connection closed");
        } else if (call->http_status != 0 && call->http_status != 200) {
            snprintf(text, sizeof text, "the server answered HTTP %d", call->http_status);
            report(call, from_http_status(call->http_status), text);
        } else if (error_code == NGHTTP2_REFUSED_STREAM) {
            report(call, GRPC_UNAVAILABLE, "the server refused the stream");
        } else if (error_code != NGHTTP2_NO_ERROR) {
            snprintf(text, sizeof text, "the server reset the stream (%s)",
                     nghttp2_http2_strerror(error_code));
            report(call, GRPC_CANCELLED, text);
        } else {
            report(call, GRPC_INTERNAL, "the server sent no grpc-status");
        }
    }
    free(call->reply);
    grpc_stream_release(s);
    free(call);
}

static void client_conn_closed(struct grpc_conn *c)
{
    struct grpc_channel *ch = c->owner;
    if (ch)
        ch->conn = NULL;
}

static const struct grpc_conn_side client_side = {
    .is_server = false,
    .begin_headers = client_begin_headers,
    .header = client_header,
    .frame_recv = client_frame_recv,
    .data = client_data,
    .data_end = NULL,
    .overflow = client_overflow,
    .stream_closed = client_stream_closed,
    .conn_closed = client_conn_closed,
};

int grpc_channel_open(struct event_base *base, const char *path, struct grpc_channel **out,
                      struct gpulet_error *err)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path)
        return gpulet_error_set(err, GPULET_ERR_USAGE, "socket path %s is too long", path);
    memcpy(addr.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return gpulet_error_errno(err, errno, "cannot create a socket");
    /* A Unix socket connects at once or fails at once (EAGAIN: backlog full). */
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int e = errno;
        close(fd);
        return gpulet_error_errno(err, e, "cannot connect to %s", path);
    }
    struct grpc_channel *ch = calloc(1, sizeof *ch);
    if (ch == NULL) {
        close(fd);
        return gpulet_error_errno(err, ENOMEM, "cannot allocate a channel");
    }
    ch->base = base;
    if (grpc_conn_new(base, fd, &client_side, ch, NULL, &ch->conn, err) < 0) {
        free(ch);
        return -1;
    }
    grpc_conn_flush(ch->conn);
    *out = ch;
    return 0;
}

static void client_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct grpc_client_call *call = arg;
    struct grpc_conn *c = call->s.conn;
    char text[64];
    snprintf(text, sizeof text, "deadline of %ld ms exceeded", call->timeout_ms);
    grpc_conn_enter(c);
    nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, call->s.id, NGHTTP2_CANCEL);
    report(call, GRPC_DEADLINE_EXCEEDED, text);
    grpc_conn_leave(c);
}

#define NV(name, value)                                                                       \
    {(uint8_t *)(name), (uint8_t *)(value), sizeof(name) - 1, strlen(value), NGHTTP2_NV_FLAG_NONE}

struct grpc_client_call *grpc_channel_call(struct grpc_channel *ch, const char *method,
                                           const uint8_t *request, size_t len, long timeout_ms,
                                           grpc_message_fn on_message, grpc_done_fn done,
                                           void *user)
{
    if (ch->conn == NULL || ch->conn->dead)
        return NULL;
    struct grpc_client_call *call = calloc(1, sizeof *call);
    if (call == NULL)
        return NULL;
    grpc_stream_init(&call->s, ch->conn, 0);
    call->on_message = on_message;
    call->done = done;
    call->user = user;
    call->timeout_ms = timeout_ms;
    if (grpc_stream_queue(&call->s, request, len) < 0)
        goto fail;
    call->s.out_done = true;
    char timeout[24] = "";
    if (timeout_ms > 0)
        snprintf(timeout, sizeof timeout, "%ldm", timeout_ms > 99999999 ? 99999999 : timeout_ms);
    nghttp2_nv nva[] = {NV(":method", "POST"),
                        NV(":scheme", "http"),
                        NV(":path", method),
                        NV(":authority", "localhost"),
                        NV("content-type", "application/grpc"),
                        NV("te", "trailers"),
                        NV("user-agent", "gpulet-grpc"),
                        NV("grpc-timeout", timeout)};
    nghttp2_data_provider p = grpc_stream_data_provider(&call->s);
    int32_t id = nghttp2_submit_request(ch->conn->h2, NULL, nva, timeout_ms > 0 ? 8 : 7, &p, call);
    if (id < 0)
        goto fail;
    call->s.id = id;
    grpc_stream_link(&call->s);
    if (timeout_ms > 0) {
        call->s.deadline = evtimer_new(ch->base, client_deadline_cb, call);
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        if (call->s.deadline)
            evtimer_add(call->s.deadline, &tv);
    }
    grpc_conn_flush(ch->conn);
    return call;

fail:
    grpc_stream_release(&call->s);
    free(call);
    return NULL;
}

void grpc_client_call_cancel(struct grpc_client_call *call)
{
    if (call->reported)
        return;
    call->reported = true;
    if (call->s.deadline)
        event_del(call->s.deadline);
    struct grpc_conn *c = call->s.conn;
    nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, call->s.id, NGHTTP2_CANCEL);
    grpc_conn_flush(c);
}

bool grpc_channel_is_open(const struct grpc_channel *ch)
{
    return ch->conn != NULL && !ch->conn->dead;
}

void grpc_channel_close(struct grpc_channel *ch)
{
    if (ch == NULL)
        return;
    if (ch->conn) {
        for (struct grpc_stream *s = ch->conn->streams; s; s = s->next)
            ccall_of(s)->reported = true; /* no callbacks after close */
        ch->conn->owner = NULL;
        grpc_conn_close(ch->conn);
    }
    free(ch);
}
