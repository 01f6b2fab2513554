#include "helpers.h"

#include "config/config.h"

static const char *const *fake_env;

static const char *lookup(const char *name)
{
    for (size_t i = 0; fake_env && fake_env[i]; i += 2)
        if (strcmp(fake_env[i], name) == 0)
            return fake_env[i + 1];
    return NULL;
}

static char dir[64], path[128];

static int setup(void **state)
{
    (void)state;
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/config.yaml", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    rmdir(dir);
    return 0;
}

static void defaults_without_anything(void **state)
{
    (void)state;
    struct config cfg;
    struct config_flags flags = {0};
    struct gpulet_error err = {0};
    fake_env = NULL;
    assert_int_equal(config_load(&flags, lookup, &cfg, &err), 0);
    assert_int_equal(cfg.mig_strategy, MIG_STRATEGY_NONE);
    assert_true(cfg.fail_on_init_error);
    assert_int_equal(cfg.device_list_strategies, DEVICE_LIST_ENVVAR);
    assert_int_equal(cfg.device_id_strategy, DEVICE_ID_UUID);
    assert_string_equal(cfg.driver_root, "/");
    assert_int_equal(cfg.sharing, SHARING_NONE);
}

static void the_full_file(void **state)
{
    (void)state;
    write_file(path, "version: v1\n"
                     "flags:\n"
                     "  migStrategy: mixed\n"
                     "  failOnInitError: false\n"
                     "  nvidiaDriverRoot: /run/nvidia/driver\n"
                     "  gfd: {oneshot: false}\n"
                     "  plugin:\n"
                     "    passDeviceSpecs: true\n"
                     "    deviceListStrategy: [volume-mounts, cdi-cri]\n"
                     "    deviceIDStrategy: index\n"
                     "sharing:\n"
                     "  mps:\n"
                     "    renameByDefault: true\n"
                     "    resources:\n"
                     "    - name: nvidia.com/gpu\n"
                     "      replicas: 3\n"
                     "      devices: [0, \"1:2\", GPU-abc]\n"
                     "    - {name: nvidia.com/mig-1g.5gb, replicas: 2, devices: 2, rename: small}\n");
    struct config cfg;
    struct config_flags flags = {.config_file = path};
    struct gpulet_error err = {0};
    fake_env = NULL;
    if (config_load(&flags, lookup, &cfg, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(cfg.mig_strategy, MIG_STRATEGY_MIXED);
    assert_false(cfg.fail_on_init_error);
    assert_string_equal(cfg.driver_root, "/run/nvidia/driver");
    assert_true(cfg.pass_device_specs);
    assert_int_equal(cfg.device_list_strategies, DEVICE_LIST_VOLUME_MOUNTS | DEVICE_LIST_CDI_CRI);
    assert_int_equal(cfg.device_id_strategy, DEVICE_ID_INDEX);
    assert_int_equal(cfg.sharing, SHARING_MPS);
    assert_true(cfg.rename_by_default);
    assert_int_equal(cfg.shared_count, 2);
    assert_int_equal(cfg.shared[0].replicas, 3);
    assert_false(cfg.shared[0].all_devices);
    assert_int_equal(cfg.shared[0].selector_count, 3);
    assert_string_equal(cfg.shared[0].selectors[1], "1:2");
    assert_int_equal(cfg.shared[1].count, 2);
    assert_string_equal(cfg.shared[1].rename, "nvidia.com/small");
    assert_non_null(config_shared_for(&cfg, "nvidia.com/mig-1g.5gb"));
    assert_null(config_shared_for(&cfg, "nvidia.com/mig-2g.10gb"));
}

static void precedence(void **state)
{
    (void)state;
    write_file(path, "flags:\n  migStrategy: single\n  plugin: {deviceIDStrategy: index}\n");
    static const char *const env[] = {"CONFIG_FILE", NULL, "MIG_STRATEGY", "mixed",
                                      "DEVICE_LIST_STRATEGY", "cdi-annotations", NULL};
    const char *with_file[sizeof env / sizeof env[0]];
    memcpy(with_file, env, sizeof env);
    with_file[1] = path;
    fake_env = with_file;
    struct config cfg;
    struct config_flags flags = {.mig_strategy = "none"};
    struct gpulet_error err = {0};
    if (config_load(&flags, lookup, &cfg, &err) < 0)
        fail_msg("%s", err.msg);
    assert_string_equal(cfg.file, path);                  /* CONFIG_FILE was used */
    assert_int_equal(cfg.device_id_strategy, DEVICE_ID_INDEX); /* file */
    assert_int_equal(cfg.device_list_strategies, DEVICE_LIST_CDI_ANNOTATIONS); /* env */
    assert_int_equal(cfg.mig_strategy, MIG_STRATEGY_NONE); /* flag over env over file */
}

static void resource_names_by_model(void **state)
{
    (void)state;
    write_file(path, "version: v1\n"
                     "flags:\n"
                     "  gfd: {oneshot: false, shortLabels: true}\n"
                     "resources:\n"
                     "  gpus:\n"
                     "  - pattern: \"*V100*\"\n"
                     "    name: v100\n"
                     "  - {pattern: \"Tesla T4\", name: nvidia.com/t4}\n"
                     "  mig:\n"
                     "  - {pattern: \"1g.*\", name: mig-small}\n");
    fake_env = NULL;
    struct config cfg;
    struct config_flags flags = {.config_file = path};
    struct gpulet_error err = {0};
    if (config_load(&flags, lookup, &cfg, &err) < 0)
        fail_msg("%s", err.msg);
    assert_true(cfg.short_labels);
    assert_int_equal(cfg.gpu_name_count, 2);
    assert_int_equal(cfg.gpu_names[0].line, 6);
    assert_string_equal(config_gpu_resource(&cfg, "Tesla V100-SXM2-16GB"), "nvidia.com/v100");
    assert_string_equal(config_gpu_resource(&cfg, "Tesla T4"), "nvidia.com/t4");
    assert_string_equal(config_gpu_resource(&cfg, "NVIDIA A100-SXM4-80GB"), "nvidia.com/gpu");
    char name[CONFIG_NAME_MAX];
    config_mig_resource(&cfg, "1g.10gb", name, sizeof name);
    assert_string_equal(name, "nvidia.com/mig-small");
    config_mig_resource(&cfg, "1c.2g.10gb+me", name, sizeof name);
    assert_string_equal(name, "nvidia.com/mig-1c.2g.10gb.me");

    /* the flag and the variable override the file */
    static const char *const env[] = {"GPULET_SHORT_LABELS", "false", NULL};
    fake_env = env;
    assert_int_equal(config_load(&flags, lookup, &cfg, &err), 0);
    assert_false(cfg.short_labels);
    flags.short_labels = "true";
    assert_int_equal(config_load(&flags, lookup, &cfg, &err), 0);
    assert_true(cfg.short_labels);
    fake_env = NULL;
}

static void dra_gpus(void **state)
{
    (void)state;
    write_file(path, "version: v1\ndra:\n  enabled: true\n  gpus: [1, GPU-abc]\n");
    struct config cfg;
    struct config_flags flags = {.config_file = path};
    struct gpulet_error err = {0};
    fake_env = NULL;
    assert_int_equal(config_load(&flags, lookup, &cfg, &err), 0);
    assert_true(cfg.dra_enabled);
    assert_true(cfg.dra_gpus_set);
    assert_false(config_dra_gpu(&cfg, 0, "GPU-0"));
    assert_true(config_dra_gpu(&cfg, 1, "GPU-1"));
    assert_true(config_dra_gpu(&cfg, 5, "GPU-abc"));
    assert_false(config_dra_slice(&cfg, 1, "GPU-1")); /* no dra.slices: none shared */
    write_file(path, "version: v1\ndra:\n  enabled: true\n  slices: [GPU-abc]\n");
    assert_int_equal(config_load(&flags, lookup, &cfg, &err), 0);
    assert_true(config_dra_slice(&cfg, 5, "GPU-abc"));
    assert_false(config_dra_slice(&cfg, 0, "GPU-0"));
    write_file(path, "version: v1\ndra:\n  slices: [\"0:1\"]\n");
    assert_int_equal(config_load(&flags, lookup, &cfg, &err), -1);
    assert_non_null(strstr(err.msg, "dra.slices"));
    write_file(path, "version: v1\n");
    assert_int_equal(config_load(&flags, lookup, &cfg, &err), 0);
    assert_false(cfg.dra_enabled);
    assert_false(cfg.dra_device_taints); /* off unless asked: a gate-off API server drops them */
    assert_true(config_dra_gpu(&cfg, 0, "GPU-0")); /* no list: DRA offers every GPU */
    write_file(path, "version: v1\ndra:\n  deviceTaints: true\n");
    assert_int_equal(config_load(&flags, lookup, &cfg, &err), 0);
    assert_true(cfg.dra_device_taints);
    write_file(path, "version: v1\ndra:\n  deviceTaints: sometimes\n");
    assert_int_equal(config_load(&flags, lookup, &cfg, &err), -1);
    assert_non_null(strstr(err.msg, "dra.deviceTaints"));
}

static void errors(void **state)
{
    (void)state;
    static const struct {
        const char *text, *expect;
    } cases[] = {
        {"version: 1\n", "line 1: version must be v1, not \"1\""},
        {"resources:\n  gpus:\n  - {pattern: \"*V100*\", name: \"v100!\"}\n",
         "line 3: resources.gpus[0].name must be a resource name"},
        {"resources:\n  gpus:\n  - {pattern: x, name: v100}\n  - {pattern: y, name: -v}\n",
         "line 4: resources.gpus[1].name must be a resource name"},
        {"resources:\n  mig:\n  - {pattern: \"\", name: small}\n",
         "line 3: resources.mig[0].pattern must not be empty"},
        {"resources:\n  mig:\n  - {name: small}\n", "line 3: resources.mig[0] needs a pattern and a name"},
        {"resources:\n  gpus:\n  - {pattern: x, name: a, rename: b}\n", "line 3"},
        {"resources:\n  tpus: []\n", "line 2"},
        {"resources:\n  gpus: {pattern: x}\n", "line 2: resources.gpus must be a list"},
        {"resources:\n  gpus:\n  - {pattern: x, name: nvidia.com/abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcd}\n",
         "line 3: resources.gpus[0].name is too long"},
        {"sharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 2\n"
         "      devices: [0, \"1:x\"]\n",
         "line 6: devices: \"1:x\" is not a GPU index"},
        {"sharing:\n  mps:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 2\n"
         "      devices:\n      - gpu0\n",
         "line 7: devices: \"gpu0\" is not a GPU index"},
        {"sharing:\n  mps:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 2\n"
         "      devices: [\"-1\"]\n",
         "line 6: devices: \"-1\" is not"},
        {"flags:\n  gfd:\n    shortLabels: maybe\n", "line 3: flags.gfd.shortLabels must be true or false"},
        {"sharing:\n  timeSlicing: {resources: [{name: amd.com/gpu, replicas: 2}]}\n",
         "name must be nvidia.com/<name>"},
        {"sharing:\n  timeSlicing: {resources: [{name: nvidia.com/gpu}]}\n", "replicas is required"},
        {"sharing:\n  timeSlicing:\n    resources:\n    - {name: nvidia.com/gpu, replicas: 2}\n"
         "    - {name: nvidia.com/gpu, replicas: 3}\n",
         "line 5: nvidia.com/gpu is listed twice"},
        {"sharing:\n  timeSlicing: {resources: [{name: nvidia.com/gpu, replicas: 2}]}\n"
         "  mps: {resources: [{name: nvidia.com/gpu, replicas: 2}]}\n",
         "line 3: sharing: use timeSlicing or mps, not both"},
        {"sharing:\n  timeSlicing: {resources: [{name: nvidia.com/gpu, replicas: 2, devices: none}]}\n",
         "devices must be \"all\", a count, or a list"},
        {"flags:\n  plugin:\n    passDeviceSpecs: sometimes\n",
         "line 3: flags.plugin.passDeviceSpecs must be true or false"},
        {"flags: [1]\n", "line 1: flags must be a mapping"},
        {"sharing:\n  slices:\n    resources:\n    - {name: nvidia.com/gpu, replicas: 0}\n",
         "line 4: replicas must be ≥ 2"},
        {"sharing:\n  slices:\n    resources:\n    - name: nvidia.com/gpu\n      memory: 0Gi\n",
         "line 5: memory must be a size above zero"},
        {"sharing:\n  slices:\n    resources:\n    - name: nvidia.com/gpu\n      memory: 10GB\n",
         "line 5: memory must be a size above zero such as 10Gi"},
        {"sharing:\n  slices:\n    resources:\n    - name: nvidia.com/gpu\n      memory: 99999999999999Ti\n",
         "line 5: memory must be a size"},
        {"sharing:\n  slices:\n    resources:\n    - {name: nvidia.com/gpu, memory: 10Gi, replicas: 8}\n",
         "line 4: nvidia.com/gpu: give replicas or memory, not both"},
        {"sharing:\n  slices:\n    resources:\n    - {name: nvidia.com/gpu}\n",
         "line 4: nvidia.com/gpu: replicas or memory is required"},
        {"sharing:\n  slices:\n    resources:\n    - {name: nvidia.com/gpu, memory: 10Gi, failRequestsGreaterThanOne: true}\n",
         "line 4"},
        {"sharing:\n  slices: {renameByDefault: true}\n", "line 2"},
        {"sharing:\n  timeSlicing: {resources: [{name: nvidia.com/gpu, replicas: 2, memory: 1Gi}]}\n",
         "line 2"},
        /* overlapping device sets: between slices, and slices against time-slicing */
        {"sharing:\n  slices:\n    resources:\n    - {name: nvidia.com/gpu, memory: 10Gi, devices: [0, 1]}\n"
         "    - name: nvidia.com/gpu\n      replicas: 4\n      devices: [1, 2]\n",
         "line 7: sharing.slices.resources[1].devices: nvidia.com/gpu is already shared by the entry at line 4"},
        {"sharing:\n  slices:\n    resources:\n    - {name: nvidia.com/gpu, memory: 10Gi}\n"
         "  timeSlicing:\n    resources:\n    - {name: nvidia.com/gpu, replicas: 4, devices: [3]}\n",
         "line 7: sharing.timeSlicing.resources[0].devices: nvidia.com/gpu is already shared"},
        {"sharing:\n  slices:\n    resources:\n    - {name: nvidia.com/gpu, memory: 10Gi, devices: 2}\n"
         "    - {name: nvidia.com/gpu, memory: 20Gi, devices: [3]}\n",
         "line 5: sharing.slices.resources[1].devices"},
        {"dra:\n  enabled: sometimes\n", "line 2: dra.enabled must be true or false"},
        {"dra:\n  gpus: [0, \"1:0\"]\n", "line 2: dra.gpus: \"1:0\" is not a GPU index"},
        {"dra:\n  gpus: 3\n", "line 2: dra.gpus must be a list"},
        {"dra:\n  nodes: []\n", "line 2"},
    };
    fake_env = NULL;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_file(path, cases[i].text);
        struct config cfg;
        struct config_flags flags = {.config_file = path};
        struct gpulet_error err = {0};
        if (config_load(&flags, lookup, &cfg, &err) != -1)
            fail_msg("case %zu loaded", i);
        if (strstr(err.msg, cases[i].expect) == NULL || strstr(err.msg, path) == NULL)
            fail_msg("case %zu: expected \"%s\" and the path in \"%s\"", i, cases[i].expect,
                     err.msg);
    }
    /* oversized: more entries than the bound, a pattern longer than its room */
    char big[8192] = "resources:\n  gpus:\n";
    for (int i = 0; i <= CONFIG_MAX_NAMED; i++)
        strcat(big, "  - {pattern: x, name: y}\n");
    write_file(path, big);
    {
        struct config cfg;
        struct config_flags flags = {.config_file = path};
        struct gpulet_error err = {0};
        assert_int_equal(config_load(&flags, lookup, &cfg, &err), -1);
        assert_contains(err.msg, "line 3: resources.gpus lists at most 32 entries");
        snprintf(big, sizeof big, "resources:\n  gpus:\n  - name: y\n    pattern: \"%0200d\"\n", 7);
        write_file(path, big);
        assert_int_equal(config_load(&flags, lookup, &cfg, &err), -1);
        assert_contains(err.msg, "line 4: resources.gpus[0].pattern is too long");
    }
    struct config cfg;
    struct config_flags flags = {.config_file = "/nonexistent/c.yaml"};
    struct gpulet_error err = {0};
    assert_int_equal(config_load(&flags, lookup, &cfg, &err), -1);
    assert_contains(err.msg, "cannot read the config file: cannot read /nonexistent/c.yaml");
    flags = (struct config_flags){.device_list_strategy = "envvar,smoke"};
    assert_int_equal(config_load(&flags, lookup, &cfg, &err), -1);
    assert_contains(err.msg, "--device-list-strategy must be a comma-separated list");
    flags = (struct config_flags){.pass_device_specs = "yes please"};
    assert_int_equal(config_load(&flags, lookup, &cfg, &err), -1);
    assert_contains(err.msg, "--pass-device-specs must be true or false");
}

static void slices(void **state)
{
    (void)state;
    write_file(path, "version: v1\n"
                     "sharing:\n"
                     "  timeSlicing:\n"
                     "    resources:\n"
                     "    - {name: nvidia.com/gpu, replicas: 4, devices: [0]}\n"
                     "  slices:\n"
                     "    resources:\n"
                     "    - name: nvidia.com/gpu\n"
                     "      rename: gpu-10gb\n"
                     "      memory: 10Gi\n"
                     "      devices: [1, \"GPU-abc\"]\n"
                     "    - name: nvidia.com/gpu\n"
                     "      rename: nvidia.com/gpu.eighth\n"
                     "      replicas: 8\n"
                     "      devices: [2]\n");
    struct config cfg;
    struct config_flags flags = {.config_file = path, .state_dir = "/srv/gpulet"};
    struct gpulet_error err = {0};
    static const char *const env[] = {"GPULET_CUDA_INTERPOSER", "/opt/g/libgpulet-cuda.so", NULL};
    fake_env = env;
    if (config_load(&flags, lookup, &cfg, &err) != 0)
        fail_msg("%s", err.msg);
    fake_env = NULL;
    assert_int_equal(cfg.sharing, SHARING_TIME_SLICING);
    assert_int_equal(cfg.shared_count, 3);
    const struct shared_resource *ts = config_shared_for(&cfg, "nvidia.com/gpu");
    assert_non_null(ts);
    assert_false(ts->slices);
    assert_int_equal(ts->replicas, 4);
    const struct shared_resource *a = &cfg.shared[0], *b = &cfg.shared[1];
    assert_true(a->slices);
    assert_string_equal(a->rename, "nvidia.com/gpu-10gb");
    assert_true(a->slice_bytes == 10ULL << 30);
    assert_int_equal(a->replicas, 0);
    assert_int_equal(a->size_line, 10);
    assert_int_equal(a->devices_line, 11);
    assert_int_equal(a->selector_count, 2);
    assert_true(b->slices);
    assert_int_equal(b->replicas, 8);
    assert_true(b->slice_bytes == 0);
    assert_int_equal(b->index, 1);
    assert_string_equal(cfg.state_dir, "/srv/gpulet");
    assert_string_equal(cfg.cuda_interposer, "/opt/g/libgpulet-cuda.so");

    config_defaults(&cfg);
    assert_string_equal(cfg.state_dir, CONFIG_DEFAULT_STATE_DIR);
    assert_string_equal(cfg.cuda_interposer, CONFIG_DEFAULT_INTERPOSER);
    flags = (struct config_flags){.cuda_interposer = "lib.so"};
    assert_int_equal(config_load(&flags, lookup, &cfg, &err), -1);
    assert_contains(err.msg, "--cuda-interposer must be an absolute path");
    /* oversized: refused whole, not cut to a different path */
    static char long_path[sizeof cfg.state_dir + 1];
    memset(long_path, 'a', sizeof long_path - 1);
    long_path[0] = '/';
    flags = (struct config_flags){.state_dir = long_path};
    assert_int_equal(config_load(&flags, lookup, &cfg, &err), -1);
    assert_contains(err.msg, "--state-dir is longer than 4095 characters");
}

static void sizes(void **state)
{
    (void)state;
    unsigned long long n = 0;
    assert_int_equal(config_parse_size("10Gi", &n), 0);
    assert_true(n == 10ULL << 30);
    assert_int_equal(config_parse_size("512Mi", &n), 0);
    assert_true(n == 512ULL << 20);
    assert_int_equal(config_parse_size("1048576", &n), 0);
    assert_true(n == 1048576);
    assert_int_equal(config_parse_size("2G", &n), 0);
    assert_true(n == 2000000000ULL);
    static const char *const bad[] = {"", "Gi", "-1", "10 Gi", "10gi", "1.5Gi", "10GiB",
                                      "999999999999999Ti", "9999999999999999", NULL};
    for (size_t i = 0; bad[i]; i++)
        if (config_parse_size(bad[i], &n) == 0)
            fail_msg("\"%s\" parsed", bad[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_without_anything),
        cmocka_unit_test(the_full_file),
        cmocka_unit_test(precedence),
        cmocka_unit_test(resource_names_by_model),
        cmocka_unit_test(errors),
        cmocka_unit_test(dra_gpus),
        cmocka_unit_test(slices),
        cmocka_unit_test(sizes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
