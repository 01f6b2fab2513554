/*
 * Latency of the device plugin's RPCs over its Unix socket, as the kubelet
 * sees them: Allocate and GetPreferredAllocation, one call after another.
 *
 *   bench_plugin_rpc SOCKET [ROUNDS]
 *
 * Reads the device list with ListAndWatch first, then prints p50 / p99 in
 * microseconds per call kind. bench/device-plugin.sh runs it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deviceplugin/v1beta1/api.pb-c.h"
#include "grpc/grpc.h"

static struct event_base *base;
static char **ids;
static size_t n_ids;
static int failures;

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void on_list(const uint8_t *msg, size_t len, void *user)
{
    struct grpc_client_call **call = user;
    V1beta1__ListAndWatchResponse *r = v1beta1__list_and_watch_response__unpack(NULL, len, msg);
    if (r == NULL)
        return;
    ids = calloc(r->n_devices, sizeof *ids);
    for (size_t i = 0; i < r->n_devices; i++)
        ids[i] = strdup(r->devices[i]->id);
    n_ids = r->n_devices;
    v1beta1__list_and_watch_response__free_unpacked(r, NULL);
    grpc_client_call_cancel(*call);
    event_base_loopbreak(base);
}

static void on_list_done(enum grpc_status st, const char *m, const uint8_t *r, size_t l, void *u)
{
    (void)r;
    (void)l;
    (void)u;
    fprintf(stderr, "bench: ListAndWatch ended: %s %s\n", grpc_status_name(st), m ? m : "");
    event_base_loopbreak(base);
}

static void on_done(enum grpc_status st, const char *m, const uint8_t *r, size_t l, void *u)
{
    (void)r;
    (void)l;
    (void)u;
    if (st != GRPC_OK) {
        failures++;
        fprintf(stderr, "bench: call failed: %s %s\n", grpc_status_name(st), m ? m : "");
    }
    event_base_loopbreak(base);
}

static int compare(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void measure(struct grpc_channel *ch, const char *label, const char *method,
                    const uint8_t *req, size_t len, int rounds)
{
    double *t = calloc((size_t)rounds, sizeof *t);
    for (int i = 0; i < rounds; i++) {
        double start = now_us();
        grpc_channel_call(ch, method, req, len, 5000, NULL, on_done, NULL);
        event_base_dispatch(base);
        t[i] = now_us() - start;
    }
    qsort(t, (size_t)rounds, sizeof *t, compare);
    printf("%-40s %6d %9.0f %9.0f\n", label, rounds, t[rounds / 2], t[rounds * 99 / 100]);
    free(t);
}

static size_t pack_allocate(size_t count, uint8_t *buf)
{
    V1beta1__ContainerAllocateRequest cr = V1BETA1__CONTAINER_ALLOCATE_REQUEST__INIT;
    cr.devices_ids = ids;
    cr.n_devices_ids = count;
    V1beta1__ContainerAllocateRequest *crs[] = {&cr};
    V1beta1__AllocateRequest req = V1BETA1__ALLOCATE_REQUEST__INIT;
    req.container_requests = crs;
    req.n_container_requests = 1;
    return v1beta1__allocate_request__pack(&req, buf);
}

static size_t pack_preferred(size_t available, int size, uint8_t *buf)
{
    V1beta1__ContainerPreferredAllocationRequest cr =
        V1BETA1__CONTAINER_PREFERRED_ALLOCATION_REQUEST__INIT;
    cr.available_deviceids = ids;
    cr.n_available_deviceids = available;
    cr.allocation_size = size;
    V1beta1__ContainerPreferredAllocationRequest *crs[] = {&cr};
    V1beta1__PreferredAllocationRequest req = V1BETA1__PREFERRED_ALLOCATION_REQUEST__INIT;
    req.container_requests = crs;
    req.n_container_requests = 1;
    return v1beta1__preferred_allocation_request__pack(&req, buf);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_plugin_rpc SOCKET [ROUNDS]\n");
        return 2;
    }
    int rounds = argc > 2 ? atoi(argv[2]) : 2000;
    base = event_base_new();
    struct gpulet_error err = {0};
    struct grpc_channel *ch;
    if (grpc_channel_open(base, argv[1], &ch, &err) < 0) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return 1;
    }
    uint8_t empty[1];
    struct grpc_client_call *list = NULL;
    list = grpc_channel_call(ch, "/v1beta1.DevicePlugin/ListAndWatch", empty, 0, 0, on_list,
                             on_list_done, &list);
    event_base_dispatch(base);
    if (n_ids == 0) {
        fprintf(stderr, "bench: no devices listed\n");
        return 1;
    }
    printf("%s: %zu devices\n", argv[1], n_ids);
    printf("%-40s %6s %9s %9s\n", "call", "rounds", "p50 µs", "p99 µs");
    static uint8_t buf[1 << 20];
    size_t len = pack_allocate(1, buf);
    measure(ch, "Allocate 1 device", "/v1beta1.DevicePlugin/Allocate", buf, len, rounds);
    len = pack_allocate(n_ids < 8 ? n_ids : 8, buf);
    measure(ch, "Allocate 8 devices", "/v1beta1.DevicePlugin/Allocate", buf, len, rounds);
    /* Sizes that make the search for whole GPUs longest: 3 of 8 (280
     * partitions); of 16, 8 and 9 (6,435 and 11,440), while pairs to
     * sevens, past the 20,000-partition bound, are answered greedily. */
    static const int sizes[] = {1, 2, 3, 4, 5, 8, 9};
    size_t avail = n_ids < 8 ? n_ids : 8;
    for (int pass = 0; pass < (n_ids > 8 ? 2 : 1); pass++) {
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            char label[64];
            if ((size_t)sizes[s] >= avail)
                continue;
            snprintf(label, sizeof label, "GetPreferredAllocation %d of %zu", sizes[s], avail);
            len = pack_preferred(avail, sizes[s], buf);
            measure(ch, label, "/v1beta1.DevicePlugin/GetPreferredAllocation", buf, len,
                    rounds);
        }
        avail = n_ids;
    }
    grpc_channel_close(ch);
    for (size_t i = 0; i < n_ids; i++)
        free(ids[i]);
    free(ids);
    event_base_free(base);
    return failures ? 1 : 0;
}
