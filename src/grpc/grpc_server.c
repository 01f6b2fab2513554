#include "grpc_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/listener.h>

#include "log/log.h"

struct grpc_method {
    char *path;
    grpc_handler_fn fn;
    void *user;
    struct grpc_method *next;
};

struct grpc_server {
    struct event_base *base;
    struct evconnlistener *listener;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    dev_t dev;
    ino_t ino;
    struct grpc_method *methods;
    struct grpc_conn *conns; /* newest first */
    size_t conn_count;
    struct grpc_budget *budget;
    bool own_budget;
    bool shutting_down;
};

struct grpc_call {
    struct grpc_stream s; /* first: the stream pointer is the call pointer */
    struct grpc_server *server;
    char method[256];
    bool is_post;
    bool grpc_content;
    unsigned pseudo_seen;  /* PSEUDO_* bits of the request headers seen */
    bool regular_seen;     /* a regular header came: no pseudo-header after it */
    bool malformed;        /* reset with PROTOCOL_ERROR once the block ends */
    size_t header_bytes;   /* as HTTP/2 counts the header list size */
    bool handled;          /* the handler has it */
    bool finished;         /* the status is decided */
    bool response_started; /* response headers submitted */
    long timeout_ms;
    struct timespec started;
    enum grpc_status status;
    char message[512];
    grpc_call_closed_fn on_close;
    void *close_user;
};

static struct grpc_call *call_of(struct grpc_stream *s)
{
    return (struct grpc_call *)s;
}

#define NV(name, value)                                                                       \
    {(uint8_t *)(name), (uint8_t *)(value), sizeof(name) - 1, strlen(value), NGHTTP2_NV_FLAG_NONE}

static void submit_status_headers(struct grpc_call *call, bool trailers_only)
{
    char code[16], encoded[sizeof call->message * 3 + 1];
    snprintf(code, sizeof code, "%d", (int)call->status);
    grpc_percent_encode(call->message, encoded, sizeof encoded);
    nghttp2_session *h2 = call->s.conn->h2;
    if (trailers_only) {
        nghttp2_nv nva[] = {NV(":status", "200"), NV("content-type", "application/grpc"),
                            NV("grpc-status", code), NV("grpc-message", encoded)};
        size_t n = encoded[0] ? 4 : 3;
        nghttp2_submit_response(h2, call->s.id, nva, n, NULL);
    } else {
        nghttp2_nv nva[] = {NV("grpc-status", code), NV("grpc-message", encoded)};
        nghttp2_submit_trailer(h2, call->s.id, nva, encoded[0] ? 2 : 1);
    }
}

static void start_response(struct grpc_call *call)
{
    nghttp2_nv nva[] = {NV(":status", "200"), NV("content-type", "application/grpc")};
    nghttp2_data_provider p = grpc_stream_data_provider(&call->s);
    nghttp2_submit_response(call->s.conn->h2, call->s.id, nva, 2, &p);
    call->response_started = true;
}

/* Decides the status and queues it; the HTTP/2 stream closes after. */
static void finish(struct grpc_call *call, enum grpc_status status, const char *message)
{
    if (call->finished)
        return;
    call->finished = true;
    call->status = status;
    snprintf(call->message, sizeof call->message, "%s", message ? message : "");
    if (call->s.deadline)
        event_del(call->s.deadline);
    if (call->response_started)
        grpc_stream_end(&call->s);
    else
        submit_status_headers(call, true);
}

/* The call ends without the application finishing it: tell it first. */
static void abandon(struct grpc_call *call, enum grpc_status why, const char *message)
{
    if (call->finished)
        return;
    grpc_call_closed_fn fn = call->on_close;
    call->on_close = NULL;
    if (call->handled && fn)
        fn(call, why, call->close_user);
    finish(call, why, message);
}

static int server_begin_headers(struct grpc_conn *c, const nghttp2_frame *frame)
{
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct grpc_call *call = calloc(1, sizeof *call);
    if (call == NULL)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    grpc_stream_init(&call->s, c, frame->hd.stream_id);
    grpc_stream_link(&call->s);
    call->server = c->owner;
    call->timeout_ms = -1;
    clock_gettime(CLOCK_MONOTONIC, &call->started);
    nghttp2_session_set_stream_user_data(c->h2, frame->hd.stream_id, call);
    return 0;
}

enum { PSEUDO_METHOD = 1, PSEUDO_SCHEME = 2, PSEUDO_PATH = 4, PSEUDO_AUTHORITY = 8 };

/* nghttp2's HTTP checks are off for servers (grpc_conn_new), so the request
 * is checked here as RFC 9113 section 8.3 asks, except that :authority may
 * be anything printable: grpc-go sends the socket path, others "localhost",
 * a unix: URI, percent escapes or nothing. A malformed request is reset. */
static void check_request_header(struct grpc_call *call, const nghttp2_frame *frame,
                                 const char *name, size_t name_len, const char *value,
                                 size_t value_len)
{
#define IS(lit) (name_len == sizeof(lit) - 1 && memcmp(name, lit, name_len) == 0)
    call->header_bytes += name_len + value_len + 32;
    if (call->header_bytes > GRPC_MAX_HEADER_LIST ||
        !nghttp2_check_header_value((const uint8_t *)value, value_len)) {
        call->malformed = true;
        return;
    }
    bool pseudo = name_len > 0 && name[0] == ':';
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        /* Trailers: no pseudo-headers, and they must end the stream. */
        if (pseudo || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
            call->malformed = true;
        return;
    }
    if (!pseudo) {
        call->regular_seen = true;
        bool connection_specific = IS("connection") || IS("keep-alive") ||
                                   IS("proxy-connection") || IS("transfer-encoding") ||
                                   IS("upgrade");
        if (connection_specific || (IS("te") && !(value_len == 8 && !memcmp(value, "trailers", 8))))
            call->malformed = true;
        else if (!nghttp2_check_header_name((const uint8_t *)name, name_len))
            call->malformed = true;
        for (size_t i = 0; i < name_len; i++)
            if (name[i] >= 'A' && name[i] <= 'Z')
                call->malformed = true; /* HTTP/2 field names are lower case */
        return;
    }
    unsigned bit = IS(":method") ? PSEUDO_METHOD
                   : IS(":scheme") ? PSEUDO_SCHEME
                   : IS(":path") ? PSEUDO_PATH
                   : IS(":authority") ? PSEUDO_AUTHORITY
                                      : 0;
    if (bit == 0 || (call->pseudo_seen & bit) || call->regular_seen ||
        (bit != PSEUDO_AUTHORITY && value_len == 0))
        call->malformed = true;
    call->pseudo_seen |= bit;
#undef IS
}

static int server_header(struct grpc_stream *s, const nghttp2_frame *frame, const char *name,
                         size_t name_len, const char *value, size_t value_len)
{
    struct grpc_call *call = call_of(s);
    check_request_header(call, frame, name, name_len, value, value_len);
    if (call->malformed || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
#define IS(lit) (name_len == sizeof(lit) - 1 && memcmp(name, lit, name_len) == 0)
    if (IS(":path")) {
        /* A path too long for any method stays unknown, never cut to one. */
        size_t n = value_len < sizeof call->method ? value_len : 0;
        memcpy(call->method, value, n);
        call->method[n] = '\0';
    } else if (IS(":method")) {
        call->is_post = value_len == 4 && memcmp(value, "POST", 4) == 0;
    } else if (IS("content-type")) {
        call->grpc_content = value_len >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
                             (value_len == 16 || value[16] == '+' || value[16] == ';');
    } else if (IS("grpc-timeout")) {
        call->timeout_ms = grpc_parse_timeout(value, value_len);
    }
#undef IS
    return 0;
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct grpc_call *call = arg;
    struct grpc_conn *c = call->s.conn;
    grpc_conn_enter(c);
    abandon(call, GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
    grpc_conn_leave(c);
}

static struct grpc_method *find_method(struct grpc_server *server, const char *path)
{
    for (struct grpc_method *m = server->methods; m; m = m->next)
        if (strcmp(m->path, path) == 0)
            return m;
    return NULL;
}

static void handle_request(struct grpc_call *call)
{
    if (call->finished)
        return;
    if (!call->is_post || !call->grpc_content) {
        /* Not gRPC: a plain HTTP answer, as gRPC servers give. */
        nghttp2_nv nva[] = {NV(":status", "415")};
        nghttp2_submit_response(call->s.conn->h2, call->s.id, nva, 1, NULL);
        call->finished = true;
        return;
    }
    if (call->server->shutting_down) {
        finish(call, GRPC_UNAVAILABLE, "the server is shutting down");
        return;
    }
    uint8_t *msg = NULL;
    size_t len = 0;
    enum grpc_status bad;
    const char *why;
    int got = grpc_take_message(call->s.in, &msg, &len, &bad, &why);
    grpc_stream_recount(&call->s);
    if (got < 0) {
        finish(call, bad, why);
        return;
    }
    if (got == 0 || evbuffer_get_length(call->s.in) != 0) {
        free(msg);
        finish(call, GRPC_INTERNAL,
               got == 0 ? "the request message is missing or cut short"
                        : "a request must be exactly one message");
        return;
    }
    struct grpc_method *m = find_method(call->server, call->method);
    if (m == NULL) {
        free(msg);
        char text[320];
        snprintf(text, sizeof text, "unknown method %s", call->method);
        finish(call, GRPC_UNIMPLEMENTED, text);
        return;
    }
    call->handled = true;
    m->fn(call, msg, len, m->user);
    free(msg);
}

static int server_frame_recv(struct grpc_conn *c, struct grpc_stream *s,
                             const nghttp2_frame *frame)
{
    if (s == NULL)
        return 0;
    struct grpc_call *call = call_of(s);
    if (call->finished)
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS &&
        (call->malformed || (frame->headers.cat == NGHTTP2_HCAT_REQUEST &&
                             (call->pseudo_seen & (PSEUDO_METHOD | PSEUDO_SCHEME | PSEUDO_PATH)) !=
                                 (PSEUDO_METHOD | PSEUDO_SCHEME | PSEUDO_PATH)))) {
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                  NGHTTP2_PROTOCOL_ERROR);
        call->finished = true;
        return 0;
    }
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST &&
        call->timeout_ms >= 0 && call->s.deadline == NULL) {
        call->s.deadline = evtimer_new(c->base, deadline_cb, call);
        struct timeval tv = {call->timeout_ms / 1000, (call->timeout_ms % 1000) * 1000};
        if (call->s.deadline)
            evtimer_add(call->s.deadline, &tv);
    }
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        handle_request(call);
    return 0;
}

static int server_data(struct grpc_stream *s)
{
    (void)s;
    return 0; /* the request is handled whole, at END_STREAM */
}

/* A call that would hold more than its budget allows ends, and what it
 * holds goes: a request still arriving is refused, a reply the client does
 * not take is dropped. */
static void drop(struct grpc_call *call, int dir, const char *message)
{
    abandon(call, GRPC_RESOURCE_EXHAUSTED, message);
    call->finished = true; /* even when abandon() found it finished (a 415) */
    grpc_stream_abort(&call->s, dir == GRPC_IN ? NGHTTP2_NO_ERROR : NGHTTP2_CANCEL);
}

static void server_overflow(struct grpc_stream *s, int dir)
{
    drop(call_of(s), dir,
         dir == GRPC_IN ? "the request is larger than the server's budget allows now"
                        : "the client does not take the replies as fast as they come");
}

static void server_data_end(struct grpc_stream *s)
{
    submit_status_headers(call_of(s), false);
}

static void server_stream_closed(struct grpc_stream *s, uint32_t error_code)
{
    (void)error_code;
    struct grpc_call *call = call_of(s);
    if (!call->finished) {
        grpc_call_closed_fn fn = call->on_close;
        call->finished = true;
        if (call->handled && fn)
            fn(call, GRPC_CANCELLED, call->close_user);
    }
    grpc_stream_release(s);
    free(call);
}

static void server_conn_closed(struct grpc_conn *c)
{
    struct grpc_server *server = c->owner;
    if (c->prev)
        c->prev->next = c->next;
    else
        server->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    server->conn_count--;
    server->budget->connections--;
}

static const struct grpc_conn_side server_side = {
    .is_server = true,
    .begin_headers = server_begin_headers,
    .header = server_header,
    .frame_recv = server_frame_recv,
    .data = server_data,
    .data_end = server_data_end,
    .overflow = server_overflow,
    .stream_closed = server_stream_closed,
    .conn_closed = server_conn_closed,
};

/* At the connection bound, the oldest connection without a stream makes
 * room (a peer that connects and waits holds nothing worth keeping); when
 * every one has a call open, the newcomer is turned away. */
static bool make_room(struct grpc_server *server)
{
    if (server->budget->connections < GRPC_MAX_CONNECTIONS)
        return true;
    struct grpc_conn *idle = NULL;
    for (struct grpc_conn *c = server->conns; c; c = c->next)
        if (c->streams == NULL && !c->dead)
            idle = c;
    if (idle == NULL)
        return false;
    grpc_conn_close(idle);
    return true;
}

static void accept_cb(struct evconnlistener *listener, evutil_socket_t fd, struct sockaddr *addr,
                      int socklen, void *arg)
{
    (void)listener;
    (void)addr;
    (void)socklen;
    struct grpc_server *server = arg;
    if (!make_room(server)) {
        close(fd);
        time_t now = time(NULL);
        if (now - server->budget->refusal_logged >= 60) {
            server->budget->refusal_logged = now;
            log_warn("too many gRPC connections: refusing new ones (logged once a minute)",
                     "socket=%s limit=%d", server->path, GRPC_MAX_CONNECTIONS);
        }
        return;
    }
    struct grpc_conn *c;
    struct gpulet_error err = {0};
    if (grpc_conn_new(server->base, fd, &server_side, server, server->budget, &c, &err) < 0) {
        log_warn("cannot accept a gRPC connection", "socket=%s error=\"%s\"", server->path,
                 err.msg);
        return;
    }
    c->next = server->conns;
    if (server->conns)
        server->conns->prev = c;
    server->conns = c;
    server->conn_count++;
    server->budget->connections++;
    grpc_conn_flush(c);
}

struct grpc_budget *grpc_budget_new(void)
{
    return calloc(1, sizeof(struct grpc_budget));
}

void grpc_budget_free(struct grpc_budget *budget)
{
    free(budget);
}

int grpc_server_listen(struct event_base *base, const char *path, struct grpc_budget *budget,
                       struct grpc_server **out, struct gpulet_error *err)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path)
        return gpulet_error_set(err, GPULET_ERR_USAGE,
                                "socket path %s is too long (at most %zu characters)", path,
                                sizeof addr.sun_path - 1);
    memcpy(addr.sun_path, path, strlen(path) + 1);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return gpulet_error_set(err, GPULET_ERR_USAGE,
                                    "%s exists and is not a socket; refusing to replace it", path);
        if (unlink(path) != 0)
            return gpulet_error_errno(err, errno, "cannot remove the old socket %s", path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return gpulet_error_errno(err, errno, "cannot create a socket for %s", path);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 128) != 0) {
        int e = errno;
        close(fd);
        return gpulet_error_errno(err, e, "cannot listen on %s", path);
    }
    struct grpc_server *server = calloc(1, sizeof *server);
    if (server == NULL) {
        close(fd);
        unlink(path);
        return gpulet_error_errno(err, ENOMEM, "cannot allocate a server");
    }
    server->base = base;
    server->budget = budget;
    if (budget == NULL) {
        server->budget = grpc_budget_new();
        server->own_budget = true;
    }
    memcpy(server->path, path, strlen(path) + 1);
    if (stat(path, &st) == 0) {
        server->dev = st.st_dev;
        server->ino = st.st_ino;
    }
    server->listener = evconnlistener_new(base, accept_cb, server, LEV_OPT_CLOSE_ON_FREE, -1, fd);
    if (server->listener == NULL || server->budget == NULL) {
        if (server->listener)
            evconnlistener_free(server->listener);
        else
            close(fd);
        unlink(path);
        if (server->own_budget)
            grpc_budget_free(server->budget);
        free(server);
        return gpulet_error_set(err, GPULET_ERR_SYSTEM, "cannot watch the socket %s", path);
    }
    *out = server;
    return 0;
}

int grpc_server_handle(struct grpc_server *server, const char *method, grpc_handler_fn handler,
                       void *user, struct gpulet_error *err)
{
    struct grpc_method *m = calloc(1, sizeof *m);
    if (m == NULL || (m->path = strdup(method)) == NULL) {
        free(m);
        return gpulet_error_errno(err, ENOMEM, "cannot register %s", method);
    }
    m->fn = handler;
    m->user = user;
    m->next = server->methods;
    server->methods = m;
    return 0;
}

const char *grpc_server_path(const struct grpc_server *server)
{
    return server->path;
}

size_t grpc_server_connections(const struct grpc_server *server)
{
    return server->conn_count;
}

void grpc_server_shutdown(struct grpc_server *server)
{
    if (server->shutting_down)
        return;
    server->shutting_down = true;
    if (server->listener) {
        evconnlistener_free(server->listener);
        server->listener = NULL;
    }
    for (struct grpc_conn *c = server->conns, *next; c; c = next) {
        next = c->next;
        for (struct grpc_stream *s = c->streams; s; s = s->next)
            abandon(call_of(s), GRPC_UNAVAILABLE, "the server is shutting down");
        nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->h2),
                              NGHTTP2_NO_ERROR, NULL, 0);
        grpc_conn_flush(c); /* may close c */
    }
}

void grpc_server_free(struct grpc_server *server)
{
    if (server == NULL)
        return;
    grpc_server_shutdown(server);
    while (server->conns)
        grpc_conn_close(server->conns);
    /* Remove the socket only if it is still the one we made: the kubelet
     * may have deleted it and something else may live there now. */
    struct stat st;
    if (stat(server->path, &st) == 0 && st.st_dev == server->dev && st.st_ino == server->ino)
        unlink(server->path);
    while (server->methods) {
        struct grpc_method *m = server->methods;
        server->methods = m->next;
        free(m->path);
        free(m);
    }
    if (server->own_budget)
        grpc_budget_free(server->budget);
    free(server);
}

const char *grpc_call_method(const struct grpc_call *call)
{
    return call->method;
}

long grpc_call_remaining_ms(const struct grpc_call *call)
{
    if (call->timeout_ms < 0)
        return -1;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long spent = (long)((now.tv_sec - call->started.tv_sec) * 1000 +
                        (now.tv_nsec - call->started.tv_nsec) / 1000000);
    return spent >= call->timeout_ms ? 0 : call->timeout_ms - spent;
}

size_t grpc_call_queued(const struct grpc_call *call)
{
    return call->s.out ? evbuffer_get_length(call->s.out) : 0;
}

int grpc_call_send(struct grpc_call *call, const uint8_t *msg, size_t len)
{
    if (call->finished || call->s.conn->dead)
        return -1;
    if (!call->response_started)
        start_response(call);
    if (grpc_stream_queue(&call->s, msg, len) < 0) {
        server_overflow(&call->s, GRPC_OUT);
        grpc_conn_flush_soon(call->s.conn);
        return -1;
    }
    grpc_conn_flush_soon(call->s.conn);
    return 0;
}

void grpc_call_finish(struct grpc_call *call, enum grpc_status status, const char *message)
{
    struct grpc_conn *c = call->s.conn;
    finish(call, status, message);
    grpc_conn_flush_soon(c);
}

void grpc_call_drop(struct grpc_call *call, const char *message)
{
    struct grpc_conn *c = call->s.conn;
    call->on_close = NULL;
    drop(call, GRPC_OUT, message);
    grpc_conn_flush_soon(c);
}

void grpc_call_reply(struct grpc_call *call, const uint8_t *msg, size_t len)
{
    if (grpc_call_send(call, msg, len) == 0)
        grpc_call_finish(call, GRPC_OK, NULL);
}

void grpc_call_reply_message(struct grpc_call *call, const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL) {
        grpc_call_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    protobuf_c_message_pack(msg, buf);
    grpc_call_reply(call, buf, len);
    free(buf);
}

void grpc_call_on_close(struct grpc_call *call, grpc_call_closed_fn fn, void *user)
{
    call->on_close = fn;
    call->close_user = user;
}
