/*
 * The simulated node's nvidia-cuda-mps-control, as the real program behaves
 * for what gpulet asks of it:
 *
 *   nvidia-cuda-mps-control -d   starts the control daemon: it returns once
 *       the daemon runs in the background, which makes its control socket
 *       "control" in CUDA_MPS_PIPE_DIRECTORY (default /tmp/nvidia-mps) and
 *       logs to control.log in CUDA_MPS_LOG_DIRECTORY (default
 *       /var/log/nvidia-mps); it fails when a daemon answers there already.
 *   nvidia-cuda-mps-control      sends each line of its standard input to
 *       that daemon as a command and prints the answers; it fails when no
 *       daemon answers.
 *
 * Commands: quit; set_default_active_thread_percentage <0..100>,
 * get_default_active_thread_percentage; set_default_device_pinned_mem_limit
 * <UUID> <N>M|G, get_default_device_pinned_mem_limit <UUID>. The log says,
 * beside what the real one says, the daemon's CUDA_VISIBLE_DEVICES and each
 * command, for tests to read; the daemon also puts a file "mps-sim" in its
 * /dev/shm, where the real daemon's server keeps its shared memory.
 * GPULET_MPS_SIM_FAULT=exit makes the daemon end before it makes its
 * socket (a daemon that never comes up); =slow makes it take 2 s to make
 * it (a daemon still coming up); =deaf makes it answer quit but run on (a
 * daemon that has to be ended by force); =hold makes it wait to make it
 * until a file "release" is in its log folder, 10 s at most (a daemon
 * coming up for as long as a test needs, no longer).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_ 512
#define LIMITS 64

static const char *dir_of(const char *var, const char *def)
{
    const char *v = getenv(var);
    return v && v[0] ? v : def;
}

static int socket_path(struct sockaddr_un *a)
{
    *a = (struct sockaddr_un){.sun_family = AF_UNIX};
    int n = snprintf(a->sun_path, sizeof a->sun_path, "%s/control",
                     dir_of("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps"));
    return n > 0 && (size_t)n < sizeof a->sun_path ? 0 : -1;
}

static int connect_daemon(void)
{
    struct sockaddr_un a;
    if (socket_path(&a) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static FILE *logf_;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    if (logf_ == NULL)
        return;
    char when[64];
    time_t t = time(NULL);
    struct tm tm;
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", gmtime_r(&t, &tm));
    fprintf(logf_, "[%s.000 Control %d] ", when, (int)getpid());
    va_list ap;
    va_start(ap, fmt);
    vfprintf(logf_, fmt, ap);
    va_end(ap);
    fputc('\n', logf_);
    fflush(logf_);
}

struct settings {
    int percentage;
    size_t n;
    struct {
        char uuid[96], limit[32];
    } limits[LIMITS];
};

/* One command; the answer into out. Returns 1 on quit. */
static int command(struct settings *s, char *line, char *out, size_t len)
{
    line[strcspn(line, "\r\n")] = '\0';
    say("Command: %s", line);
    char verb[64] = "", a[96] = "", b[32] = "";
    int n = sscanf(line, "%63s %95s %31s", verb, a, b);
    out[0] = '\0';
    if (strcmp(verb, "quit") == 0 && n == 1) {
        say("Exit");
        return 1;
    }
    if (strcmp(verb, "set_default_active_thread_percentage") == 0 && n == 2) {
        char *end;
        long p = strtol(a, &end, 10);
        if (*end || p < 0 || p > 100)
            snprintf(out, len, "Invalid percentage %s\n", a);
        else {
            s->percentage = (int)p;
            snprintf(out, len, "%d.0\n", s->percentage);
        }
    } else if (strcmp(verb, "get_default_active_thread_percentage") == 0 && n == 1) {
        snprintf(out, len, "%d.0\n", s->percentage);
    } else if (strcmp(verb, "set_default_device_pinned_mem_limit") == 0 && n == 3) {
        size_t i = 0;
        while (i < s->n && strcmp(s->limits[i].uuid, a) != 0)
            i++;
        size_t l = strlen(b);
        if (l < 2 || (b[l - 1] != 'M' && b[l - 1] != 'G') || strspn(b, "0123456789") != l - 1)
            snprintf(out, len, "Invalid limit %s\n", b);
        else if (i == LIMITS)
            snprintf(out, len, "Too many devices\n");
        else {
            snprintf(s->limits[i].uuid, sizeof s->limits[i].uuid, "%s", a);
            snprintf(s->limits[i].limit, sizeof s->limits[i].limit, "%s", b);
            s->n += i == s->n;
        }
    } else if (strcmp(verb, "get_default_device_pinned_mem_limit") == 0 && n == 2) {
        for (size_t i = 0; i < s->n; i++)
            if (strcmp(s->limits[i].uuid, a) == 0)
                snprintf(out, len, "%s\n", s->limits[i].limit);
        if (out[0] == '\0')
            snprintf(out, len, "None\n");
    } else {
        snprintf(out, len, "Unknown command: %s\n", verb);
    }
    return 0;
}

static int daemon_main(void)
{
    struct sockaddr_un a;
    if (socket_path(&a) < 0) {
        fprintf(stderr, "CUDA_MPS_PIPE_DIRECTORY is too long\n");
        return 1;
    }
    int probe = connect_daemon();
    if (probe >= 0) {
        close(probe);
        fprintf(stderr, "An instance of this daemon is already running\n");
        return 1;
    }
    char log[4200];
    snprintf(log, sizeof log, "%s/control.log", dir_of("CUDA_MPS_LOG_DIRECTORY",
                                                       "/var/log/nvidia-mps"));
    pid_t pid = fork();
    if (pid < 0)
        return 1;
    if (pid > 0)
        return 0; /* the daemon runs on in the background */
    setsid();
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
    }
    logf_ = fopen(log, "ae");
    say("Startup");
    const char *visible = getenv("CUDA_VISIBLE_DEVICES");
    say("CUDA_VISIBLE_DEVICES=%s", visible ? visible : "");
    const char *fault = getenv("GPULET_MPS_SIM_FAULT");
    if (fault && strcmp(fault, "exit") == 0) {
        say("Simulated fault: exiting before the control socket is made");
        _exit(1);
    }
    if (fault && strcmp(fault, "slow") == 0) {
        say("Simulated fault: the control socket comes in 2 s");
        struct timespec two = {2, 0};
        nanosleep(&two, NULL);
    }
    if (fault && strcmp(fault, "hold") == 0) {
        char release[4300];
        snprintf(release, sizeof release, "%s/release",
                 dir_of("CUDA_MPS_LOG_DIRECTORY", "/var/log/nvidia-mps"));
        say("Simulated fault: the control socket comes once %s is there", release);
        struct timespec tick = {0, 10 * 1000 * 1000};
        for (int i = 0; i < 1000 && access(release, F_OK) != 0; i++)
            nanosleep(&tick, NULL);
    }
    int shm = open("/dev/shm/mps-sim", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (shm >= 0)
        close(shm);
    unlink(a.sun_path);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 16) != 0) {
        say("Cannot make the control socket %s: %s", a.sun_path, strerror(errno));
        _exit(1);
    }
    chmod(a.sun_path, 0666);
    signal(SIGPIPE, SIG_IGN);
    struct settings s = {.percentage = 100};
    for (;;) {
        int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            continue;
        /* One command a connection, as the client sends them. */
        struct timeval tv = {5, 0};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char line[LINE_MAX_ + 1], out[256];
        ssize_t n = read(c, line, LINE_MAX_);
        if (n <= 0) {
            close(c);
            continue;
        }
        line[n] = '\0';
        int quit = command(&s, line, out, sizeof out);
        if (out[0])
            (void)!write(c, out, strlen(out));
        close(c);
        if (quit && !(fault && strcmp(fault, "deaf") == 0)) {
            unlink(a.sun_path);
            _exit(0);
        }
    }
}

static int client_main(void)
{
    char line[LINE_MAX_ + 2];
    int rc = 0;
    while (fgets(line, sizeof line, stdin)) {
        if (strspn(line, " \t\r\n") == strlen(line))
            continue;
        int fd = connect_daemon();
        if (fd < 0) {
            fprintf(stderr, "Cannot find MPS control daemon process\n");
            return 1;
        }
        size_t l = strlen(line);
        if (write(fd, line, l) != (ssize_t)l)
            rc = 1;
        shutdown(fd, SHUT_WR);
        char out[512];
        ssize_t n;
        while ((n = read(fd, out, sizeof out)) > 0)
            fwrite(out, 1, (size_t)n, stdout);
        close(fd);
    }
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "-d") == 0)
        return daemon_main();
    if (argc == 1)
        return client_main();
    fprintf(stderr, "usage: nvidia-cuda-mps-control [-d]\n");
    return 1;
}
