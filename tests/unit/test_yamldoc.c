#include "helpers.h"

#include <sys/stat.h>

#include "yamldoc/yamldoc.h"

static struct ydoc *load(const char *text)
{
    struct ydoc *d = NULL;
    struct gpulet_error err = {0};
    if (ydoc_load_string("t.yaml", text, strlen(text), &d, &err) < 0)
        fail_msg("load: %s", err.msg);
    return d;
}

static void typed_getters_read_values(void **state)
{
    (void)state;
    struct ydoc *d = load("a: 12\nb: -3\nc: yes\nd: hello\ne: 0x1F\nl: [1, 2]\n");
    const struct ynode *root = ydoc_root(d);
    struct gpulet_error err = {0};
    unsigned long long u;
    long long s;
    bool b;
    char buf[16];
    assert_int_equal(ynode_uint(d, ynode_get(d, root, "a"), "a", 0, 100, &u, &err), 0);
    assert_int_equal(u, 12);
    assert_int_equal(ynode_int(d, ynode_get(d, root, "b"), "b", -5, 5, &s, &err), 0);
    assert_int_equal(s, -3);
    assert_int_equal(ynode_bool(d, ynode_get(d, root, "c"), "c", &b, &err), 0);
    assert_true(b);
    assert_int_equal(ynode_string(d, ynode_get(d, root, "d"), "d", buf, sizeof buf, &err), 0);
    assert_string_equal(buf, "hello");
    assert_int_equal(ynode_uint(d, ynode_get(d, root, "e"), "e", 0, 100, &u, &err), 0);
    assert_int_equal(u, 31);
    const struct ynode *l = ynode_get(d, root, "l");
    assert_true(ynode_is_seq(l));
    assert_int_equal(ynode_count(d, l), 2);
    assert_string_equal(ynode_text(ynode_item(d, l, 1)), "2");
    assert_null(ynode_get(d, root, "missing"));
    ydoc_free(d);
}

static void errors_name_file_line_and_value(void **state)
{
    (void)state;
    struct ydoc *d = load("a: 1\nreplicas: 1\nname: [x]\nflag: maybe\nneg: -4\nlong: abcdefghijklmnopqrstuvwxyz\n");
    const struct ynode *root = ydoc_root(d);
    struct gpulet_error err = {0};
    unsigned long long u;
    bool b;
    char buf[8];
    assert_int_equal(ynode_uint(d, ynode_get(d, root, "replicas"), "replicas", 2, 64, &u, &err), -1);
    assert_string_equal(err.msg, "t.yaml line 2: replicas must be a whole number from 2 to 64, not \"1\"");
    assert_int_equal(err.kind, GPULET_ERR_INPUT);
    assert_int_equal(ynode_string(d, ynode_get(d, root, "name"), "name", buf, sizeof buf, &err), -1);
    assert_string_equal(err.msg, "t.yaml line 3: name must be a string, not a list");
    assert_int_equal(ynode_bool(d, ynode_get(d, root, "flag"), "flag", &b, &err), -1);
    assert_contains(err.msg, "line 4: flag must be true or false, not \"maybe\"");
    assert_int_equal(ynode_uint(d, ynode_get(d, root, "neg"), "neg", 0, 10, &u, &err), -1);
    assert_contains(err.msg, "line 5");
    assert_int_equal(ynode_string(d, ynode_get(d, root, "long"), "long", buf, sizeof buf, &err), -1);
    assert_contains(err.msg, "line 6: long is too long (at most 7 characters)");
    ydoc_free(d);
}

static void unknown_and_duplicate_keys_are_refused(void **state)
{
    (void)state;
    static const char *const allowed[] = {"a", "b", NULL};
    struct gpulet_error err = {0};
    struct ydoc *d = load("a: 1\nc: 2\n");
    assert_int_equal(ynode_check_keys(d, ydoc_root(d), allowed, "config", &err), -1);
    assert_string_equal(err.msg, "t.yaml line 2: config: unknown key \"c\" (known keys: a, b)");
    ydoc_free(d);
    d = load("a: 1\nb: 2\na: 3\n");
    assert_int_equal(ynode_check_keys(d, ydoc_root(d), allowed, "config", &err), -1);
    assert_contains(err.msg, "line 3: config: key \"a\" appears twice");
    ydoc_free(d);
}

static void malformed_yaml_reports_line(void **state)
{
    (void)state;
    const char *text = "a: 1\nb: [1, 2\nc: 3\n";
    struct ydoc *d = NULL;
    struct gpulet_error err = {0};
    assert_int_equal(ydoc_load_string("bad.yaml", text, strlen(text), &d, &err), -1);
    assert_null(d);
    assert_contains(err.msg, "bad.yaml line ");
    assert_int_equal(err.kind, GPULET_ERR_INPUT);
}

static void missing_file_is_a_system_error(void **state)
{
    (void)state;
    struct ydoc *d = NULL;
    struct gpulet_error err = {0};
    assert_int_equal(ydoc_load_file("/nonexistent/x.yaml", &d, &err), -1);
    assert_int_equal(err.kind, GPULET_ERR_SYSTEM);
    assert_string_equal(err.msg, "cannot read /nonexistent/x.yaml: No such file or directory");
}

static void empty_and_null_documents_have_no_root(void **state)
{
    (void)state;
    struct ydoc *d = load("");
    assert_null(ydoc_root(d));
    ydoc_free(d);
    d = load("~\n");
    assert_null(ydoc_root(d));
    ydoc_free(d);
    d = load("{\"json\": [1, 2, {\"x\": true}]}");
    assert_true(ynode_is_map(ydoc_root(d)));
    ydoc_free(d);
}

static void refused(const char *text, size_t len, const char *expected)
{
    struct ydoc *d = NULL;
    struct gpulet_error err = {0};
    assert_int_equal(ydoc_load_string("bomb.yaml", text, len, &d, &err), -1);
    assert_null(d);
    assert_int_equal(err.kind, GPULET_ERR_INPUT);
    assert_contains(err.msg, expected);
}

static void aliases_are_refused_with_their_line(void **state)
{
    (void)state;
    /* recursive: libyaml would build a node that contains itself */
    const char *recursive = "a: &x\n  b: [*x]\n";
    refused(recursive, strlen(recursive), "bomb.yaml line 2: YAML aliases (*x) are not accepted");
    /* a billion laughs in 9 levels: ~10^9 strings if expanded */
    char laughs[2048] = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n";
    for (char c = 'b'; c <= 'i'; c++) {
        size_t n = strlen(laughs);
        snprintf(laughs + n, sizeof laughs - n, "%c: &%c [*%c,*%c,*%c,*%c,*%c,*%c,*%c,*%c,*%c]\n", c,
                 c, c - 1, c - 1, c - 1, c - 1, c - 1, c - 1, c - 1, c - 1, c - 1);
    }
    refused(laughs, strlen(laughs), "bomb.yaml line 2: YAML aliases (*a)");
    /* an anchor alone is harmless */
    struct ydoc *d = load("a: &x 1\nb: 2\n");
    assert_string_equal(ynode_text(ynode_get(d, ydoc_root(d), "a")), "1");
    ydoc_free(d);
}

static void many_anchors_are_refused(void **state)
{
    (void)state;
    /* libyaml compares each anchor with every earlier one: 20,000 took 2 s,
     * 100,000 (within the node bound) about a minute */
    size_t n = 20000;
    char *text = malloc(n * 16 + 8);
    size_t len = (size_t)sprintf(text, "x:\n");
    for (size_t i = 0; i < n; i++)
        len += (size_t)sprintf(text + len, "- &a%zu v\n", i);
    refused(text, len, "bomb.yaml line 1026: more than 1024 YAML anchors (&name)");
    /* up to the bound they load, on scalars and collections alike */
    len = (size_t)sprintf(text, "x: &m\n");
    for (size_t i = 1; i < YDOC_MAX_ANCHORS; i++)
        len += (size_t)sprintf(text + len, "- &a%zu [v]\n", i);
    struct ydoc *d = load(text);
    assert_true(ynode_is_seq(ynode_get(d, ydoc_root(d), "x")));
    ydoc_free(d);
    free(text);
}

static void deep_nesting_and_many_nodes_are_refused(void **state)
{
    (void)state;
    size_t n = 100000;
    char *text = malloc(n + 1);
    memset(text, '[', n);
    text[n] = '\0';
    refused(text, n, "bomb.yaml line 1: nested deeper than 64 levels");
    /* 64 levels are fine */
    memset(text, '[', 64);
    memset(text + 64, ']', 64);
    text[128] = '\0';
    struct ydoc *d = load(text);
    assert_true(ynode_is_seq(ydoc_root(d)));
    ydoc_free(d);
    /* more nodes than the bound: "[1,1,1,...]" */
    n = 2 * (YDOC_MAX_NODES + 1) + 2;
    text = realloc(text, n + 1);
    text[0] = '[';
    for (size_t i = 1; i < n - 1; i += 2)
        memcpy(text + i, "1,", 2);
    text[n - 1] = ']';
    text[n] = '\0';
    refused(text, n, "more than 100000 values in one document");
    free(text);
}

static void huge_and_odd_files_are_refused(void **state)
{
    (void)state;
    char dir[64], path[128];
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/big.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    /* a comment is cheap to parse: only the size bound can stop it */
    assert_int_equal(fputc('#', f), '#');
    for (size_t i = 0; i < YDOC_MAX_BYTES; i += 4096)
        fprintf(f, "%4096s", "");
    assert_int_equal(fclose(f), 0);
    struct ydoc *d = NULL;
    struct gpulet_error err = {0};
    assert_int_equal(ydoc_load_file(path, &d, &err), -1);
    assert_contains(err.msg, "larger than 4194304 bytes");
    unlink(path);
    /* a FIFO where the file should be: refused at once, never waited on */
    snprintf(path, sizeof path, "%s/fifo.yaml", dir);
    assert_int_equal(mkfifo(path, 0600), 0);
    assert_int_equal(ydoc_load_file(path, &d, &err), -1);
    assert_contains(err.msg, "not a regular file");
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(typed_getters_read_values),
        cmocka_unit_test(errors_name_file_line_and_value),
        cmocka_unit_test(unknown_and_duplicate_keys_are_refused),
        cmocka_unit_test(malformed_yaml_reports_line),
        cmocka_unit_test(missing_file_is_a_system_error),
        cmocka_unit_test(empty_and_null_documents_have_no_root),
        cmocka_unit_test(aliases_are_refused_with_their_line),
        cmocka_unit_test(many_anchors_are_refused),
        cmocka_unit_test(deep_nesting_and_many_nodes_are_refused),
        cmocka_unit_test(huge_and_odd_files_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
