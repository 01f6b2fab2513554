#include "helpers.h"

#include <time.h>

#include "toml/toml.h"

static struct toml_node *parse(const char *text)
{
    struct gpulet_error err = {0};
    struct toml_node *root = toml_parse("t.toml", text, strlen(text), &err);
    if (root == NULL)
        fail_msg("parse of <<%s>>: %s", text, err.msg);
    return root;
}

static const char *str(const struct toml_node *root, const char *const *path)
{
    const struct toml_node *v = toml_path(root, path);
    if (v == NULL || v->type != TOML_STRING)
        fail_msg("not a string at %s", path[0]);
    return v->text;
}

#define P(...) ((const char *const[]){__VA_ARGS__, NULL})

static char *written(const struct toml_node *t, const char *const *prefix)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    toml_write(f, t, prefix);
    fclose(f);
    return text;
}

/* Writing a document and reading it back gives the same values. */
static void assert_round_trip(const struct toml_node *root)
{
    char *text = written(root, NULL);
    struct toml_node *again = parse(text);
    if (!toml_equal(root, again))
        fail_msg("round trip changed the document:\n%s", text);
    toml_free(again);
    free(text);
}

static void strings_of_every_kind(void **state)
{
    (void)state;
    struct toml_node *r = parse(
        "basic = \"tab\\there \\\"q\\\" \\\\ \\u00e9 \\U0001F600\"\n"
        "literal = 'C:\\Users\\x'\n"
        "multi = \"\"\"\nline one\n  line two\"\"\"\n"
        "folded = \"\"\"\\\n   The quick \\\n   fox.\\\n   \"\"\"\n"
        "quotes = \"\"\"a \"\" b\"\"\"\"\"\n"
        "lit_multi = '''\nfirst\n'second' \\n'''\n"
        "crlf = \"\"\"a\r\nb\"\"\"\r\n"
        "nul = \"a\\u0000b\"\n"
        "empty = ''\n");
    assert_string_equal(str(r, P("basic")), "tab\there \"q\" \\ \xc3\xa9 \xf0\x9f\x98\x80");
    assert_string_equal(str(r, P("literal")), "C:\\Users\\x");
    assert_string_equal(str(r, P("multi")), "line one\n  line two");
    assert_string_equal(str(r, P("folded")), "The quick fox.");
    assert_string_equal(str(r, P("quotes")), "a \"\" b\"\"");
    assert_string_equal(str(r, P("lit_multi")), "first\n'second' \\n");
    assert_string_equal(str(r, P("crlf")), "a\r\nb");
    assert_int_equal(toml_get(r, "nul")->len, 3);
    assert_memory_equal(toml_get(r, "nul")->text, "a\0b", 3);
    assert_string_equal(str(r, P("empty")), "");
    assert_round_trip(r);
    toml_free(r);
}

static void numbers_dates_and_booleans_keep_their_text(void **state)
{
    (void)state;
    const char *doc = "a = 1_000\nb = -0x7f\nc = 0o755\nd = 0b1010\ne = +1.5e-3\nf = -inf\n"
                      "g = nan\nh = true\ni = 1979-05-27T07:32:00.999-07:00\nj = 1979-05-27\n"
                      "k = 07:32:00\nl = 1979-05-27 07:32:00Z\nm = 9223372036854775807\n"
                      "n = -9223372036854775808\no = 6.626e34\np = 0.0\n";
    /* -0x7f is not TOML: check it is refused, then parse the rest. */
    struct gpulet_error err = {0};
    assert_null(toml_parse("t.toml", doc, strlen(doc), &err));
    assert_contains(err.msg, "t.toml:2: a value that does not parse: \"-0x7f\"");
    struct toml_node *r = parse(doc + strlen("a = 1_000\nb = -0x7f\n"));
    const struct {
        const char *key, *text;
        enum toml_type type;
    } want[] = {{"c", "0o755", TOML_INTEGER}, {"d", "0b1010", TOML_INTEGER},
                {"e", "+1.5e-3", TOML_FLOAT}, {"f", "-inf", TOML_FLOAT},
                {"g", "nan", TOML_FLOAT}, {"h", "true", TOML_BOOL},
                {"i", "1979-05-27T07:32:00.999-07:00", TOML_DATETIME},
                {"j", "1979-05-27", TOML_DATETIME}, {"k", "07:32:00", TOML_DATETIME},
                {"l", "1979-05-27 07:32:00Z", TOML_DATETIME},
                {"m", "9223372036854775807", TOML_INTEGER},
                {"n", "-9223372036854775808", TOML_INTEGER}, {"o", "6.626e34", TOML_FLOAT},
                {"p", "0.0", TOML_FLOAT}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const struct toml_node *v = toml_get(r, want[i].key);
        assert_non_null(v);
        assert_int_equal(v->type, want[i].type);
        assert_string_equal(v->text, want[i].text);
    }
    assert_round_trip(r);
    toml_free(r);
}

static void tables_in_every_form_are_the_same_tree(void **state)
{
    (void)state;
    /* containerd's CRI section, written four ways. */
    const char *forms[] = {
        "[plugins.\"io.containerd.grpc.v1.cri\"]\nsandbox_image = \"p:1\"\n"
        "[plugins.\"io.containerd.grpc.v1.cri\".containerd]\nsnapshotter = \"native\"\n",
        "[plugins]\n\"io.containerd.grpc.v1.cri\" = { sandbox_image = \"p:1\", "
        "containerd = { snapshotter = \"native\" } }\n",
        "plugins.\"io.containerd.grpc.v1.cri\".sandbox_image = \"p:1\"\n"
        "plugins . 'io.containerd.grpc.v1.cri' . containerd.snapshotter = \"native\"\n",
        "\xef\xbb\xbf[plugins.\"io.containerd.grpc.v1.cri\"]\n"
        "containerd = {snapshotter = \"native\"}\nsandbox_image = \"p:1\" # comment\n",
    };
    struct toml_node *first = parse(forms[0]);
    for (size_t i = 1; i < sizeof forms / sizeof forms[0]; i++) {
        struct toml_node *r = parse(forms[i]);
        if (!toml_equal(first, r))
            fail_msg("form %zu differs", i);
        assert_string_equal(
            str(r, P("plugins", "io.containerd.grpc.v1.cri", "containerd", "snapshotter")),
            "native");
        assert_round_trip(r);
        toml_free(r);
    }
    toml_free(first);
}

static void arrays_and_arrays_of_tables(void **state)
{
    (void)state;
    struct toml_node *r = parse("a = [ 1, 'two', [3], {x = 4}, ]\n"
                                "b = [\n  # comment\n  \"x\", # more\n  \"y\"\n]\n"
                                "[[fruit]]\nname = \"apple\"\n[fruit.physical]\ncolor = \"red\"\n"
                                "[[fruit.variety]]\nname = \"red delicious\"\n"
                                "[[fruit]]\nname = \"banana\"\n");
    const struct toml_node *a = toml_get(r, "a"), *fruit = toml_get(r, "fruit");
    assert_int_equal(a->count, 4);
    assert_int_equal(a->items[3]->type, TOML_TABLE);
    assert_int_equal(toml_get(r, "b")->count, 2);
    assert_int_equal(fruit->type, TOML_ARRAY);
    assert_true(fruit->flags & TOML_AOT);
    assert_int_equal(fruit->count, 2);
    assert_string_equal(str(fruit->items[0], P("physical", "color")), "red");
    assert_string_equal(str(fruit->items[0]->pairs[2].value->items[0], P("name")),
                        "red delicious");
    assert_string_equal(str(fruit->items[1], P("name")), "banana");
    assert_int_equal(fruit->items[1]->line, 13);
    assert_round_trip(r);
    toml_free(r);
}

static void super_tables_and_dotted_sub_tables(void **state)
{
    (void)state;
    struct toml_node *r = parse("[x.y.z.w]\na = 1\n[x]\nb = 2\n"
                                "[fruit]\napple.color = \"red\"\napple.taste.sweet = true\n"
                                "[fruit.apple.texture]\nsmooth = true\n");
    assert_string_equal(toml_path(r, P("fruit", "apple", "texture", "smooth"))->text, "true");
    assert_string_equal(toml_path(r, P("x", "y", "z", "w", "a"))->text, "1");
    assert_round_trip(r);
    toml_free(r);
}

static void invalid_documents_name_file_and_line(void **state)
{
    (void)state;
    const struct {
        const char *text, *msg;
    } bad[] = {
        {"a = 1\na = 2\n", "t.toml:2: \"a\" is defined twice (first on line 1)"},
        {"[a]\n[a]\n", "t.toml:2: \"a\" is already a table (line 1)"},
        {"[a]\nb.c = 1\n[a.b]\n", "t.toml:3: \"b\" is already a table (line 2)"},
        {"[a.b]\nc = 1\n[a]\nb.d = 2\n", "t.toml:4: \"b\" is already a table (line 1); dotted"},
        {"a = {b = 1}\n[a]\n", "t.toml:2: \"a\" is already an inline table"},
        {"a = {b = 1}\na.c = 2\n", "t.toml:2: \"a\" is already an inline table"},
        {"a = {b = 1}\n[a.c]\n", "t.toml:2: \"a\" is already an inline table"},
        {"a = {b = {c = 1}, b.d = 2}\n", "t.toml:1: \"b\" is already an inline table"},
        {"a = [1]\n[[a]]\n", "t.toml:2: \"a\" is already an array (line 1)"},
        {"[[a]]\n[a]\n", "t.toml:2: \"a\" is already an array of tables"},
        {"[a]\n[[a]]\n", "t.toml:2: \"a\" is already a table"},
        {"a = 1\na.b = 2\n", "t.toml:2: \"a\" is already a value"},
        {"a = {b = 1,}\n", "t.toml:1: a key is missing"},
        {"a = {b = 1\n}\n", "t.toml:1: an inline table's pairs must be separated"},
        {"a = [1 2]\n", "t.toml:1: an array's values must be separated"},
        {"a = \"x\n", "t.toml:1: a control character in a string"},
        {"a = \"x", "t.toml:1: a string that does not end"},
        {"a = \"\\q\"\n", "t.toml:1: an unknown escape sequence"},
        {"a = \"\\uD800\"\n", "is not a Unicode scalar value"},
        {"a = \"\\u12\"\n", "\\u needs 4 hexadecimal digits"},
        {"a = 01\n", "a value that does not parse: \"01\""},
        {"a = 1__0\n", "a value that does not parse"},
        {"a = 9223372036854775808\n", "a value that does not parse"},
        {"a = 1.\n", "a value that does not parse"},
        {"a = .5\n", "a value that does not parse"},
        {"a = 1979-02-29\n", "a value that does not parse"},
        {"a = 24:00:00\n", "a value that does not parse"},
        {"a = TRUE\n", "a value that does not parse"},
        {"a = 1 b = 2\n", "t.toml:1: unexpected text after the value"},
        {"a\n", "t.toml:1: a key must be followed by '='"},
        {"= 1\n", "a key is missing"},
        {"[a\n", "t.toml:1: a table header that does not parse"},
        {"[[a]\n", "a table header that does not parse (it must end with ']]')"},
        {"a = \"\"\"x\"\"\"\"\"\"\n", "too many quotes"},
        {"\"\"\"a\"\"\" = 1\n", "a key cannot be a multi-line string"},
        {"a = 1 # \x01\n", "a control character in a comment"},
        {"a = 1\r\n\rb = 2\n", "t.toml:2: a carriage return not followed by a newline"},
        {"a = \"\xff\"\n", "t.toml:1: not valid UTF-8"},
        {"\n\na = \"\xed\xa0\x80\"\n", "t.toml:3: not valid UTF-8"},
        {"a = \n", "t.toml:1: a value is missing"},
        {"a = [1,\n\n", "t.toml:1: an array that is never closed"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct gpulet_error err = {0};
        struct toml_node *r = toml_parse("t.toml", bad[i].text, strlen(bad[i].text), &err);
        if (r != NULL)
            fail_msg("accepted <<%s>>", bad[i].text);
        assert_int_equal(err.kind, GPULET_ERR_INPUT);
        assert_contains(err.msg, bad[i].msg);
    }
}

static void depth_and_size_are_bounded(void **state)
{
    (void)state;
    char deep[400];
    memset(deep, '[', 100);
    strcpy(deep + 100, "\n");
    char doc[512];
    snprintf(doc, sizeof doc, "a = %s", deep);
    struct gpulet_error err = {0};
    assert_null(toml_parse("t.toml", doc, strlen(doc), &err));
    assert_contains(err.msg, "nested deeper than 64 levels");
    /* 70 dotted parts in a header, and in a key */
    char *hdr = calloc(1, 1000), *p = hdr;
    p += sprintf(p, "[");
    for (int i = 0; i < 70; i++)
        p += sprintf(p, "%sk", i ? "." : "");
    sprintf(p, "]\n");
    assert_null(toml_parse("t.toml", hdr, strlen(hdr), &err));
    assert_contains(err.msg, "a key of more than 64 parts");
    free(hdr);
    assert_null(toml_parse("t.toml", "", TOML_MAX_BYTES + 1, &err));
    assert_contains(err.msg, "larger than 16777216 bytes");
}

static void many_tables_and_keys_cost_linear_time(void **state)
{
    (void)state;
    /* 100,000 keys in one table, 10,000 tables (120,002 nodes, near
     * TOML_MAX_NODES): a quadratic parser would take minutes. */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    for (int i = 0; i < 100000; i++)
        fprintf(f, "key%d = %d\n", i, i);
    for (int i = 0; i < 10000; i++)
        fprintf(f, "[plugins.\"p%d\"]\nx = 1\n", i);
    fclose(f);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct gpulet_error err = {0};
    struct toml_node *r = toml_parse("big.toml", text, len, &err);
    assert_non_null(r);
    assert_int_equal(r->count, 100001);
    assert_int_equal(toml_get(r, "plugins")->count, 10000);
    struct toml_node *copy = toml_copy(r);
    assert_true(toml_equal(r, copy));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(s < 10.0);
    toml_free(copy);
    toml_free(r);
    free(text);
}

/* The number of values is bounded, not only the bytes: a 4 MB array of
 * 2 million one-digit items took 1.3 GB and 4 s before. */
static void too_many_values_are_refused_fast(void **state)
{
    (void)state;
    size_t items = 2u << 20, len = 4 + 2 * items;
    char *text = malloc(len + 1);
    assert_non_null(text);
    memcpy(text, "x = [", 5);
    for (size_t i = 0; i < items; i++)
        memcpy(text + 5 + 2 * i, "1,", 2);
    text[len - 1] = ']';
    text[len] = '\0';
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct gpulet_error err = {0};
    assert_null(toml_parse("array.toml", text, len, &err));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_non_null(strstr(err.msg, "more than 131072 values and tables"));
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(s < 2.0);
    /* Just under the bound still parses. */
    size_t under = TOML_MAX_NODES - 2; /* the root table and the array */
    text[4 + 2 * under] = ']';
    text[5 + 2 * under] = '\0';
    struct toml_node *r = toml_parse("array.toml", text, 5 + 2 * under, &err);
    assert_non_null(r);
    assert_int_equal(toml_get(r, "x")->count, under);
    toml_free(r);
    text[4 + 2 * under] = ',';
    text[5 + 2 * under] = '1';
    text[4 + 2 * under + 2] = ']';
    text[5 + 2 * under + 2] = '\0';
    assert_null(toml_parse("array.toml", text, 5 + 2 * under + 2, &err));
    free(text);
}

static void trees_can_be_changed_and_written(void **state)
{
    (void)state;
    struct toml_node *r = parse("[a]\nx = 1\ny = 2\nz = 3\n");
    struct toml_node *a = toml_get(r, "a");
    toml_remove(a, "y");
    assert_null(toml_get(a, "y"));
    assert_string_equal(toml_get(a, "z")->text, "3");
    assert_int_equal(toml_set(a, "x", toml_new_string("we\"ird\n")), 0);
    assert_int_equal(toml_set(a, "new key", toml_new(TOML_TABLE)), 0);
    char *text = written(a, P("a"));
    assert_string_equal(text, "\n[a]\nx = \"we\\\"ird\\n\"\nz = 3\n\n[a.\"new key\"]\n");
    struct toml_node *again = parse(text);
    assert_true(toml_equal(toml_get(again, "a"), a));
    toml_free(again);
    free(text);
    toml_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(strings_of_every_kind),
        cmocka_unit_test(numbers_dates_and_booleans_keep_their_text),
        cmocka_unit_test(tables_in_every_form_are_the_same_tree),
        cmocka_unit_test(arrays_and_arrays_of_tables),
        cmocka_unit_test(super_tables_and_dotted_sub_tables),
        cmocka_unit_test(invalid_documents_name_file_and_line),
        cmocka_unit_test(depth_and_size_are_bounded),
        cmocka_unit_test(many_tables_and_keys_cost_linear_time),
        cmocka_unit_test(too_many_values_are_refused_fast),
        cmocka_unit_test(trees_can_be_changed_and_written),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
