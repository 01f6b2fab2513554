#include "helpers.h"

#include <ftw.h>

#include "gpu/gpu.h"

static struct gpu_inventory *load_inventory(const char *node, const char *lib, struct nvml **n)
{
    *n = open_sim(node, lib);
    struct gpu_inventory *inv = NULL;
    struct gpulet_error err = {0};
    if (gpu_inventory_load(*n, &inv, &err) < 0)
        fail_msg("inventory of %s: %s", node, err.msg);
    return inv;
}

/* The DGX-1 hybrid cube mesh (NVIDIA's DGX-1 with V100 system architecture). */
static const unsigned int dgx1_nvlinks[][3] = {
    {0, 1, 1}, {0, 2, 1}, {0, 3, 2}, {0, 4, 2}, {1, 2, 2}, {1, 3, 1}, {1, 5, 2}, {2, 3, 2},
    {2, 6, 1}, {3, 7, 1}, {4, 5, 1}, {4, 6, 1}, {4, 7, 2}, {5, 6, 2}, {5, 7, 1}, {6, 7, 2},
};

static void dgx1_hybrid_cube_mesh(void **state)
{
    (void)state;
    struct nvml *n;
    struct gpu_inventory *inv = load_inventory("dgx1-v100", SIM_LIB_CURRENT, &n);
    assert_int_equal(inv->gpu_count, 8);
    unsigned int expect[8][8] = {{0}};
    for (size_t i = 0; i < sizeof dgx1_nvlinks / sizeof dgx1_nvlinks[0]; i++) {
        expect[dgx1_nvlinks[i][0]][dgx1_nvlinks[i][1]] = dgx1_nvlinks[i][2];
        expect[dgx1_nvlinks[i][1]][dgx1_nvlinks[i][0]] = dgx1_nvlinks[i][2];
    }
    for (size_t a = 0; a < 8; a++)
        for (size_t b = 0; b < 8; b++)
            if (a != b && gpu_inventory_link(inv, a, b)->nvlinks != expect[a][b])
                fail_msg("GPUs %zu-%zu: %u NVLinks, expected %u", a, b,
                         gpu_inventory_link(inv, a, b)->nvlinks, expect[a][b]);
    assert_int_equal(gpu_inventory_link(inv, 0, 1)->pcie_level, NVML_TOPOLOGY_SINGLE);
    assert_int_equal(gpu_inventory_link(inv, 0, 2)->pcie_level, NVML_TOPOLOGY_HOSTBRIDGE);
    assert_int_equal(gpu_inventory_link(inv, 3, 4)->pcie_level, NVML_TOPOLOGY_SYSTEM);
    assert_int_equal(gpu_inventory_link(inv, 6, 7)->pcie_level, NVML_TOPOLOGY_SINGLE);
    const struct gpu_device *g = &inv->gpus[5];
    assert_string_equal(g->name, "Tesla V100-SXM2-16GB");
    assert_int_equal(g->cc_major, 7);
    assert_int_equal(g->cc_minor, 0);
    assert_int_equal(g->numa_node, 1);
    assert_false(g->mig_capable);
    assert_int_equal(g->memory_total_bytes, 16384ULL << 20);
    assert_string_equal(inv->driver_version, "535.183.01");
    assert_int_equal(inv->cuda_driver_version, 12020);
    assert_string_equal(inv->simulated_node, "dgx1-v100");
    gpu_inventory_free(inv);
    nvml_close(n);
}

static void nvswitch_nodes_count_links_through_the_switches(void **state)
{
    (void)state;
    static const struct {
        const char *node;
        unsigned int links;
    } cases[] = {{"dgx-a100", 12}, {"h100-sxm", 18}, {"t4-pcie", 0}, {"a100-mig", 12}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct nvml *n;
        struct gpu_inventory *inv = load_inventory(cases[c].node, SIM_LIB_CURRENT, &n);
        for (size_t a = 0; a < inv->gpu_count; a++)
            for (size_t b = 0; b < inv->gpu_count; b++)
                if (a != b && gpu_inventory_link(inv, a, b)->nvlinks != cases[c].links)
                    fail_msg("%s GPUs %zu-%zu: %u NVLinks, expected %u", cases[c].node, a, b,
                             gpu_inventory_link(inv, a, b)->nvlinks, cases[c].links);
        gpu_inventory_free(inv);
        nvml_close(n);
    }
}

static void dgx_a100_numa_and_pcie(void **state)
{
    (void)state;
    struct nvml *n;
    struct gpu_inventory *inv = load_inventory("dgx-a100", SIM_LIB_CURRENT, &n);
    for (size_t i = 0; i < 8; i++)
        assert_int_equal(inv->gpus[i].numa_node, i < 4 ? 0 : 1);
    assert_int_equal(gpu_inventory_link(inv, 0, 1)->pcie_level, NVML_TOPOLOGY_MULTIPLE);
    assert_int_equal(gpu_inventory_link(inv, 1, 3)->pcie_level, NVML_TOPOLOGY_NODE);
    assert_int_equal(gpu_inventory_link(inv, 2, 5)->pcie_level, NVML_TOPOLOGY_SYSTEM);
    assert_true(inv->gpus[0].mig_capable);
    assert_false(inv->gpus[0].mig_enabled);
    assert_int_equal(inv->gpus[0].mig_count, 0);
    assert_string_equal(inv->gpus[7].pci_bus_id, "00000000:BD:00.0");
    assert_int_equal(inv->gpus[7].pci_device_id, 0x20B210DE);
    gpu_inventory_free(inv);
    nvml_close(n);
}

static void mig_devices_and_profiles(void **state)
{
    (void)state;
    struct nvml *n;
    struct gpu_inventory *inv = load_inventory("a100-mig", SIM_LIB_CURRENT, &n);
    assert_int_equal(inv->gpu_count, 2);
    const struct gpu_device *g0 = &inv->gpus[0], *g1 = &inv->gpus[1];
    assert_true(g0->mig_enabled);
    assert_int_equal(g0->mig_count, 7);
    for (size_t i = 0; i < 7; i++) {
        assert_string_equal(g0->migs[i].profile, "1g.5gb");
        assert_int_equal(g0->migs[i].gpu_instance_id, 7 + i);
        assert_int_equal(g0->migs[i].multiprocessors, 14);
        assert_int_equal(strncmp(g0->migs[i].uuid, "MIG-", 4), 0);
    }
    assert_int_equal(g1->mig_count, 3);
    assert_string_equal(g1->migs[0].profile, "3g.20gb");
    assert_string_equal(g1->migs[1].profile, "2g.10gb");
    assert_string_equal(g1->migs[2].profile, "1g.5gb");
    assert_int_equal(g1->migs[0].memory_mib, 19968);
    assert_int_equal(g1->migs[0].decoders, 2);
    assert_int_equal(g1->migs[1].gi_slices, 2);
    assert_int_equal(g1->migs[1].ci_slices, 2);
    gpu_inventory_free(inv);
    nvml_close(n);
}

static void old_driver_gives_the_same_inventory(void **state)
{
    (void)state;
    struct nvml *n_new, *n_old;
    struct gpu_inventory *a = load_inventory("a100-mig", SIM_LIB_CURRENT, &n_new);
    struct gpu_inventory *b = load_inventory("a100-mig", SIM_LIB_OLD, &n_old);
    assert_int_equal(a->gpu_count, b->gpu_count);
    for (size_t i = 0; i < a->gpu_count; i++) {
        assert_string_equal(a->gpus[i].uuid, b->gpus[i].uuid);
        assert_string_equal(a->gpus[i].pci_bus_id, b->gpus[i].pci_bus_id);
        assert_int_equal(a->gpus[i].memory_total_bytes, b->gpus[i].memory_total_bytes);
        assert_int_equal(a->gpus[i].mig_count, b->gpus[i].mig_count);
        /* the old driver has no nvmlDeviceGetNumaNodeId: the (simulated) sysfs tells */
        assert_int_equal(b->gpus[i].numa_node, a->gpus[i].numa_node);
        assert_int_equal(b->gpus[i].pci_class, 0x0302);
    }
    assert_int_equal(gpu_inventory_link(b, 0, 1)->nvlinks, 12);
    gpu_inventory_free(a);
    gpu_inventory_free(b);
    nvml_close(n_new);
    nvml_close(n_old);
}

static void lost_gpu_stays_in_the_snapshot(void **state)
{
    (void)state;
    char dir[64], path[128];
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/state.yaml", dir);
    write_file(path, "gpus:\n  3: {lost: true}\n");
    setenv("GPULET_SIM_STATE", path, 1);
    struct nvml *n;
    struct gpu_inventory *inv = load_inventory("dgx-a100", SIM_LIB_CURRENT, &n);
    unsetenv("GPULET_SIM_STATE");
    assert_int_equal(inv->gpu_count, 8);
    assert_true(inv->gpus[3].lost);
    assert_string_equal(inv->gpus[3].uuid, "");
    assert_false(inv->gpus[2].lost);
    assert_int_equal(gpu_inventory_link(inv, 3, 1)->pcie_level, -1);
    assert_int_equal(gpu_inventory_link(inv, 3, 1)->nvlinks, 0);
    assert_int_equal(gpu_inventory_link(inv, 2, 1)->nvlinks, 12);
    json_t *doc = gpu_inventory_to_json(inv);
    json_t *g3 = json_array_get(json_object_get(doc, "gpus"), 3);
    assert_true(json_is_true(json_object_get(g3, "lost")));
    assert_true(json_is_null(json_object_get(g3, "uuid")));
    json_decref(doc);
    gpu_inventory_free(inv);
    nvml_close(n);
    unlink(path);
    rmdir(dir);
}

static void empty_node(void **state)
{
    (void)state;
    struct nvml *n;
    struct gpu_inventory *inv = load_inventory("empty", SIM_LIB_CURRENT, &n);
    assert_int_equal(inv->gpu_count, 0);
    json_t *doc = gpu_inventory_to_json(inv);
    assert_int_equal(json_array_size(json_object_get(doc, "gpus")), 0);
    assert_int_equal(json_array_size(json_object_get(doc, "topology")), 0);
    json_decref(doc);
    gpu_inventory_free(inv);
    nvml_close(n);
}

static void json_has_the_whole_snapshot(void **state)
{
    (void)state;
    struct nvml *n;
    struct gpu_inventory *inv = load_inventory("a100-mig", SIM_LIB_CURRENT, &n);
    json_t *doc = gpu_inventory_to_json(inv);
    assert_string_equal(json_string_value(json_object_get(doc, "cuda_driver_version")), "12.4");
    json_t *g1 = json_array_get(json_object_get(doc, "gpus"), 1);
    assert_string_equal(json_string_value(json_object_get(g1, "compute_capability")), "8.0");
    assert_int_equal(json_integer_value(json_object_get(g1, "memory_total_mib")), 40960);
    assert_string_equal(json_string_value(json_object_get(g1, "pci_device_id")), "0x20B010DE");
    json_t *mig = json_object_get(g1, "mig");
    json_t *m0 = json_array_get(json_object_get(mig, "devices"), 0);
    assert_string_equal(json_string_value(json_object_get(m0, "profile")), "3g.20gb");
    assert_int_equal(json_integer_value(json_object_get(m0, "gpu_instance_id")), 2);
    json_t *link = json_array_get(json_object_get(doc, "topology"), 0);
    assert_string_equal(json_string_value(json_object_get(link, "label")), "NV12");
    assert_string_equal(json_string_value(json_object_get(link, "pcie")), "MULTIPLE");
    json_decref(doc);
    gpu_inventory_free(inv);
    nvml_close(n);
}

static void names_and_labels(void **state)
{
    (void)state;
    char buf[32];
    gpu_mig_profile_name(1, 9856, buf, sizeof buf);
    assert_string_equal(buf, "1g.10gb");
    gpu_mig_profile_name(7, 40192, buf, sizeof buf);
    assert_string_equal(buf, "7g.40gb");
    gpu_mig_profile_name(4, 19968, buf, sizeof buf);
    assert_string_equal(buf, "4g.20gb");
    gpu_mig_profile_name(1, 1024, buf, sizeof buf);
    assert_string_equal(buf, "1g.1gb");
    struct gpu_link l = {.pcie_level = NVML_TOPOLOGY_HOSTBRIDGE, .nvlinks = 0};
    assert_string_equal(gpu_link_label(&l, buf, sizeof buf), "PHB");
    l.nvlinks = 4;
    assert_string_equal(gpu_link_label(&l, buf, sizeof buf), "NV4");
    l = (struct gpu_link){.pcie_level = -1};
    assert_string_equal(gpu_link_label(&l, buf, sizeof buf), "?");
    assert_string_equal(gpu_pcie_level_name(NVML_TOPOLOGY_NODE), "NODE");
    assert_string_equal(gpu_pcie_level_name(7), "UNKNOWN");
}

/* One GPU's PCI config space as a guest's hypervisor may present it. */
struct config_case {
    const char *what;
    unsigned char cfg[256];
    size_t len;   /* bytes in the file: 256, or fewer for a short read */
    bool vgpu;    /* what the inventory must say */
    const char *version;
};

static void vf_capability(unsigned char *cfg, unsigned int at, unsigned int len)
{
    cfg[at] = 0x09; /* vendor specific */
    cfg[at + 2] = (unsigned char)len;
    cfg[at + 3] = 'V';
    cfg[at + 4] = 'F';
}

/* The capability list comes from the device: a cycle, a pointer past the
 * end, a length past the end or a record walking off its capability must
 * neither hang the inventory nor read outside the 256 bytes (ASan). */
static void hostile_pci_config_space(void **state)
{
    (void)state;
    char root[] = "/tmp/gpulet-test-sysfs-XXXXXX";
    assert_non_null(mkdtemp(root));
    setenv("GPULET_SIM_SYSFS", root, 1);
    struct nvml *n = open_sim("t4-pcie", SIM_LIB_CURRENT);
    char path[256];
    snprintf(path, sizeof path, "%s/bus/pci/devices/0000:3b:00.0/config", root);

    static struct config_case cases[10];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cases[i] = (struct config_case){.len = 256};
        cases[i].cfg[0x06] = 0x10; /* a capability list */
        cases[i].cfg[0x34] = 0x40;
    }
    struct config_case *c = cases;
    c->what = "a capability pointing at itself";
    c->cfg[0x40] = 0x01, c->cfg[0x41] = 0x40;
    c++;
    c->what = "two capabilities pointing at each other";
    c->cfg[0x40] = 0x05, c->cfg[0x41] = 0x50, c->cfg[0x50] = 0x10, c->cfg[0x51] = 0x40;
    c++;
    c->what = "a first pointer past the end";
    c->cfg[0x34] = 0xff;
    c++;
    c->what = "a vendor capability at the last bytes";
    c->cfg[0x34] = 0xfd, c->cfg[0xfd] = 0x09, c->cfg[0xfe] = 0x00, c->cfg[0xff] = 0x40;
    c++;
    c->what = "a VF capability longer than the space";
    c->cfg[0x34] = 0xf0;
    vf_capability(c->cfg, 0xf0, 0x40);
    c++;
    c->what = "a record longer than its capability";
    vf_capability(c->cfg, 0x40, 0x20);
    c->cfg[0x45] = 0x01, c->cfg[0x46] = 0xff;
    c->vgpu = true, c->version = "";
    c++;
    c->what = "a host driver record cut short";
    vf_capability(c->cfg, 0x40, 0x10);
    c->vgpu = true, c->version = "";
    c++;
    c->what = "a host driver version of 10 bytes, none NUL";
    vf_capability(c->cfg, 0x40, 0x20);
    memcpy(c->cfg + 0x47, "1234567890abcdefghij", 20);
    c->vgpu = true, c->version = "1234567890";
    c++;
    c->what = "a host driver version with a newline (a forged log line)";
    vf_capability(c->cfg, 0x40, 0x20);
    memcpy(c->cfg + 0x47, "550\nlevel", 9);
    c->vgpu = true, c->version = "";
    c++;
    c->what = "a config file cut short";
    vf_capability(c->cfg, 0x40, 0x20);
    c->len = 100;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        assert_int_equal(fwrite(cases[i].cfg, 1, cases[i].len, f), cases[i].len);
        fclose(f);
        struct gpu_inventory *inv = NULL;
        struct gpulet_error err = {0};
        if (gpu_inventory_load(n, &inv, &err) < 0)
            fail_msg("%s: %s", cases[i].what, err.msg);
        if (inv->gpus[0].vgpu != cases[i].vgpu)
            fail_msg("%s: vgpu %d", cases[i].what, inv->gpus[0].vgpu);
        if (cases[i].version &&
            strcmp(inv->gpus[0].vgpu_host_driver_version, cases[i].version) != 0)
            fail_msg("%s: version \"%s\"", cases[i].what, inv->gpus[0].vgpu_host_driver_version);
        gpu_inventory_free(inv);
    }
    nvml_close(n);
    unsetenv("GPULET_SIM_SYSFS");
    remove_tree(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dgx1_hybrid_cube_mesh),
        cmocka_unit_test(nvswitch_nodes_count_links_through_the_switches),
        cmocka_unit_test(dgx_a100_numa_and_pcie),
        cmocka_unit_test(mig_devices_and_profiles),
        cmocka_unit_test(old_driver_gives_the_same_inventory),
        cmocka_unit_test(lost_gpu_stays_in_the_snapshot),
        cmocka_unit_test(empty_node),
        cmocka_unit_test(json_has_the_whole_snapshot),
        cmocka_unit_test(names_and_labels),
        cmocka_unit_test(hostile_pci_config_space),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
