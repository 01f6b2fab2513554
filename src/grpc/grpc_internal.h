/* Shared between the grpc module's files: the HTTP/2 connection both the
 * server and the client side stand on. Not for use outside src/grpc/. */
#ifndef GPULET_GRPC_INTERNAL_H
#define GPULET_GRPC_INTERNAL_H

#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <nghttp2/nghttp2.h>

#include "grpc.h"

struct grpc_conn;

/* The most header bytes (names + values + 32 per field, as HTTP/2 counts
 * them) one request may carry; gRPC peers send well under 1 KiB. */
#define GRPC_MAX_HEADER_LIST (16u * 1024u)

/* Back-pressure on the socket: above OUT_HIGH bytes waiting for the socket,
 * nghttp2 is told to wait (send_cb says WOULDBLOCK) and the connection's
 * input is no longer read, so a peer that sends without reading (PING,
 * SETTINGS floods) stops being served; below OUT_LOW both resume. Input is
 * read at most IN_HIGH bytes ahead. */
#define GRPC_SOCKET_OUT_HIGH (64u * 1024u)
#define GRPC_SOCKET_OUT_LOW (16u * 1024u)
#define GRPC_SOCKET_IN_HIGH (64u * 1024u)
/* PING and SETTINGS acknowledgements nghttp2 may hold for a connection
 * before it calls the peer a flood and the connection ends. */
#define GRPC_MAX_OUTBOUND_ACK 128
/* A connection whose peer takes none of what we send for this long ends. */
#define GRPC_WRITE_TIMEOUT_S 30

/* Directions of the bytes a connection holds. */
enum { GRPC_IN, GRPC_OUT };

/* Connections and bytes held above their floors, shared by the servers
 * that use one budget (grpc.h). */
struct grpc_budget {
    size_t connections;
    size_t pool[2];
    time_t refusal_logged; /* one log line per interval for refused connections */
};

/* One HTTP/2 stream, the common part of a server call and a client call. */
struct grpc_stream {
    struct grpc_conn *conn;
    int32_t id;
    struct grpc_stream *prev, *next; /* the connection's open streams */
    struct evbuffer *in;             /* DATA received, framed messages */
    struct evbuffer *out;            /* framed messages to send */
    bool out_done;                   /* nothing more will be queued */
    bool data_deferred;              /* the data provider is waiting for out */
    bool aborted;                    /* reset by us: nothing more in or out */
    size_t held[2];                  /* bytes of in and out counted in the connection */
    struct event *deadline;
};

/* What differs between the server and the client side. */
struct grpc_conn_side {
    bool is_server;
    int (*begin_headers)(struct grpc_conn *c, const nghttp2_frame *frame);
    int (*header)(struct grpc_stream *s, const nghttp2_frame *frame, const char *name,
                  size_t name_len, const char *value, size_t value_len);
    int (*frame_recv)(struct grpc_conn *c, struct grpc_stream *s, const nghttp2_frame *frame);
    /* Data of a stream arrived (already appended to s->in). */
    int (*data)(struct grpc_stream *s);
    /* The data provider ran dry with out_done set: the server sends trailers. */
    void (*data_end)(struct grpc_stream *s);
    /* The stream may not hold more (dir GRPC_IN or GRPC_OUT): tell the
     * application, then grpc_stream_abort(). */
    void (*overflow)(struct grpc_stream *s, int dir);
    /* The stream is gone (closed by HTTP/2, or the connection died):
     * report to the application if not done yet, then free it. */
    void (*stream_closed)(struct grpc_stream *s, uint32_t error_code);
    /* The connection is going away: the owner drops it from its list. */
    void (*conn_closed)(struct grpc_conn *c);
};

struct grpc_conn {
    struct event_base *base;
    struct bufferevent *bev;
    nghttp2_session *h2;
    const struct grpc_conn_side *side;
    void *owner;
    struct grpc_conn *prev, *next; /* the owner's connections */
    struct grpc_stream *streams;
    struct grpc_budget *budget; /* NULL: no shared pool (clients) */
    size_t held[2];             /* bytes in its streams' in and out buffers */
    bool paused;                /* input not read until the socket drains */
    struct event *flush_soon;   /* grpc_conn_flush_soon() */
    int depth;       /* > 0 while nghttp2 is calling us back */
    bool want_flush; /* a send was asked for while depth > 0 */
    bool dead;       /* closed; freed when depth returns to 0 */
};

int grpc_conn_new(struct event_base *base, int fd, const struct grpc_conn_side *side,
                  void *owner, struct grpc_budget *budget, struct grpc_conn **out,
                  struct gpulet_error *err);
/* Sends what nghttp2 has queued (later, if called from inside a callback). */
void grpc_conn_flush(struct grpc_conn *c);
/* Flushes from the event loop, never from inside the caller: for the
 * application's calls, which must not see the connection vanish under
 * them (a failed send closes it). */
void grpc_conn_flush_soon(struct grpc_conn *c);
/* Closes now, or as soon as nghttp2 has returned. Streams are reported closed. */
void grpc_conn_close(struct grpc_conn *c);
/* Around application callbacks made outside nghttp2 (timers): the
 * application may close the connection meanwhile; leave() then frees it,
 * else sends what was queued. */
void grpc_conn_enter(struct grpc_conn *c);
void grpc_conn_leave(struct grpc_conn *c);

void grpc_stream_init(struct grpc_stream *s, struct grpc_conn *c, int32_t id);
void grpc_stream_link(struct grpc_stream *s);
/* Unlinks and releases the common part; the side frees the rest. */
void grpc_stream_release(struct grpc_stream *s);
/* The data provider that streams s->out. */
nghttp2_data_provider grpc_stream_data_provider(struct grpc_stream *s);
/* Queues one framed message; resumes a deferred data provider. -1 when
 * there is no room (grpc_stream_room) or no memory. */
int grpc_stream_queue(struct grpc_stream *s, const uint8_t *msg, size_t len);
/* Whether the stream may hold n more bytes in direction dir: one message
 * per stream inbound, GRPC_CONN_MAX per connection, and what lies above
 * the connection's floor within the budget's pool. */
bool grpc_stream_room(const struct grpc_stream *s, int dir, size_t n);
/* Brings the connection's and the budget's counts up to date after s->in
 * or s->out changed. */
void grpc_stream_recount(struct grpc_stream *s);
/* Drops what the stream holds and resets it with an HTTP/2 error code. */
void grpc_stream_abort(struct grpc_stream *s, uint32_t error_code);
/* Marks the end of the messages and lets the provider finish. */
void grpc_stream_end(struct grpc_stream *s);

/* Takes the next whole message out of s->in: 1 with *msg (caller frees),
 * 0 when none is complete yet, -1 with a status on a bad frame. */
int grpc_take_message(struct evbuffer *in, uint8_t **msg, size_t *len, enum grpc_status *status,
                      const char **why);

/* grpc-timeout header value <-> milliseconds; -1 when it does not parse. */
long grpc_parse_timeout(const char *value, size_t len);
/* grpc-message is percent-encoded on the wire. */
void grpc_percent_encode(const char *in, char *out, size_t out_len);
void grpc_percent_decode(const char *in, size_t in_len, char *out, size_t out_len);

#endif
