/*
 * h2_request: one HTTP/2 request with exactly the header fields given, in
 * the order given, none checked or added — what a peer that does not follow
 * the documentation sends (the real kubelet puts its socket path in
 * :authority). For tests/integration/test_grpc.py.
 *
 *   h2_request SOCKET NAME=VALUE... [-- PAYLOAD]
 *
 * The request body is one gRPC message holding PAYLOAD (default "hi"). A
 * value may be empty ("':authority='"); "@N" as a value stands for N
 * bytes 'a'. Prints one line: "reply HTTP-STATUS GRPC-STATUS BODY" or
 * "reset ERROR-CODE" or "goaway ERROR-CODE", and exits 0; 2 on bad usage
 * or when the connection fails.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

struct exchange {
    int fd;
    int32_t stream_id;
    char status[8];
    char grpc_status[8];
    char body[256];
    size_t body_len;
    const uint8_t *request;
    size_t request_len, request_sent;
    bool done;
    char outcome[64];
};

static ssize_t send_cb(nghttp2_session *h2, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    (void)h2;
    (void)flags;
    struct exchange *x = user;
    ssize_t n = write(x->fd, data, len);
    return n < 0 ? NGHTTP2_ERR_CALLBACK_FAILURE : n;
}

static int header_cb(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                     size_t name_len, const uint8_t *value, size_t value_len, uint8_t flags,
                     void *user)
{
    (void)h2;
    (void)frame;
    (void)flags;
    struct exchange *x = user;
    char *dst = NULL;
    if (name_len == 7 && memcmp(name, ":status", 7) == 0)
        dst = x->status;
    else if (name_len == 11 && memcmp(name, "grpc-status", 11) == 0)
        dst = x->grpc_status;
    if (dst && value_len < sizeof x->status) {
        memcpy(dst, value, value_len);
        dst[value_len] = '\0';
    }
    return 0;
}

static int data_cb(nghttp2_session *h2, uint8_t flags, int32_t stream_id, const uint8_t *data,
                   size_t len, void *user)
{
    (void)h2;
    (void)flags;
    (void)stream_id;
    struct exchange *x = user;
    for (size_t i = 0; i < len && x->body_len < sizeof x->body - 1; i++)
        x->body[x->body_len++] = (char)data[i];
    return 0;
}

static int stream_close_cb(nghttp2_session *h2, int32_t stream_id, uint32_t error_code,
                           void *user)
{
    (void)h2;
    struct exchange *x = user;
    if (stream_id != x->stream_id)
        return 0;
    x->done = true;
    if (error_code != NGHTTP2_NO_ERROR) {
        snprintf(x->outcome, sizeof x->outcome, "reset %s", nghttp2_http2_strerror(error_code));
    } else {
        /* The body is one gRPC message: 5 bytes of prefix, then the payload. */
        const char *payload = x->body_len > 5 ? x->body + 5 : "";
        x->body[x->body_len] = '\0';
        snprintf(x->outcome, sizeof x->outcome, "reply %s %s %.20s", x->status,
                 x->grpc_status[0] ? x->grpc_status : "-", payload[0] ? payload : "-");
    }
    return 0;
}

static int frame_recv_cb(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
    (void)h2;
    struct exchange *x = user;
    if (frame->hd.type == NGHTTP2_GOAWAY && !x->done) {
        x->done = true;
        snprintf(x->outcome, sizeof x->outcome, "goaway %s",
                 nghttp2_http2_strerror(frame->goaway.error_code));
    }
    return 0;
}

static ssize_t body_cb(nghttp2_session *h2, int32_t stream_id, uint8_t *buf, size_t length,
                       uint32_t *flags, nghttp2_data_source *source, void *user)
{
    (void)h2;
    (void)stream_id;
    (void)source;
    struct exchange *x = user;
    size_t n = x->request_len - x->request_sent;
    if (n > length)
        n = length;
    memcpy(buf, x->request + x->request_sent, n);
    x->request_sent += n;
    if (x->request_sent == x->request_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static char *expand(const char *value)
{
    if (value[0] != '@')
        return strdup(value);
    size_t n = strtoul(value + 1, NULL, 10);
    char *out = malloc(n + 1);
    memset(out, 'a', n);
    out[n] = '\0';
    return out;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: h2_request SOCKET NAME=VALUE... [-- PAYLOAD]\n");
        return 2;
    }
    nghttp2_nv nva[64];
    size_t n = 0;
    const char *payload = "hi";
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            if (i + 1 < argc)
                payload = argv[i + 1];
            break;
        }
        char *eq = strchr(argv[i] + 1, '='); /* a name may start with ':' */
        if (eq == NULL || n == sizeof nva / sizeof nva[0]) {
            fprintf(stderr, "h2_request: bad header %s\n", argv[i]);
            return 2;
        }
        char *value = expand(eq + 1);
        nva[n++] = (nghttp2_nv){(uint8_t *)argv[i], (uint8_t *)value, (size_t)(eq - argv[i]),
                                strlen(value), NGHTTP2_NV_FLAG_NO_COPY_NAME};
    }
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", argv[1]);
    struct exchange x = {.fd = socket(AF_UNIX, SOCK_STREAM, 0)};
    if (connect(x.fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        fprintf(stderr, "h2_request: cannot connect to %s: %s\n", argv[1], strerror(errno));
        return 2;
    }
    struct timeval tv = {10, 0};
    setsockopt(x.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

    size_t plen = strlen(payload);
    uint8_t *msg = malloc(plen + 5);
    msg[0] = 0;
    msg[1] = (uint8_t)(plen >> 24);
    msg[2] = (uint8_t)(plen >> 16);
    msg[3] = (uint8_t)(plen >> 8);
    msg[4] = (uint8_t)plen;
    memcpy(msg + 5, payload, plen);
    x.request = msg;
    x.request_len = plen + 5;

    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_send_callback(cbs, send_cb);
    nghttp2_session_callbacks_set_on_header_callback(cbs, header_cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, data_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, stream_close_cb);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, frame_recv_cb);
    /* Send whatever we are told: no HTTP checks on this side, and names are
     * not copied (a copy would be lower-cased). */
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_http_messaging(opt, 1);
    nghttp2_session *h2;
    nghttp2_session_client_new2(&h2, cbs, &x, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_submit_settings(h2, NGHTTP2_FLAG_NONE, NULL, 0);
    nghttp2_data_provider body = {.read_callback = body_cb};
    x.stream_id = nghttp2_submit_request(h2, NULL, nva, n, &body, NULL);
    if (x.stream_id < 0) {
        fprintf(stderr, "h2_request: %s\n", nghttp2_strerror(x.stream_id));
        return 2;
    }
    while (!x.done) {
        if (nghttp2_session_send(h2) != 0)
            break;
        uint8_t buf[16384];
        ssize_t got = read(x.fd, buf, sizeof buf);
        if (got <= 0)
            break;
        if (nghttp2_session_mem_recv(h2, buf, (size_t)got) < 0)
            break;
    }
    nghttp2_session_del(h2);
    close(x.fd);
    free(msg);
    for (size_t i = 0; i < n; i++)
        free(nva[i].value);
    if (!x.done) {
        fprintf(stderr, "h2_request: the connection ended without an answer\n");
        return 2;
    }
    printf("%s\n", x.outcome);
    return 0;
}
