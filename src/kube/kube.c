#include "kube.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <curl/curl.h>

#include "fileio/fileio.h"
#include "yamldoc/yamldoc.h"

#define SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

/* ---- credentials ---- */

int kube_base64_decode(const char *in, char **out, size_t *len)
{
    size_t n = strlen(in);
    char *buf = malloc(n / 4 * 3 + 4);
    if (buf == NULL)
        return -1;
    unsigned int acc = 0, bits = 0;
    size_t o = 0, pad = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)in[i];
        int v;
        if (ch >= 'A' && ch <= 'Z')
            v = ch - 'A';
        else if (ch >= 'a' && ch <= 'z')
            v = ch - 'a' + 26;
        else if (ch >= '0' && ch <= '9')
            v = ch - '0' + 52;
        else if (ch == '+')
            v = 62;
        else if (ch == '/')
            v = 63;
        else if (ch == '=') {
            pad++;
            continue;
        } else if (ch == '\n' || ch == '\r' || ch == ' ')
            continue;
        else {
            free(buf);
            return -1;
        }
        if (pad) { /* data after padding */
            free(buf);
            return -1;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    if (pad > 2 || bits >= 6) {
        free(buf);
        return -1;
    }
    buf[o] = '\0';
    *out = buf;
    *len = o;
    return 0;
}

void kube_config_clear(struct kube_config *cfg)
{
    free(cfg->ca);
    free(cfg->cert);
    free(cfg->key);
    free(cfg->token);
    memset(cfg, 0, sizeof *cfg);
}

/* A file relative to the kubeconfig's folder, as kubectl reads it. */
static int read_credential(const char *base_dir, const char *file, const char *what, char **out,
                           size_t *len, struct gpulet_error *err)
{
    char path[4096];
    if (file[0] == '/' || base_dir[0] == '\0')
        snprintf(path, sizeof path, "%s", file);
    else
        snprintf(path, sizeof path, "%s/%s", base_dir, file);
    if (fileio_read(path, KUBE_MAX_CREDENTIAL, out, len, err) < 0) {
        gpulet_error_prefix(err, "kubeconfig %s", what);
        return -1;
    }
    return 0;
}

/* A credential given as FIELD (a file) or FIELD-data (base64). */
static int credential(const struct ydoc *doc, const struct ynode *map, const char *base_dir,
                      const char *field, char **out, size_t *len, struct gpulet_error *err)
{
    char data_field[96];
    snprintf(data_field, sizeof data_field, "%s-data", field);
    const struct ynode *data = ynode_get(doc, map, data_field);
    const struct ynode *file = ynode_get(doc, map, field);
    if (data && ynode_text(data) && !ynode_is_null(data)) {
        if (kube_base64_decode(ynode_text(data), out, len) < 0)
            return ydoc_fail(doc, data, err, "%s is not base64; put the PEM text there "
                             "base64-encoded, as kubectl writes it", data_field);
        return 0;
    }
    if (file && ynode_text(file) && !ynode_is_null(file))
        return read_credential(base_dir, ynode_text(file), field, out, len, err);
    return 0;
}

/* The entry named name in a list of {name, <kind>: {…}}, its <kind> map. */
static const struct ynode *named(const struct ydoc *doc, const struct ynode *root,
                                 const char *list, const char *kind, const char *name)
{
    const struct ynode *seq = ynode_get(doc, root, list);
    if (seq == NULL || !ynode_is_seq(seq))
        return NULL;
    for (size_t i = 0; i < ynode_count(doc, seq); i++) {
        const struct ynode *item = ynode_item(doc, seq, i);
        const struct ynode *n = ynode_is_map(item) ? ynode_get(doc, item, "name") : NULL;
        const char *text = n ? ynode_text(n) : NULL;
        if (text && strcmp(text, name) == 0) {
            const struct ynode *m = ynode_get(doc, item, kind);
            return m && ynode_is_map(m) ? m : NULL;
        }
    }
    return NULL;
}

static const char *text_of(const struct ydoc *doc, const struct ynode *map, const char *key)
{
    const struct ynode *n = map ? ynode_get(doc, map, key) : NULL;
    return n && ynode_is_scalar(n) && !ynode_is_null(n) ? ynode_text(n) : NULL;
}

static int load_kubeconfig(const char *path, struct kube_config *out, struct gpulet_error *err)
{
    struct ydoc *doc;
    if (ydoc_load_file(path, &doc, err) < 0)
        return -1;
    char base_dir[4096];
    snprintf(base_dir, sizeof base_dir, "%s", path);
    char *slash = strrchr(base_dir, '/');
    if (slash)
        *slash = '\0';
    else
        base_dir[0] = '\0';
    const struct ynode *root = ydoc_root(doc);
    int rc = -1;
    const char *current = root && ynode_is_map(root) ? text_of(doc, root, "current-context") : NULL;
    if (current == NULL) {
        gpulet_error_set(err, GPULET_ERR_INPUT, "%s: no current-context; set one with kubectl "
                         "config use-context", path);
        goto out;
    }
    const struct ynode *ctx = named(doc, root, "contexts", "context", current);
    const char *cluster_name = text_of(doc, ctx, "cluster");
    const char *user_name = text_of(doc, ctx, "user");
    const struct ynode *cluster = cluster_name ? named(doc, root, "clusters", "cluster",
                                                       cluster_name) : NULL;
    const struct ynode *user = user_name ? named(doc, root, "users", "user", user_name) : NULL;
    const char *server = text_of(doc, cluster, "server");
    if (server == NULL) {
        gpulet_error_set(err, GPULET_ERR_INPUT, "%s: context \"%s\" names no cluster with a "
                         "server", path, current);
        goto out;
    }
    if (strncmp(server, "https://", 8) != 0 || strlen(server) >= sizeof out->server) {
        gpulet_error_set(err, GPULET_ERR_INPUT, "%s: server \"%s\" must be an https:// URL "
                         "(gpulet talks to the API server over TLS only)", path, server);
        goto out;
    }
    snprintf(out->server, sizeof out->server, "%s", server);
    size_t n = strlen(out->server);
    while (n > 8 && out->server[n - 1] == '/')
        out->server[--n] = '\0';
    const char *insecure = text_of(doc, cluster, "insecure-skip-tls-verify");
    out->insecure = insecure && strcmp(insecure, "true") == 0;
    if (credential(doc, cluster, base_dir, "certificate-authority", &out->ca, &out->ca_len,
                   err) < 0)
        goto out;
    if (user) {
        if (credential(doc, user, base_dir, "client-certificate", &out->cert, &out->cert_len,
                       err) < 0 ||
            credential(doc, user, base_dir, "client-key", &out->key, &out->key_len, err) < 0)
            goto out;
        const char *token = text_of(doc, user, "token");
        const char *token_file = text_of(doc, user, "tokenFile");
        for (const char *t = token; t && *t; t++)
            if ((unsigned char)*t < 0x20 || *t == 0x7f) {
                /* it goes into a header line of every request */
                gpulet_error_set(err, GPULET_ERR_INPUT, "%s: the token of user \"%s\" holds "
                                 "control characters (a line break?); give the token alone",
                                 path, user_name);
                goto out;
            }
        if (token && (out->token = strdup(token)) == NULL) {
            gpulet_error_errno(err, ENOMEM, "cannot load %s", path);
            goto out;
        }
        if (token_file)
            snprintf(out->token_file, sizeof out->token_file, "%s%s%s",
                     token_file[0] == '/' || !base_dir[0] ? "" : base_dir,
                     token_file[0] == '/' || !base_dir[0] ? "" : "/", token_file);
    }
    if ((out->cert == NULL) != (out->key == NULL)) {
        gpulet_error_set(err, GPULET_ERR_INPUT, "%s: user \"%s\" has a client certificate "
                         "without a key or a key without a certificate", path,
                         user_name ? user_name : "");
        goto out;
    }
    rc = 0;
out:
    ydoc_free(doc);
    if (rc < 0)
        kube_config_clear(out);
    return rc;
}

int kube_config_in_cluster(const char *root, struct kube_config *out, struct gpulet_error *err)
{
    memset(out, 0, sizeof *out);
    const char *host = getenv("KUBERNETES_SERVICE_HOST");
    const char *port = getenv("KUBERNETES_SERVICE_PORT");
    if (host == NULL || !host[0])
        return gpulet_error_set(err, GPULET_ERR_USAGE,
                                "no --kubeconfig and KUBERNETES_SERVICE_HOST is not set: run "
                                "gpulet in a pod with a service account, or give --kubeconfig");
    /* An IPv6 address needs brackets in a URL. */
    bool v6 = strchr(host, ':') != NULL;
    snprintf(out->server, sizeof out->server, "https://%s%s%s:%s", v6 ? "[" : "", host,
             v6 ? "]" : "", port && port[0] ? port : "443");
    char path[4096];
    snprintf(path, sizeof path, "%s" SA_DIR "/ca.crt", root);
    if (fileio_read(path, KUBE_MAX_CREDENTIAL, &out->ca, &out->ca_len, err) < 0) {
        gpulet_error_prefix(err, "in-cluster service account");
        return -1;
    }
    snprintf(out->token_file, sizeof out->token_file, "%s" SA_DIR "/token", root);
    return 0;
}

int kube_config_load(const char *path, struct kube_config *out, struct gpulet_error *err)
{
    memset(out, 0, sizeof *out);
    if (path == NULL)
        return kube_config_in_cluster("", out, err);
    return load_kubeconfig(path, out, err);
}

long kube_backoff_ms(unsigned attempt, long base_ms, long max_ms)
{
    long ms = base_ms;
    for (unsigned i = 0; i < attempt && ms < max_ms; i++)
        ms *= 2;
    if (ms > max_ms)
        ms = max_ms;
    unsigned int r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
        r = (unsigned int)attempt * 2654435761u;
    return ms / 2 + (long)(r % (unsigned long)(ms / 2 + 1));
}

/* ---- transfers on the loop ---- */

struct kube_client {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;
    struct kube_config cfg; /* owned copy */
    struct kube_request *requests; /* open ones, a list */
    size_t open;
};

struct kube_request {
    struct kube_client *client;
    struct kube_request *next, *prev;
    CURL *easy;
    struct curl_slist *headers;
    char *body;          /* what we send */
    char *buf;           /* what came: the answer, or the partial watch line */
    size_t len, room;
    bool too_big;
    kube_done_fn done;
    kube_line_fn on_line;
    void *user;
    char errbuf[CURL_ERROR_SIZE];
};

static void request_free(struct kube_request *r)
{
    struct kube_client *c = r->client;
    curl_multi_remove_handle(c->multi, r->easy);
    curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    if (r->prev)
        r->prev->next = r->next;
    else
        c->requests = r->next;
    if (r->next)
        r->next->prev = r->prev;
    c->open--;
    free(r->body);
    free(r->buf);
    free(r);
}

static void check_done(struct kube_client *c)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct kube_request *r;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        CURLcode code = msg->data.result;
        struct kube_response resp = {.body = r->buf ? r->buf : "", .len = r->len, .error = ""};
        char why[CURL_ERROR_SIZE + 128];
        if (code == CURLE_OK) {
            curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &resp.status);
        } else {
            if (r->too_big)
                snprintf(why, sizeof why, "the API server's answer is larger than %u bytes",
                         r->on_line ? KUBE_MAX_LINE : KUBE_MAX_BODY);
            else
                snprintf(why, sizeof why, "%s", r->errbuf[0] ? r->errbuf
                                                             : curl_easy_strerror(code));
            resp.error = why;
            resp.body = "";
            resp.len = 0;
        }
        if (r->on_line) { /* the lines went out already */
            resp.body = "";
            resp.len = 0;
        }
        kube_done_fn done = r->done;
        void *user = r->user;
        /* Gone before the callback, so that it can start the next one. */
        char *keep = NULL;
        if (resp.len) {
            keep = r->buf;
            r->buf = NULL;
        }
        request_free(r);
        done(&resp, user);
        free(keep);
    }
}

static void socket_event(evutil_socket_t fd, short what, void *arg)
{
    struct kube_client *c = arg;
    int flags = (what & EV_READ ? CURL_CSELECT_IN : 0) | (what & EV_WRITE ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(c->multi, fd, flags, &running);
    check_done(c);
}

static void timer_event(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct kube_client *c = arg;
    int running;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(c);
}

static int socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    struct kube_client *c = userp;
    struct event *ev = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (ev)
            event_free(ev);
        curl_multi_assign(c->multi, s, NULL);
        return 0;
    }
    short kind = (short)(EV_PERSIST | (what & CURL_POLL_IN ? EV_READ : 0) |
                         (what & CURL_POLL_OUT ? EV_WRITE : 0));
    if (ev) {
        event_del(ev);
        event_assign(ev, c->base, s, kind, socket_event, c);
    } else {
        ev = event_new(c->base, s, kind, socket_event, c);
        if (ev == NULL)
            return -1;
        curl_multi_assign(c->multi, s, ev);
    }
    return event_add(ev, NULL);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct kube_client *c = userp;
    if (timeout_ms < 0)
        return evtimer_del(c->timer);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    return evtimer_add(c->timer, &tv);
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
    struct kube_request *r = userp;
    size_t n = size * nmemb;
    size_t limit = r->on_line ? KUBE_MAX_LINE : KUBE_MAX_BODY;
    for (size_t i = 0; i < n; i++) {
        if (r->on_line && data[i] == '\n') {
            if (r->len) {
                r->buf[r->len] = '\0';
                r->on_line(r->buf, r->len, r->user);
            }
            r->len = 0;
            continue;
        }
        if (r->len + 1 >= r->room) {
            if (r->len + 1 >= limit) {
                r->too_big = true;
                return 0;
            }
            size_t room = r->room ? 2 * r->room : 4096;
            if (room > limit)
                room = limit;
            char *buf = realloc(r->buf, room);
            if (buf == NULL)
                return 0;
            r->buf = buf;
            r->room = room;
        }
        r->buf[r->len++] = data[i];
    }
    if (r->buf)
        r->buf[r->len] = '\0';
    return n;
}

int kube_client_new(struct event_base *base, const struct kube_config *cfg,
                    struct kube_client **out, struct gpulet_error *err)
{
    /* curl_global_init is reference-counted inside libcurl. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return gpulet_error_set(err, GPULET_ERR_SYSTEM, "cannot initialise libcurl");
    struct kube_client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        curl_global_cleanup();
        return gpulet_error_errno(err, ENOMEM, "cannot create the API server client");
    }
    c->base = base;
    c->multi = curl_multi_init();
    c->timer = evtimer_new(base, timer_event, c);
    c->cfg = *cfg;
    c->cfg.ca = c->cfg.cert = c->cfg.key = c->cfg.token = NULL;
    bool ok = c->multi && c->timer;
#define COPY(f, l)                                                                             \
    if (ok && cfg->f) {                                                                        \
        c->cfg.f = malloc(cfg->l + 1);                                                         \
        ok = c->cfg.f != NULL;                                                                 \
        if (ok) {                                                                              \
            memcpy(c->cfg.f, cfg->f, cfg->l);                                                  \
            c->cfg.f[cfg->l] = '\0';                                                           \
        }                                                                                      \
    }
    COPY(ca, ca_len)
    COPY(cert, cert_len)
    COPY(key, key_len)
#undef COPY
    if (ok && cfg->token)
        ok = (c->cfg.token = strdup(cfg->token)) != NULL;
    if (!ok) {
        kube_client_free(c);
        return gpulet_error_set(err, GPULET_ERR_SYSTEM, "cannot create the API server client");
    }
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    *out = c;
    return 0;
}

void kube_client_free(struct kube_client *c)
{
    if (c == NULL)
        return;
    while (c->requests)
        request_free(c->requests);
    if (c->multi)
        curl_multi_cleanup(c->multi);
    if (c->timer)
        event_free(c->timer);
    kube_config_clear(&c->cfg);
    free(c);
    curl_global_cleanup();
}

size_t kube_open_requests(const struct kube_client *c)
{
    return c->open;
}

static void set_blob(CURL *easy, CURLoption opt, char *data, size_t len)
{
    struct curl_blob blob = {.data = data, .len = len, .flags = CURL_BLOB_NOCOPY};
    curl_easy_setopt(easy, opt, &blob);
}

static struct kube_request *start(struct kube_client *c, const char *method, const char *path,
                                  const char *body, long timeout_ms, kube_line_fn on_line,
                                  kube_done_fn done, void *user, struct gpulet_error *err)
{
    if (c->open >= KUBE_MAX_REQUESTS) {
        gpulet_error_set(err, GPULET_ERR_SYSTEM, "%u requests to the API server are open "
                         "already; try again later", KUBE_MAX_REQUESTS);
        return NULL;
    }
    if (path[0] != '/') {
        gpulet_error_set(err, GPULET_ERR_INTERNAL, "API path \"%s\" must start with /", path);
        return NULL;
    }
    struct kube_request *r = calloc(1, sizeof *r);
    char url[8192];
    if (r == NULL || (r->easy = curl_easy_init()) == NULL ||
        (body && (r->body = strdup(body)) == NULL)) {
        if (r)
            free(r->body);
        free(r);
        gpulet_error_errno(err, ENOMEM, "cannot start a request to the API server");
        return NULL;
    }
    r->client = c;
    r->done = done;
    r->on_line = on_line;
    r->user = user;
    snprintf(url, sizeof url, "%s%s", c->cfg.server, path);
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)KUBE_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "gpulet/dra");
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    if (c->cfg.ca)
        set_blob(e, CURLOPT_CAINFO_BLOB, c->cfg.ca, c->cfg.ca_len);
    if (c->cfg.cert) {
        set_blob(e, CURLOPT_SSLCERT_BLOB, c->cfg.cert, c->cfg.cert_len);
        curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
        set_blob(e, CURLOPT_SSLKEY_BLOB, c->cfg.key, c->cfg.key_len);
        curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
    }
    if (c->cfg.insecure) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    r->headers = curl_slist_append(NULL, "Accept: application/json");
    char auth[8192];
    const char *token = c->cfg.token;
    char *file_token = NULL;
    size_t token_len;
    if (c->cfg.token_file[0] &&
        fileio_read(c->cfg.token_file, KUBE_MAX_CREDENTIAL, &file_token, &token_len, NULL) == 0) {
        /* the first line, up to any control character: one header line */
        size_t n = 0;
        while (file_token[n] && (unsigned char)file_token[n] >= 0x20 && file_token[n] != 0x7f)
            n++;
        file_token[n] = '\0';
        token = file_token;
    }
    if (token && token[0] && strlen(token) < sizeof auth - 32) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        r->headers = curl_slist_append(r->headers, auth);
    }
    free(file_token);
    if (body) {
        r->headers = curl_slist_append(r->headers, "Content-Type: application/json");
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(r->body));
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    r->next = c->requests;
    if (c->requests)
        c->requests->prev = r;
    c->requests = r;
    c->open++;
    if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
        request_free(r);
        gpulet_error_set(err, GPULET_ERR_SYSTEM, "cannot start a request to the API server");
        return NULL;
    }
    return r;
}

struct kube_request *kube_request(struct kube_client *c, const char *method, const char *path,
                                  const char *body, long timeout_ms, kube_done_fn done,
                                  void *user, struct gpulet_error *err)
{
    return start(c, method, path, body, timeout_ms, NULL, done, user, err);
}

struct kube_request *kube_watch(struct kube_client *c, const char *path, long timeout_ms,
                                kube_line_fn on_line, kube_done_fn done, void *user,
                                struct gpulet_error *err)
{
    return start(c, "GET", path, NULL, timeout_ms, on_line, done, user, err);
}

void kube_request_cancel(struct kube_request *r)
{
    if (r)
        request_free(r);
}
