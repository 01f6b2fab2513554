#include "helpers.h"

#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>

#include "fileio/fileio.h"

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char buf[256];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Nothing but the named files: no temporary file left behind. */
static int entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static void replaces_content_and_leaves_no_temporary(void **state)
{
    (void)state;
    char dir[64], path[128];
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/features", dir);
    struct gpulet_error err = {0};
    assert_int_equal(fileio_replace(path, "old\n", 4, FILEIO_DURABLE, &err), 0);
    assert_int_equal(fileio_replace(path, "new\n", 4, FILEIO_DURABLE, &err), 0);
    assert_string_equal(read_all(path), "new\n");
    assert_int_equal(entries(dir), 1);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    unlink(path);
    rmdir(dir);
}

/* A temporary file left by a writer killed mid-write (named as an older
 * gpulet named them, after this pid) does not block the next write. */
static void a_leftover_temporary_does_not_block_writes(void **state)
{
    (void)state;
    char dir[64], path[128], stale[192];
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/features", dir);
    snprintf(stale, sizeof stale, "%s/.features.gpulet-%d.tmp", dir, (int)getpid());
    write_file(stale, "half");
    struct gpulet_error err = {0};
    assert_int_equal(fileio_replace(path, "new\n", 4, 0, &err), 0);
    assert_string_equal(read_all(path), "new\n");
    assert_int_equal(entries(dir), 2);
    unlink(stale);
    unlink(path);
    rmdir(dir);
}

static void private_files_are_0600_whatever_the_umask(void **state)
{
    (void)state;
    char dir[64], path[128];
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/config.json", dir);
    mode_t old = umask(0);
    struct gpulet_error err = {0};
    assert_int_equal(fileio_replace(path, "{}", 2, FILEIO_PRIVATE, &err), 0);
    umask(old);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    unlink(path);
    rmdir(dir);
}

static void missing_folder_is_an_error_naming_the_file(void **state)
{
    (void)state;
    struct gpulet_error err = {0};
    assert_int_equal(fileio_replace("/nonexistent-gpulet/x/spec.yaml", "a", 1, 0, &err), -1);
    assert_int_equal(err.kind, GPULET_ERR_SYSTEM);
    assert_contains(err.msg, "/nonexistent-gpulet/x/");
    assert_contains(err.msg, "No such file or directory");
}

static void failed_rename_keeps_the_target_and_removes_the_temporary(void **state)
{
    (void)state;
    char dir[64], path[128];
    temp_dir(dir, sizeof dir);
    /* A non-empty folder in the way: rename() of a file onto it fails. */
    snprintf(path, sizeof path, "%s/target", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    char inner[160];
    snprintf(inner, sizeof inner, "%s/keep", path);
    write_file(inner, "kept");
    struct gpulet_error err = {0};
    assert_int_equal(fileio_replace(path, "x", 1, FILEIO_DURABLE, &err), -1);
    assert_contains(err.msg, "cannot replace");
    assert_string_equal(read_all(inner), "kept");
    assert_int_equal(entries(dir), 1);
    unlink(inner);
    rmdir(path);
    rmdir(dir);
}

static void read_gives_the_whole_file_nul_terminated(void **state)
{
    (void)state;
    char dir[64], path[128];
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/big", dir);
    /* larger than the first guess for files that report no size */
    char *text = malloc(10000);
    memset(text, 'x', 9999);
    text[9999] = '\0';
    write_file(path, text);
    char *data;
    size_t len;
    struct gpulet_error err = {0};
    assert_int_equal(fileio_read(path, 1u << 20, &data, &len, &err), 0);
    assert_int_equal(len, 9999);
    assert_string_equal(data, text);
    free(data);
    /* over the limit: refused, saying so */
    assert_int_equal(fileio_read(path, 4096, &data, &len, &err), -1);
    assert_null(data);
    assert_contains(err.msg, "larger than 4096 bytes");
    free(text);
    unlink(path);
    rmdir(dir);
}

static void read_copes_with_files_that_report_no_size(void **state)
{
    (void)state;
    char *data;
    size_t len;
    struct gpulet_error err = {0};
    assert_int_equal(fileio_read("/proc/self/status", 1u << 20, &data, &len, &err), 0);
    assert_true(len > 0);
    assert_int_equal(strlen(data), len);
    assert_contains(data, "Name:");
    free(data);
}

static void read_errors_keep_errno(void **state)
{
    (void)state;
    char *data;
    size_t len;
    struct gpulet_error err = {0};
    assert_int_equal(fileio_read("/nonexistent-gpulet/c.csv", 100, &data, &len, &err), -1);
    assert_int_equal(err.sys_errno, ENOENT);
    assert_string_equal(err.msg, "cannot read /nonexistent-gpulet/c.csv: No such file or directory");
    assert_int_equal(fileio_read("/tmp", 1u << 20, &data, &len, &err), -1);
    assert_int_equal(err.sys_errno, EISDIR);
}

static void mkdirs_makes_parents_with_exact_modes(void **state)
{
    (void)state;
    char dir[64], deep[160], mid[160], top[160], file[200];
    temp_dir(dir, sizeof dir);
    snprintf(top, sizeof top, "%s/var", dir);
    snprintf(mid, sizeof mid, "%s/var/lib", dir);
    snprintf(deep, sizeof deep, "%s/var/lib//kubelet/", dir);
    mode_t old = umask(077); /* created folders get their modes anyway */
    struct gpulet_error err = {0};
    assert_int_equal(fileio_mkdirs(deep, 0755, 0750, &err), 0);
    umask(old);
    struct stat st;
    assert_int_equal(stat(top, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0755);
    assert_int_equal(stat(mid, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0755);
    assert_int_equal(stat(deep, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0750);
    /* again: already there, nothing changes */
    chmod(mid, 0700);
    assert_int_equal(fileio_mkdirs(deep, 0755, 0750, &err), 0);
    assert_int_equal(stat(mid, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    /* a file in the way is named */
    snprintf(file, sizeof file, "%s/var/lib/kubelet/plugins", dir);
    write_file(file, "x");
    char below[240];
    snprintf(below, sizeof below, "%s/x", file);
    assert_int_equal(fileio_mkdirs(file, 0755, 0750, &err), -1);
    assert_contains(err.msg, "Not a directory");
    assert_int_equal(fileio_mkdirs(below, 0755, 0750, &err), -1);
    assert_contains(err.msg, file);
    unlink(file);
    rmdir(deep);
    rmdir(mid);
    rmdir(top);
    rmdir(dir);
}

/* A file in a drop-in folder (whose every file the engine loads) is
 * written through a temporary file in the folder above, with the mode and
 * owner asked for; where that folder is on another filesystem the write
 * fails, saying so, and leaves nothing behind. */
static void drop_in_folders_get_no_temporary_file(void **state)
{
    (void)state;
    char dir[64], dropin[96], path[128];
    temp_dir(dir, sizeof dir);
    snprintf(dropin, sizeof dropin, "%s/conf.d", dir);
    snprintf(path, sizeof path, "%s/99-nvidia.toml", dropin);
    assert_int_equal(mkdir(dropin, 0755), 0);
    struct gpulet_error err = {0};
    const struct fileio_owner owner = {0640, (uid_t)-1, (gid_t)-1};
    assert_int_equal(fileio_replace_owned(path, "a = 1\n", 6, FILEIO_OUTSIDE_DROP_IN, &owner, &err),
                     0);
    assert_string_equal(read_all(path), "a = 1\n");
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640);
    assert_int_equal(entries(dropin), 1);
    assert_int_equal(entries(dir), 1);

    /* /dev/shm is another filesystem here: the temporary file cannot have
     * been in the drop-in folder if the rename crosses filesystems */
    char shm[64], link[96], far[160];
    snprintf(shm, sizeof shm, "/dev/shm/gpulet-unit-XXXXXX");
    struct stat a, b;
    if (mkdtemp(shm) != NULL && stat(shm, &a) == 0 && stat(dir, &b) == 0 && a.st_dev != b.st_dev) {
        snprintf(link, sizeof link, "%s/shm.d", dir);
        snprintf(far, sizeof far, "%s/99-nvidia.toml", link);
        assert_int_equal(symlink(shm, link), 0);
        assert_int_equal(fileio_replace_owned(far, "b", 1, FILEIO_OUTSIDE_DROP_IN, &owner, &err),
                         -1);
        assert_int_equal(err.sys_errno, EXDEV);
        assert_contains(err.msg, "on another filesystem");
        assert_int_equal(entries(shm), 0);
        assert_int_equal(entries(dir), 2); /* conf.d and shm.d: no temporary file */
        unlink(link);
    }
    rmdir(shm);
    unlink(path);
    rmdir(dropin);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(read_gives_the_whole_file_nul_terminated),
        cmocka_unit_test(read_copes_with_files_that_report_no_size),
        cmocka_unit_test(read_errors_keep_errno),
        cmocka_unit_test(replaces_content_and_leaves_no_temporary),
        cmocka_unit_test(a_leftover_temporary_does_not_block_writes),
        cmocka_unit_test(private_files_are_0600_whatever_the_umask),
        cmocka_unit_test(missing_folder_is_an_error_naming_the_file),
        cmocka_unit_test(failed_rename_keeps_the_target_and_removes_the_temporary),
        cmocka_unit_test(mkdirs_makes_parents_with_exact_modes),
        cmocka_unit_test(drop_in_folders_get_no_temporary_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
