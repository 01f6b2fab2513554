/* NVIDIA's opaque GpuConfig / MigDeviceConfig as gpulet's DRA driver reads
 * it: every field, wrong types, out of range, unknown strategies and
 * fields, huge input; which configuration applies to which device. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dra/dra_internal.h"

#define API "\"apiVersion\":\"resource.nvidia.com/v1beta1\","

static int parse(const char *text, struct dra_gpu_config *out, struct gpulet_error *err)
{
    json_error_t jerr;
    json_t *v = json_loads(text, 0, &jerr);
    if (v == NULL)
        fail_msg("test JSON does not parse: %s: %s", text, jerr.text);
    int rc = dra_gpu_config_parse(v, out, err);
    json_decref(v);
    return rc;
}

static void every_field(void **state)
{
    (void)state;
    struct dra_gpu_config c;
    struct gpulet_error err = {0};
    static const char *const names[] = {"Default", "Short", "Medium", "Long"};
    for (int i = 0; i < 4; i++) {
        char text[256];
        snprintf(text, sizeof text, "{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":"
                 "\"TimeSlicing\",\"timeSlicingConfig\":{\"interval\":\"%s\"}}}", names[i]);
        assert_int_equal(parse(text, &c, &err), 0);
        assert_int_equal(c.timeslice, i); /* nvidia-smi's number for it */
        assert_false(c.mps.on);
    }
    /* TimeSlicing with no interval: Default, as NVIDIA normalises it */
    assert_int_equal(parse("{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":"
                           "\"TimeSlicing\"}}", &c, &err), 0);
    assert_int_equal(c.timeslice, 0);
    /* no sharing: nothing */
    assert_int_equal(parse("{" API "\"kind\":\"GpuConfig\"}", &c, &err), 0);
    assert_int_equal(c.timeslice, -1);
    assert_false(c.mps.on);
    /* MPS with every setting */
    assert_int_equal(parse("{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"MPS\","
                           "\"mpsConfig\":{\"defaultActiveThreadPercentage\":40,"
                           "\"defaultPinnedDeviceMemoryLimit\":\"10Gi\","
                           "\"defaultPerDevicePinnedMemoryLimit\":{\"0\":\"5Gi\","
                           "\"GPU-6a49d7ae-f1b3-c10b-87e9-293f1fbd323a\":\"512Mi\"}}}}",
                           &c, &err), 0);
    assert_true(c.mps.on);
    assert_int_equal(c.timeslice, -1);
    assert_int_equal(c.mps.thread_percentage, 40);
    assert_true(c.mps.pinned == 10ULL << 30);
    assert_int_equal(c.mps.n_limits, 2);
    for (size_t i = 0; i < 2; i++) {
        if (strcmp(c.mps.limits[i].device, "0") == 0)
            assert_true(c.mps.limits[i].bytes == 5ULL << 30);
        else
            assert_true(c.mps.limits[i].bytes == 512ULL << 20);
    }
    char mb[32];
    dra_mps_megabytes(c.mps.pinned, mb, sizeof mb);
    assert_string_equal(mb, "10240M");
    /* MPS with no settings, and the edges of the percentage */
    assert_int_equal(parse("{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"MPS\"}}",
                           &c, &err), 0);
    assert_true(c.mps.on);
    assert_int_equal(c.mps.thread_percentage, -1);
    assert_true(c.mps.pinned == 0);
    assert_int_equal(parse("{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"MPS\","
                           "\"mpsConfig\":{\"defaultActiveThreadPercentage\":0}}}", &c, &err), 0);
    assert_int_equal(c.mps.thread_percentage, 0);
    assert_int_equal(parse("{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"MPS\","
                           "\"mpsConfig\":{\"defaultActiveThreadPercentage\":100}}}", &c, &err),
                     0);
    assert_int_equal(c.mps.thread_percentage, 100);
    /* a MIG device: MPS applies, time-slicing is accepted and sets nothing */
    assert_int_equal(parse("{" API "\"kind\":\"MigDeviceConfig\",\"sharing\":{\"strategy\":"
                           "\"MPS\",\"mpsConfig\":{\"defaultActiveThreadPercentage\":50}}}", &c,
                           &err), 0);
    assert_true(c.mig && c.mps.on);
    assert_int_equal(parse("{" API "\"kind\":\"MigDeviceConfig\",\"sharing\":{\"strategy\":"
                           "\"TimeSlicing\"}}", &c, &err), 0);
    assert_true(c.mig);
    assert_int_equal(c.timeslice, -1);
}

static void refused_with_the_reason(void **state)
{
    (void)state;
    static const struct {
        const char *json, *says;
    } bad[] = {
        {"{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"TimeSlicing\","
         "\"timeSlicingConfig\":{\"interval\":\"Forever\"}}}", "unknown time-slice interval"},
        {"{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"TimeSlicing\","
         "\"timeSlicingConfig\":{\"interval\":3}}}", "unknown time-slice interval"},
        {"{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"TimeSlicing\","
         "\"timeSlicingConfig\":\"Long\"}}", "must be an object"},
        {"{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"TimeSlicing\","
         "\"mpsConfig\":{}}}", "cannot use MpsConfig"},
        {"{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"MPS\","
         "\"timeSlicingConfig\":{}}}", "cannot use TimeSlicingConfig"},
        {"{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"Magic\"}}",
         "unknown GPU sharing strategy: Magic"},
        {"{" API "\"kind\":\"GpuConfig\",\"sharing\":{}}", "unknown GPU sharing strategy"},
        {"{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":7}}",
         "unknown GPU sharing strategy"},
        {"{" API "\"kind\":\"GpuConfig\",\"sharing\":[]}", "sharing must be an object"},
        {"{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"MPS\",\"mpsConfig\":"
         "{\"defaultActiveThreadPercentage\":101}}}", "greater than 100"},
        {"{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"MPS\",\"mpsConfig\":"
         "{\"defaultActiveThreadPercentage\":-1}}}", "must not be negative"},
        {"{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"MPS\",\"mpsConfig\":"
         "{\"defaultActiveThreadPercentage\":\"50\"}}}", "must be an integer"},
        {"{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"MPS\",\"mpsConfig\":"
         "{\"defaultActiveThreadPercentage\":50.5}}}", "must be an integer"},
        {"{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"MPS\",\"mpsConfig\":"
         "{\"defaultPinnedDeviceMemoryLimit\":\"lots\"}}}", "must be a quantity"},
        {"{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"MPS\",\"mpsConfig\":"
         "{\"defaultPinnedDeviceMemoryLimit\":1024}}}", "must be a quantity"},
        {"{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"MPS\",\"mpsConfig\":"
         "{\"defaultPinnedDeviceMemoryLimit\":\"1Ki\"}}}", "under 1Mi"},
        {"{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"MPS\",\"mpsConfig\":"
         "{\"defaultPinnedDeviceMemoryLimit\":\"99999999999999999999Ti\"}}}",
         "must be a quantity"},
        {"{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"MPS\",\"mpsConfig\":"
         "{\"defaultPerDevicePinnedMemoryLimit\":{\"../x\":\"1Gi\"}}}}", "invalid device"},
        {"{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"MPS\",\"mpsConfig\":"
         "{\"defaultPerDevicePinnedMemoryLimit\":{\"0\":\"0\"}}}}", "under 1Mi"},
        {"{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"MPS\",\"mpsConfig\":"
         "{\"defaultPerDevicePinnedMemoryLimit\":[\"1Gi\"]}}}", "map device"},
        {"{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"MPS\",\"mpsConfig\":"
         "{\"defaultThreads\":5}}}", "unknown field \"defaultThreads\""},
        {"{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"MPS\",\"mpsConfig\":7}}",
         "mpsConfig must be an object"},
        {"{" API "\"kind\":\"GpuConfig\",\"shareing\":{}}", "unknown field \"shareing\""},
        {"{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"TimeSlicing\","
         "\"timeSlicingConfig\":{\"intervall\":\"Long\"}}}", "unknown field"},
        {"{" API "\"kind\":\"MigDeviceConfig\",\"sharing\":{\"strategy\":\"TimeSlicing\","
         "\"timeSlicingConfig\":{\"interval\":\"Long\"}}}", "unknown field \"timeSlicingConfig\""},
        {"{\"apiVersion\":\"resource.nvidia.com/v1\",\"kind\":\"GpuConfig\"}", "apiVersion"},
        {"{" API "\"kind\":\"VfioDeviceConfig\"}", "not one gpulet knows"},
        {"[]", "must be an object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct dra_gpu_config c;
        struct gpulet_error err = {0};
        assert_int_equal(parse(bad[i].json, &c, &err), -1);
        if (strstr(err.msg, bad[i].says) == NULL)
            fail_msg("case %zu: \"%s\" does not say %s", i, err.msg, bad[i].says);
    }
}

/* A map of more devices than gpulet keeps, and a long interval string:
 * refused, with messages of bounded length. */
static void huge(void **state)
{
    (void)state;
    size_t room = 64 * 1024;
    char *text = malloc(room);
    size_t o = (size_t)snprintf(text, room, "{" API "\"kind\":\"GpuConfig\",\"sharing\":"
                                "{\"strategy\":\"MPS\",\"mpsConfig\":{"
                                "\"defaultPerDevicePinnedMemoryLimit\":{");
    for (int i = 0; i < 100; i++)
        o += (size_t)snprintf(text + o, room - o, "%s\"%d\":\"1Gi\"", i ? "," : "", i);
    snprintf(text + o, room - o, "}}}}");
    struct dra_gpu_config c;
    struct gpulet_error err = {0};
    assert_int_equal(parse(text, &c, &err), -1);
    assert_non_null(strstr(err.msg, "more than 16 devices"));
    o = (size_t)snprintf(text, room, "{" API "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":"
                         "\"TimeSlicing\",\"timeSlicingConfig\":{\"interval\":\"");
    memset(text + o, 'L', 40000);
    snprintf(text + o + 40000, room - o - 40000, "\"}}}");
    assert_int_equal(parse(text, &c, &err), -1);
    assert_true(strlen(err.msg) < 300);
    free(text);
}

#define UID "4a1e0b5c-2f0e-4c6b-9d3b-1b2a3c4d5e6f"

static int claim(const char *results, const char *configs, struct dra_result **r, size_t *n,
                 struct dra_mps *mps, struct gpulet_error *err)
{
    char text[8192];
    snprintf(text, sizeof text, "{\"metadata\":{\"uid\":\"" UID "\"},\"status\":{\"allocation\":"
             "{\"devices\":{\"results\":[%s],\"config\":[%s]}}}}", results, configs);
    return dra_claim_parse(text, strlen(text), UID, "node1", r, n, mps, err);
}

#define RESULT(req, dev)                                                                       \
    "{\"request\":\"" req "\",\"driver\":\"gpu.nvidia.com\",\"pool\":\"node1\",\"device\":\"" \
    dev "\"}"
#define OPAQUE(source, requests, params)                                                       \
    "{\"source\":\"" source "\",\"requests\":[" requests "],\"opaque\":{\"driver\":"            \
    "\"gpu.nvidia.com\",\"parameters\":{" API params "}}}"
#define TS(interval)                                                                           \
    "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"TimeSlicing\",\"timeSlicingConfig\":"  \
    "{\"interval\":\"" interval "\"}}"
#define MPS(pct)                                                                               \
    "\"kind\":\"GpuConfig\",\"sharing\":{\"strategy\":\"MPS\",\"mpsConfig\":"                  \
    "{\"defaultActiveThreadPercentage\":" pct "}}"

static void applied_to_devices_as_nvidia_does(void **state)
{
    (void)state;
    struct dra_result *r;
    size_t n;
    struct dra_mps mps;
    struct gpulet_error err = {0};
    /* the claim's config wins over the class's, whatever their order in the
     * list; one naming the request wins over an earlier one for all */
    assert_int_equal(claim(RESULT("a", "gpu-0") "," RESULT("b", "gpu-1") "," RESULT("c/x", "gpu-2"),
                           OPAQUE("FromClaim", "", TS("Short")) ","
                           OPAQUE("FromClass", "", TS("Long")) ","
                           OPAQUE("FromClaim", "\"b\"", TS("Medium")) ","
                           OPAQUE("FromClaim", "\"c\"", MPS("30")),
                           &r, &n, &mps, &err), 0);
    assert_int_equal(n, 3);
    assert_true(r[0].timeslice && r[0].interval == 1);
    assert_true(r[1].timeslice && r[1].interval == 2);
    assert_false(r[2].timeslice); /* a subrequest of c: c's MPS config */
    assert_true(r[2].mps);
    assert_false(r[0].mps || r[1].mps);
    assert_true(mps.on);
    assert_int_equal(mps.thread_percentage, 30);
    free(r);
    /* a GpuConfig for every request leaves a MIG device alone */
    assert_int_equal(claim(RESULT("a", "gpu-0-mig-1g5gb-19-0"), OPAQUE("FromClaim", "", TS("Long")),
                           &r, &n, &mps, &err), 0);
    assert_false(r[0].timeslice);
    assert_false(mps.on);
    free(r);
    /* no configuration: nothing */
    assert_int_equal(claim(RESULT("a", "gpu-0"), "", &r, &n, &mps, &err), 0);
    assert_false(r[0].timeslice);
    assert_false(r[0].mps || mps.on);
    free(r);
    /* another driver's config is not read */
    assert_int_equal(claim(RESULT("a", "gpu-0"), "{\"source\":\"FromClaim\",\"opaque\":"
                           "{\"driver\":\"x.example.com\",\"parameters\":{\"anything\":1}}}",
                           &r, &n, &mps, &err), 0);
    free(r);

    static const struct {
        const char *results, *configs, *says;
    } bad[] = {
        /* a GpuConfig named for a MIG device's request */
        {RESULT("a", "gpu-0-mig-1g5gb-19-0"), OPAQUE("FromClaim", "\"a\"", TS("Long")),
         "cannot apply GpuConfig to device gpu-0-mig-1g5gb-19-0"},
        {RESULT("a", "gpu-0"),
         OPAQUE("FromClaim", "\"a\"", "\"kind\":\"MigDeviceConfig\""),
         "cannot apply MigDeviceConfig to device gpu-0"},
        /* two MPS configurations in one claim */
        {RESULT("a", "gpu-0") "," RESULT("b", "gpu-1"),
         OPAQUE("FromClaim", "\"a\"", MPS("10")) "," OPAQUE("FromClaim", "\"b\"", MPS("20")),
         "two different MPS configurations"},
        /* a broken config is refused even when it names no device of the claim */
        {RESULT("a", "gpu-0"), OPAQUE("FromClaim", "\"z\"", TS("Forever")), "interval"},
        {RESULT("a", "gpu-0"), "{\"source\":\"FromClaim\",\"requests\":\"a\",\"opaque\":"
         "{\"driver\":\"gpu.nvidia.com\",\"parameters\":{" API TS("Long") "}}}",
         "requests must be a list"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gpulet_error_clear(&err);
        assert_int_equal(claim(bad[i].results, bad[i].configs, &r, &n, &mps, &err), -1);
        if (strstr(err.msg, bad[i].says) == NULL)
            fail_msg("case %zu: \"%s\" does not say %s", i, err.msg, bad[i].says);
    }
    /* more configurations than a claim may have */
    size_t room = 200 * 200;
    char *many = malloc(room);
    size_t o = 0;
    for (int i = 0; i < 65; i++)
        o += (size_t)snprintf(many + o, room - o, "%s" OPAQUE("FromClaim", "", TS("Long")),
                              i ? "," : "");
    char *text = malloc(room + 512);
    snprintf(text, room + 512, "{\"metadata\":{\"uid\":\"" UID "\"},\"status\":{\"allocation\":"
             "{\"devices\":{\"results\":[" RESULT("a", "gpu-0") "],\"config\":[%s]}}}}", many);
    gpulet_error_clear(&err);
    assert_int_equal(dra_claim_parse(text, strlen(text), UID, "node1", &r, &n, &mps, &err), -1);
    assert_non_null(strstr(err.msg, "more than 64"));
    free(text);
    free(many);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_field),
        cmocka_unit_test(refused_with_the_reason),
        cmocka_unit_test(huge),
        cmocka_unit_test(applied_to_devices_as_nvidia_does),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
