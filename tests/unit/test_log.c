#include "helpers.h"

#include <string.h>

#include "log/log.h"

/* A peer's text becomes one quoted-value-safe line: controls, bytes past
 * ASCII, quotes and backslashes turn to spaces; the rest is kept. */
static void one_line_neutralises_what_forges_lines(void **state)
{
    (void)state;
    const char in[] = "ok\nlevel=error msg=\"forged\"\\\r\t\x7f\xc3\xa9 end";
    char out[64];
    log_one_line(in, sizeof in - 1, out, sizeof out);
    assert_string_equal(out, "ok level=error msg= forged        end");
    assert_null(strpbrk(out, "\n\r\"\\"));
}

/* Bounded by the output and by the input's length, NUL or not. */
static void one_line_is_bounded(void **state)
{
    (void)state;
    char out[5];
    log_one_line("abcdefgh", 8, out, sizeof out);
    assert_string_equal(out, "abcd");
    const char unterminated[3] = {'x', 'y', 'z'};
    char big[16];
    log_one_line(unterminated, 2, big, sizeof big);
    assert_string_equal(big, "xy");
    char one[1] = {'q'};
    log_one_line("abc", 3, one, sizeof one);
    assert_int_equal(one[0], '\0');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_line_neutralises_what_forges_lines),
        cmocka_unit_test(one_line_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
