#include "helpers.h"

#include <event2/buffer.h>

#include "grpc/grpc_internal.h"

static void timeouts_parse_in_every_unit(void **state)
{
    (void)state;
    assert_int_equal(grpc_parse_timeout("250m", 4), 250);
    assert_int_equal(grpc_parse_timeout("3S", 2), 3000);
    assert_int_equal(grpc_parse_timeout("2M", 2), 120000);
    assert_int_equal(grpc_parse_timeout("1H", 2), 3600000);
    assert_int_equal(grpc_parse_timeout("1500u", 5), 2);
    assert_int_equal(grpc_parse_timeout("1n", 2), 1);
    assert_int_equal(grpc_parse_timeout("99999999H", 9), 0x7fffffffL);
    assert_int_equal(grpc_parse_timeout("m", 1), -1);
    assert_int_equal(grpc_parse_timeout("10x", 3), -1);
    assert_int_equal(grpc_parse_timeout("1-0m", 4), -1);
    assert_int_equal(grpc_parse_timeout("123456789m", 10), -1);
}

static void messages_are_percent_encoded(void **state)
{
    (void)state;
    char enc[128], dec[128];
    grpc_percent_encode("50% off, caf\xc3\xa9\n", enc, sizeof enc);
    assert_string_equal(enc, "50%25 off, caf%C3%A9%0A");
    grpc_percent_decode(enc, strlen(enc), dec, sizeof dec);
    assert_string_equal(dec, "50% off, caf\xc3\xa9\n");
    grpc_percent_decode("bad %zz and %4", 14, dec, sizeof dec);
    assert_string_equal(dec, "bad %zz and %4");
    /* a small buffer cuts, never overruns */
    grpc_percent_encode("%%%%%%%%", enc, 8);
    assert_true(strlen(enc) < 8);
}

static void frames_are_taken_whole(void **state)
{
    (void)state;
    struct evbuffer *in = evbuffer_new();
    uint8_t *msg;
    size_t len;
    enum grpc_status status;
    const char *why;
    const uint8_t frame[] = {0, 0, 0, 0, 3, 'a', 'b', 'c', 0, 0, 0, 0, 0};
    evbuffer_add(in, frame, 7);
    assert_int_equal(grpc_take_message(in, &msg, &len, &status, &why), 0);
    evbuffer_add(in, frame + 7, sizeof frame - 7);
    assert_int_equal(grpc_take_message(in, &msg, &len, &status, &why), 1);
    assert_int_equal(len, 3);
    assert_memory_equal(msg, "abc", 3);
    free(msg);
    assert_int_equal(grpc_take_message(in, &msg, &len, &status, &why), 1);
    assert_int_equal(len, 0);
    free(msg);
    assert_int_equal(evbuffer_get_length(in), 0);

    const uint8_t compressed[] = {1, 0, 0, 0, 1, 'x'};
    evbuffer_add(in, compressed, sizeof compressed);
    assert_int_equal(grpc_take_message(in, &msg, &len, &status, &why), -1);
    assert_int_equal(status, GRPC_UNIMPLEMENTED);
    evbuffer_drain(in, evbuffer_get_length(in));

    const uint8_t huge[] = {0, 0x7f, 0, 0, 0};
    evbuffer_add(in, huge, sizeof huge);
    assert_int_equal(grpc_take_message(in, &msg, &len, &status, &why), -1);
    assert_int_equal(status, GRPC_RESOURCE_EXHAUSTED);
    evbuffer_free(in);
}

static void status_names(void **state)
{
    (void)state;
    assert_string_equal(grpc_status_name(GRPC_OK), "OK");
    assert_string_equal(grpc_status_name(GRPC_UNAVAILABLE), "UNAVAILABLE");
    assert_string_equal(grpc_status_name((enum grpc_status)99), "UNKNOWN");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(timeouts_parse_in_every_unit),
        cmocka_unit_test(messages_are_percent_encoded),
        cmocka_unit_test(frames_are_taken_whole),
        cmocka_unit_test(status_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
