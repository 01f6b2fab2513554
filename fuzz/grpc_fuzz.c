/*
 * libFuzzer target for the gRPC server's frame layer (src/grpc): the input
 * is what a client sends on a connection, the rest of it read back and
 * thrown away. The server answers a unary method and a streaming one, as
 * the device plugin does. After each input the client hangs up and every
 * connection must be gone: a connection or a call left behind is a crash.
 *
 *   make fuzz            (long run)   ·   make test runs it for 20 s
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "grpc/grpc.h"

static struct event_base *base;
static struct grpc_server *server;
static char path[108];

static void unary(struct grpc_call *call, const uint8_t *req, size_t len, void *user)
{
    (void)user;
    grpc_call_reply(call, req, len);
}

/* Replies with as many copies of the request as its first byte says. */
static void stream(struct grpc_call *call, const uint8_t *req, size_t len, void *user)
{
    (void)user;
    unsigned int n = len ? req[0] : 0;
    for (unsigned int i = 0; i < n && grpc_call_send(call, req, len) == 0; i++)
        ;
    if (n != 7) /* 7: left open, as a watcher is */
        grpc_call_finish(call, GRPC_OK, NULL);
}

static void remove_socket(void)
{
    unlink(path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    base = event_base_new();
    /* In TMPDIR (the test runner's, checked for leftovers) and removed at
     * exit: libFuzzer ends a timed run with exit(). */
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || tmp[0] == '\0' || strlen(tmp) > 64)
        tmp = "/tmp";
    snprintf(path, sizeof path, "%s/gpulet-grpc-fuzz-%d.sock", tmp, (int)getpid());
    atexit(remove_socket);
    struct gpulet_error err = {0};
    if (base == NULL || grpc_server_listen(base, path, NULL, &server, &err) < 0 ||
        grpc_server_handle(server, "/f.F/Unary", unary, NULL, &err) < 0 ||
        grpc_server_handle(server, "/f.F/Stream", stream, NULL, &err) < 0) {
        fprintf(stderr, "grpc_fuzz: cannot serve %s: %s\n", path, err.msg);
        abort();
    }
    return 0;
}

/* Reads and drops what the server sent; false once it hung up. */
static int drain(int fd)
{
    char buf[65536];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0)
            return 0;
        if (n < 0)
            return 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    memcpy(addr.sun_path, path, strlen(path) + 1);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        abort();
    /* The input goes in pieces, the loop turning between them, so the
     * server reads it as a client would send it: in several reads. */
    size_t sent = 0;
    for (int turn = 0; turn < 200 && sent < size; turn++) {
        ssize_t n = send(fd, data + sent, size - sent > 4096 ? 4096 : size - sent,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0)
            sent += (size_t)n;
        else if (n < 0 && errno != EAGAIN)
            break;
        event_base_loop(base, EVLOOP_NONBLOCK);
        if (!drain(fd))
            break;
    }
    for (int turn = 0; turn < 50; turn++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        if (!drain(fd))
            break;
    }
    close(fd);
    for (int turn = 0; turn < 1000 && grpc_server_connections(server) > 0; turn++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    if (grpc_server_connections(server) != 0) {
        fprintf(stderr, "grpc_fuzz: a connection outlived its client\n");
        abort();
    }
    return 0;
}
