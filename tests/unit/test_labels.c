#include "helpers.h"

#include "labels/labels.h"

static void keys_and_values(void **state)
{
    (void)state;
    assert_true(label_key_valid("nvidia.com/gpu.product"));
    assert_true(label_key_valid("nvidia.com/mig-1g.5gb.count"));
    assert_true(label_key_valid("gpu"));
    assert_false(label_key_valid("nvidia.com/"));
    assert_false(label_key_valid("/gpu"));
    assert_false(label_key_valid("NVIDIA.com/gpu"));
    assert_false(label_key_valid("nvidia.com/-gpu"));
    assert_false(label_key_valid("nvidia.com/gpu product"));
    char long_name[80];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    assert_false(label_value_valid(long_name));
    long_name[63] = '\0';
    assert_true(label_value_valid(long_name));
    assert_true(label_value_valid(""));
    assert_true(label_value_valid("550.90.07"));
    assert_false(label_value_valid("a b"));
    assert_false(label_value_valid("-SHARED"));
}

static void products_and_families(void **state)
{
    (void)state;
    char buf[96];
    label_product("Tesla T4", buf, sizeof buf);
    assert_string_equal(buf, "Tesla-T4");
    label_product("NVIDIA H100 80GB HBM3", buf, sizeof buf);
    assert_string_equal(buf, "NVIDIA-H100-80GB-HBM3");
    label_product("NVIDIA RTX A6000 (rev/2)", buf, sizeof buf);
    assert_string_equal(buf, "NVIDIA-RTX-A6000-rev2");
    /* GFD joins the words: runs of spaces, and spaces left by dropped
     * characters, give one '-', none at either end */
    label_product("  NVIDIA  A100 ( SXM ) ", buf, sizeof buf);
    assert_string_equal(buf, "NVIDIA-A100-SXM");
    char small[8];
    label_product("NVIDIA A100", small, sizeof small);
    assert_string_equal(small, "NVIDIA");
    static const char *const models[][2] = {
        {"Tesla V100-SXM2-16GB", "V100"}, {"NVIDIA A100-SXM4-80GB", "A100"},
        {"Tesla T4", "T4"}, {"NVIDIA H100 80GB HBM3", "H100"},
        {"NVIDIA GeForce RTX 4090", "RTX-4090"}, {"NVIDIA RTX A6000", "RTX-A6000"},
        {"NVIDIA A100 80GB PCIe", "A100"}, {"Tesla K80", "K80"}, {"NVIDIA L4", "L4"},
        {"NVIDIA GH200 480GB", "GH200"}, {"Quadro RTX 8000", "RTX-8000"},
        {"NVIDIA", ""}, {"Some (odd) GPU", "Some-odd-GPU"},
    };
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        label_model(models[i][0], buf, sizeof buf);
        assert_string_equal(buf, models[i][1]);
    }
    label_model("NVIDIA Averyveryverylongname-12345", buf, 8);
    assert_string_equal(buf, "Averyve");
    assert_string_equal(label_family(7, 0), "volta");
    assert_string_equal(label_family(7, 5), "turing");
    assert_string_equal(label_family(8, 0), "ampere");
    assert_string_equal(label_family(8, 9), "ada-lovelace");
    assert_string_equal(label_family(9, 0), "hopper");
    assert_string_equal(label_family(13, 0), "rubin"); /* as GFD names compute capability 13 */
    assert_string_equal(label_family(10, 0), "blackwell");
    assert_string_equal(label_family(12, 0), "blackwell");
    assert_string_equal(label_family(6, 1), "pascal");
    assert_string_equal(label_family(-1, -1), "undefined");
}

static void writes_atomically(void **state)
{
    (void)state;
    char dir[64], path[160];
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/a/b/gfd", dir);
    struct label items[] = {{"nvidia.com/gpu.count", "2"}, {"nvidia.com/gpu.product", "Tesla-T4"}};
    struct label_set set = {2, items};
    struct gpulet_error err = {0};
    assert_int_equal(labels_write(&set, path, &err), 0);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char text[256] = "";
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    assert_string_equal(text, "nvidia.com/gpu.count=2\nnvidia.com/gpu.product=Tesla-T4\n");
    /* a folder where the file should go: a clear error, nothing half written */
    char blocked[200];
    snprintf(blocked, sizeof blocked, "%s/a/b/gfd/x", dir);
    assert_int_equal(labels_write(&set, blocked, &err), -1);
    assert_contains(err.msg, "Not a directory");
    unlink(path);
    snprintf(path, sizeof path, "%s/a/b", dir);
    rmdir(path);
    snprintf(path, sizeof path, "%s/a", dir);
    rmdir(path);
    rmdir(dir);
}

static const char *value_of(const struct label_set *set, const char *key)
{
    for (size_t i = 0; i < set->count; i++)
        if (strcmp(set->items[i].key, key) == 0)
            return set->items[i].value;
    return NULL;
}

/* What NVIDIA's GFD writes: mig.strategy on a node without MIG too;
 * replicas 0 (and no -SHARED) for MIG-mode GPUs under strategy none;
 * gpu.mode from the PCI class. */
static void as_gfd_writes_them(void **state)
{
    (void)state;
    struct gpu_device gpu = {.name = "Tesla T4", .pci_class = 0x0302, .cc_major = 7,
                             .cc_minor = 5, .memory_total_bytes = 15360ULL << 20};
    struct gpu_inventory inv = {.driver_version = "550.90.07", .gpu_count = 1, .gpus = &gpu};
    struct config cfg;
    config_defaults(&cfg);
    struct label_set set;
    struct gpulet_error err = {0};
    assert_int_equal(labels_compute(&inv, &cfg, false, 0, &set, &err), 0);
    assert_null(value_of(&set, "nvidia.com/mig.strategy"));
    assert_string_equal(value_of(&set, "nvidia.com/gpu.mode"), "compute");
    assert_string_equal(value_of(&set, "nvidia.com/gpu.replicas"), "1");
    labels_free(&set);

    cfg.mig_strategy = MIG_STRATEGY_MIXED;
    gpu.pci_class = 0x0300;
    assert_int_equal(labels_compute(&inv, &cfg, false, 0, &set, &err), 0);
    assert_string_equal(value_of(&set, "nvidia.com/mig.strategy"), "mixed");
    assert_string_equal(value_of(&set, "nvidia.com/gpu.mode"), "graphics");
    labels_free(&set);

    cfg.mig_strategy = MIG_STRATEGY_NONE;
    gpu.mig_capable = gpu.mig_enabled = true;
    gpu.pci_class = 0;
    assert_int_equal(labels_compute(&inv, &cfg, false, 0, &set, &err), 0);
    assert_string_equal(value_of(&set, "nvidia.com/gpu.replicas"), "0");
    assert_string_equal(value_of(&set, "nvidia.com/gpu.product"), "Tesla-T4");
    assert_string_equal(value_of(&set, "nvidia.com/gpu.mode"), "unknown");
    labels_free(&set);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(keys_and_values),
        cmocka_unit_test(products_and_families),
        cmocka_unit_test(writes_atomically),
        cmocka_unit_test(as_gfd_writes_them),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
