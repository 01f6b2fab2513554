/* The device plugin's pure parts: resources, preferred allocation (the
 * table from the DGX-1 reference and the other fixtures), Allocate. */
#include "helpers.h"

#include <dirent.h>
#include <limits.h>
#include <sys/stat.h>

#include "cuda/cuda_limits.h"
#include "fileio/fileio.h"
#include "plugin/plugin_internal.h"

#include "sim_inventory.h"

static struct devices_pool *build(const struct config *cfg, size_t *count)
{
    struct devices_pool *res;
    struct gpulet_error err = {0};
    if (devices_catalog_build(inv, cfg, &res, count, &err) < 0)
        fail_msg("%s", err.msg);
    return res;
}

/* The tables name devices by GPU index ("2", "2::1", "3::s0", MIG "1:0");
 * the plugin advertises UUIDs whatever deviceIDStrategy says. Names made
 * here live in a pool that the tests cycle through. */
static char *by_uuid(const char *name)
{
    static char pool[1024][DEVICES_ID_MAX];
    static size_t next;
    char *out = pool[next++ % 1024], *end;
    unsigned long gpu = strtoul(name, &end, 10);
    if (end == name || gpu >= inv->gpu_count) { /* not a device: as it is */
        snprintf(out, DEVICES_ID_MAX, "%s", name);
        return out;
    }
    const char *uuid = inv->gpus[gpu].uuid;
    if (end[0] == ':' && end[1] != ':')
        uuid = inv->gpus[gpu].migs[strtoul(end + 1, &end, 10)].uuid;
    snprintf(out, DEVICES_ID_MAX, "%s%s", uuid, end);
    return out;
}

static char *by_index(const char *id)
{
    static char pool[1024][DEVICES_ID_MAX];
    static size_t next;
    char *out = pool[next++ % 1024];
    for (size_t g = 0; g < inv->gpu_count; g++)
        for (size_t m = 0; m <= inv->gpus[g].mig_count; m++) {
            bool gpu = m == inv->gpus[g].mig_count;
            const char *uuid = gpu ? inv->gpus[g].uuid : inv->gpus[g].migs[m].uuid;
            size_t len = strlen(uuid);
            if (strncmp(id, uuid, len) != 0 || (id[len] != '\0' && id[len] != ':'))
                continue;
            if (gpu)
                snprintf(out, DEVICES_ID_MAX, "%zu%s", g, id + len);
            else
                snprintf(out, DEVICES_ID_MAX, "%zu:%u%s", g, inv->gpus[g].migs[m].index, id + len);
            return out;
        }
    snprintf(out, DEVICES_ID_MAX, "%s", id);
    return out;
}

static void to_uuids(char **ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ids[i] = by_uuid(ids[i]);
}

/* devices_preferred with the tables' names in and out. */
static int preferred_ix(const struct devices_pool *r, char **available, size_t n_available,
                        char **must, size_t n_must, int size, const struct timespec *until,
                        char **out, size_t *n_out)
{
    char *a[64], *m[64];
    assert_true(n_available <= 64 && n_must <= 64);
    for (size_t i = 0; i < n_available; i++)
        a[i] = available[i];
    for (size_t i = 0; i < n_must; i++)
        m[i] = must[i];
    to_uuids(a, n_available);
    to_uuids(m, n_must);
    int rc = devices_preferred(r, inv, a, n_available, m, n_must, size, until, out, n_out);
    for (size_t i = 0; i < *n_out; i++)
        out[i] = by_index(out[i]);
    return rc;
}

/* Preferred allocation with index IDs: "0,3,1" -> "0,3" */
static void prefer(const struct devices_pool *r, const char *available, const char *must,
                   int size, char *answer, size_t len)
{
    char av[256], mu[256];
    snprintf(av, sizeof av, "%s", available);
    snprintf(mu, sizeof mu, "%s", must);
    char *a[64], *m[64], *out[64];
    size_t na = 0, nm = 0, nout = 0;
    char *save;
    for (char *t = strtok_r(av, ",", &save); t; t = strtok_r(NULL, ",", &save))
        a[na++] = t;
    for (char *t = strtok_r(mu, ",", &save); t; t = strtok_r(NULL, ",", &save))
        m[nm++] = t;
    assert_int_equal(preferred_ix(r, a, na, m, nm, size, NULL, out, &nout), 0);
    /* sorted numerically, so answers compare as sets */
    int ids[64];
    for (size_t i = 0; i < nout; i++)
        ids[i] = atoi(out[i]);
    for (size_t i = 0; i < nout; i++)
        for (size_t j = i + 1; j < nout; j++)
            if (ids[j] < ids[i]) {
                int t = ids[i];
                ids[i] = ids[j];
                ids[j] = t;
            }
    answer[0] = '\0';
    for (size_t i = 0; i < nout; i++)
        snprintf(answer + strlen(answer), len - strlen(answer), "%s%d", i ? "," : "", ids[i]);
}

struct prefer_case {
    const char *available, *must;
    int size;
    const char *want;
};

/* Checks the cases on the node loaded last. */
static void check_table(const char *node, const struct prefer_case *cases, size_t n)
{
    struct config cfg;
    config_defaults(&cfg);
    cfg.device_id_strategy = DEVICE_ID_INDEX;
    size_t count;
    struct devices_pool *res = build(&cfg, &count);
    assert_int_equal(count, 1);
    for (size_t i = 0; i < n; i++) {
        char got[256];
        prefer(&res[0], cases[i].available, cases[i].must, cases[i].size, got, sizeof got);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("%s: available {%s} must {%s} size %d: got {%s}, want {%s}", node,
                     cases[i].available, cases[i].must, cases[i].size, got, cases[i].want);
    }
    devices_catalog_free(res, count);
}

static void run_table(const char *node, const struct prefer_case *cases, size_t n)
{
    load(node);
    check_table(node, cases, n);
}

static void preferred_on_dgx1(void **state)
{
    (void)state;
    static const struct prefer_case cases[] = {
        /* the answers given in the reference */
        {"0,3,1", "", 2, "0,3"},
        {"0,1,2,3,4,5,6,7", "4", 1, "4"},
        {"0,1,2,3,4,5,6,7", "", 8, "0,1,2,3,4,5,6,7"},
        /* the best pairings of all eight, {0,3} {1,2} {4,7} {5,6} and
         * {2,3} {6,7} {0,4} {1,5}, tie at 920; the second holds the best
         * set, {2,3} (250: two NVLinks, one PCIe switch) */
        {"0,1,2,3,4,5,6,7", "", 2, "2,3"},
        {"2,3,6,7", "", 2, "2,3"},
        {"0,1,2,3,4,5,6,7", "0", 2, "0,3"},
        {"0,1,2,3,4,5,6,7", "5", 2, "5,6"},
        /* quads: the halves of the mesh */
        {"0,1,2,3,4,5,6,7", "", 4, "0,1,2,3"},
        {"0,1,2,3,4,5,6,7", "7", 4, "4,5,6,7"},
        /* issue 13: a required GPU beside the padding (A), the padding in
         * one set (B), the best set of the best partition (C) */
        {"0,1,2", "0", 2, "0,1"},
        {"0,1,2,3,4,5,6,7", "", 5, "0,1,2,3,4"},
        {"0,1,2,3,4,5,6,7", "", 6, "0,1,2,3,4,5"},
        {"0,1,2,7", "", 2, "1,2"},
        {"0,2,4,5", "", 2, "4,5"},
        {"0,4,5,6", "", 2, "5,6"},
        /* impossible requests give no answer */
        {"0,1,2", "5", 2, ""},
        {"0,1,2", "0,1,2", 2, ""},
        {"0,1", "", 3, ""},
        {"0,1", "", 0, ""},
        /* unknown IDs (a GPU gone) are skipped, not fatal */
        {"0,9,3", "", 2, "0,3"},
    };
    run_table("dgx1-v100", cases, sizeof cases / sizeof cases[0]);
}

static void preferred_on_other_nodes(void **state)
{
    (void)state;
    /* NVSwitch: every pair has 12 NVLinks, PCIe decides: 0-1 share switches */
    static const struct prefer_case a100[] = {
        {"0,1,2,3,4,5,6,7", "", 2, "0,1"},
        {"0,2,4,6", "", 2, "0,2"},
        {"1,2,4,5", "4", 2, "4,5"},
        {"0,1,2,3,4,5,6,7", "", 4, "0,1,2,3"},
        {"0,1,2,3,4,5,6,7", "6", 4, "4,5,6,7"},
        {"0,2,3,4", "", 2, "2,3"},
    };
    run_table("dgx-a100", a100, sizeof a100 / sizeof a100[0]);
    /* T4: no NVLink; GPUs on one socket go together */
    static const struct prefer_case t4[] = {
        {"0,1,2,3", "", 2, "0,1"},
        {"0,2,3", "", 2, "2,3"},
        {"0,1,2,3", "1", 2, "0,1"},
        {"1,2", "", 2, "1,2"},
    };
    run_table("t4-pcie", t4, sizeof t4 / sizeof t4[0]);
}

static void resources_for_mig_and_sharing(void **state)
{
    (void)state;
    load("a100-mig");
    struct config cfg;
    config_defaults(&cfg);
    size_t count;
    struct devices_pool *res = build(&cfg, &count);
    assert_int_equal(count, 1); /* none: whole GPUs */
    assert_int_equal(res[0].count, 2);
    devices_catalog_free(res, count);

    cfg.mig_strategy = MIG_STRATEGY_MIXED;
    res = build(&cfg, &count);
    assert_int_equal(count, 3);
    assert_string_equal(res[0].name, "nvidia.com/mig-1g.5gb");
    assert_int_equal(res[0].count, 8);
    assert_string_equal(res[1].name, "nvidia.com/mig-2g.10gb");
    assert_string_equal(res[2].name, "nvidia.com/mig-3g.20gb");
    assert_string_equal(res[2].socket_name, "nvidia-mig-3g.20gb.sock");
    devices_catalog_free(res, count);

    /* sharing a MIG profile, renamed */
    cfg.sharing = SHARING_TIME_SLICING;
    cfg.shared_count = 1;
    struct shared_resource *s = &cfg.shared[0];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "nvidia.com/mig-1g.5gb");
    snprintf(s->rename, sizeof s->rename, "nvidia.com/small");
    s->replicas = 3;
    s->selector_count = 1;
    snprintf(s->selectors[0], sizeof s->selectors[0], "1:2");
    res = build(&cfg, &count);
    assert_int_equal(count, 4);
    assert_string_equal(res[3].name, "nvidia.com/small");
    assert_int_equal(res[3].count, 3);
    assert_int_equal(res[3].devices[0].gpu, 1);
    assert_int_equal(res[3].devices[0].mig, 2);
    assert_string_equal(res[0].name, "nvidia.com/mig-1g.5gb");
    assert_int_equal(res[0].count, 7); /* the shared one moved out */
    devices_catalog_free(res, count);

    cfg.mig_strategy = MIG_STRATEGY_SINGLE;
    cfg.shared_count = 0;
    struct gpulet_error err = {0};
    assert_int_equal(devices_catalog_build(inv, &cfg, &res, &count, &err), -1);
    assert_contains(err.msg, "use migStrategy mixed");
}

static void resources_by_model(void **state)
{
    (void)state;
    load("mixed-t4-v100"); /* T4, V100, T4, V100 */
    struct config cfg;
    config_defaults(&cfg);
    cfg.gpu_name_count = 2;
    snprintf(cfg.gpu_names[0].pattern, sizeof cfg.gpu_names[0].pattern, "*V100*");
    snprintf(cfg.gpu_names[0].name, sizeof cfg.gpu_names[0].name, "nvidia.com/v100");
    snprintf(cfg.gpu_names[1].pattern, sizeof cfg.gpu_names[1].pattern, "*");
    snprintf(cfg.gpu_names[1].name, sizeof cfg.gpu_names[1].name, "nvidia.com/any");
    size_t count;
    struct devices_pool *res = build(&cfg, &count);
    assert_int_equal(count, 2); /* first match wins: the V100s are not "any" */
    assert_string_equal(res[0].name, "nvidia.com/any");
    assert_int_equal(res[0].count, 2);
    assert_int_equal(res[0].devices[0].gpu, 0);
    assert_int_equal(res[0].devices[1].gpu, 2);
    assert_string_equal(res[1].name, "nvidia.com/v100");
    assert_string_equal(res[1].socket_name, "nvidia-v100.sock");
    assert_int_equal(res[1].devices[0].gpu, 1);
    assert_int_equal(res[1].devices[1].gpu, 3);
    devices_catalog_free(res, count);

    /* unmatched GPUs stay nvidia.com/gpu; sharing applies to the model
     * resource, to the chosen GPU only */
    cfg.gpu_name_count = 1;
    cfg.sharing = SHARING_TIME_SLICING;
    cfg.shared_count = 1;
    struct shared_resource *s = &cfg.shared[0];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "nvidia.com/v100");
    snprintf(s->rename, sizeof s->rename, "nvidia.com/v100.shared");
    s->replicas = 4;
    s->selector_count = 1;
    snprintf(s->selectors[0], sizeof s->selectors[0], "3");
    res = build(&cfg, &count);
    assert_int_equal(count, 3);
    assert_string_equal(res[0].name, "nvidia.com/gpu");
    assert_int_equal(res[0].count, 2);
    assert_string_equal(res[1].name, "nvidia.com/v100");
    assert_int_equal(res[1].count, 1);
    assert_int_equal(res[1].devices[0].gpu, 1);
    assert_string_equal(res[2].name, "nvidia.com/v100.shared");
    assert_int_equal(res[2].count, 4);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(res[2].devices[i].gpu, 3);
    devices_catalog_free(res, count);

    /* MIG profiles by pattern, joined under one name */
    load("a100-mig");
    config_defaults(&cfg);
    cfg.mig_strategy = MIG_STRATEGY_MIXED;
    cfg.mig_name_count = 1;
    snprintf(cfg.mig_names[0].pattern, sizeof cfg.mig_names[0].pattern, "[12]g.*");
    snprintf(cfg.mig_names[0].name, sizeof cfg.mig_names[0].name, "nvidia.com/mig-small");
    res = build(&cfg, &count);
    assert_int_equal(count, 2);
    assert_string_equal(res[0].name, "nvidia.com/mig-3g.20gb");
    assert_string_equal(res[1].name, "nvidia.com/mig-small");
    assert_int_equal(res[1].count, 9);
    devices_catalog_free(res, count);
}

static void allocate_answers(void **state)
{
    (void)state;
    load("t4-pcie");
    struct config cfg;
    config_defaults(&cfg);
    cfg.device_list_strategies = DEVICE_LIST_ENVVAR | DEVICE_LIST_CDI_CRI;
    size_t count;
    struct devices_pool *res = build(&cfg, &count);
    struct arena a = {0};
    V1beta1__ContainerAllocateResponse out;
    struct gpulet_error err = {0};
    char *ids[] = {res[0].devices[3].id, res[0].devices[1].id, res[0].devices[3].id};
    assert_int_equal(plugin_allocate_container(&res[0], &cfg, ids, 3, 1, &a, &out, &err), 0);
    assert_int_equal(out.n_envs, 1);
    char want[512];
    snprintf(want, sizeof want, "%s,%s", res[0].devices[3].id, res[0].devices[1].id);
    assert_string_equal(out.envs[0]->value, want);
    assert_int_equal(out.n_cdi_devices, 2);
    arena_free(&a);

    char *bad[] = {"GPU-x"};
    assert_int_equal(plugin_allocate_container(&res[0], &cfg, bad, 1, 2, &a, &out, &err), -1);
    assert_string_equal(err.msg, "unknown device ID \"GPU-x\" for nvidia.com/gpu");
    arena_free(&a);
    devices_catalog_free(res, count);
}

static struct config shared_config(unsigned int replicas, bool packed)
{
    struct config cfg;
    config_defaults(&cfg);
    cfg.device_id_strategy = DEVICE_ID_INDEX;
    cfg.sharing = SHARING_TIME_SLICING;
    cfg.shared_count = 1;
    memset(&cfg.shared[0], 0, sizeof cfg.shared[0]);
    snprintf(cfg.shared[0].name, sizeof cfg.shared[0].name, "nvidia.com/gpu");
    cfg.shared[0].replicas = replicas;
    cfg.shared[0].all_devices = true;
    cfg.replicas_packed = packed;
    return cfg;
}

static void replicas_distributed_and_packed(void **state)
{
    (void)state;
    load("t4-pcie");
    for (int packed = 0; packed < 2; packed++) {
        struct config cfg = shared_config(4, packed);
        size_t count;
        struct devices_pool *res = build(&cfg, &count);
        /* GPU 0 has one replica left, GPU 1 three, GPUs 2 and 3 all four */
        char *avail[] = {"0::3", "1::1", "1::2", "1::3", "2::0", "2::1", "2::2", "2::3",
                         "3::0", "3::1", "3::2", "3::3"};
        char *out[12];
        size_t n;
        assert_int_equal(preferred_ix(&res[0], avail, 12, NULL, 0, 2, NULL, out, &n), 0);
        assert_int_equal(n, 2);
        if (!packed) {
            /* two replicas on two different idle GPUs */
            assert_true(out[0][0] != out[1][0]);
            assert_true(out[0][0] >= '2' && out[1][0] >= '2');
        } else {
            /* fill the busiest GPU (0: one left), then the next busiest (1) */
            assert_true((out[0][0] == '0' && out[1][0] == '1') ||
                        (out[0][0] == '1' && out[1][0] == '0'));
        }
        devices_catalog_free(res, count);
    }
}

/* The replica policy pick by pick over every pair of candidates, as
 * NVIDIA's plugin states it when distributed (the fewest replicas taken:
 * total minus still free) and gpulet's packed one: the answers the
 * grouped version must give. */
static void spread_reference(const struct devices_pool *r, const struct devices_device **cand,
                             const bool *required, size_t n, size_t size, bool *chosen)
{
    size_t have = 0;
    for (size_t i = 0; i < n; i++) {
        chosen[i] = required[i];
        have += chosen[i];
    }
    while (have < size) {
        long best = 0;
        bool any = false;
        size_t pick = 0;
        for (size_t i = 0; i < n; i++) {
            if (chosen[i])
                continue;
            long free_here = 0, total = 0;
            bool mine = false;
            for (size_t j = 0; j < n; j++) {
                bool same = cand[j]->gpu == cand[i]->gpu && cand[j]->mig == cand[i]->mig;
                free_here += same && !chosen[j];
                mine = mine || (same && chosen[j]);
            }
            for (size_t j = 0; j < r->count; j++)
                total += r->devices[j].gpu == cand[i]->gpu && r->devices[j].mig == cand[i]->mig;
            long spread = (long)r->count * 2;
            long score = r->packed ? -free_here + (mine ? spread : 0) : -(total - free_here);
            if (!any || score > best) {
                any = true;
                best = score;
                pick = i;
            }
        }
        chosen[pick] = true;
        have++;
    }
}

static void replicas_same_answers_as_the_pairwise_policy(void **state)
{
    (void)state;
    load("dgx-a100");
    unsigned int seed = 12;
    for (int packed = 0; packed < 2; packed++) {
        struct config cfg = shared_config(4, packed);
        size_t count;
        struct devices_pool *res = build(&cfg, &count);
        const struct devices_pool *r = &res[0];
        for (int round = 0; round < 300; round++) {
            /* a random order of a random subset, some of it required */
            const struct devices_device *cand[32];
            char *avail[32], *must[32], *out[32];
            bool required[32] = {0}, chosen[32];
            size_t n = 0, n_must = 0, n_out = 0;
            size_t order[32];
            for (size_t i = 0; i < r->count; i++)
                order[i] = i;
            for (size_t i = r->count - 1; i > 0; i--) {
                size_t j = (size_t)rand_r(&seed) % (i + 1), t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
            size_t take = 2 + (size_t)rand_r(&seed) % (r->count - 1);
            for (size_t i = 0; i < take; i++) {
                cand[n] = &r->devices[order[i]];
                avail[n] = (char *)cand[n]->id;
                if (rand_r(&seed) % 8 == 0) {
                    required[n] = true;
                    must[n_must++] = avail[n];
                }
                n++;
            }
            size_t size = n_must + (size_t)rand_r(&seed) % (n - n_must + 1);
            if (size == 0 || size == n)
                continue;
            spread_reference(r, cand, required, n, size, chosen);
            assert_int_equal(devices_preferred(r, inv, avail, n, must, n_must, (int)size, NULL,
                                               out, &n_out),
                             0);
            assert_int_equal(n_out, size);
            for (size_t i = 0, k = 0; i < n; i++)
                if (chosen[i])
                    assert_string_equal(out[k++], avail[i]);
        }
        devices_catalog_free(res, count);
    }
}

/* 8 GPUs x 1024 replicas, half of them asked for: the grouped policy
 * answers at once (it took the pairwise one tens of seconds). */
static void many_replicas_answer_quickly(void **state)
{
    (void)state;
    load("dgx-a100");
    struct config cfg = shared_config(1024, false);
    size_t count;
    struct devices_pool *res = build(&cfg, &count);
    const struct devices_pool *r = &res[0];
    assert_int_equal(r->count, 8192);
    char **avail = calloc(r->count, sizeof *avail), **out = calloc(r->count, sizeof *out);
    for (size_t i = 0; i < r->count; i++)
        avail[i] = (char *)r->devices[r->count - 1 - i].id;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t n_out = 0;
    assert_int_equal(devices_preferred(r, inv, avail, r->count, avail, 3, 4096, NULL, out, &n_out),
                     0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(n_out, 4096);
    unsigned int per_gpu[8] = {0};
    for (size_t i = 0; i < n_out; i++)
        per_gpu[devices_find(r, out[i])->gpu]++;
    for (int g = 0; g < 8; g++)
        assert_int_equal(per_gpu[g], 512); /* distributed evenly */
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    assert_true(ms < 1000);
    free(avail);
    free(out);
    devices_catalog_free(res, count);
}

/* 16 GPUs: PCIe only, one switch per pair, one NUMA node per half. */
static void load_sixteen(char *dir, size_t len)
{
    temp_dir(dir, len);
    char path[4200], text[4096];
    snprintf(path, sizeof path, "%s/sixteen.yaml", dir);
    int at = snprintf(text, sizeof text,
                      "name: sixteen\nmachine: test\ndriver_version: \"550.90.07\"\n"
                      "nvml_version: \"12.550.90.07\"\ncuda_driver_version: 12040\n"
                      "gpu_defaults:\n  name: NVIDIA A100-SXM4-80GB\n  memory_mib: 81920\n"
                      "  compute_capability: \"8.0\"\ngpus:\n");
    for (int i = 0; i < 16; i++)
        at += snprintf(text + at, sizeof text - (size_t)at,
                       "  - uuid: GPU-00000000-0000-0000-0000-%012d\n"
                       "    pci_bus_id: \"00000000:%02X:00.0\"\n    numa_node: %d\n",
                       i, 16 + i * 8, i / 8);
    snprintf(text + at, sizeof text - (size_t)at,
             "topology:\n  pcie_default: system\n  pcie:\n    - level: single\n"
             "      groups: [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11], [12, 13],"
             " [14, 15]]\n    - level: node\n      groups: [[0, 1, 2, 3, 4, 5, 6, 7],"
             " [8, 9, 10, 11, 12, 13, 14, 15]]\n");
    write_file(path, text);
    if (inv)
        gpu_inventory_free(inv);
    if (nvml)
        nvml_close(nvml);
    setenv("GPULET_SIM_NODE", path, 1);
    struct nvml_options opts = {.library_path = SIM_LIB_CURRENT};
    struct gpulet_error err = {0};
    if (nvml_open(&opts, &nvml, &err) < 0 || gpu_inventory_load(nvml, &inv, &err) < 0)
        fail_msg("%s", err.msg);
    unlink(path);
    rmdir(dir);
}

/* Beyond 20,000 partitions (pairs to sevens of 16) the greedy choice
 * answers; eights and nines are still searched in full. */
static void preferred_on_sixteen_gpus(void **state)
{
    (void)state;
    char dir[64];
    load_sixteen(dir, sizeof dir);
    static const struct prefer_case cases[] = {
        {"0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15", "", 2, "0,1"},
        {"0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15", "9", 2, "8,9"},
        {"0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15", "", 4, "0,1,2,3"},
        {"0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15", "", 8, "0,1,2,3,4,5,6,7"},
        {"0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15", "12", 8, "8,9,10,11,12,13,14,15"},
        /* a whole half and one GPU of the other: every such set ties, and the
         * one that comes first wins */
        {"0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15", "15", 9, "0,1,2,3,4,5,6,7,15"},
    };
    check_table("16 GPUs", cases, sizeof cases / sizeof cases[0]);
}

/* A search that runs past its time answers nothing and says so. */
static void preferred_out_of_time(void **state)
{
    (void)state;
    load("dgx-a100");
    struct config cfg;
    config_defaults(&cfg);
    cfg.device_id_strategy = DEVICE_ID_INDEX;
    size_t count;
    struct devices_pool *res = build(&cfg, &count);
    char *avail[] = {"0", "1", "2", "3", "4", "5", "6", "7"}, *out[8];
    size_t n_out = 9;
    struct timespec past;
    clock_gettime(CLOCK_MONOTONIC, &past);
    past.tv_sec -= 1;
    assert_int_equal(preferred_ix(&res[0], avail, 8, NULL, 0, 2, &past, out, &n_out), -1);
    assert_int_equal(n_out, 0);
    struct timespec later = past;
    later.tv_sec += 60;
    assert_int_equal(preferred_ix(&res[0], avail, 8, NULL, 0, 2, &later, out, &n_out), 0);
    assert_int_equal(n_out, 2);
    devices_catalog_free(res, count);
}

static struct shared_resource *add_slices(struct config *cfg, const char *rename,
                                          unsigned int replicas, unsigned long long bytes,
                                          const char *selector)
{
    struct shared_resource *s = &cfg->shared[cfg->shared_count];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "nvidia.com/gpu");
    snprintf(s->rename, sizeof s->rename, "%s", rename);
    s->slices = rename[0] != '\0' || replicas || bytes;
    s->replicas = replicas;
    s->slice_bytes = bytes;
    s->line = 10 + cfg->shared_count;
    s->size_line = s->line + 1;
    s->index = cfg->shared_count;
    s->selector_count = 1;
    snprintf(s->selectors[0], sizeof s->selectors[0], "%s", selector);
    cfg->shared_count++;
    return s;
}

/* t4-pcie (4 x 15 GiB, 257 MiB of each reserved by the driver): GPU 0
 * time-shared, 1 in quarters, 2 and 3 in 4 GiB slices (three fit in
 * 15103 MiB). */
static struct config slice_config(void)
{
    struct config cfg;
    config_defaults(&cfg);
    snprintf(cfg.file, sizeof cfg.file, "/etc/gpulet/config.yaml");
    cfg.device_id_strategy = DEVICE_ID_INDEX;
    cfg.sharing = SHARING_TIME_SLICING;
    add_slices(&cfg, "nvidia.com/gpu-4gb", 0, 4ULL << 30, "2");
    add_slices(&cfg, "nvidia.com/gpu-4gb", 0, 4ULL << 30, "3");
    add_slices(&cfg, "nvidia.com/gpu.quarter", 4, 0, "1");
    struct shared_resource *ts = add_slices(&cfg, "", 2, 0, "0");
    ts->slices = false;
    return cfg;
}

static void slices_resources(void **state)
{
    (void)state;
    load("t4-pcie");
    struct config cfg = slice_config();
    size_t count;
    struct devices_pool *res = build(&cfg, &count);
    assert_int_equal(count, 3);
    assert_string_equal(res[0].name, "nvidia.com/gpu");
    assert_int_equal(res[0].sharing, SHARING_TIME_SLICING);
    assert_int_equal(res[0].count, 2);
    assert_string_equal(res[1].name, "nvidia.com/gpu-4gb");
    assert_int_equal(res[1].sharing, SHARING_SLICES);
    assert_int_equal(res[1].count, 6);
    assert_string_equal(by_index(res[1].devices[0].id), "2::s0");
    assert_string_equal(by_index(res[1].devices[5].id), "3::s2");
    assert_true(res[1].devices[5].slice_memory == 4ULL << 30);
    assert_int_equal(res[1].devices[5].slice_share, 3333);
    assert_string_equal(res[2].name, "nvidia.com/gpu.quarter");
    assert_int_equal(res[2].count, 4);
    assert_true(res[2].devices[0].slice_memory == 3775ULL << 20);
    assert_int_equal(res[2].devices[0].slice_share, 2500);
    assert_int_equal(res[0].devices[0].slice_share, 0);
    devices_catalog_free(res, count);

    static const struct {
        const char *rename, *selector, *expect;
        unsigned long long bytes;
    } bad[] = {
        {"nvidia.com/gpu-16gb", "2", "/etc/gpulet/config.yaml line 11: "
         "sharing.slices.resources[0].memory: slices of 16384 MiB are bigger than the 15103 MiB "
         "GPU 2 can hand out (15360 MiB less 257 MiB the driver reserves)", 16ULL << 30},
        /* the whole memory would fit one; what the driver can hand out does not */
        {"nvidia.com/gpu-15gb", "2", "slices of 15360 MiB are bigger than the 15103 MiB GPU 2 can "
         "hand out", 15ULL << 30},
        {"nvidia.com/gpu-tiny", "2", "line 11: sharing.slices.resources[0].memory: GPU 2 would be "
         "cut into 15103 slices, more than 1024", 1ULL << 20},
        {"", "2", "/etc/gpulet/config.yaml line 10: sharing.slices: nvidia.com/gpu would have both "
         "slices and whole or time-shared GPUs", 4ULL << 30},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        config_defaults(&cfg);
        snprintf(cfg.file, sizeof cfg.file, "/etc/gpulet/config.yaml");
        struct shared_resource *s = add_slices(&cfg, bad[i].rename, 0, bad[i].bytes, bad[i].selector);
        s->slices = true;
        struct gpulet_error err = {0};
        assert_int_equal(devices_catalog_build(inv, &cfg, &res, &count, &err), -1);
        assert_int_equal(err.kind, GPULET_ERR_USAGE);
        assert_contains(err.msg, bad[i].expect);
    }
    /* one GPU by index in one entry and by UUID in another */
    config_defaults(&cfg);
    snprintf(cfg.file, sizeof cfg.file, "/etc/gpulet/config.yaml");
    add_slices(&cfg, "nvidia.com/gpu-4gb", 0, 4ULL << 30, "2");
    add_slices(&cfg, "nvidia.com/gpu-4gb", 0, 4ULL << 30, inv->gpus[2].uuid);
    cfg.shared[1].devices_line = 42;
    struct gpulet_error err = {0};
    assert_int_equal(devices_catalog_build(inv, &cfg, &res, &count, &err), -1);
    assert_contains(err.msg, "line 42: sharing.slices.resources[1].devices: GPU 2 (");
    assert_contains(err.msg, "is already shared by the entry at line 10");
}

static void slices_preferred(void **state)
{
    (void)state;
    load("t4-pcie");
    for (int packed = 0; packed < 2; packed++) {
        struct config cfg = slice_config();
        cfg.replicas_packed = packed;
        size_t count;
        struct devices_pool *res = build(&cfg, &count);
        const struct devices_pool *r = &res[1];
        /* GPU 2 has two slices free, GPU 3 three */
        char *avail[] = {"2::s1", "3::s0", "2::s2", "3::s1", "3::s2"};
        char *out[5];
        size_t n;
        /* two slices: both on GPU 2, the tightest fit, whatever the policy */
        assert_int_equal(preferred_ix(r, avail, 5, NULL, 0, 2, NULL, out, &n), 0);
        assert_int_equal(n, 2);
        assert_true(out[0][0] == '2' && out[1][0] == '2');
        /* three: GPU 3 alone holds them */
        assert_int_equal(preferred_ix(r, avail, 5, NULL, 0, 3, NULL, out, &n), 0);
        assert_int_equal(n, 3);
        for (size_t i = 0; i < n; i++)
            assert_int_equal(out[i][0], '3');
        /* four: all of GPU 3, then one of GPU 2 */
        assert_int_equal(preferred_ix(r, avail, 5, NULL, 0, 4, NULL, out, &n), 0);
        assert_int_equal(n, 4);
        size_t on3 = 0;
        for (size_t i = 0; i < n; i++)
            on3 += out[i][0] == '3';
        assert_int_equal(on3, 3);
        /* two with one required on GPU 3: the other joins it there */
        char *must[] = {"3::s2"};
        assert_int_equal(preferred_ix(r, avail, 5, must, 1, 2, NULL, out, &n), 0);
        assert_int_equal(n, 2);
        assert_true(out[0][0] == '3' && out[1][0] == '3');
        /* one: spread to the freest GPU, or packed onto the busiest */
        assert_int_equal(preferred_ix(r, avail, 5, NULL, 0, 1, NULL, out, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(out[0][0], packed ? '2' : '3');
        devices_catalog_free(res, count);
    }
}

/* GPUs of different sizes hold different numbers of slices: a single
 * slice goes where most are free, not where fewest are taken (NVIDIA's
 * rule for replicas, which all GPUs hold equally many of). */
static void single_slice_goes_where_most_are_free(void **state)
{
    (void)state;
    load("mixed-t4-v100"); /* GPU 0 a T4 (15 GiB), GPU 1 a V100 (32 GiB) */
    struct config cfg;
    config_defaults(&cfg);
    cfg.device_id_strategy = DEVICE_ID_INDEX;
    cfg.sharing = SHARING_TIME_SLICING;
    add_slices(&cfg, "nvidia.com/gpu-5gb", 0, 5ULL << 30, "0");
    add_slices(&cfg, "nvidia.com/gpu-5gb", 0, 5ULL << 30, "1");
    size_t count;
    struct devices_pool *res = build(&cfg, &count);
    const struct devices_pool *r = NULL;
    for (size_t i = 0; i < count; i++)
        if (strcmp(res[i].name, "nvidia.com/gpu-5gb") == 0)
            r = &res[i];
    assert_non_null(r);
    /* slices are cut from what the driver hands out: the T4's 15103 MiB
     * hold 2, the V100's 32438 MiB 6 */
    assert_int_equal(r->count, 2 + 6);
    /* the T4 has 2 free, none taken; the V100 3 free, 3 taken */
    char *avail[] = {"0::s0", "0::s1", "1::s3", "1::s4", "1::s5"};
    char *out[5];
    size_t n;
    assert_int_equal(preferred_ix(r, avail, 5, NULL, 0, 1, NULL, out, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(out[0][0], '1');
    devices_catalog_free(res, count);
}

static size_t folders_in(const char *dir)
{
    DIR *d = opendir(dir);
    size_t n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static const char *env_of(const V1beta1__ContainerAllocateResponse *out, const char *key)
{
    for (size_t i = 0; i < out->n_envs; i++)
        if (strcmp(out->envs[i]->key, key) == 0)
            return out->envs[i]->value;
    return NULL;
}

static const void *held_by_nobody(const char *resource, const char *id, void *user)
{
    (void)resource;
    (void)id;
    (void)user;
    return NULL;
}

static void slices_allocate(void **state)
{
    (void)state;
    load("t4-pcie");
    struct config cfg = slice_config();
    char dir[64], lib[128], alloc[128];
    temp_dir(dir, sizeof dir);
    snprintf(cfg.state_dir, sizeof cfg.state_dir, "%s/state", dir);
    snprintf(lib, sizeof lib, "%s/libgpulet-cuda.so", dir);
    snprintf(cfg.cuda_interposer, sizeof cfg.cuda_interposer, "%s", lib);
    snprintf(alloc, sizeof alloc, "%s/state/alloc", dir);
    size_t count;
    struct devices_pool *res = build(&cfg, &count);
    struct arena a = {0};
    V1beta1__ContainerAllocateResponse out;
    struct gpulet_error err = {0};
    char *ids[] = {"3::s1", "2::s2", "3::s0"};
    to_uuids(ids, 3);
    /* no interposer on the host: refused, saying what to do */
    assert_int_equal(plugin_allocate_container(&res[1], &cfg, ids, 3, 1, &a, &out, &err), -1);
    assert_contains(err.msg, "install it (gpulet runtime install) or give its path");
    arena_free(&a);
    write_file(lib, "not really a library");
    for (int strategies = 0; strategies < 4; strategies++) {
        cfg.device_list_strategies = 1u << strategies;
        assert_int_equal(plugin_allocate_container(&res[1], &cfg, ids, 3, 1, &a, &out, &err), 0);
        if (strategies == 0)
            assert_string_equal(env_of(&out, "NVIDIA_VISIBLE_DEVICES"), "2,3"); /* GPU order */
        assert_string_equal(env_of(&out, "GPULET_CUDA_MEMORY_LIMIT_0"), "4294967296");
        assert_string_equal(env_of(&out, "GPULET_CUDA_COMPUTE_SHARE_0"), "33.33");
        assert_string_equal(env_of(&out, "GPULET_CUDA_MEMORY_LIMIT_1"), "8589934592");
        assert_string_equal(env_of(&out, "GPULET_CUDA_COMPUTE_SHARE_1"), "66.66");
        assert_string_equal(env_of(&out, "GPULET_CUDA_STATE_DIR"), "/run/gpulet/cuda");
        size_t base = strategies == 1 ? 2 : 0; /* volume-mounts: one per GPU first */
        assert_int_equal(out.n_mounts, base + 4);
        assert_string_equal(out.mounts[base]->host_path, lib);
        assert_string_equal(out.mounts[base]->container_path, "/usr/lib/gpulet/libgpulet-cuda.so");
        assert_true(out.mounts[base]->read_only);
        assert_string_equal(out.mounts[base + 1]->container_path, "/etc/ld.so.preload");
        assert_true(out.mounts[base + 1]->read_only);
        assert_string_equal(out.mounts[base + 2]->container_path, "/etc/gpulet/cuda-limits");
        assert_true(out.mounts[base + 2]->read_only);
        assert_string_equal(out.mounts[base + 3]->container_path, "/run/gpulet/cuda");
        assert_false(out.mounts[base + 3]->read_only);
        char *text;
        size_t len;
        if (fileio_read(out.mounts[base + 2]->host_path, 4096, &text, &len, &err) < 0)
            fail_msg("%s", err.msg);
        char want[512];
        snprintf(want, sizeof want,
                 "\nGPULET_CUDA_DEVICE_UUID_0=%s\n"
                 "GPULET_CUDA_MEMORY_LIMIT_0=4294967296\n"
                 "GPULET_CUDA_COMPUTE_SHARE_0=33.33\n"
                 "GPULET_CUDA_DEVICE_UUID_1=%s\n"
                 "GPULET_CUDA_MEMORY_LIMIT_1=8589934592\n"
                 "GPULET_CUDA_COMPUTE_SHARE_1=66.66\n",
                 inv->gpus[2].uuid, inv->gpus[3].uuid);
        assert_contains(text, want);
        free(text);
        if (fileio_read(out.mounts[base + 1]->host_path, 4096, &text, &len, &err) < 0)
            fail_msg("%s", err.msg);
        assert_string_equal(text, "/usr/lib/gpulet/libgpulet-cuda.so\n");
        free(text);
        struct stat st;
        assert_int_equal(stat(out.mounts[base + 3]->host_path, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0777);
        assert_int_equal(stat(alloc, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0700);
        /* the same devices again: the earlier folder is gone */
        assert_int_equal(folders_in(alloc), 1);
        arena_free(&a);
    }
    /* a folder whose state/ the container filled with links and folders
     * goes without following them */
    char *one[] = {"2::s0"};
    to_uuids(one, 1);
    cfg.device_list_strategies = DEVICE_LIST_ENVVAR;
    assert_int_equal(plugin_allocate_container(&res[1], &cfg, one, 1, 2, &a, &out, &err), 0);
    assert_int_equal(folders_in(alloc), 2);
    char victim[128], path[512];
    snprintf(victim, sizeof victim, "%s/victim", dir);
    write_file(victim, "keep me");
    snprintf(path, sizeof path, "%s/link", out.mounts[3]->host_path);
    assert_int_equal(symlink(dir, path), 0);
    snprintf(path, sizeof path, "%s/a", out.mounts[3]->host_path);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/a/victim", out.mounts[3]->host_path);
    assert_int_equal(symlink(victim, path), 0);
    /* nested deeper than one removal pass goes */
    snprintf(path, sizeof path, "%s", out.mounts[3]->host_path);
    for (int depth = 0; depth < 20; depth++) {
        strcat(path, "/d");
        assert_int_equal(mkdir(path, 0755), 0);
    }
    strcat(path, "/victim");
    assert_int_equal(symlink(victim, path), 0);
    arena_free(&a);
    char *again[] = {"2::s0", "2::s1"};
    to_uuids(again, 2);
    assert_int_equal(plugin_allocate_container(&res[1], &cfg, again, 2, 3, &a, &out, &err), 0);
    assert_int_equal(folders_in(alloc), 2);
    assert_int_equal(access(victim, F_OK), 0);
    assert_int_equal(access(lib, F_OK), 0);
    arena_free(&a);
    /* nobody holds anything: every folder goes, and what deep nesting
     * moved aside goes with the passes that follow, each pass short */
    struct allocdir_visitor nobody = {.held = held_by_nobody};
    assert_int_equal(allocdir_prune(cfg.state_dir, &nobody, time(NULL), 0), 2);
    struct allocdir_reaper *reaper = allocdir_reaper_new(cfg.state_dir);
    assert_non_null(reaper);
    size_t removed, total = 0;
    int passes = 0, rc;
    while ((rc = allocdir_reap(reaper, 1, &removed)) == 1 && passes < 1000) {
        total += removed;
        passes++;
    }
    assert_int_equal(rc, 0);
    assert_true(passes >= 2); /* a 1 µs pass cannot take 20 nested folders at once */
    assert_true(total + removed >= 20 + 3);
    allocdir_reaper_free(reaper);
    DIR *d = opendir(alloc);
    assert_non_null(d);
    struct dirent *e;
    size_t left = 0;
    while ((e = readdir(d)) != NULL)
        left += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    assert_int_equal(left, 0);
    assert_int_equal(access(victim, F_OK), 0);
    devices_catalog_free(res, count);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* The limits file with the longest values each line can hold (the
 * longest UUID the interposer reads, 20-digit sizes) on as many GPUs as the
 * interposer's file holds: every line whole, the file as the interposer
 * reads it. More than that (or a far longer UUID) is refused, nothing
 * written past the buffer: a limit cut off would leave a GPU unlimited. */
static void slice_limits_longest_inputs(void **state)
{
    (void)state;
    char dir[64], lib[128], state_dir[128], alloc[4400], path[4500];
    temp_dir(dir, sizeof dir);
    struct config cfg = slice_config();
    snprintf(lib, sizeof lib, "%s/libgpulet-cuda.so", dir);
    snprintf(cfg.cuda_interposer, sizeof cfg.cuda_interposer, "%s", lib);
    write_file(lib, "not really a library");
    snprintf(state_dir, sizeof state_dir, "%s/state", dir);
    enum { GPUS = 64 };
    static char uuids[2][4096];
    /* the longest UUID the interposer reads (32 hex digits, 11 dashes),
     * and one far longer than any GPU has */
    snprintf(uuids[0], sizeof uuids[0], "GPU-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa----");
    memset(uuids[1], 'b', sizeof uuids[1] - 1);
    struct devices_slice_gpu gpus[GPUS];
    char *ids[] = {"claim"};
    size_t fit = 0;
    for (size_t n = 1; n <= GPUS; n++) {
        for (size_t i = 0; i < n; i++)
            gpus[i] = (struct devices_slice_gpu){uuids[0], ULLONG_MAX, 10000};
        struct arena a = {0};
        struct devices_edits edits = {.arena = &a};
        struct gpulet_error err = {0};
        int rc = plugin_slice_grant(&cfg, state_dir, "r", ids, 1, gpus, n, ULLONG_MAX, NULL,
                                    &edits, alloc, sizeof alloc, &err);
        arena_free(&a);
        if (rc < 0) {
            assert_non_null(strstr(err.msg, "bytes the CUDA interposer reads"));
            break;
        }
        fit = n;
        snprintf(path, sizeof path, "%s/limits", alloc);
        char *text;
        size_t len;
        assert_int_equal(fileio_read(path, 1 << 20, &text, &len, &err), 0);
        struct glc_limits parsed;
        char msg[256];
        if (glc_parse_limits(text, len, &parsed, msg, sizeof msg) < 0)
            fail_msg("%s", msg);
        assert_int_equal(parsed.dev[n - 1].limit, ULLONG_MAX);
        assert_string_equal(parsed.dev[n - 1].uuid, uuids[0]);
        assert_int_equal(parsed.context_bytes, ULLONG_MAX);
        assert_int_equal(text[len - 1], '\n');
        free(text);
    }
    assert_true(fit >= 16 && fit < GPUS); /* every node's GPUs, not an unbounded file */
    gpus[0] = (struct devices_slice_gpu){uuids[1], ULLONG_MAX, 10000};
    struct arena a = {0};
    struct devices_edits edits = {.arena = &a};
    struct gpulet_error err = {0};
    assert_int_equal(plugin_slice_grant(&cfg, state_dir, "r", ids, 1, gpus, 1, ULLONG_MAX, NULL,
                                        &edits, alloc, sizeof alloc, &err),
                     -1);
    arena_free(&a);
    remove_tree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(preferred_on_dgx1),
        cmocka_unit_test(preferred_on_other_nodes),
        cmocka_unit_test(resources_for_mig_and_sharing),
        cmocka_unit_test(resources_by_model),
        cmocka_unit_test(allocate_answers),
        cmocka_unit_test(replicas_distributed_and_packed),
        cmocka_unit_test(replicas_same_answers_as_the_pairwise_policy),
        cmocka_unit_test(many_replicas_answer_quickly),
        cmocka_unit_test(preferred_out_of_time),
        cmocka_unit_test(preferred_on_sixteen_gpus),
        cmocka_unit_test(slices_resources),
        cmocka_unit_test(slices_preferred),
        cmocka_unit_test(single_slice_goes_where_most_are_free),
        cmocka_unit_test(slices_allocate),
        cmocka_unit_test(slice_limits_longest_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
