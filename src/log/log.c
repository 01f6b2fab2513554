#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* The one piece of process-wide state outside the daemon context: the
 * threshold is set once from the command line before anything logs. */
static enum log_level threshold = LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level level)
{
    threshold = level;
}

int log_parse_level(const char *name, enum log_level *out)
{
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_one_line(const char *in, size_t in_len, char *out, size_t len)
{
    if (len == 0)
        return;
    size_t n = 0;
    for (; n + 1 < len && n < in_len; n++) {
        unsigned char ch = (unsigned char)in[n];
        out[n] = ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\' ? ' ' : (char)ch;
    }
    out[n] = '\0';
}

void log_event(enum log_level level, const char *msg, const char *fields, ...)
{
    if (level < threshold)
        return;
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);

    char extra[1024] = "";
    va_list ap;
    va_start(ap, fields);
    vsnprintf(extra, sizeof extra, fields, ap);
    va_end(ap);

    /* One fprintf call so that lines from two threads do not interleave. */
    fprintf(stderr, "%s level=%s msg=\"%s\"%s%s\n", stamp, level_names[level], msg,
            extra[0] ? " " : "", extra);
}

bool log_limit_pass(struct log_limit *l, unsigned long *held)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (l->started && now.tv_sec - l->last.tv_sec < l->interval_s) {
        l->held++;
        return false;
    }
    *held = l->held;
    l->held = 0;
    l->last = now;
    l->started = true;
    return true;
}
