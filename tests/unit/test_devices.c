/* The device model's parts every front end shares: which front end offers
 * each GPU, a container's edits and limits, and health news reaching each
 * subscriber from one place. */
#include "helpers.h"

#include <sys/stat.h>
#include <unistd.h>

#include "cdi/cdi.h"

#include "devices/devices.h"
#include "dra/dra_internal.h"
#include "fileio/fileio.h"

#include "sim_inventory.h"

static const char *no_env(const char *name)
{
    (void)name;
    return NULL;
}

static void load_config(const char *text, struct config *cfg)
{
    char path[64] = "/tmp/gpulet-devices-cfg-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    struct gpulet_error err = {0};
    assert_int_equal(fileio_replace(path, text, strlen(text), 0, &err), 0);
    struct config_flags flags = {.config_file = path};
    int rc = config_load(&flags, no_env, cfg, &err);
    unlink(path);
    if (rc < 0)
        fail_msg("%s", err.msg);
}

/* Builds both front ends' devices, as the daemon does, and checks that no
 * GPU is in both and that, with DRA on, every GPU with something to offer
 * is in one. Returns how many GPUs DRA got. */
static size_t check_offered_once(const struct config *cfg, const char *what)
{
    struct devices_pool *pools;
    size_t n_pools, n_dra;
    struct dra_device *dra;
    struct gpulet_error err = {0};
    if (devices_catalog_build(inv, cfg, &pools, &n_pools, &err) < 0 ||
        dra_devices_build(inv, cfg, &dra, &n_dra, &err) < 0)
        fail_msg("%s: %s", what, err.msg);
    bool by_plugin[64] = {false}, by_dra[64] = {false};
    assert_true(inv->gpu_count <= 64);
    for (size_t p = 0; p < n_pools; p++)
        for (size_t i = 0; i < pools[p].count; i++)
            by_plugin[pools[p].devices[i].gpu] = true;
    for (size_t i = 0; i < n_dra; i++)
        by_dra[dra[i].gpu] = true;
    size_t dra_gpus = 0;
    for (size_t g = 0; g < inv->gpu_count; g++) {
        const struct gpu_device *gpu = &inv->gpus[g];
        if (by_plugin[g] && by_dra[g])
            fail_msg("%s: GPU %zu is offered by the device plugin and by DRA", what, g);
        enum devices_front front = devices_gpu_front(cfg, gpu);
        if (by_plugin[g])
            assert_int_equal(front, DEVICES_FRONT_PLUGIN);
        if (by_dra[g])
            assert_int_equal(front, DEVICES_FRONT_DRA);
        bool offers = !gpu->mig_enabled || gpu->mig_count > 0;
        if (cfg->dra_enabled && offers && !by_plugin[g] && !by_dra[g])
            fail_msg("%s: GPU %zu is offered by neither front end", what, g);
        dra_gpus += by_dra[g];
    }
    devices_catalog_free(pools, n_pools);
    free(dra);
    return dra_gpus;
}

static void no_gpu_offered_twice(void **state)
{
    (void)state;
    static const char *const nodes[] = {"dgx-a100", "a100-mig", "h100-mig", "mixed-t4-v100",
                                        "dgx1-v100", "t4-pcie"};
    for (size_t n = 0; n < sizeof nodes / sizeof nodes[0]; n++) {
        load(nodes[n]);
        char text[512];
        struct config cfg;
        load_config("version: v1\n", &cfg);
        assert_int_equal(check_offered_once(&cfg, "DRA off"), 0);

        load_config("version: v1\ndra:\n  enabled: true\n", &cfg);
        size_t all = check_offered_once(&cfg, "DRA takes every GPU");
        for (size_t g = 0; g < inv->gpu_count; g++)
            assert_int_equal(devices_gpu_front(&cfg, &inv->gpus[g]), DEVICES_FRONT_DRA);

        load_config("version: v1\nflags:\n  migStrategy: mixed\ndra:\n  enabled: true\n"
                    "  gpus: [0]\n", &cfg);
        size_t first = check_offered_once(&cfg, "DRA takes GPU 0, MIG mixed");
        assert_true(first <= 1 && first <= all);
        assert_int_equal(devices_gpu_front(&cfg, &inv->gpus[0]), DEVICES_FRONT_DRA);
        for (size_t g = 1; g < inv->gpu_count; g++)
            assert_int_equal(devices_gpu_front(&cfg, &inv->gpus[g]), DEVICES_FRONT_PLUGIN);

        if (inv->gpu_count < 2)
            continue;
        /* By UUID, and dra.gpus naming a GPU the node lacks. */
        snprintf(text, sizeof text, "version: v1\ndra:\n  enabled: true\n  gpus: [\"%s\", 63]\n",
                 inv->gpus[1].uuid);
        load_config(text, &cfg);
        check_offered_once(&cfg, "DRA takes GPU 1 by UUID");
        assert_int_equal(devices_gpu_front(&cfg, &inv->gpus[1]), DEVICES_FRONT_DRA);
        assert_int_equal(devices_gpu_front(&cfg, &inv->gpus[0]), DEVICES_FRONT_PLUGIN);
    }
}

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

static const struct devices_pair *env_named(const struct devices_edits *e, const char *key)
{
    for (size_t i = 0; i < e->n_env; i++)
        if (strcmp(e->env[i].key, key) == 0)
            return &e->env[i];
    return NULL;
}

/* What a container gets, before any protocol: whole GPUs named in the
 * variable and as CDI devices, no limits; slices in GPU order with their
 * memory and share summed per GPU and no folder made yet (that is the
 * front end's grant). */
static void prepare_gives_edits_and_limits(void **state)
{
    (void)state;
    load("dgx-a100");
    struct config cfg;
    load_config("version: v1\nflags:\n  plugin:\n    deviceListStrategy: [envvar, cdi-cri]\n",
                &cfg);
    struct devices_pool *pools;
    size_t n_pools;
    struct gpulet_error err = {0};
    assert_int_equal(devices_catalog_build(inv, &cfg, &pools, &n_pools, &err), 0);
    struct arena a = {0};
    struct devices_edits e = {.arena = &a};
    struct devices_slices slices;
    char *ids[] = {(char *)inv->gpus[3].uuid, (char *)inv->gpus[1].uuid,
                   (char *)inv->gpus[3].uuid};
    assert_int_equal(devices_prepare(&pools[0], &cfg, ids, 3, 7, &e, &slices, &err), 0);
    char want[256];
    snprintf(want, sizeof want, "%s,%s", inv->gpus[3].uuid, inv->gpus[1].uuid);
    assert_non_null(env_named(&e, "NVIDIA_VISIBLE_DEVICES"));
    assert_string_equal(env_named(&e, "NVIDIA_VISIBLE_DEVICES")->value, want);
    assert_int_equal(e.n_cdi_devices, 2);
    snprintf(want, sizeof want, "nvidia.com/gpu=%s", inv->gpus[1].uuid);
    assert_string_equal(e.cdi_devices[1], want);
    assert_int_equal(slices.n_gpus, 0);
    char *unknown[] = {"GPU-not-here"};
    assert_int_equal(devices_prepare(&pools[0], &cfg, unknown, 1, 8, &e, &slices, &err), -1);
    assert_int_equal(err.kind, GPULET_ERR_INPUT);
    assert_contains(err.msg, "GPU-not-here");
    devices_catalog_free(pools, n_pools);

    load_config("version: v1\nsharing:\n  slices:\n    resources:\n    - name: nvidia.com/gpu\n"
                "      memory: 10Gi\n      rename: gpu-10gb\n", &cfg);
    assert_int_equal(devices_catalog_build(inv, &cfg, &pools, &n_pools, &err), 0);
    assert_string_equal(pools[0].name, "nvidia.com/gpu-10gb");
    char id_a[DEVICES_ID_MAX], id_b[DEVICES_ID_MAX], id_c[DEVICES_ID_MAX];
    snprintf(id_a, sizeof id_a, "%s::s0", inv->gpus[5].uuid);
    snprintf(id_b, sizeof id_b, "%s::s1", inv->gpus[2].uuid);
    snprintf(id_c, sizeof id_c, "%s::s2", inv->gpus[5].uuid);
    char *sliced[] = {id_a, id_b, id_c};
    assert_int_equal(devices_prepare(&pools[0], &cfg, sliced, 3, 9, &e, &slices, &err), 0);
    assert_int_equal(slices.n_gpus, 2);
    assert_int_equal(slices.n_ids, 3);
    assert_string_equal(slices.gpus[0].uuid, inv->gpus[2].uuid);
    assert_int_equal(slices.gpus[0].memory, 10ULL << 30);
    assert_string_equal(slices.gpus[1].uuid, inv->gpus[5].uuid);
    assert_int_equal(slices.gpus[1].memory, 20ULL << 30);
    assert_int_equal(slices.gpus[1].share, 2 * slices.gpus[0].share);
    devices_catalog_free(pools, n_pools);
    arena_free(&a);
}

/* The control nodes a container gets are those its root has, in one order,
 * whether a plugin answer or a CDI spec carries them. */
static void control_nodes_those_present(void **state)
{
    (void)state;
    char root[64], path[128];
    temp_dir(root, sizeof root);
    const char *none[CDI_CONTROL_NODES_MAX + 1];
    assert_int_equal(cdi_control_nodes(root, none), 0);
    assert_null(none[0]);
    snprintf(path, sizeof path, "%s/dev", root);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/dev/nvidia-modeset", root);
    write_file(path, "");
    snprintf(path, sizeof path, "%s/dev/nvidiactl", root);
    write_file(path, "");
    const char *found[CDI_CONTROL_NODES_MAX + 1];
    assert_int_equal(cdi_control_nodes(root, found), 2);
    assert_string_equal(found[0], "/dev/nvidiactl");
    assert_string_equal(found[1], "/dev/nvidia-modeset");
    assert_null(found[2]);

    load("dgx-a100");
    struct config cfg;
    load_config("version: v1\n", &cfg);
    snprintf(cfg.driver_root, sizeof cfg.driver_root, "%s", root);
    cfg.pass_device_specs = true;
    struct devices_pool *pools;
    size_t n_pools;
    struct gpulet_error err = {0};
    assert_int_equal(devices_catalog_build(inv, &cfg, &pools, &n_pools, &err), 0);
    struct arena a = {0};
    struct devices_edits e = {.arena = &a};
    struct devices_slices slices;
    char *ids[] = {(char *)inv->gpus[0].uuid};
    assert_int_equal(devices_prepare(&pools[0], &cfg, ids, 1, 1, &e, &slices, &err), 0);
    assert_int_equal(e.n_nodes, 3);
    assert_string_equal(e.nodes[0].container, "/dev/nvidiactl");
    assert_string_equal(e.nodes[0].host, path);
    assert_string_equal(e.nodes[1].container, "/dev/nvidia-modeset");
    assert_string_equal(e.nodes[2].container, "/dev/nvidia0");
    devices_catalog_free(pools, n_pools);
    arena_free(&a);
    remove_tree(root);
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
        cmocka_unit_test_teardown(no_gpu_offered_twice, teardown),
        cmocka_unit_test_teardown(prepare_gives_edits_and_limits, teardown),
        cmocka_unit_test_teardown(control_nodes_those_present, teardown),
        cmocka_unit_test(health_reaches_every_subscriber),
        cmocka_unit_test(health_subscribers_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
