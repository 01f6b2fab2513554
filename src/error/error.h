/*
 * error: the error object every fallible gpulet function fills.
 *
 * A function that can fail takes a `struct gpulet_error *` as its last
 * argument, returns 0 / a pointer on success and -1 / NULL on failure, and
 * on failure leaves in the error a message a user can act on. The message
 * says what failed, on what, and what to do; callers may prefix context
 * ("cannot load node file x.yaml: ...") with gpulet_error_prefix().
 */
#ifndef GPULET_ERROR_H
#define GPULET_ERROR_H

#include <stddef.h>

enum gpulet_error_kind {
    GPULET_ERR_NONE = 0,
    GPULET_ERR_USAGE,      /* bad command line or configuration */
    GPULET_ERR_INPUT,      /* a file we read is malformed */
    GPULET_ERR_SYSTEM,     /* an OS call failed (errno kept) */
    GPULET_ERR_NO_DRIVER,  /* NVML could not be loaded or initialised */
    GPULET_ERR_NVML,       /* an NVML call failed (nvml kept) */
    GPULET_ERR_INTERNAL,
};

#define GPULET_ERROR_MSG_MAX 1024

struct gpulet_error {
    enum gpulet_error_kind kind;
    int sys_errno;   /* errno, for GPULET_ERR_SYSTEM */
    int nvml;        /* nvmlReturn_t, for GPULET_ERR_NVML and NO_DRIVER */
    char msg[GPULET_ERROR_MSG_MAX];
};

/* Sets kind and a formatted message; returns -1 so callers can
 * `return gpulet_error_set(err, ...)`. err may be NULL. */
int gpulet_error_set(struct gpulet_error *err, enum gpulet_error_kind kind,
                     const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Like gpulet_error_set with kind SYSTEM, appending ": strerror(errnum)". */
int gpulet_error_errno(struct gpulet_error *err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Puts formatted context in front of the existing message, "context: msg". */
void gpulet_error_prefix(struct gpulet_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void gpulet_error_clear(struct gpulet_error *err);

#endif
