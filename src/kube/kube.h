/*
 * kube: a small client of the Kubernetes API server, HTTPS and JSON, for
 * the DRA driver (publishing ResourceSlices, reading ResourceClaims).
 *
 * Credentials come from a kubeconfig (its current context: server, CA,
 * client certificate and key or a bearer token, files or inline *-data) or,
 * without one, from the pod's service account (token, CA,
 * KUBERNETES_SERVICE_HOST/PORT). TLS is libcurl's (OpenSSL flavour); the
 * transfers run on the daemon's libevent loop through curl's multi socket
 * interface, so no call here blocks the loop and there is no thread.
 *
 * Bounds: at most KUBE_MAX_REQUESTS transfers at once (more are refused at
 * once with status 0), KUBE_KEPT_CONNECTIONS connections kept open for reuse, every request has a whole-transfer deadline and a
 * connect deadline, an answer larger than KUBE_MAX_BODY (or a watch line
 * larger than KUBE_MAX_LINE) ends the transfer with an error. Callers retry
 * with kube_backoff_ms(), which doubles with every attempt and adds jitter.
 */
#ifndef GPULET_KUBE_H
#define GPULET_KUBE_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>

#include "error/error.h"

#define KUBE_MAX_BODY (4u << 20)
#define KUBE_MAX_LINE (1u << 20)
#define KUBE_MAX_REQUESTS 16
#define KUBE_CONNECT_TIMEOUT_MS 5000
#define KUBE_KEPT_CONNECTIONS 2 /* idle connections kept for reuse */
#define KUBE_MAX_CREDENTIAL (1u << 20) /* a CA bundle, a certificate, a key, a token */

struct kube_config {
    char server[512]; /* "https://host:port", no trailing slash */
    char *ca;         /* PEM; NULL: the system's CAs */
    size_t ca_len;
    char *cert, *key; /* PEM client certificate and key, or both NULL */
    size_t cert_len, key_len;
    char *token;              /* a bearer token, or NULL */
    char token_file[4096];    /* re-read for every request when set (rotated tokens) */
    bool insecure;            /* insecure-skip-tls-verify */
};

/* path NULL: the in-cluster service account. */
int kube_config_load(const char *path, struct kube_config *out, struct gpulet_error *err);
/* The same, but the service account's files are under root (tests). */
int kube_config_in_cluster(const char *root, struct kube_config *out, struct gpulet_error *err);
void kube_config_clear(struct kube_config *cfg);

struct kube_client;
struct kube_request;

struct kube_response {
    long status;        /* HTTP status; 0 when none came (refused, TLS, timeout, limit) */
    const char *body;   /* NUL-terminated, valid during the callback only */
    size_t len;
    const char *error;  /* what went wrong when status is 0, else "" */
};

/* The end of a request, exactly once unless cancelled first; the request
 * is gone after it. It may start and cancel other requests. */
typedef void (*kube_done_fn)(const struct kube_response *resp, void *user);
/* One line of a watch (a JSON event), without its newline. It is called
 * from inside libcurl: it must not start or cancel requests (schedule that
 * on the loop instead). */
typedef void (*kube_line_fn)(const char *line, size_t len, void *user);

/* Copies what it needs of cfg. */
int kube_client_new(struct event_base *base, const struct kube_config *cfg,
                    struct kube_client **out, struct gpulet_error *err);
/* Cancels every open request without callbacks. */
void kube_client_free(struct kube_client *c);

/* method "GET", "POST", "PUT", "DELETE"; path from "/api…" or "/apis…";
 * body NULL for none (else sent as application/json). NULL when the
 * request cannot start: then done has not been called and err says why. */
struct kube_request *kube_request(struct kube_client *c, const char *method, const char *path,
                                  const char *body, long timeout_ms, kube_done_fn done,
                                  void *user, struct gpulet_error *err);
/* A GET whose answer arrives line by line (a watch); done follows at the
 * end, with an empty body. */
struct kube_request *kube_watch(struct kube_client *c, const char *path, long timeout_ms,
                                kube_line_fn on_line, kube_done_fn done, void *user,
                                struct gpulet_error *err);
/* Ends a request; done is not called. */
void kube_request_cancel(struct kube_request *r);
size_t kube_open_requests(const struct kube_client *c);

/* Milliseconds to wait before retry number attempt (0, 1, …): base·2^attempt
 * up to max, then a random half of it taken off, so many nodes do not retry
 * in step. */
long kube_backoff_ms(unsigned attempt, long base_ms, long max_ms);

/* Decodes standard base64 (kubeconfig *-data fields); -1 on a bad input. */
int kube_base64_decode(const char *in, char **out, size_t *len);

#endif
