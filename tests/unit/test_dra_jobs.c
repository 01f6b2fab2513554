/* The DRA module's jobs (the driver's programs run off the loop): a
 * program past its deadline killed with a clear error, output kept to a
 * bound without hanging, steps run by outcome (ok, failed, always), a
 * step's skip, input on stdin, a job queued from a done callback waiting
 * for the one before it, a waiting socket, a full queue refused. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "dra/dra_jobs.h"
#include "fileio/fileio.h"
#include "helpers.h"

struct outcome {
    int done;
    char error[GPULET_ERROR_MSG_MAX];
    bool failed;
};

static void on_done(void *user, const char *error)
{
    struct outcome *o = user;
    o->done++;
    o->failed = error != NULL;
    snprintf(o->error, sizeof o->error, "%s", error ? error : "");
}

static void run_until(struct event_base *base, const int *done, int want)
{
    while (*done < want)
        event_base_loop(base, EVLOOP_ONCE);
}

static const char *const SH[] = {"/bin/sh", "-c", NULL, NULL};

static int sh(struct dra_job *j, enum dra_step_when when, const char *script, const char *input,
              int timeout_ms)
{
    const char *argv[] = {SH[0], SH[1], script, NULL};
    return dra_job_run(j, when, argv, NULL, input, NULL, NULL, timeout_ms);
}

static void deadline_kills(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct dra_jobs *q = dra_jobs_new(base);
    struct dra_job *j = dra_job_new("slow");
    assert_int_equal(sh(j, DRA_STEP_OK, "exec sleep 30", NULL, 200), 0);
    struct outcome o = {0};
    struct gpulet_error err = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(dra_jobs_submit(q, j, on_done, &o, &err), 0);
    assert_int_equal(o.done, 0); /* never called back from submit */
    run_until(base, &o.done, 1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true(o.failed);
    assert_non_null(strstr(o.error, "did not finish within 200 ms and was killed"));
    assert_true(t1.tv_sec - t0.tv_sec < 10);
    dra_jobs_free(q);
    event_base_free(base);
}

static void output_bounded_and_quoted(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct dra_jobs *q = dra_jobs_new(base);
    struct dra_job *j = dra_job_new("loud");
    /* 4 MiB of output, more than a pipe holds: read and dropped, no hang */
    assert_int_equal(sh(j, DRA_STEP_OK, "printf 'line one\\nline two\\n'; "
                        "head -c 4194304 /dev/zero | tr '\\0' x; exit 3", NULL, 20000), 0);
    struct outcome o = {0};
    struct gpulet_error err = {0};
    assert_int_equal(dra_jobs_submit(q, j, on_done, &o, &err), 0);
    run_until(base, &o.done, 1);
    assert_true(o.failed);
    assert_non_null(strstr(o.error, "exit status 3"));
    assert_non_null(strstr(o.error, "line one"));
    assert_null(strchr(o.error, '\n')); /* one line */
    assert_true(strlen(o.error) < GPULET_ERROR_MSG_MAX);
    dra_jobs_free(q);
    event_base_free(base);
}

/* gpulet ignores SIGPIPE and may hold signals blocked (--simulate): an
 * MPS daemon and its servers must not inherit either. */
static void programs_get_default_signals(void **state)
{
    (void)state;
    struct sigaction old_pipe, ign = {.sa_handler = SIG_IGN};
    sigset_t block, old_mask;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigaction(SIGPIPE, &ign, &old_pipe);
    sigprocmask(SIG_BLOCK, &block, &old_mask);
    struct event_base *base = event_base_new();
    struct dra_jobs *q = dra_jobs_new(base);
    struct dra_job *j = dra_job_new("signals");
    assert_int_equal(sh(j, DRA_STEP_OK, "grep -E '^Sig(Ign|Blk)' /proc/self/status | tr -s "
                        "'\t\n' '  '; exit 1", NULL, 20000), 0);
    struct outcome o = {0};
    struct gpulet_error err = {0};
    assert_int_equal(dra_jobs_submit(q, j, on_done, &o, &err), 0);
    run_until(base, &o.done, 1);
    sigaction(SIGPIPE, &old_pipe, NULL);
    sigprocmask(SIG_SETMASK, &old_mask, NULL);
    assert_true(o.failed);
    /* Signals 1-31: 32 and 33 are glibc's own, which a caller (make)
     * may leave ignored, glibc refuses to touch and sets up itself. */
    const char *blk = strstr(o.error, "SigBlk: "), *ign_at = strstr(o.error, "SigIgn: ");
    assert_non_null(blk);
    assert_non_null(ign_at);
    unsigned long long blocked = ~0ULL, ignored = ~0ULL;
    assert_int_equal(sscanf(blk + 8, "%llx", &blocked), 1);
    assert_int_equal(sscanf(ign_at + 8, "%llx", &ignored), 1);
    assert_int_equal(blocked & 0x7fffffffULL, 0);
    assert_int_equal(ignored & 0x7fffffffULL, 0);
    dra_jobs_free(q);
    event_base_free(base);
}

static int count_call(void *arg, struct gpulet_error *err)
{
    (void)err;
    int *n = arg;
    (*n)++; /* a copy: the step keeps its own */
    return 0;
}

static int skip_one(void *arg, struct gpulet_error *err)
{
    (void)arg;
    (void)err;
    return 1;
}

static void steps_by_outcome(void **state)
{
    (void)state;
    char dir[] = "/tmp/gpulet-jobs-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char script[512], path[600];
    struct event_base *base = event_base_new();
    struct dra_jobs *q = dra_jobs_new(base);
    struct dra_job *j = dra_job_new("steps");
    int zero = 0;
    /* stdin reaches the program */
    snprintf(script, sizeof script, "cat > %s/in", dir);
    assert_int_equal(sh(j, DRA_STEP_OK, script, "set_default 40\n", 5000), 0);
    assert_int_equal(dra_job_call(j, DRA_STEP_OK, skip_one, &zero, sizeof zero), 0);
    snprintf(script, sizeof script, "touch %s/skipped", dir);
    assert_int_equal(sh(j, DRA_STEP_OK, script, NULL, 5000), 0);
    assert_int_equal(sh(j, DRA_STEP_OK, "echo broken >&2; exit 1", NULL, 5000), 0);
    snprintf(script, sizeof script, "touch %s/after-failure-ok", dir);
    assert_int_equal(sh(j, DRA_STEP_OK, script, NULL, 5000), 0);
    snprintf(script, sizeof script, "touch %s/undo", dir);
    assert_int_equal(sh(j, DRA_STEP_FAILED, script, NULL, 5000), 0);
    snprintf(script, sizeof script, "touch %s/always", dir);
    assert_int_equal(sh(j, DRA_STEP_ALWAYS, script, NULL, 5000), 0);
    /* a program that is not there fails, the steps after it still run */
    const char *missing[] = {"/nonexistent/nvidia-smi", NULL};
    assert_int_equal(dra_job_run(j, DRA_STEP_ALWAYS, missing, NULL, NULL, NULL, NULL, 5000), 0);
    assert_int_equal(dra_job_call(j, DRA_STEP_ALWAYS, count_call, &zero, sizeof zero), 0);
    struct outcome o = {0};
    struct gpulet_error err = {0};
    assert_int_equal(dra_jobs_submit(q, j, on_done, &o, &err), 0);
    run_until(base, &o.done, 1);
    assert_true(o.failed);
    assert_non_null(strstr(o.error, "broken")); /* the first failure is told */
    char *text;
    size_t len;
    snprintf(path, sizeof path, "%s/in", dir);
    assert_int_equal(fileio_read(path, 1024, &text, &len, &err), 0);
    assert_string_equal(text, "set_default 40\n");
    free(text);
    static const char *const made[] = {"undo", "always"}, *const not_made[] = {
        "skipped", "after-failure-ok"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, made[i]);
        assert_int_equal(access(path, F_OK), 0);
        snprintf(path, sizeof path, "%s/%s", dir, not_made[i]);
        assert_int_not_equal(access(path, F_OK), 0);
    }
    dra_jobs_free(q);
    event_base_free(base);
    remove_tree(dir);
}

/* A step done in slices: called again until it says it is done, the loop
 * serving its other events between the calls, and the steps after it run. */
struct slices {
    int *calls, *ticks;
    int ticks_before;
    bool *starved;
};

static int sliced(void *arg, struct gpulet_error *err)
{
    (void)err;
    struct slices *s = arg;
    if (*s->calls > 0 && *s->ticks == s->ticks_before)
        *s->starved = true;
    s->ticks_before = *s->ticks;
    return ++*s->calls < 4 ? DRA_JOB_AGAIN : 0;
}

struct ticker {
    struct event *ev;
    int ticks;
};

/* Due again at once, each turn of the loop (a persistent timer of no
 * timeout would run once only). */
static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct ticker *t = arg;
    t->ticks++;
    struct timeval now = {0, 0};
    evtimer_add(t->ev, &now);
}

static void call_again(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct dra_jobs *q = dra_jobs_new(base);
    struct dra_job *j = dra_job_new("slices");
    int calls = 0, zero = 0;
    bool starved = false;
    struct ticker t = {0};
    t.ev = evtimer_new(base, tick, &t);
    struct timeval now = {0, 0};
    evtimer_add(t.ev, &now);
    struct slices s = {.calls = &calls, .ticks = &t.ticks, .starved = &starved};
    assert_int_equal(dra_job_call(j, DRA_STEP_OK, sliced, &s, sizeof s), 0);
    assert_int_equal(dra_job_call(j, DRA_STEP_OK, skip_one, &zero, sizeof zero), 0);
    assert_int_equal(sh(j, DRA_STEP_OK, "exit 1", NULL, 5000), 0); /* skipped */
    struct outcome o = {0};
    struct gpulet_error err = {0};
    assert_int_equal(dra_jobs_submit(q, j, on_done, &o, &err), 0);
    run_until(base, &o.done, 1);
    assert_false(o.failed);
    assert_int_equal(calls, 4);
    assert_false(starved);
    event_free(t.ev);
    dra_jobs_free(q);
    event_base_free(base);
}

/* A job queued from the done callback of the last one: it runs once
 * (the fault this guards against started its program twice, the second
 * over the first). */
struct chain {
    struct dra_jobs *q;
    struct outcome first, second;
    char dir[64];
};

static void first_done(void *user, const char *error)
{
    struct chain *c = user;
    on_done(&c->first, error);
    struct dra_job *j = dra_job_new("second");
    char script[256];
    snprintf(script, sizeof script, "echo second >> %s/log", c->dir);
    assert_int_equal(sh(j, DRA_STEP_OK, script, NULL, 5000), 0);
    struct gpulet_error err = {0};
    assert_int_equal(dra_jobs_submit(c->q, j, on_done, &c->second, &err), 0);
}

static void queued_from_a_callback(void **state)
{
    (void)state;
    struct chain c = {0};
    snprintf(c.dir, sizeof c.dir, "/tmp/gpulet-jobs-XXXXXX");
    assert_non_null(mkdtemp(c.dir));
    struct event_base *base = event_base_new();
    c.q = dra_jobs_new(base);
    char script[256];
    struct gpulet_error err = {0};
    struct dra_job *a = dra_job_new("first");
    snprintf(script, sizeof script, "echo first >> %s/log", c.dir);
    assert_int_equal(sh(a, DRA_STEP_OK, script, NULL, 5000), 0);
    assert_int_equal(dra_jobs_submit(c.q, a, first_done, &c, &err), 0);
    run_until(base, &c.second.done, 1);
    assert_false(c.first.failed || c.second.failed);
    char path[128], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/log", c.dir);
    assert_int_equal(fileio_read(path, 1024, &text, &len, &err), 0);
    assert_string_equal(text, "first\nsecond\n"); /* the second ran once */
    free(text);
    dra_jobs_free(c.q);
    event_base_free(base);
    remove_tree(c.dir);
}

static void socket_waited_for(void **state)
{
    (void)state;
    char dir[] = "/tmp/gpulet-jobs-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char sock[128];
    snprintf(sock, sizeof sock, "%s/control", dir);
    struct event_base *base = event_base_new();
    struct dra_jobs *q = dra_jobs_new(base);
    struct gpulet_error err = {0};
    /* never there: fails at its deadline */
    struct dra_job *j = dra_job_new("nobody");
    assert_int_equal(dra_job_wait_socket(j, DRA_STEP_OK, sock, true, 150), 0);
    struct outcome o = {0};
    assert_int_equal(dra_jobs_submit(q, j, on_done, &o, &err), 0);
    run_until(base, &o.done, 1);
    assert_non_null(strstr(o.error, "did not accept connections within 150 ms"));
    /* a listener: alive; gone when asked to be gone fails while it listens */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", sock);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 4), 0);
    assert_true(dra_socket_alive(sock));
    j = dra_job_new("listener");
    assert_int_equal(dra_job_wait_socket(j, DRA_STEP_OK, sock, true, 150), 0);
    assert_int_equal(dra_job_wait_socket(j, DRA_STEP_OK, sock, false, 150), 0);
    o = (struct outcome){0};
    assert_int_equal(dra_jobs_submit(q, j, on_done, &o, &err), 0);
    run_until(base, &o.done, 1);
    assert_non_null(strstr(o.error, "still accepted connections within 150 ms"));
    close(fd);
    unlink(sock);
    assert_false(dra_socket_alive(sock));
    dra_jobs_free(q);
    event_base_free(base);
    remove_tree(dir);
}

static void queue_bounded(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct dra_jobs *q = dra_jobs_new(base);
    struct gpulet_error err = {0};
    for (int i = 0; i < DRA_JOBS_MAX; i++)
        assert_int_equal(dra_jobs_submit(q, dra_job_new("x"), NULL, NULL, &err), 0);
    assert_int_equal(dra_jobs_submit(q, dra_job_new("one more"), NULL, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "the kubelet will retry"));
    /* steps past the bound refused */
    struct dra_job *j = dra_job_new("long");
    int rc = 0;
    for (int i = 0; i <= DRA_JOB_STEPS; i++)
        rc = dra_job_wait_socket(j, DRA_STEP_OK, "/nonexistent", true, 1);
    assert_int_equal(rc, -1);
    dra_job_free(j);
    dra_jobs_free(q); /* dropped without calling back */
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(deadline_kills),
        cmocka_unit_test(output_bounded_and_quoted),
        cmocka_unit_test(programs_get_default_signals),
        cmocka_unit_test(steps_by_outcome),
        cmocka_unit_test(call_again),
        cmocka_unit_test(queued_from_a_callback),
        cmocka_unit_test(socket_waited_for),
        cmocka_unit_test(queue_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
