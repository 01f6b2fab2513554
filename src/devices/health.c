#include "devices.h"

#include <string.h>

int devices_health_subscribe(struct devices_health *h, devices_health_fn *changed, void *user,
                             struct gpulet_error *err)
{
    if (h->count == DEVICES_HEALTH_SUBSCRIBERS)
        return gpulet_error_set(err, GPULET_ERR_INTERNAL,
                                "more than %d front ends want device health news",
                                DEVICES_HEALTH_SUBSCRIBERS);
    h->subscribers[h->count].changed = changed;
    h->subscribers[h->count].user = user;
    h->count++;
    return 0;
}

void devices_health_unsubscribe(struct devices_health *h, devices_health_fn *changed, void *user)
{
    for (size_t i = 0; i < h->count; i++) {
        if (h->subscribers[i].changed != changed || h->subscribers[i].user != user)
            continue;
        memmove(&h->subscribers[i], &h->subscribers[i + 1],
                (h->count - i - 1) * sizeof h->subscribers[0]);
        h->count--;
        return;
    }
}

void devices_health_set(const struct devices_health *h, unsigned int gpu, int mig, bool healthy,
                        const char *reason)
{
    for (size_t i = 0; i < h->count; i++)
        h->subscribers[i].changed(gpu, mig, healthy, reason, h->subscribers[i].user);
}
