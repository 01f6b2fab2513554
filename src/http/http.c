/* The server: a listener that pauses at the connection cap and after
 * accept errors, and connections that read one request at a time under
 * one deadline per request. */
#include "http.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/bufferevent.h>

#include "log/log.h"

/* Accepts per wake-up, so a flood of connections cannot hold the loop. */
#define ACCEPTS_PER_WAKE 32
/* How long a connection closed after an error answer may still drain the
 * client's bytes, so that the answer is not lost to a reset. */
#define LINGER_MS 1000
/* Bytes one write may take from a connection's output (see conn_new). */
#define MAX_SINGLE_WRITE (4u << 20)

enum conn_state {
    CONN_IDLE,    /* kept alive, between requests */
    CONN_HEAD,    /* reading a request's head */
    CONN_BODY,    /* discarding a request's body */
    CONN_WRITING, /* an answer is leaving; the next request waits */
    CONN_CLOSING, /* an error answer is leaving; close once written */
    CONN_LINGER,  /* written and shut down; waiting for the client's end */
};

struct conn {
    struct http_server *srv;
    struct conn *prev, *next;
    struct bufferevent *bev;
    struct event *timer;
    enum conn_state state;
    bool keep_alive; /* after the answer being written */
    char *head;      /* limits.parse.max_head bytes */
    size_t len;      /* bytes in head */
    size_t scanned;  /* bytes of head already searched for a line end */
    bool line_seen;  /* a line of this request has ended */
    size_t body_left;
    struct http_request pending; /* answered once its body is read */
};

struct http_server {
    struct event_base *base;
    struct http_limits lim;
    int priority;
    http_handler_fn handler;
    void *user;
    int fd;
    int port;
    struct event *listen_event;
    bool listening;
    struct event *backoff_timer;
    bool backing_off;
    long backoff_ms;
    struct conn *conns;
    size_t count;
    struct evbuffer *body; /* the handler's answer, moved out at once */
    time_t date_at;        /* the second `date` shows */
    char date[64];
    struct log_limit cap_log, accept_log;
};

static void prioritise(struct http_server *s, struct event *ev)
{
    if (s->priority >= 0)
        event_priority_set(ev, s->priority);
}

static void arm(struct conn *c, long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

/* ---- the listener ---- */

static void update_listener(struct http_server *s)
{
    bool want = !s->backing_off && s->count < s->lim.max_connections;
    if (want == s->listening)
        return;
    if (want) {
        event_add(s->listen_event, NULL);
    } else {
        event_del(s->listen_event);
        unsigned long held;
        if (!s->backing_off && log_limit_pass(&s->cap_log, &held))
            log_warn("HTTP connection limit reached; new connections wait in the backlog",
                     "port=%d max_connections=%zu times_before=%lu", s->port,
                     s->lim.max_connections, held);
    }
    s->listening = want;
}

static void backoff_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct http_server *s = arg;
    s->backing_off = false;
    update_listener(s);
}

/* An accept that fails for want of descriptors or memory fails again at
 * once while the connection waits: pause instead of spinning. */
static void accept_failed(struct http_server *s, int error)
{
    unsigned long held;
    if (log_limit_pass(&s->accept_log, &held))
        log_warn("cannot accept HTTP connections; pausing the listener",
                 "port=%d error=\"%s\" pause_ms=%ld open=%zu times_before=%lu", s->port,
                 strerror(error), s->backoff_ms, s->count, held);
    s->backing_off = true;
    update_listener(s);
    struct timeval tv = {s->backoff_ms / 1000, (s->backoff_ms % 1000) * 1000};
    evtimer_add(s->backoff_timer, &tv);
    if (s->backoff_ms < s->lim.accept_backoff_ms * 10)
        s->backoff_ms *= 2;
}

static struct conn *conn_new(struct http_server *s, int fd);

static void accept_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct http_server *s = arg;
    for (int i = 0; i < ACCEPTS_PER_WAKE && s->count < s->lim.max_connections; i++) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            accept_failed(s, errno);
            return;
        }
        if (conn_new(s, cfd) == NULL) {
            close(cfd);
            accept_failed(s, ENOMEM);
            return;
        }
        s->backoff_ms = s->lim.accept_backoff_ms;
    }
    update_listener(s);
}

/* ---- connections ---- */

static void conn_free(struct conn *c)
{
    struct http_server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    bufferevent_free(c->bev);
    event_free(c->timer);
    free(c->head);
    free(c);
    s->count--;
    update_listener(s);
}

static void write_head(struct conn *c, const struct http_request *req,
                       const struct http_answer *a, size_t length)
{
    /* The Date header changes once a second, not once an answer. */
    struct http_server *s = c->srv;
    time_t now = time(NULL);
    if (now != s->date_at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(s->date, sizeof s->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        s->date_at = now;
    }
    const char *date = s->date;
    const char *connection = !c->keep_alive                   ? "Connection: close\r\n"
                             : req && !req->http11 ? "Connection: keep-alive\r\n"
                                                               : "";
    const char *allow = a->allow, *encoding = a->content_encoding;
    evbuffer_add_printf(bufferevent_get_output(c->bev),
                        "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\n"
                        "Content-Length: %zu\r\n%s%s%s%s%s%s%s%s\r\n",
                        a->status, http_reason(a->status), date,
                        a->content_type ? a->content_type : "text/plain; charset=utf-8", length,
                        allow ? "Allow: " : "", allow ? allow : "", allow ? "\r\n" : "",
                        encoding ? "Content-Encoding: " : "", encoding ? encoding : "",
                        encoding ? "\r\n" : "",
                        a->vary_encoding ? "Vary: Accept-Encoding\r\n" : "", connection);
}

/* An answer to a request that cannot be served: said, then closed. */
static void refuse(struct conn *c, int status)
{
    char body[64];
    int n = snprintf(body, sizeof body, "%s\n", http_reason(status));
    c->keep_alive = false;
    struct http_answer a = {.status = status};
    write_head(c, NULL, &a, (size_t)n);
    evbuffer_add(bufferevent_get_output(c->bev), body, (size_t)n);
    c->state = CONN_CLOSING;
}

static void respond(struct conn *c, const struct http_request *req)
{
    struct http_server *s = c->srv;
    struct http_answer a = {.status = 500, .body = s->body};
    s->handler(req, &a, s->user);
    size_t length = evbuffer_get_length(s->body);
    c->keep_alive = req->keep_alive;
    write_head(c, req, &a, length);
    if (req->method == HTTP_HEAD)
        evbuffer_drain(s->body, length);
    else
        evbuffer_add_buffer(bufferevent_get_output(c->bev), s->body);
    c->state = CONN_WRITING;
}

/* Moves the connection on with the bytes it has: at most one request is
 * answered before its answer has left. */
static void conn_process(struct conn *c)
{
    struct http_server *s = c->srv;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    for (;;) {
        switch (c->state) {
        case CONN_IDLE:
        case CONN_HEAD: {
            size_t room = s->lim.parse.max_head - c->len;
            int n = room ? evbuffer_remove(in, c->head + c->len, room) : 0;
            if (n > 0)
                c->len += (size_t)n;
            if (c->len == 0)
                return;
            if (c->state == CONN_IDLE) {
                c->state = CONN_HEAD;
                arm(c, s->lim.request_timeout_ms);
            }
            /* Parse again only when a line may have ended, or a limit
             * (the first line's, the head's) is passed. */
            bool line_end = memchr(c->head + c->scanned, '\n', c->len - c->scanned) != NULL;
            c->line_seen |= line_end;
            if (!line_end && c->len < s->lim.parse.max_head &&
                (c->line_seen || c->len <= s->lim.parse.max_line)) {
                c->scanned = c->len;
                return;
            }
            struct http_request req;
            enum http_parse_status st = http_parse_request(c->head, c->len, &s->lim.parse, &req);
            c->scanned = c->len;
            if (st == HTTP_PARSE_INCOMPLETE)
                return;
            if (st == HTTP_PARSE_ERROR) {
                refuse(c, req.error_status);
                return;
            }
            /* The body (if any) follows the head, partly in our buffer. */
            size_t rest = c->len - req.head_len;
            size_t skip = rest < req.content_length ? rest : req.content_length;
            c->body_left = req.content_length - skip;
            c->len = rest - skip;
            memmove(c->head, c->head + req.head_len + skip, c->len);
            c->scanned = 0;
            c->line_seen = false;
            if (c->body_left == 0) {
                respond(c, &req);
                return;
            }
            /* Only methods that are refused carry a body: it is
             * discarded, then the answer is given. */
            c->pending = req;
            c->state = CONN_BODY;
            break;
        }
        case CONN_BODY: {
            size_t have = evbuffer_get_length(in);
            size_t n = have < c->body_left ? have : c->body_left;
            evbuffer_drain(in, n);
            c->body_left -= n;
            if (c->body_left)
                return;
            respond(c, &c->pending);
            return;
        }
        case CONN_CLOSING:
        case CONN_LINGER:
            evbuffer_drain(in, evbuffer_get_length(in));
            return;
        case CONN_WRITING:
            return;
        }
    }
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    conn_process(arg);
}

/* The output has drained: the answer is written. */
static void write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct conn *c = arg;
    struct http_server *s = c->srv;
    if (c->state == CONN_CLOSING) {
        /* Our end is said; the client's bytes still in flight are read and
         * dropped for a moment, so that a reset does not eat the answer. */
        shutdown(bufferevent_getfd(c->bev), SHUT_WR);
        c->state = CONN_LINGER;
        arm(c, LINGER_MS);
        return;
    }
    if (c->state != CONN_WRITING)
        return;
    if (!c->keep_alive) {
        conn_free(c);
        return;
    }
    c->state = CONN_IDLE;
    arm(c, s->lim.idle_timeout_ms);
    conn_process(c); /* a pipelined request may be waiting */
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct conn *c = arg;
    /* A client that half-closes after its request still gets the answer. */
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && c->state == CONN_WRITING) {
        c->keep_alive = false;
        return;
    }
    conn_free(c);
}

/* The whole-request deadline, the idle limit or the linger ran out. */
static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_free(arg);
}

static struct conn *conn_new(struct http_server *s, int fd)
{
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->srv = s;
    c->head = malloc(s->lim.parse.max_head);
    c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->timer = evtimer_new(s->base, timer_cb, c);
    if (c->head == NULL || c->bev == NULL || c->timer == NULL) {
        if (c->bev)
            bufferevent_free(c->bev); /* closes fd */
        if (c->timer)
            event_free(c->timer);
        free(c->head);
        free(c);
        return NULL;
    }
    /* Answers leave in one write mostly, but a large one ends in a
     * partial segment that Nagle would hold for the client's delayed ACK. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* libevent writes at most 16 KiB per wake-up by default: a 35 KiB
     * scrape took three trips through the loop, each behind every other
     * ready connection. One write for the whole answer (the kernel takes
     * what its buffer holds). */
    bufferevent_set_max_single_write(c->bev, MAX_SINGLE_WRITE);
    if (s->priority >= 0)
        bufferevent_priority_set(c->bev, s->priority);
    prioritise(s, c->timer);
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    /* Input beyond one head waits in the kernel. */
    bufferevent_setwatermark(c->bev, EV_READ, 0, s->lim.parse.max_head);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    /* A new connection owes its first request within the deadline. */
    c->state = CONN_HEAD;
    arm(c, s->lim.request_timeout_ms);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->count++;
    return c;
}

/* ---- the server ---- */

static int listen_on(const char *host, int port, struct gpulet_error *err)
{
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res;
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) {
        gpulet_error_set(err, GPULET_ERR_USAGE, "cannot resolve the address %s: %s", host,
                         gai_strerror(rc));
        return -1;
    }
    int fd = -1, saved = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 128) != 0) {
            saved = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        gpulet_error_errno(err, saved, "cannot listen on %s port %d", host, port);
    return fd;
}

static int local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

struct http_server *http_server_start(struct event_base *base, const char *host, int port,
                                      const struct http_limits *limits, int priority,
                                      http_handler_fn handler, void *user,
                                      struct gpulet_error *err)
{
    struct http_server *s = calloc(1, sizeof *s);
    if (s == NULL) {
        gpulet_error_errno(err, ENOMEM, "cannot start the HTTP server");
        return NULL;
    }
    s->base = base;
    s->lim = *limits;
    s->priority = priority;
    s->handler = handler;
    s->user = user;
    s->backoff_ms = limits->accept_backoff_ms;
    s->cap_log.interval_s = s->accept_log.interval_s = limits->log_interval_s;
    s->fd = listen_on(host, port, err);
    if (s->fd < 0) {
        free(s);
        return NULL;
    }
    s->port = local_port(s->fd);
    s->listen_event = event_new(base, s->fd, EV_READ | EV_PERSIST, accept_cb, s);
    s->backoff_timer = evtimer_new(base, backoff_cb, s);
    s->body = evbuffer_new();
    if (s->listen_event == NULL || s->backoff_timer == NULL || s->body == NULL) {
        gpulet_error_errno(err, ENOMEM, "cannot start the HTTP server");
        http_server_free(s);
        return NULL;
    }
    prioritise(s, s->listen_event);
    prioritise(s, s->backoff_timer);
    update_listener(s);
    return s;
}

int http_server_port(const struct http_server *s)
{
    return s->port;
}

void http_server_free(struct http_server *s)
{
    if (s == NULL)
        return;
    while (s->conns)
        conn_free(s->conns);
    if (s->listen_event)
        event_free(s->listen_event);
    if (s->backoff_timer)
        event_free(s->backoff_timer);
    if (s->body)
        evbuffer_free(s->body);
    close(s->fd);
    free(s);
}
