#include "dra_jobs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log/log.h"

extern char **environ;

#define ENV_MAX 512      /* gpulet's own variables passed on, at most */
#define STEP_ARGS 8
#define STEP_ENV 8
#define STDIN_MAX 4096   /* fits a pipe's buffer: written at once, never blocking */
#define SOCKET_POLL_MS 20

enum step_kind { STEP_RUN, STEP_SOCKET, STEP_CALL };

struct step {
    enum step_kind kind;
    enum dra_step_when when;
    char *argv[STEP_ARGS + 1];
    char *env[STEP_ENV + 1];
    char *input, *shm, *root, *path;
    char *shm_target; /* where shm goes: /dev/shm in the root */
    bool present;
    int timeout_ms;
    dra_job_fn fn;
    void *arg;
};

struct dra_job {
    char what[128];
    struct step steps[DRA_JOB_STEPS];
    size_t n, cur;
    bool failed;
    char error[GPULET_ERROR_MSG_MAX];
    dra_job_done done;
    void *user;
    struct dra_job *next;
};

struct dra_jobs {
    struct event_base *base;
    struct dra_job *head, *tail;
    size_t count;
    /* the step running now */
    pid_t pid;
    int pidfd, out;
    struct event *exit_ev, *out_ev, *timer;
    char output[DRA_JOB_OUTPUT];
    size_t out_len;
    struct timespec deadline;
    bool killed;
    /* A step is waiting (a program running, a socket polled): only its
     * end moves the queue on. */
    bool active;
    struct event *kick; /* starts the queue on the loop's next turn */
};

static void step_free(struct step *s)
{
    for (size_t i = 0; s->argv[i]; i++)
        free(s->argv[i]);
    for (size_t i = 0; s->env[i]; i++)
        free(s->env[i]);
    free(s->input);
    free(s->shm);
    free(s->root);
    free(s->shm_target);
    free(s->path);
    free(s->arg);
}

struct dra_job *dra_job_new(const char *what)
{
    struct dra_job *j = calloc(1, sizeof *j);
    if (j)
        snprintf(j->what, sizeof j->what, "%s", what);
    return j;
}

void dra_job_free(struct dra_job *j)
{
    if (j == NULL)
        return;
    for (size_t i = 0; i < j->n; i++)
        step_free(&j->steps[i]);
    free(j);
}

static struct step *add_step(struct dra_job *j, enum step_kind kind, enum dra_step_when when)
{
    if (j->n == DRA_JOB_STEPS)
        return NULL;
    struct step *s = &j->steps[j->n];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->when = when;
    return s;
}

static int copy_list(char **dst, const char *const *src, size_t max)
{
    size_t i = 0;
    for (; src && src[i]; i++)
        if (i == max || (dst[i] = strdup(src[i])) == NULL)
            return -1;
    dst[i] = NULL;
    return 0;
}

int dra_job_run(struct dra_job *j, enum dra_step_when when, const char *const *argv,
                const char *const *env, const char *stdin_text, const char *root,
                const char *shm, int timeout_ms)
{
    struct step *s = add_step(j, STEP_RUN, when);
    if (s == NULL || (stdin_text && strlen(stdin_text) > STDIN_MAX))
        return -1;
    s->timeout_ms = timeout_ms;
    if (asprintf(&s->shm_target, "%s/dev/shm", root ? root : "") < 0) {
        s->shm_target = NULL;
        return -1;
    }
    if (copy_list(s->argv, argv, STEP_ARGS) < 0 || copy_list(s->env, env, STEP_ENV) < 0 ||
        (stdin_text && (s->input = strdup(stdin_text)) == NULL) ||
        (shm && (s->shm = strdup(shm)) == NULL) || (root && (s->root = strdup(root)) == NULL)) {
        step_free(s);
        return -1;
    }
    j->n++;
    return 0;
}

int dra_job_wait_socket(struct dra_job *j, enum dra_step_when when, const char *path,
                        bool present, int timeout_ms)
{
    struct step *s = add_step(j, STEP_SOCKET, when);
    if (s == NULL || (s->path = strdup(path)) == NULL)
        return -1;
    s->present = present;
    s->timeout_ms = timeout_ms;
    j->n++;
    return 0;
}

int dra_job_call(struct dra_job *j, enum dra_step_when when, dra_job_fn fn, const void *arg,
                 size_t size)
{
    struct step *s = add_step(j, STEP_CALL, when);
    if (s == NULL || (s->arg = malloc(size ? size : 1)) == NULL)
        return -1;
    memcpy(s->arg, arg, size);
    s->fn = fn;
    j->n++;
    return 0;
}

bool dra_socket_alive(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path)
        return false;
    memcpy(a.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return false;
    /* A listener with a full backlog is alive too. */
    bool alive = connect(fd, (struct sockaddr *)&a, sizeof a) == 0 || errno == EAGAIN;
    close(fd);
    return alive;
}

/* ---- running ---- */

static void next_step(struct dra_jobs *q);

static void fail(struct dra_job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct dra_job *j, const char *fmt, ...)
{
    if (j->failed)
        return; /* the first failure is the one to tell */
    j->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->error, sizeof j->error, fmt, ap);
    va_end(ap);
}

static long ms_left(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (deadline->tv_sec - now.tv_sec) * 1000 + (deadline->tv_nsec - now.tv_nsec) / 1000000;
}

static void set_deadline(struct dra_jobs *q, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, &q->deadline);
    q->deadline.tv_sec += ms / 1000;
    q->deadline.tv_nsec += (long)(ms % 1000) * 1000000;
    if (q->deadline.tv_nsec >= 1000000000) {
        q->deadline.tv_sec++;
        q->deadline.tv_nsec -= 1000000000;
    }
}

static void arm_timer(struct dra_jobs *q, long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(q->timer, &tv);
}

/* Reads what the program wrote, keeping the first DRA_JOB_OUTPUT bytes;
 * what does not fit is read and dropped. */
static ssize_t read_output(struct dra_jobs *q)
{
    char buf[4096];
    ssize_t n = read(q->out, buf, sizeof buf);
    if (n > 0) {
        size_t room = sizeof q->output - 1 - q->out_len;
        size_t take = (size_t)n < room ? (size_t)n : room;
        memcpy(q->output + q->out_len, buf, take);
        q->out_len += take;
    }
    return n;
}

static void drain_output(struct dra_jobs *q)
{
    /* Until EOF, EAGAIN or an error: what came is what there is. */
    while (read_output(q) > 0)
        continue;
}

static void child_done(struct dra_jobs *q)
{
    struct dra_job *j = q->head;
    struct step *s = &j->steps[j->cur];
    int status = 0;
    pid_t got = waitpid(q->pid, &status, WNOHANG);
    if (got == 0)
        return; /* not yet */
    drain_output(q);
    q->output[q->out_len] = '\0';
    event_free(q->exit_ev);
    event_free(q->out_ev);
    q->exit_ev = q->out_ev = NULL;
    close(q->pidfd);
    close(q->out);
    q->pidfd = q->out = -1;
    evtimer_del(q->timer);
    char said[DRA_JOB_OUTPUT];
    log_one_line(q->output, q->out_len, said, sizeof said);
    if (got < 0)
        fail(j, "%s: cannot learn how %s ended: %s", j->what, s->argv[0], strerror(errno));
    else if (q->killed)
        fail(j, "%s: %s did not finish within %d ms and was killed", j->what, s->argv[0],
             s->timeout_ms);
    else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail(j, "%s: %s failed (%s %d)%s%s", j->what, s->argv[0],
             WIFEXITED(status) ? "exit status" : "signal",
             WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), said[0] ? ": " : "",
             said);
    q->pid = 0;
    q->active = false;
    j->cur++;
    next_step(q);
}

static void exit_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    child_done(arg);
}

static void out_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct dra_jobs *q = arg;
    ssize_t n = read_output(q);
    if (n == 0 || (n < 0 && errno != EAGAIN)) {
        /* The program closed it (or a daemon it started holds it): its
         * exit is what ends the step. */
        event_del(q->out_ev);
    }
}

/* Between fork and exec: system calls only, the parent may have threads. */
static void __attribute__((noreturn)) exec_child(const struct step *s, int in, int out,
                                                 char **envp)
{
    static const char shm_msg[] = "cannot give the program the claim's shm folder as /dev/shm "
                                  "(a mount namespace needs CAP_SYS_ADMIN)\n";
    static const char exec_msg[] = "cannot execute the program\n";
    static const char root_msg[] = "cannot chroot into the driver root\n";
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
        _exit(126);
    close_range(3, ~0U, 0);
    /* exec keeps what gpulet ignores (SIGPIPE) and blocks: the program,
     * and an MPS daemon's servers after it, start as from a shell. */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (s->shm && (unshare(CLONE_NEWNS) != 0 ||
                   mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
                   mount(s->shm, s->shm_target, NULL, MS_BIND, NULL) != 0)) {
        (void)!write(2, shm_msg, sizeof shm_msg - 1);
        _exit(126);
    }
    if (s->root && (chroot(s->root) != 0 || chdir("/") != 0)) {
        (void)!write(2, root_msg, sizeof root_msg - 1);
        _exit(126);
    }
    execve(s->argv[0], s->argv, envp);
    (void)!write(2, exec_msg, sizeof exec_msg - 1);
    _exit(127);
}

/* gpulet's environment with the step's variables in place of its own. */
static char **build_env(const struct step *s)
{
    size_t n = 0;
    char **envp = calloc(ENV_MAX + STEP_ENV + 1, sizeof *envp);
    if (envp == NULL)
        return NULL;
    for (char **e = environ; *e && n < ENV_MAX; e++) {
        size_t key = strcspn(*e, "=");
        bool replaced = false;
        for (size_t i = 0; s->env[i] && !replaced; i++)
            replaced = s->env[i][0] && strncmp(s->env[i], *e, key + 1) == 0;
        if (!replaced)
            envp[n++] = *e;
    }
    for (size_t i = 0; s->env[i]; i++)
        if (s->env[i][0])
            envp[n++] = s->env[i];
    return envp;
}

/* Whether the program started; it failed the job when not. */
static bool start_run(struct dra_jobs *q, struct dra_job *j, struct step *s)
{
    int in[2] = {-1, -1}, out[2] = {-1, -1};
    char **envp = build_env(s);
    if (envp == NULL || pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC | O_NONBLOCK) != 0) {
        fail(j, "%s: cannot run %s: %s", j->what, s->argv[0], strerror(errno));
        goto undo;
    }
    if (s->input && write(in[1], s->input, strlen(s->input)) != (ssize_t)strlen(s->input)) {
        fail(j, "%s: cannot give %s its input: %s", j->what, s->argv[0], strerror(errno));
        goto undo;
    }
    close(in[1]);
    in[1] = -1;
    pid_t pid = fork();
    if (pid < 0) {
        fail(j, "%s: cannot start %s: %s", j->what, s->argv[0], strerror(errno));
        goto undo;
    }
    if (pid == 0)
        exec_child(s, in[0], out[1], envp);
    free(envp);
    envp = NULL;
    close(in[0]);
    close(out[1]);
    q->pid = pid;
    q->out = out[0];
    q->out_len = 0;
    q->killed = false;
    q->pidfd = pidfd_open(pid, 0);
    if (q->pidfd < 0) {
        /* Cannot wait for it on the loop: it is ended now. */
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(q->out);
        q->pid = 0;
        fail(j, "%s: cannot watch %s: %s", j->what, s->argv[0], strerror(errno));
        return false;
    }
    q->exit_ev = event_new(q->base, q->pidfd, EV_READ, exit_cb, q);
    q->out_ev = event_new(q->base, q->out, EV_READ | EV_PERSIST, out_cb, q);
    event_add(q->exit_ev, NULL);
    event_add(q->out_ev, NULL);
    set_deadline(q, s->timeout_ms);
    arm_timer(q, s->timeout_ms);
    return true;
undo:
    free(envp);
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0)
            close(in[i]);
        if (out[i] >= 0)
            close(out[i]);
    }
    return false;
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct dra_jobs *q = arg;
    struct dra_job *j = q->head;
    if (j == NULL || !q->active)
        return;
    struct step *s = &j->steps[j->cur];
    if (s->kind == STEP_RUN && q->pid > 0) {
        /* Past its deadline: killed; its exit ends the step. */
        q->killed = true;
        kill(q->pid, SIGKILL);
        return;
    }
    if (s->kind == STEP_SOCKET) {
        bool done = dra_socket_alive(s->path) == s->present;
        long left = ms_left(&q->deadline);
        if (done || left <= 0) {
            if (!done)
                fail(j, "%s: %s %s within %d ms", j->what, s->path,
                     s->present ? "did not accept connections" : "still accepted connections",
                     s->timeout_ms);
            q->active = false;
            j->cur++;
            next_step(q);
            return;
        }
        arm_timer(q, left < SOCKET_POLL_MS ? left : SOCKET_POLL_MS);
    }
}

static void finish_job(struct dra_jobs *q)
{
    struct dra_job *j = q->head;
    q->head = j->next;
    if (q->head == NULL)
        q->tail = NULL;
    q->count--;
    if (j->done)
        j->done(j->user, j->failed ? j->error : NULL);
    dra_job_free(j);
}

/* Runs steps of the head job until one has to wait; then the next job.
 * Never while a step waits (a job queued from a done callback). */
static void next_step(struct dra_jobs *q)
{
    while (q->head && !q->active) {
        struct dra_job *j = q->head;
        while (j->cur < j->n) {
            struct step *s = &j->steps[j->cur];
            bool run = s->when == DRA_STEP_ALWAYS || (s->when == DRA_STEP_OK) == !j->failed;
            if (!run) {
                j->cur++;
                continue;
            }
            if (s->kind == STEP_CALL) {
                struct gpulet_error err = {0};
                int skip = s->fn(s->arg, &err);
                if (skip == DRA_JOB_AGAIN) {
                    struct timeval now = {0, 0};
                    evtimer_add(q->kick, &now);
                    return;
                }
                if (skip < 0)
                    fail(j, "%s: %s", j->what, err.msg);
                j->cur++;
                if (skip > 0)
                    j->cur = j->cur + (size_t)skip < j->n ? j->cur + (size_t)skip : j->n;
                continue;
            }
            if (s->kind == STEP_SOCKET) {
                set_deadline(q, s->timeout_ms);
                if (dra_socket_alive(s->path) == s->present) {
                    j->cur++;
                    continue;
                }
                q->active = true;
                arm_timer(q, SOCKET_POLL_MS);
                return;
            }
            if (start_run(q, j, s)) {
                q->active = true;
                return;
            }
            j->cur++; /* it failed the job */
        }
        if (!q->active)
            finish_job(q);
    }
}

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    next_step(arg);
}

struct dra_jobs *dra_jobs_new(struct event_base *base)
{
    struct dra_jobs *q = calloc(1, sizeof *q);
    if (q == NULL)
        return NULL;
    q->base = base;
    q->pidfd = q->out = -1;
    q->timer = evtimer_new(base, timer_cb, q);
    q->kick = evtimer_new(base, kick_cb, q);
    if (q->timer == NULL || q->kick == NULL) {
        if (q->timer)
            event_free(q->timer);
        if (q->kick)
            event_free(q->kick);
        free(q);
        return NULL;
    }
    return q;
}

void dra_jobs_free(struct dra_jobs *q)
{
    if (q == NULL)
        return;
    if (q->pid > 0) {
        kill(q->pid, SIGKILL);
        waitpid(q->pid, NULL, 0);
    }
    if (q->exit_ev)
        event_free(q->exit_ev);
    if (q->out_ev)
        event_free(q->out_ev);
    if (q->pidfd >= 0)
        close(q->pidfd);
    if (q->out >= 0)
        close(q->out);
    event_free(q->timer);
    event_free(q->kick);
    while (q->head) {
        struct dra_job *j = q->head;
        q->head = j->next;
        dra_job_free(j);
    }
    free(q);
}

int dra_jobs_submit(struct dra_jobs *q, struct dra_job *j, dra_job_done done, void *user,
                    struct gpulet_error *err)
{
    if (q->count >= DRA_JOBS_MAX) {
        dra_job_free(j);
        return gpulet_error_set(err, GPULET_ERR_SYSTEM, "%d GPU settings are waiting to be "
                                "applied already, gpulet's bound; the kubelet will retry",
                                DRA_JOBS_MAX);
    }
    j->done = done;
    j->user = user;
    j->next = NULL;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    q->count++;
    if (!q->active) {
        /* Started on the loop, so that done is never called from here. */
        struct timeval now = {0, 0};
        evtimer_add(q->kick, &now);
    }
    return 0;
}

void dra_jobs_forget(struct dra_jobs *q, void *user)
{
    for (struct dra_job *j = q->head; j; j = j->next)
        if (j->user == user)
            j->done = NULL;
}
