/* The device model's parts every front end shares: health news reaching
 * each subscriber from one place. */
#include "helpers.h"

#include "devices/devices.h"

struct heard {
    size_t calls;
    unsigned int gpu;
    int mig;
    bool healthy;
    char reason[64];
};

static void hear(unsigned int gpu, int mig, bool healthy, const char *reason, void *user)
{
    struct heard *h = user;
    h->calls++;
    h->gpu = gpu;
    h->mig = mig;
    h->healthy = healthy;
    snprintf(h->reason, sizeof h->reason, "%s", reason ? reason : "");
}

static void health_reaches_every_subscriber(void **state)
{
    (void)state;
    struct devices_health news = {0};
    struct heard plugin = {0}, dra = {0};
    struct gpulet_error err = {0};
    assert_int_equal(devices_health_subscribe(&news, hear, &plugin, &err), 0);
    assert_int_equal(devices_health_subscribe(&news, hear, &dra, &err), 0);
    devices_health_set(&news, 3, 1, false, "XID 79");
    assert_int_equal(plugin.calls, 1);
    assert_int_equal(dra.calls, 1);
    assert_int_equal(dra.gpu, 3);
    assert_int_equal(dra.mig, 1);
    assert_false(dra.healthy);
    assert_string_equal(plugin.reason, "XID 79");

    /* A front end freed (the plugin rebuilt on SIGHUP) hears no more; the
     * other still does. */
    devices_health_unsubscribe(&news, hear, &plugin);
    devices_health_set(&news, 3, -1, true, "");
    assert_int_equal(plugin.calls, 1);
    assert_int_equal(dra.calls, 2);
    assert_true(dra.healthy);
    assert_int_equal(dra.mig, -1);
    /* Unsubscribing what is not subscribed changes nothing. */
    devices_health_unsubscribe(&news, hear, &plugin);
    assert_int_equal(news.count, 1);
}

static void health_subscribers_bounded(void **state)
{
    (void)state;
    struct devices_health news = {0};
    struct heard h[DEVICES_HEALTH_SUBSCRIBERS + 1] = {{0}};
    struct gpulet_error err = {0};
    for (size_t i = 0; i < DEVICES_HEALTH_SUBSCRIBERS; i++)
        assert_int_equal(devices_health_subscribe(&news, hear, &h[i], &err), 0);
    assert_int_equal(devices_health_subscribe(&news, hear, &h[DEVICES_HEALTH_SUBSCRIBERS], &err),
                     -1);
    assert_contains(err.msg, "front ends");
    devices_health_set(&news, 0, -1, false, "lost");
    for (size_t i = 0; i < DEVICES_HEALTH_SUBSCRIBERS; i++)
        assert_int_equal(h[i].calls, 1);
    assert_int_equal(h[DEVICES_HEALTH_SUBSCRIBERS].calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(health_reaches_every_subscriber),
        cmocka_unit_test(health_subscribers_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
