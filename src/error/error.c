#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int gpulet_error_set(struct gpulet_error *err, enum gpulet_error_kind kind,
                     const char *fmt, ...)
{
    if (err == NULL)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    err->kind = kind;
    err->sys_errno = 0;
    err->nvml = 0;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int gpulet_error_errno(struct gpulet_error *err, int errnum, const char *fmt, ...)
{
    if (err == NULL)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    size_t len = strlen(err->msg);
    snprintf(err->msg + len, sizeof err->msg - len, ": %s", strerror(errnum));
    err->kind = GPULET_ERR_SYSTEM;
    err->sys_errno = errnum;
    err->nvml = 0;
    return -1;
}

void gpulet_error_prefix(struct gpulet_error *err, const char *fmt, ...)
{
    if (err == NULL)
        return;
    char context[GPULET_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(context, sizeof context, fmt, ap);
    va_end(ap);
    char joined[GPULET_ERROR_MSG_MAX];
    snprintf(joined, sizeof joined, "%s: %s", context, err->msg);
    memcpy(err->msg, joined, sizeof err->msg);
}

void gpulet_error_clear(struct gpulet_error *err)
{
    if (err == NULL)
        return;
    err->kind = GPULET_ERR_NONE;
    err->sys_errno = 0;
    err->nvml = 0;
    err->msg[0] = '\0';
}
