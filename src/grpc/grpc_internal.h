/* Shared between the grpc module's files: the HTTP/2 connection both the
 * server and the client side stand on. Not for use outside src/grpc/. */
#ifndef GPULET_GRPC_INTERNAL_H
#define GPULET_GRPC_INTERNAL_H

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <nghttp2/nghttp2.h>

#include "grpc.h"

struct grpc_conn;

/* The most header bytes (names + values + 32 per field, as HTTP/2 counts
 * them) one request may carry; gRPC peers send well under 1 KiB. */
#define GRPC_MAX_HEADER_LIST (16u * 1024u)

/* One HTTP/2 stream, the common part of a server call and a client call. */
struct grpc_stream {
    struct grpc_conn *conn;
    int32_t id;
    struct grpc_stream *prev, *next; /* the connection's open streams */
    struct evbuffer *in;             /* DATA received, framed messages */
    struct evbuffer *out;            /* framed messages to send */
    bool out_done;                   /* nothing more will be queued */
    bool data_deferred;              /* the data provider is waiting for out */
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
    int depth;       /* > 0 while nghttp2 is calling us back */
    bool want_flush; /* a send was asked for while depth > 0 */
    bool dead;       /* closed; freed when depth returns to 0 */
};

int grpc_conn_new(struct event_base *base, int fd, const struct grpc_conn_side *side,
                  void *owner, struct grpc_conn **out, struct gpulet_error *err);
/* Sends what nghttp2 has queued (later, if called from inside a callback). */
void grpc_conn_flush(struct grpc_conn *c);
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
/* Queues one framed message; resumes a deferred data provider. */
int grpc_stream_queue(struct grpc_stream *s, const uint8_t *msg, size_t len);
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
