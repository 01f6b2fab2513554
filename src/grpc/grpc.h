/*
 * grpc: a small gRPC over HTTP/2 (nghttp2) on Unix sockets, inside a
 * libevent loop, enough for the kubelet's APIs: unary and server-streaming
 * methods, both as server and as client.
 *
 * Messages are bytes: callers pack and unpack them with protobuf-c. Every
 * request is exactly one message. Deadlines (grpc-timeout) are honoured on
 * both sides; a peer that sends garbage loses its connection, nothing else.
 *
 * Server: grpc_server_listen() serves one socket; grpc_server_handle()
 * routes a method path ("/v1beta1.DevicePlugin/Allocate") to a handler,
 * which answers at once or later with grpc_call_send() / _finish() /
 * _reply(). A call the peer abandons (disconnect, RST, deadline, server
 * shutdown) before it is finished is reported once through the close
 * callback set with grpc_call_on_close(); after finish or that callback the
 * call pointer is gone.
 *
 * Bounds: a server's connections take from a budget (struct grpc_budget),
 * which one process shares among its servers: at most GRPC_MAX_CONNECTIONS
 * connections, GRPC_MAX_STREAMS concurrent streams each, and bytes held
 * (requests not yet whole, replies not yet written) of at most
 * GRPC_CONN_MAX per connection and direction, of which what lies above
 * GRPC_CONN_FLOOR comes from a pool of GRPC_POOL_MAX per direction. A
 * stream that would go beyond ends with RESOURCE_EXHAUSTED; the floor
 * keeps small calls served while others fill the pool. The socket pushes
 * back: a peer that does not read is not read either.
 *
 * Client: grpc_channel_open() connects; grpc_channel_call() starts a call
 * whose replies arrive through callbacks, the final status exactly once,
 * unless the caller cancels first.
 */
#ifndef GPULET_GRPC_H
#define GPULET_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <protobuf-c/protobuf-c.h>

#include "error/error.h"

enum grpc_status {
    GRPC_OK = 0,
    GRPC_CANCELLED = 1,
    GRPC_UNKNOWN = 2,
    GRPC_INVALID_ARGUMENT = 3,
    GRPC_DEADLINE_EXCEEDED = 4,
    GRPC_NOT_FOUND = 5,
    GRPC_ALREADY_EXISTS = 6,
    GRPC_PERMISSION_DENIED = 7,
    GRPC_RESOURCE_EXHAUSTED = 8,
    GRPC_FAILED_PRECONDITION = 9,
    GRPC_ABORTED = 10,
    GRPC_OUT_OF_RANGE = 11,
    GRPC_UNIMPLEMENTED = 12,
    GRPC_INTERNAL = 13,
    GRPC_UNAVAILABLE = 14,
    GRPC_DATA_LOSS = 15,
    GRPC_UNAUTHENTICATED = 16,
};

/* The largest message either side accepts, as gRPC's default. */
#define GRPC_MAX_MESSAGE (4u * 1024u * 1024u)

const char *grpc_status_name(enum grpc_status status);

#define GRPC_MAX_CONNECTIONS 32
#define GRPC_MAX_STREAMS 100
#define GRPC_CONN_FLOOR (64u * 1024u)
#define GRPC_CONN_MAX (GRPC_MAX_MESSAGE + 64u * 1024u)
#define GRPC_POOL_MAX (8u * 1024u * 1024u)

struct grpc_budget;

struct grpc_budget *grpc_budget_new(void);
/* After every server that uses it is freed. */
void grpc_budget_free(struct grpc_budget *budget);

/* ---- server ---- */

struct grpc_server;
struct grpc_call;

typedef void (*grpc_handler_fn)(struct grpc_call *call, const uint8_t *request, size_t len,
                                void *user);
typedef void (*grpc_call_closed_fn)(struct grpc_call *call, enum grpc_status why, void *user);

/* Listens on a Unix socket at path (a stale socket file there is replaced).
 * budget NULL: the server has one of its own. */
int grpc_server_listen(struct event_base *base, const char *path, struct grpc_budget *budget,
                       struct grpc_server **out, struct gpulet_error *err);
int grpc_server_handle(struct grpc_server *server, const char *method, grpc_handler_fn handler,
                       void *user, struct gpulet_error *err);
const char *grpc_server_path(const struct grpc_server *server);
/* Open connections, for tests and shutdown. */
size_t grpc_server_connections(const struct grpc_server *server);
/* Stops accepting, ends open calls with UNAVAILABLE, sends GOAWAY; each
 * connection closes once what it has to send is written. */
void grpc_server_shutdown(struct grpc_server *server);
/* Closes everything at once and removes the socket file if it is still ours. */
void grpc_server_free(struct grpc_server *server);

const char *grpc_call_method(const struct grpc_call *call);
/* Milliseconds left before the caller's deadline, or -1 for none. */
long grpc_call_remaining_ms(const struct grpc_call *call);
/* Queues one response message; -1 when the call has ended, or when the
 * bytes it holds would go beyond the budget: then the call ends with
 * RESOURCE_EXHAUSTED (the close callback says so) and what it held is
 * dropped. */
int grpc_call_send(struct grpc_call *call, const uint8_t *msg, size_t len);
/* Bytes of response messages queued and not yet handed to the socket. */
size_t grpc_call_queued(const struct grpc_call *call);
/* Ends a call whose client does not keep up: what is queued is dropped,
 * the stream reset, the status RESOURCE_EXHAUSTED; no close callback
 * follows and the call is gone after. */
void grpc_call_drop(struct grpc_call *call, const char *message);
/* Ends the call with a status (message may be NULL); the call is gone after. */
void grpc_call_finish(struct grpc_call *call, enum grpc_status status, const char *message);
/* send + finish(OK): the answer of a unary method. */
void grpc_call_reply(struct grpc_call *call, const uint8_t *msg, size_t len);
/* grpc_call_reply of a protobuf-c message, packed here (RESOURCE_EXHAUSTED
 * when there is no memory to pack it). */
void grpc_call_reply_message(struct grpc_call *call, const ProtobufCMessage *msg);
void grpc_call_on_close(struct grpc_call *call, grpc_call_closed_fn fn, void *user);

/* ---- client ---- */

struct grpc_channel;
struct grpc_client_call;

/* One message of a server-streaming reply. */
typedef void (*grpc_message_fn)(const uint8_t *msg, size_t len, void *user);
/* The end of a call. For unary calls reply holds the response (only valid
 * during the callback); message is the peer's grpc-message or ours. */
typedef void (*grpc_done_fn)(enum grpc_status status, const char *message,
                             const uint8_t *reply, size_t reply_len, void *user);

int grpc_channel_open(struct event_base *base, const char *path, struct grpc_channel **out,
                      struct gpulet_error *err);
/* on_message NULL: a unary call, the reply goes to done. timeout_ms <= 0:
 * no deadline. Returns NULL only when the channel is closed. */
struct grpc_client_call *grpc_channel_call(struct grpc_channel *ch, const char *method,
                                           const uint8_t *request, size_t len, long timeout_ms,
                                           grpc_message_fn on_message, grpc_done_fn done,
                                           void *user);
/* Ends the call; no callback follows. */
void grpc_client_call_cancel(struct grpc_client_call *call);
bool grpc_channel_is_open(const struct grpc_channel *ch);
/* Closes the channel; calls still open get no callback. */
void grpc_channel_close(struct grpc_channel *ch);

#endif
