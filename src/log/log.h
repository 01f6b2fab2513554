/*
 * log: one line per event on stderr, with a level and key=value fields.
 *
 *   2026-11-22T21:07:00Z level=warn msg="GPU lost" gpu=3 uuid=GPU-...
 *
 * The caller writes the fields after the message in printf style; values
 * with spaces must be quoted by the caller, and a peer's text made fit
 * for a quoted value first (log_one_line).
 */
#ifndef GPULET_LOG_H
#define GPULET_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_set_level(enum log_level level);
/* Parses "debug", "info", "warn" or "error"; returns -1 on anything else. */
int log_parse_level(const char *name, enum log_level *out);
/* The start of a peer's text (an API server's body, a proxy's HTML page, a
 * kubelet's error, a container's field) fit for a quoted log value: what is
 * not printable ASCII, and quotes and backslashes, become spaces, so it
 * forges no line or field. out gets at most len - 1 bytes and a NUL. */
void log_one_line(const char *in, size_t in_len, char *out, size_t len);

/* fields: printf format for the key=value part, may be "" */
void log_event(enum log_level level, const char *msg, const char *fields, ...)
    __attribute__((format(printf, 3, 4)));

/* A condition that may repeat without end (a failing accept, a full
 * connection table): the first occurrence in each interval is logged, the
 * others are counted. Zero-initialise, then set interval_s. One thread. */
struct log_limit {
    long interval_s;
    bool started;
    struct timespec last; /* CLOCK_MONOTONIC of the last line */
    unsigned long held;   /* occurrences not logged since */
};

/* true: log this occurrence now; *held gets how many were not logged
 * since the previous line (say it in the line). */
bool log_limit_pass(struct log_limit *l, unsigned long *held);

#define log_debug(msg, ...) log_event(LOG_DEBUG, msg, __VA_ARGS__)
#define log_info(msg, ...) log_event(LOG_INFO, msg, __VA_ARGS__)
#define log_warn(msg, ...) log_event(LOG_WARN, msg, __VA_ARGS__)
#define log_error(msg, ...) log_event(LOG_ERROR, msg, __VA_ARGS__)

#endif
