#include "helpers.h"

#include <errno.h>

#include "error/error.h"

static void set_formats_and_returns_minus_one(void **state)
{
    (void)state;
    struct gpulet_error err = {0};
    assert_int_equal(gpulet_error_set(&err, GPULET_ERR_INPUT, "line %d: %s", 12, "bad"), -1);
    assert_int_equal(err.kind, GPULET_ERR_INPUT);
    assert_string_equal(err.msg, "line 12: bad");
}

static void errno_appends_strerror(void **state)
{
    (void)state;
    struct gpulet_error err = {0};
    assert_int_equal(gpulet_error_errno(&err, ENOENT, "cannot open %s", "/x"), -1);
    assert_int_equal(err.kind, GPULET_ERR_SYSTEM);
    assert_int_equal(err.sys_errno, ENOENT);
    assert_string_equal(err.msg, "cannot open /x: No such file or directory");
}

static void prefix_adds_context(void **state)
{
    (void)state;
    struct gpulet_error err = {0};
    gpulet_error_set(&err, GPULET_ERR_INPUT, "line 3: nope");
    gpulet_error_prefix(&err, "cannot read %s", "a.yaml");
    assert_string_equal(err.msg, "cannot read a.yaml: line 3: nope");
    assert_int_equal(err.kind, GPULET_ERR_INPUT);
}

static void long_messages_are_cut_not_overrun(void **state)
{
    (void)state;
    struct gpulet_error err = {0};
    char big[4000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    gpulet_error_set(&err, GPULET_ERR_INPUT, "%s", big);
    assert_int_equal(strlen(err.msg), GPULET_ERROR_MSG_MAX - 1);
    gpulet_error_prefix(&err, "%s", big);
    assert_int_equal(strlen(err.msg), GPULET_ERROR_MSG_MAX - 1);
}

static void null_error_is_allowed(void **state)
{
    (void)state;
    assert_int_equal(gpulet_error_set(NULL, GPULET_ERR_INPUT, "x"), -1);
    assert_int_equal(gpulet_error_errno(NULL, EIO, "x"), -1);
    gpulet_error_prefix(NULL, "x");
    gpulet_error_clear(NULL);
    struct gpulet_error err = {0};
    gpulet_error_set(&err, GPULET_ERR_NVML, "x");
    gpulet_error_clear(&err);
    assert_int_equal(err.kind, GPULET_ERR_NONE);
    assert_string_equal(err.msg, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(set_formats_and_returns_minus_one),
        cmocka_unit_test(errno_appends_strerror),
        cmocka_unit_test(prefix_adds_context),
        cmocka_unit_test(long_messages_are_cut_not_overrun),
        cmocka_unit_test(null_error_is_allowed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
