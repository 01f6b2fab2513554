#include "grpc_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log/log.h"
#include "text/text.h"

const char *grpc_status_name(enum grpc_status status)
{
    static const char *const names[] = {
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
        "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
        "UNAUTHENTICATED"};
    if ((unsigned)status < sizeof names / sizeof names[0])
        return names[status];
    return "UNKNOWN";
}

static struct grpc_stream *stream_of(struct grpc_conn *c, int32_t id)
{
    return nghttp2_session_get_stream_user_data(c->h2, id);
}

static ssize_t send_cb(nghttp2_session *h2, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    (void)h2;
    (void)flags;
    struct grpc_conn *c = user;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    /* nghttp2 keeps what it could not send; write_cb asks again. */
    if (evbuffer_get_length(out) >= GRPC_SOCKET_OUT_HIGH)
        return NGHTTP2_ERR_WOULDBLOCK;
    if (evbuffer_add(out, data, len) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return (ssize_t)len;
}

static int begin_headers_cb(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
    (void)h2;
    struct grpc_conn *c = user;
    return c->side->begin_headers(c, frame);
}

static int header_cb(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                     size_t name_len, const uint8_t *value, size_t value_len, uint8_t flags,
                     void *user)
{
    (void)h2;
    (void)flags;
    struct grpc_conn *c = user;
    struct grpc_stream *s = stream_of(c, frame->hd.stream_id);
    if (s == NULL)
        return 0;
    return c->side->header(s, frame, (const char *)name, name_len, (const char *)value,
                           value_len);
}

static int frame_recv_cb(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
    (void)h2;
    struct grpc_conn *c = user;
    struct grpc_stream *s = frame->hd.stream_id ? stream_of(c, frame->hd.stream_id) : NULL;
    return c->side->frame_recv(c, s, frame);
}

static int data_chunk_cb(nghttp2_session *h2, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user)
{
    (void)h2;
    (void)flags;
    struct grpc_conn *c = user;
    struct grpc_stream *s = stream_of(c, stream_id);
    if (s == NULL || s->aborted)
        return 0;
    if (!grpc_stream_room(s, GRPC_IN, len)) {
        c->side->overflow(s, GRPC_IN);
        return 0;
    }
    if (evbuffer_add(s->in, data, len) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    int rv = c->side->data(s);
    grpc_stream_recount(s);
    return rv;
}

static int stream_close_cb(nghttp2_session *h2, int32_t stream_id, uint32_t error_code,
                           void *user)
{
    (void)h2;
    struct grpc_conn *c = user;
    struct grpc_stream *s = stream_of(c, stream_id);
    if (s != NULL) {
        nghttp2_session_set_stream_user_data(c->h2, stream_id, NULL);
        c->side->stream_closed(s, error_code);
    }
    return 0;
}

static void really_close(struct grpc_conn *c)
{
    /* Report every stream still open, then let go of the transport. */
    while (c->streams) {
        struct grpc_stream *s = c->streams;
        if (s->id > 0)
            nghttp2_session_set_stream_user_data(c->h2, s->id, NULL);
        c->side->stream_closed(s, NGHTTP2_CANCEL);
    }
    c->side->conn_closed(c);
    if (c->flush_soon)
        event_free(c->flush_soon);
    nghttp2_session_del(c->h2);
    bufferevent_free(c->bev);
    free(c);
}

void grpc_conn_close(struct grpc_conn *c)
{
    if (c->dead)
        return;
    c->dead = true;
    if (c->depth == 0)
        really_close(c);
}

void grpc_conn_enter(struct grpc_conn *c)
{
    c->depth++;
}

void grpc_conn_leave(struct grpc_conn *c)
{
    if (--c->depth > 0)
        return;
    if (c->dead)
        really_close(c);
    else
        grpc_conn_flush(c);
}

/* Closes when neither side has anything left to say. */
static bool finished_talking(struct grpc_conn *c)
{
    return !nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2) &&
           evbuffer_get_length(bufferevent_get_output(c->bev)) == 0;
}

/* grpc_conn_flush(), telling whether c is still there. */
static bool flush(struct grpc_conn *c)
{
    if (c->dead)
        return true; /* inside a callback: freed when it returns */
    if (c->depth > 0) {
        c->want_flush = true;
        return true;
    }
    int rv = 0;
    do { /* callbacks during the send may queue more */
        c->want_flush = false;
        c->depth++;
        rv = nghttp2_session_send(c->h2);
        c->depth--;
    } while (rv == 0 && c->want_flush && !c->dead);
    if (rv != 0) {
        log_debug("grpc connection failed to send", "error=\"%s\"", nghttp2_strerror(rv));
        grpc_conn_close(c);
        return false;
    }
    if (c->dead) {
        really_close(c);
        return false;
    }
    if (finished_talking(c)) {
        grpc_conn_close(c);
        return false;
    }
    return true;
}

void grpc_conn_flush(struct grpc_conn *c)
{
    flush(c);
}

static void flush_soon_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    flush(arg);
}

void grpc_conn_flush_soon(struct grpc_conn *c)
{
    if (c->depth > 0)
        c->want_flush = true;
    else if (!c->dead)
        event_active(c->flush_soon, EV_TIMEOUT, 0);
}

/* Whether the socket is too far behind to take more work from the peer. */
static bool backed_up(struct grpc_conn *c)
{
    return evbuffer_get_length(bufferevent_get_output(c->bev)) >= GRPC_SOCKET_OUT_HIGH ||
           nghttp2_session_want_write(c->h2);
}

/* Feeds nghttp2 what was read, unless the peer has not been reading what
 * we send: then its input waits (and, past GRPC_SOCKET_IN_HIGH, stays in
 * the socket) until write_cb finds the output drained. */
static void take_input(struct grpc_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t len = evbuffer_get_length(in);
    if (len == 0)
        return;
    if (backed_up(c)) {
        c->paused = true;
        bufferevent_disable(c->bev, EV_READ);
        return;
    }
    unsigned char *data = evbuffer_pullup(in, -1);
    c->depth++;
    ssize_t n = nghttp2_session_mem_recv(c->h2, data, len);
    c->depth--;
    if (n < 0) {
        /* Not HTTP/2, broken HTTP/2 or a flood: this connection ends,
         * nothing else. */
        log_debug("grpc connection sent bad HTTP/2, closing it", "error=\"%s\"",
                  nghttp2_strerror((int)n));
        grpc_conn_close(c); /* frees c: depth is 0 here */
        return;
    }
    evbuffer_drain(in, (size_t)n);
    if (c->dead) {
        really_close(c);
        return;
    }
    flush(c);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    take_input(arg);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct grpc_conn *c = arg;
    if (c->dead || !flush(c)) /* what nghttp2 held back */
        return;
    if (c->paused && !backed_up(c)) {
        c->paused = false;
        bufferevent_enable(c->bev, EV_READ);
        take_input(c);
    }
}

static void event_cb(struct bufferevent *bev, short events, void *arg)
{
    (void)bev;
    struct grpc_conn *c = arg;
    /* A timeout: the peer took nothing we sent for GRPC_WRITE_TIMEOUT_S. */
    if (events & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
        grpc_conn_close(c);
}

int grpc_conn_new(struct event_base *base, int fd, const struct grpc_conn_side *side,
                  void *owner, struct grpc_budget *budget, struct grpc_conn **out,
                  struct gpulet_error *err)
{
    struct grpc_conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        close(fd);
        return gpulet_error_errno(err, ENOMEM, "cannot allocate a connection");
    }
    c->base = base;
    c->side = side;
    c->owner = owner;
    c->budget = budget;
    c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->flush_soon = event_new(base, -1, 0, flush_soon_cb, c);
    if (c->bev == NULL || c->flush_soon == NULL) {
        if (c->bev)
            bufferevent_free(c->bev);
        else
            close(fd);
        if (c->flush_soon)
            event_free(c->flush_soon);
        free(c);
        return gpulet_error_set(err, GPULET_ERR_SYSTEM, "cannot set up a connection");
    }
    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_send_callback(cbs, send_cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, begin_headers_cb);
    nghttp2_session_callbacks_set_on_header_callback(cbs, header_cb);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, frame_recv_cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, data_chunk_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, stream_close_cb);
    /* A server takes any :authority: the kubelet's grpc-go sends the socket
     * path there, which nghttp2's HTTP checks refuse. Those checks are off on
     * the server side and the server makes its own (grpc_server.c); framing,
     * HPACK and flow control stay nghttp2's. */
    nghttp2_option *opt = NULL;
    int rv = nghttp2_option_new(&opt);
    if (rv == 0) {
        if (side->is_server)
            nghttp2_option_set_no_http_messaging(opt, 1);
        /* Bounds on what a peer makes nghttp2 keep: acknowledgements owed
         * (PING/SETTINGS floods end the connection), closed streams (kept
         * for priorities we do not use). Rapid resets are limited by
         * nghttp2's defaults (1000 at once, 33 a second). */
        nghttp2_option_set_max_outbound_ack(opt, GRPC_MAX_OUTBOUND_ACK);
        nghttp2_option_set_no_closed_streams(opt, 1);
        rv = side->is_server ? nghttp2_session_server_new2(&c->h2, cbs, c, opt)
                             : nghttp2_session_client_new2(&c->h2, cbs, c, opt);
        nghttp2_option_del(opt);
    }
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0) {
        bufferevent_free(c->bev);
        event_free(c->flush_soon);
        free(c);
        return gpulet_error_set(err, GPULET_ERR_SYSTEM, "cannot start HTTP/2: %s",
                                nghttp2_strerror(rv));
    }
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, GRPC_MAX_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, GRPC_MAX_HEADER_LIST},
    };
    nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, settings,
                            sizeof settings / sizeof settings[0]);
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, GRPC_SOCKET_IN_HIGH);
    bufferevent_setwatermark(c->bev, EV_WRITE, GRPC_SOCKET_OUT_LOW, 0);
    struct timeval write_timeout = {GRPC_WRITE_TIMEOUT_S, 0};
    bufferevent_set_timeouts(c->bev, NULL, &write_timeout);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    *out = c;
    return 0;
}

void grpc_stream_init(struct grpc_stream *s, struct grpc_conn *c, int32_t id)
{
    s->conn = c;
    s->id = id;
    s->in = evbuffer_new();
    s->out = evbuffer_new();
}

void grpc_stream_link(struct grpc_stream *s)
{
    struct grpc_conn *c = s->conn;
    s->prev = NULL;
    s->next = c->streams;
    if (c->streams)
        c->streams->prev = s;
    c->streams = s;
}

static size_t above_floor(size_t held)
{
    return held > GRPC_CONN_FLOOR ? held - GRPC_CONN_FLOOR : 0;
}

bool grpc_stream_room(const struct grpc_stream *s, int dir, size_t n)
{
    const struct grpc_conn *c = s->conn;
    if (dir == GRPC_IN && s->held[GRPC_IN] + n > GRPC_MAX_MESSAGE + 5)
        return false;
    size_t now = c->held[dir], then = now + n;
    if (then > GRPC_CONN_MAX)
        return false;
    return c->budget == NULL ||
           c->budget->pool[dir] + above_floor(then) - above_floor(now) <= GRPC_POOL_MAX;
}

void grpc_stream_recount(struct grpc_stream *s)
{
    struct grpc_conn *c = s->conn;
    size_t len[2] = {s->in ? evbuffer_get_length(s->in) : 0,
                     s->out ? evbuffer_get_length(s->out) : 0};
    for (int d = GRPC_IN; d <= GRPC_OUT; d++) {
        size_t before = c->held[d];
        c->held[d] = before - s->held[d] + len[d];
        s->held[d] = len[d];
        if (c->budget)
            c->budget->pool[d] = c->budget->pool[d] - above_floor(before) + above_floor(c->held[d]);
    }
}

void grpc_stream_abort(struct grpc_stream *s, uint32_t error_code)
{
    if (s->aborted)
        return;
    s->aborted = true;
    evbuffer_drain(s->in, evbuffer_get_length(s->in));
    evbuffer_drain(s->out, evbuffer_get_length(s->out));
    grpc_stream_recount(s);
    if (s->id > 0)
        nghttp2_submit_rst_stream(s->conn->h2, NGHTTP2_FLAG_NONE, s->id, error_code);
}

void grpc_stream_release(struct grpc_stream *s)
{
    struct grpc_conn *c = s->conn;
    if (s->prev)
        s->prev->next = s->next;
    else if (c->streams == s)
        c->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    if (s->deadline)
        event_free(s->deadline);
    s->deadline = NULL;
    if (s->in)
        evbuffer_free(s->in);
    if (s->out)
        evbuffer_free(s->out);
    s->in = s->out = NULL;
    grpc_stream_recount(s);
}

static ssize_t data_read_cb(nghttp2_session *h2, int32_t stream_id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *source, void *user)
{
    (void)h2;
    (void)stream_id;
    (void)user;
    struct grpc_stream *s = source->ptr;
    if (s->aborted)
        return NGHTTP2_ERR_DEFERRED; /* the reset closes it */
    size_t avail = evbuffer_get_length(s->out);
    if (avail == 0) {
        if (!s->out_done) {
            s->data_deferred = true;
            return NGHTTP2_ERR_DEFERRED;
        }
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (s->conn->side->data_end) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            s->conn->side->data_end(s);
        }
        return 0;
    }
    size_t n = avail < length ? avail : length;
    evbuffer_remove(s->out, buf, n);
    grpc_stream_recount(s);
    if (n == avail && s->out_done) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (s->conn->side->data_end) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            s->conn->side->data_end(s);
        }
    }
    return (ssize_t)n;
}

nghttp2_data_provider grpc_stream_data_provider(struct grpc_stream *s)
{
    nghttp2_data_provider p = {.source.ptr = s, .read_callback = data_read_cb};
    return p;
}

int grpc_stream_queue(struct grpc_stream *s, const uint8_t *msg, size_t len)
{
    uint8_t prefix[5] = {0, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                         (uint8_t)len};
    if (!grpc_stream_room(s, GRPC_OUT, len + sizeof prefix))
        return -1;
    int rc = evbuffer_add(s->out, prefix, sizeof prefix) != 0 ||
             (len && evbuffer_add(s->out, msg, len) != 0);
    grpc_stream_recount(s);
    if (rc)
        return -1;
    if (s->data_deferred && s->id > 0) {
        s->data_deferred = false;
        nghttp2_session_resume_data(s->conn->h2, s->id);
    }
    return 0;
}

void grpc_stream_end(struct grpc_stream *s)
{
    s->out_done = true;
    if (s->data_deferred && s->id > 0) {
        s->data_deferred = false;
        nghttp2_session_resume_data(s->conn->h2, s->id);
    }
}

int grpc_take_message(struct evbuffer *in, uint8_t **msg, size_t *len, enum grpc_status *status,
                      const char **why)
{
    size_t have = evbuffer_get_length(in);
    if (have < 5)
        return 0;
    uint8_t prefix[5];
    evbuffer_copyout(in, prefix, sizeof prefix);
    if (prefix[0] != 0) {
        *status = GRPC_UNIMPLEMENTED;
        *why = "compressed messages are not supported";
        return -1;
    }
    uint32_t n = (uint32_t)prefix[1] << 24 | (uint32_t)prefix[2] << 16 |
                 (uint32_t)prefix[3] << 8 | prefix[4];
    if (n > GRPC_MAX_MESSAGE) {
        *status = GRPC_RESOURCE_EXHAUSTED;
        *why = "message larger than 4 MiB";
        return -1;
    }
    if (have < 5 + (size_t)n)
        return 0;
    uint8_t *buf = malloc(n ? n : 1);
    if (buf == NULL) {
        *status = GRPC_RESOURCE_EXHAUSTED;
        *why = "out of memory";
        return -1;
    }
    evbuffer_drain(in, 5);
    evbuffer_remove(in, buf, n);
    *msg = buf;
    *len = n;
    return 1;
}

long grpc_parse_timeout(const char *value, size_t len)
{
    /* 1 to 8 digits and a unit: Hours, Minutes, Seconds, milli, micro, nano. */
    if (len < 2 || len > 9)
        return -1;
    long long n = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (value[i] < '0' || value[i] > '9')
            return -1;
        n = n * 10 + (value[i] - '0');
    }
    long long ms;
    switch (value[len - 1]) {
    case 'H': ms = n * 3600000LL; break;
    case 'M': ms = n * 60000LL; break;
    case 'S': ms = n * 1000LL; break;
    case 'm': ms = n; break;
    case 'u': ms = (n + 999) / 1000; break;
    case 'n': ms = (n + 999999) / 1000000; break;
    default: return -1;
    }
    return ms > 0x7fffffffLL ? 0x7fffffffL : (long)ms;
}

void grpc_percent_encode(const char *in, char *out, size_t out_len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < out_len; p++) {
        if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
}

void grpc_percent_decode(const char *in, size_t in_len, char *out, size_t out_len)
{
    size_t o = 0;
    for (size_t i = 0; i < in_len && o + 1 < out_len; i++) {
        int hi, lo;
        if (in[i] == '%' && i + 2 < in_len && (hi = text_hex_value((unsigned char)in[i + 1])) >= 0 &&
            (lo = text_hex_value((unsigned char)in[i + 2])) >= 0) {
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[o++] = in[i];
        }
    }
    out[o] = '\0';
}
