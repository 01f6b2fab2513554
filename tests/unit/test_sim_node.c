#include "helpers.h"

#include "sim_node.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "sim_device.h"

static struct sim_node node;
static struct sim_state sim_state;

static const char *const fixtures[] = {"dgx1-v100", "dgx-a100", "h100-sxm", "t4-pcie", "a100-mig",
                                       "empty"};

static void every_fixture_loads(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.yaml", SIM_NODES_DIR, fixtures[i]);
        struct gpulet_error err = {0};
        if (sim_node_load(path, &node, &err) < 0)
            fail_msg("%s: %s", fixtures[i], err.msg);
        assert_string_equal(node.name, fixtures[i]);
        assert_true(node.driver_loaded);
    }
}

static void defaults_apply_and_gpus_override(void **state)
{
    (void)state;
    const char *text = "gpu_defaults:\n"
                       "  name: Tesla T4\n"
                       "  memory_mib: 15360\n"
                       "  compute_capability: \"7.5\"\n"
                       "gpus:\n"
                       "  - {uuid: GPU-a, pci_bus_id: \"0000:3b:00.0\"}\n"
                       "  - {uuid: GPU-b, pci_bus_id: \"0000:5e:00.0\", name: Tesla T4 Big, minor: 7}\n"
                       "topology:\n"
                       "  nvlinks: [[0, 1, 3]]\n";
    struct gpulet_error err = {0};
    if (sim_node_parse("n.yaml", text, strlen(text), &node, &err) < 0)
        fail_msg("%s", err.msg);
    assert_string_equal(node.name, "n");
    assert_int_equal(node.gpu_count, 2);
    assert_string_equal(node.gpus[0].name, "Tesla T4");
    assert_string_equal(node.gpus[1].name, "Tesla T4 Big");
    assert_int_equal(node.gpus[0].minor, 0);
    assert_int_equal(node.gpus[1].minor, 7);
    /* bus ids are normalised to NVML's form */
    assert_string_equal(node.gpus[0].pci_bus_id, "00000000:3B:00.0");
    assert_int_equal(node.gpus[0].cc_major, 7);
    assert_int_equal(node.gpus[0].cc_minor, 5);
    assert_int_equal(node.nvlinks[0][1], 3);
    assert_int_equal(node.gpus[0].link_count, 3);
    assert_string_equal(node.gpus[0].link_remote[0], "00000000:5E:00.0");
    assert_int_equal(node.pcie_level[0][1], 50);
}

struct bad_case {
    const char *text;
    const char *expect;
};

#define GPU_OK "gpu_defaults: {name: X, memory_mib: 1000, compute_capability: \"8.0\"}\n"

static const struct bad_case bad_nodes[] = {
    {"", "bad.yaml: the node description is empty"},
    {"- 1\n", "bad.yaml line 1: a node description must be a mapping"},
    {"gpus: []\ncolour: red\n", "bad.yaml line 2: node: unknown key \"colour\""},
    {"gpus: [\n", "bad.yaml line "},
    {GPU_OK "gpus:\n  - {uuid: GPU-a, pci_bus_id: \"0:1:0.0\", memory_mib: -5}\n",
     "bad.yaml line 3: memory_mib must be a whole number from 1 to 4194304, not \"-5\""},
    {GPU_OK "gpus:\n  - {uuid: GPU-a, pci_bus_id: \"0:1:0.0\", memory_mib: lots}\n",
     "line 3: memory_mib must be a whole number"},
    {GPU_OK "gpus:\n  - {uuid: abc, pci_bus_id: \"0:1:0.0\"}\n",
     "line 3: a GPU uuid must start with \"GPU-\", not \"abc\""},
    {GPU_OK "gpus:\n  - {uuid: GPU-a}\n",
     "line 3: gpu 0: pci_bus_id is missing (give it here or in gpu_defaults)"},
    {GPU_OK "gpus:\n  - {uuid: GPU-a, pci_bus_id: \"07:00\"}\n",
     "line 3: pci_bus_id must look like \"00000000:07:00.0\""},
    {GPU_OK "gpus:\n  - {uuid: GPU-a, pci_bus_id: \"0:1:0.0\", speed: 3}\n",
     "line 3: gpu 0: unknown key \"speed\""},
    {GPU_OK "gpus:\n  - {uuid: GPU-a, pci_bus_id: \"0:1:0.0\", vbios_version: "
            "\"96.00.99.00.01.96.00.99.00.01.96.00\"}\n",
     "line 3: vbios_version is too long (at most 31 characters)"},
    {GPU_OK "gpus:\n  - {uuid: GPU-a, pci_bus_id: \"0:1:0.0\", vbios_version: [1]}\n",
     "line 3: vbios_version must be a string, not a list"},
    {GPU_OK "gpus:\n  - {uuid: GPU-a, pci_bus_id: \"0:1:0.0\"}\n  - {uuid: GPU-a, pci_bus_id: "
            "\"0:2:0.0\"}\n",
     "line 4: gpu 1 has the same uuid as gpu 0"},
    {GPU_OK "gpus:\n  - {uuid: GPU-a, pci_bus_id: \"0:1:0.0\", compute_capability: eight}\n",
     "line 3: compute_capability must look like \"8.0\", not \"eight\""},
    {GPU_OK "gpus:\n  - {uuid: GPU-a, pci_bus_id: \"0:1:0.0\", memory_reserved_mib: 1000}\n",
     "gpu 0: memory_reserved_mib (1000) must be less than memory_mib (1000)"},
    {GPU_OK "gpus:\n  - {uuid: GPU-a, pci_bus_id: \"0:1:0.0\", mig_enabled: true}\n",
     "gpu 0: mig_enabled needs mig_capable: true"},
    {GPU_OK "gpus:\n  - uuid: GPU-a\n    pci_bus_id: \"0:1:0.0\"\n    mig_capable: true\n"
            "    mig_enabled: true\n    mig_devices:\n"
            "      - {uuid: MIG-1, slices: 4, memory_mib: 100}\n"
            "      - {uuid: MIG-2, slices: 5, memory_mib: 100, gpu_instance_id: 1}\n",
     "gpu 0: the MIG devices use 9 slices, more than a GPU has"},
#define MIG_GPU GPU_OK "gpus:\n  - uuid: GPU-a\n    pci_bus_id: \"0:1:0.0\"\n    mig_capable: true\n" \
                       "    mig_enabled: true\n    mig_devices:\n"
    {MIG_GPU "      - {uuid: MIG-1, slices: 5, memory_mib: 100}\n",
     "gpu 0: MIG device 0 has 5 slices; a GPU instance has 1, 2, 3, 4 or 7"},
    {MIG_GPU "      - {uuid: MIG-1, slices: 2, ci_slices: 1, memory_mib: 100}\n"
             "      - {uuid: MIG-2, slices: 3, memory_mib: 100, compute_instance_id: 1}\n",
     "gpu 0: MIG device 1 is in GPU instance 0 but has 3 slices, not 2 like the others there"},
    {MIG_GPU "      - {uuid: MIG-1, slices: 4, memory_mib: 100, gpu_instance_id: 1}\n"
             "      - {uuid: MIG-2, slices: 4, memory_mib: 100, gpu_instance_id: 2}\n",
     "gpu 0: the MIG devices do not fit on one GPU: no free place for GPU instance 2"},
    {GPU_OK "gpus:\n  - uuid: GPU-a\n    pci_bus_id: \"0:1:0.0\"\n    mig_capable: true\n"
            "    mig_enabled: true\n    mig_devices:\n      - {uuid: MIG-1, slices: 1}\n",
     "line 8: gpu 0 MIG device 0: memory_mib is missing"},
    {GPU_OK "gpus:\n  - {uuid: GPU-a, pci_bus_id: \"0:1:0.0\"}\ntopology:\n  nvlinks: [[0, 1, 2]]\n",
     "line 5: GPU index must be a whole number from 0 to 0, not \"1\""},
    {GPU_OK "gpus:\n  - {uuid: GPU-a, pci_bus_id: \"0:1:0.0\"}\n  - {uuid: GPU-b, pci_bus_id: "
            "\"0:2:0.0\"}\ntopology:\n  nvlinks: [[0, 1, 12], [1, 0, 3]]\n",
     "line 6: GPUs 1 and 0 are listed twice"},
    {GPU_OK "gpus:\n  - {uuid: GPU-a, pci_bus_id: \"0:1:0.0\"}\n  - {uuid: GPU-b, pci_bus_id: "
            "\"0:2:0.0\"}\ntopology:\n  nvlinks: [[0, 1, 12]]\n  nvswitch_links: [4, 4]\n",
     "a GPU has more than 18 NVLinks"},
    {GPU_OK "gpus:\n  - {uuid: GPU-a, pci_bus_id: \"0:1:0.0\"}\ntopology:\n  pcie_default: far\n",
     "line 5: PCIe level must be one of internal, single, multiple, hostbridge, node, system, "
     "not \"far\""},
    {"cuda_driver_version: 12\n", "line 1: cuda_driver_version must be a whole number from 1000"},
    {GPU_OK "gpus:\n  - {uuid: GPU-a, pci_bus_id: \"0:1:0.0\", fan_speed_pct: 101}\n",
     "bad.yaml line 3: fan_speed_pct must be"},
};

static void bad_nodes_fail_with_file_and_line(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_nodes / sizeof bad_nodes[0]; i++) {
        struct gpulet_error err = {0};
        int rc = sim_node_parse("bad.yaml", bad_nodes[i].text, strlen(bad_nodes[i].text), &node,
                                &err);
        if (rc != -1)
            fail_msg("case %zu parsed but should fail with: %s", i, bad_nodes[i].expect);
        if (strstr(err.msg, bad_nodes[i].expect) == NULL)
            fail_msg("case %zu: expected \"%s\" in \"%s\"", i, bad_nodes[i].expect, err.msg);
        assert_int_equal(err.kind, GPULET_ERR_INPUT);
    }
}

static void load_fixture(const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.yaml", SIM_NODES_DIR, name);
    struct gpulet_error err = {0};
    if (sim_node_load(path, &node, &err) < 0)
        fail_msg("%s", err.msg);
}

static void state_file_overrides_and_events(void **state)
{
    (void)state;
    load_fixture("a100-mig");
    const char *text = "frozen_seconds: 30\n"
                       "gpus:\n"
                       "  1:\n"
                       "    lost: true\n"
                       "    temperature_c: 91\n"
                       "    processes: [{pid: 42, used_mib: 1000, mig: 2}]\n"
                       "events:\n"
                       "  - {gpu: 0, xid: 79}\n"
                       "  - {gpu: 1, xid: 31, gpu_instance_id: 9, compute_instance_id: 0}\n"
                       "  - {gpu: 0, type: double_bit_ecc}\n";
    struct gpulet_error err = {0};
    if (sim_state_parse("s.yaml", text, strlen(text), &node, &sim_state, &err) < 0)
        fail_msg("%s", err.msg);
    assert_true(sim_state.frozen);
    assert_true(sim_state.gpus[1].lost);
    assert_false(sim_state.gpus[0].lost);
    assert_true(sim_state.gpus[1].has[SIM_SET_TEMPERATURE]);
    assert_int_equal(sim_state.gpus[1].value[SIM_SET_TEMPERATURE], 91);
    assert_int_equal(sim_state.gpus[1].process_count, 1);
    assert_int_equal(sim_state.gpus[1].processes[0].mig, 2);
    assert_int_equal(sim_state.event_count, 3);
    assert_int_equal(sim_state.events[0].data, 79);
    assert_int_equal(sim_state.events[1].gpu_instance_id, 9);
    assert_int_equal(sim_state.events[2].type, 0x2);
    assert_int_equal(sim_state.events[0].gpu_instance_id, 0xFFFFFFFFU);
}

static const struct bad_case bad_states[] = {
    {"gpus:\n  5: {lost: true}\n", "s.yaml line 2: GPU index must be a whole number from 0 to 1"},
    {"gpus:\n  0: {temperature: 3}\n", "line 2: unknown GPU state key \"temperature\""},
    {"gpus:\n  0: {utilization_pct: 140}\n",
     "line 2: utilization_pct must be a whole number from 0 to 100, not \"140\""},
    {"events:\n  - {gpu: 0}\n", "line 2: an xid event needs an xid number"},
    {"events:\n  - {gpu: 0, type: fire}\n",
     "line 2: event type must be xid, double_bit_ecc or single_bit_ecc"},
    {"gpus:\n  0:\n    processes: [{pid: 1, mig: 7}]\n",
     "line 3: mig must be a whole number from 0 to 6, not \"7\""},
    {"weather: sunny\n", "line 1: state: unknown key \"weather\""},
};

static void bad_states_fail_with_line(void **state)
{
    (void)state;
    load_fixture("a100-mig");
    for (size_t i = 0; i < sizeof bad_states / sizeof bad_states[0]; i++) {
        struct gpulet_error err = {0};
        if (sim_state_parse("s.yaml", bad_states[i].text, strlen(bad_states[i].text), &node,
                            &sim_state, &err) != -1)
            fail_msg("state case %zu parsed but should fail", i);
        if (strstr(err.msg, bad_states[i].expect) == NULL)
            fail_msg("state case %zu: expected \"%s\" in \"%s\"", i, bad_states[i].expect,
                     err.msg);
    }
}

static void absent_state_file_is_empty_state(void **state)
{
    (void)state;
    load_fixture("t4-pcie");
    struct gpulet_error err = {0};
    memset(&sim_state, 0xff, sizeof sim_state);
    assert_int_equal(sim_state_load("/nonexistent/state.yaml", &node, &sim_state, &err), 0);
    assert_int_equal(sim_state.event_count, 0);
    assert_false(sim_state.gpus[0].lost);
}

/* The device state's default path is a fixed name in TMPDIR (often the
 * shared /tmp): a file another user made there must not be taken, nor
 * written, as this user's simulated GPUs. */
static void device_state_of_another_user_is_refused(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip(); /* only root can give a file to another user */
    load_fixture("t4-pcie");
    char dir[] = "/tmp/gpulet-test-dev-XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/node.device", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0666);
    assert_true(fd >= 0);
    assert_int_equal(fchown(fd, 65534, 65534), 0);
    assert_int_equal(fchmod(fd, 0666), 0);
    close(fd);
    setenv("GPULET_SIM_DEVICE_STATE", path, 1);
    char msg[512];
    struct sim_dev_file *f = sim_dev_open(&node, true, msg, sizeof msg);
    unsetenv("GPULET_SIM_DEVICE_STATE");
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    unlink(path);
    rmdir(dir);
    assert_null(f);
    assert_non_null(strstr(msg, "belongs to another user"));
    assert_int_equal(st.st_size, 0); /* not written either */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_fixture_loads),
        cmocka_unit_test(defaults_apply_and_gpus_override),
        cmocka_unit_test(bad_nodes_fail_with_file_and_line),
        cmocka_unit_test(state_file_overrides_and_events),
        cmocka_unit_test(bad_states_fail_with_line),
        cmocka_unit_test(absent_state_file_is_empty_state),
        cmocka_unit_test(device_state_of_another_user_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
