/* The interposer's bookkeeping (src/cuda/cuda_limits.c), under ASan: sizes,
 * the shared per-device file with concurrent and dying processes, the
 * token bucket, array sizes and the allocation map. */
#include "helpers.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "cuda/cuda_limits.h"

static void sizes_and_percents(void **state)
{
    (void)state;
    uint64_t b;
    unsigned int p;
    assert_int_equal(glc_parse_size("10Gi", &b), 0);
    assert_true(b == 10ULL << 30);
    assert_int_equal(glc_parse_size("512Mi", &b), 0);
    assert_true(b == 512ULL << 20);
    assert_int_equal(glc_parse_size("4096", &b), 0);
    assert_true(b == 4096);
    assert_int_equal(glc_parse_size("2G", &b), 0);
    assert_true(b == 2000000000ULL);
    const char *bad[] = {"", "0", "-1", "10Q", "Gi", " 5", "99999999999999999999",
                         "20000000Ti", "1.5Gi", NULL};
    for (int i = 0; bad[i]; i++)
        assert_int_equal(glc_parse_size(bad[i], &b), -1);
    assert_int_equal(glc_parse_size(NULL, &b), -1);
    assert_int_equal(glc_parse_percent("30", &p), 0);
    assert_int_equal(p, 3000);
    assert_int_equal(glc_parse_percent("12.5", &p), 0);
    assert_int_equal(p, 1250);
    assert_int_equal(glc_parse_percent("33.33", &p), 0);
    assert_int_equal(p, 3333);
    assert_int_equal(glc_parse_percent("100", &p), 0);
    assert_int_equal(p, 10000);
    assert_int_equal(glc_parse_percent("0.01", &p), 0);
    assert_int_equal(p, 1);
    const char *badp[] = {"0",     "101",   "30%", "",     "-5",   "30.", "12.345",
                          "0.001", "100.01", ".5", "1e2", "99999999999999999999", NULL};
    for (int i = 0; badp[i]; i++)
        assert_int_equal(glc_parse_percent(badp[i], &p), -1);
}

static void never_a_byte_over(void **state)
{
    (void)state;
    char msg[256];
    struct glc_file *f = glc_open(NULL, "x", msg, sizeof msg);
    assert_non_null(f);
    assert_true(glc_reserve(f, 60, 100));
    assert_false(glc_reserve(f, 41, 100));
    assert_true(glc_reserve(f, 40, 100));
    assert_false(glc_reserve(f, 1, 100));
    assert_false(glc_reserve(f, UINT64_MAX, UINT64_MAX)); /* overflow refused */
    glc_release(f, 60);
    assert_true(glc_used(f) == 40);
    glc_release(f, 1000); /* more than held: stops at zero */
    assert_true(glc_used(f) == 0);
    glc_close(f);
}

/* Eight processes take one byte at a time until refused: together they
 * get exactly the limit. Once they are dead, all of it comes back. */
static void processes_share_exactly(void **state)
{
    (void)state;
    char dir[64], msg[256];
    temp_dir(dir, sizeof dir);
    enum { PROCS = 8, LIMIT = 4000 };
    int results[2], release[2];
    assert_int_equal(pipe(results), 0);
    assert_int_equal(pipe(release), 0);
    for (int i = 0; i < PROCS; i++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(release[1]);
            struct glc_file *f = glc_open(dir, "GPU-1", msg, sizeof msg);
            int got = f ? 0 : -1;
            while (f && glc_reserve(f, 1, LIMIT))
                got++;
            char c;
            /* alive, holding, until the parent has counted */
            if (write(results[1], &got, sizeof got) != sizeof got || read(release[0], &c, 1) < 0)
                _exit(1);
            _exit(0);
        }
    }
    close(release[0]);
    int total = 0;
    for (int i = 0; i < PROCS; i++) {
        int got;
        assert_int_equal(read(results[0], &got, sizeof got), sizeof got);
        assert_true(got >= 0);
        total += got;
    }
    assert_int_equal(total, LIMIT);
    close(release[1]);
    for (int i = 0; i < PROCS; i++) {
        int st;
        assert_true(wait(&st) > 0);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    close(results[0]);
    close(results[1]);
    struct glc_file *f = glc_open(dir, "GPU-1", msg, sizeof msg);
    assert_non_null(f);
    assert_true(glc_reserve(f, LIMIT, LIMIT));
    assert_true(glc_used(f) == LIMIT);
    glc_close(f);
    remove_tree(dir);
}

/* A process of the container that dies holding memory: what it held is
 * off the books at once, for the metrics (glc_peek) and for the others,
 * without waiting for an allocation that does not fit (issue #23 item
 * 10). Its slot is free for the next process. */
static void the_dead_give_back_at_once(void **state)
{
    (void)state;
    char dir[64], msg[256];
    temp_dir(dir, sizeof dir);
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct glc_file *f = glc_open(dir, "GPU-d", msg, sizeof msg);
        char c = f && glc_reserve(f, 700, 1000) ? 'y' : 'n';
        if (write(ready[1], &c, 1) != 1)
            _exit(1);
        pause();
        _exit(0);
    }
    char c = 0;
    assert_int_equal(read(ready[0], &c, 1), 1);
    assert_int_equal(c, 'y');
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    struct glc_usage u;
    assert_int_equal(glc_peek(dfd, "GPU-d", &u, msg, sizeof msg), 0);
    assert_true(u.used == 700);
    struct glc_file *f = glc_open(dir, "GPU-d", msg, sizeof msg);
    assert_non_null(f);
    assert_true(glc_reserve(f, 300, 1000));
    assert_false(glc_reserve(f, 1, 1000)); /* the child is alive: its 700 hold */
    kill(pid, SIGKILL);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_int_equal(glc_peek(dfd, "GPU-d", &u, msg, sizeof msg), 0);
    assert_true(u.used == 300);    /* nobody has allocated since */
    assert_true(glc_used(f) == 300); /* the view a program gets */
    assert_true(glc_reserve(f, 700, 1000));
    glc_close(f);
    close(dfd);
    close(ready[0]);
    close(ready[1]);
    remove_tree(dir);
}

/* Processes of one container under different UIDs share one budget: the
 * file is read-write for all whatever the umask (issue #23 item 2). */
static void other_uids_share_the_budget(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip(); /* changing UID needs root */
    char dir[64], msg[256];
    temp_dir(dir, sizeof dir);
    assert_int_equal(chmod(dir, 0777), 0); /* as gpulet makes the container's folder */
    mode_t old = umask(077);
    struct glc_file *f = glc_open(dir, "GPU-u", msg, sizeof msg);
    umask(old);
    assert_non_null(f);
    assert_true(glc_reserve(f, 700, 1000));
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (setgid(65534) < 0 || setuid(65534) < 0)
            _exit(10);
        struct glc_file *g = glc_open(dir, "GPU-u", msg, sizeof msg);
        if (g == NULL)
            _exit(11);
        if (glc_reserve(g, 301, 1000))
            _exit(12); /* a private budget would have let it */
        _exit(glc_reserve(g, 300, 1000) ? 0 : 13);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    glc_close(f);
    remove_tree(dir);
}

static void hostile_state_files(void **state)
{
    (void)state;
    char dir[64], path[128], msg[256];
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/GPU-short", dir);
    write_file(path, "not a state file");
    assert_null(glc_open(dir, "GPU-short", msg, sizeof msg));
    assert_contains(msg, "not a gpulet state file");
    snprintf(path, sizeof path, "%s/GPU-link", dir);
    assert_int_equal(symlink("/etc/passwd", path), 0);
    assert_null(glc_open(dir, "GPU-link", msg, sizeof msg));
    assert_contains(msg, "cannot open");
    snprintf(path, sizeof path, "%s/GPU-dir", dir);
    assert_int_equal(mkdir(path, 0700), 0);
    assert_null(glc_open(dir, "GPU-dir", msg, sizeof msg));
    assert_null(glc_open("/nonexistent/dir", "GPU-x", msg, sizeof msg));
    remove_tree(dir);
}

/* gpulet's metrics read what the interposer wrote, and nothing else. */
static void peek_at_state_files(void **state)
{
    (void)state;
    char dir[64], path[128], path1[128], msg[256];
    temp_dir(dir, sizeof dir);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    assert_true(dfd >= 0);
    struct glc_file *f = glc_open(dir, "GPU-2", msg, sizeof msg);
    assert_non_null(f);
    assert_true(glc_reserve(f, 1000, 1 << 20));
    glc_charge(f, 5000, 5000000, 1000000000, 1);
    glc_charge(f, 5000, 2000000, 1000000000, 2);
    struct glc_usage u;
    assert_int_equal(glc_peek(dfd, "GPU-2", &u, msg, sizeof msg), 0);
    assert_true(u.used == 1000 && u.charged_ns == 7000000 && u.counted);
    /* the slot's lock goes with the process's open file: what it held is
     * no longer counted, before any other process looks */
    glc_close(f);
    assert_int_equal(glc_peek(dfd, "GPU-2", &u, msg, sizeof msg), 0);
    assert_true(u.used == 0 && u.charged_ns == 7000000 && u.counted);

    /* files of the first layouts (magic "GLC1", slots matched by PID, with
     * and without the counter) are read as they say, never joined */
    struct stat st;
    snprintf(path, sizeof path, "%s/GPU-2", dir);
    assert_int_equal(stat(path, &st), 0);
    char buf[65536];
    int src = open(path, O_RDONLY);
    ssize_t n = read(src, buf, sizeof buf);
    close(src);
    assert_true(n == st.st_size);
    memcpy(buf, "1CLG", 4); /* 0x474c4331, little-endian */
    uint64_t stored = 1500;
    memcpy(buf + 8 + sizeof(pthread_mutex_t), &stored, sizeof stored);
    for (int layout = 0; layout < 2; layout++) {
        snprintf(path1, sizeof path1, "%s/GPU-v%d", dir, layout);
        int dst = open(path1, O_WRONLY | O_CREAT, 0600);
        size_t len = (size_t)n - (layout == 0 ? 8 : 0);
        assert_true(write(dst, buf, len) == (ssize_t)len);
        close(dst);
        assert_int_equal(glc_peek(dfd, path1 + strlen(dir) + 1, &u, msg, sizeof msg), 0);
        assert_true(u.used == 1500 && u.counted == (layout == 1));
        assert_null(glc_open(dir, path1 + strlen(dir) + 1, msg, sizeof msg));
        assert_contains(msg, "not a gpulet state file of this version");
    }
    int dst;

    /* the container's own inventions */
    snprintf(path, sizeof path, "%s/GPU-short", dir);
    write_file(path, "not a state file");
    assert_int_equal(glc_peek(dfd, "GPU-short", &u, msg, sizeof msg), -1);
    assert_contains(msg, "size");
    memset(buf, 0x41, sizeof buf);
    snprintf(path, sizeof path, "%s/GPU-magic", dir);
    dst = open(path, O_WRONLY | O_CREAT, 0600);
    assert_true(write(dst, buf, (size_t)st.st_size) == st.st_size);
    close(dst);
    assert_int_equal(glc_peek(dfd, "GPU-magic", &u, msg, sizeof msg), -1);
    assert_contains(msg, "magic");
    snprintf(path, sizeof path, "%s/GPU-link", dir);
    assert_int_equal(symlink(path1, path), 0);
    assert_int_equal(glc_peek(dfd, "GPU-link", &u, msg, sizeof msg), -1);
    snprintf(path, sizeof path, "%s/GPU-fifo", dir);
    assert_int_equal(mkfifo(path, 0600), 0);
    assert_int_equal(glc_peek(dfd, "GPU-fifo", &u, msg, sizeof msg), -1); /* at once */
    assert_int_equal(glc_peek(dfd, "GPU-none", &u, msg, sizeof msg), -1);
    close(dfd);
    remove_tree(dir);
}

static void bucket_holds_the_share(void **state)
{
    (void)state;
    char msg[256];
    struct glc_file *f = glc_open(NULL, "b", msg, sizeof msg);
    assert_non_null(f);
    const uint64_t ms = 1000000, burst = 6 * ms;
    uint64_t t = 1000 * ms, used = 0;
    /* launches of 1 ms for 10 s of wall time at 30 %, waiting as told */
    while (t < 11000 * ms) {
        t += glc_charge(f, 3000, ms, burst, t);
        used += ms;
    }
    assert_true(used >= 2950 * ms && used <= 3050 * ms);
    /* idle time banks no more than the burst */
    uint64_t free_launches = 0;
    t += 100000 * ms;
    while (glc_charge(f, 3000, ms, burst, t) == 0)
        free_launches++;
    assert_true(free_launches <= 7);
    glc_close(f);
}

static void array_sizes(void **state)
{
    (void)state;
    assert_true(glc_array_bytes(100, 0, 0, 4, 1, 1) == 400);
    assert_true(glc_array_bytes(10, 10, 10, 4, 2, 1) == 8000);
    /* 64x64 over 3 levels: 64x64 + 32x32 + 16x16 */
    assert_true(glc_array_bytes(64, 64, 0, 1, 1, 3) == 4096 + 1024 + 256);
    assert_true(glc_array_bytes(UINT64_MAX, 2, 1, 4, 1, 1) == UINT64_MAX);
    assert_true(glc_array_bytes(1ULL << 40, 1ULL << 30, 1, 16, 4, 1) == UINT64_MAX);
}

static void allocation_map(void **state)
{
    (void)state;
    struct glc_map m = {0};
    for (uint64_t i = 0; i < 10000; i++)
        assert_int_equal(glc_map_put(&m, 1 + (uint32_t)(i % 3), 0x1000 + i * 512, (int)(i % 4), i),
                         0);
    int dev;
    uint64_t bytes;
    assert_false(glc_map_take(&m, 2, 0x1000, &dev, &bytes)); /* kind matters */
    for (uint64_t i = 0; i < 10000; i += 2) {
        assert_true(glc_map_take(&m, 1 + (uint32_t)(i % 3), 0x1000 + i * 512, &dev, &bytes));
        assert_true(bytes == i && dev == (int)(i % 4));
    }
    assert_false(glc_map_take(&m, 1, 0x1000, &dev, &bytes)); /* taken once */
    /* a read leaves the entry */
    assert_false(glc_map_get(&m, 1, 0x1000, &dev, &bytes));
    assert_true(glc_map_get(&m, 2, 0x1000 + 1 * 512, &dev, &bytes));
    assert_true(bytes == 1 && dev == 1);
    assert_true(glc_map_get(&m, 2, 0x1000 + 1 * 512, &dev, &bytes));
    /* tombstones do not grow the table for ever */
    for (int round = 0; round < 50; round++) {
        assert_int_equal(glc_map_put(&m, 5, 7, 0, 1), 0);
        assert_true(glc_map_take(&m, 5, 7, &dev, &bytes));
    }
    assert_true(m.cap <= 32768);
    assert_true(m.live == 5000);
    glc_map_free(&m);
    assert_false(glc_map_take(&m, 1, 1, &dev, &bytes));
    assert_false(glc_map_get(&m, 1, 1, &dev, &bytes));
}

static double cpu_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* CPU ns per lookup of the first `n` keys of `key` in a map holding them;
 * the best of three rounds. */
static double lookup_ns(uint64_t (*key)(uint64_t), uint64_t n)
{
    struct glc_map m = {0};
    for (uint64_t i = 0; i < n; i++)
        assert_int_equal(glc_map_put(&m, 1, key(i), 0, i), 0);
    double best = 1e18;
    int dev;
    uint64_t bytes;
    for (int round = 0; round < 3; round++) {
        double t0 = cpu_ns();
        for (uint64_t i = 0; i < 20000; i++)
            assert_true(glc_map_get(&m, 1, key(i % n), &dev, &bytes));
        double per = (cpu_ns() - t0) / 20000;
        best = per < best ? per : best;
    }
    glc_map_free(&m);
    return best;
}

/* The simulator's pointers: the slot in bits 38-55. */
static uint64_t sim_key(uint64_t i)
{
    return (1ULL << 62) | (i << 38);
}

/* Large real allocations: 2 MiB apart and more. */
static uint64_t big_key(uint64_t i)
{
    return 0x7f0000000000ULL + (i << 21);
}

static uint64_t small_key(uint64_t i)
{
    return 0x1000 + i * 512;
}

/* Issue #23: keys that differ only in high bits all fell in one bucket,
 * so a lookup at 20,000 live allocations walked them all. A lookup must
 * cost about the same with 64 live entries and with 20,000. */
static void allocation_map_is_flat(void **state)
{
    (void)state;
    uint64_t (*kinds[])(uint64_t) = {sim_key, big_key, small_key};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        double few = lookup_ns(kinds[k], 64), many = lookup_ns(kinds[k], 20000);
        print_message("keys %zu: %.1f ns per lookup at 64 entries, %.1f at 20000 (x%.1f)\n", k,
                      few, many, many / few);
        assert_true(many < 10 * few + 50);
    }
}

static int elf_defines_at(const char *path, const char *name)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    assert_true(fd >= 0);
    int r = glc_elf_defines(fd, name);
    close(fd);
    return r;
}

/* How the interposer tells a copy of the driver by what it exports: libc
 * (found through a function of its own) defines snprintf, not cuInit;
 * files that are not whole ELF objects are -1, never read out of bounds. */
static void elf_exports(void **state)
{
    (void)state;
    Dl_info where;
    int (*fn)(char *, size_t, const char *, ...) = snprintf;
    void *addr;
    memcpy(&addr, &fn, sizeof addr);
    assert_true(dladdr(addr, &where) && where.dli_fname);
    assert_int_equal(elf_defines_at(where.dli_fname, "snprintf"), 1);
    assert_int_equal(elf_defines_at(where.dli_fname, "cuInit"), 0);
    assert_int_equal(elf_defines_at(where.dli_fname, "snprint"), 0); /* a prefix is not a name */

    char dir[64], path[128];
    snprintf(dir, sizeof dir, "/tmp/gpulet-elf-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/lib.so", dir);
    int in = open(where.dli_fname, O_RDONLY | O_CLOEXEC);
    assert_true(in >= 0);
    static unsigned char head[65536];
    assert_true(read(in, head, sizeof head) == (ssize_t)sizeof head);
    close(in);
    /* the first 64 KiB of libc: its section headers lie past the end */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fwrite(head, 1, sizeof head, f);
    fclose(f);
    assert_int_equal(elf_defines_at(path, "snprintf"), -1);
    /* an ELF header pointing its section headers anywhere */
    Elf64_Ehdr *eh = (Elf64_Ehdr *)head;
    uint64_t offsets[] = {UINT64_MAX - 8, 65536 - 32, 1, 0};
    for (size_t i = 0; i < sizeof offsets / sizeof offsets[0]; i++) {
        eh->e_shoff = offsets[i];
        eh->e_shnum = 0xffff;
        f = fopen(path, "w");
        assert_non_null(f);
        fwrite(head, 1, sizeof head, f);
        fclose(f);
        assert_int_equal(elf_defines_at(path, "snprintf"), -1);
    }
    /* junk, empty, a FIFO, a folder */
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("not an ELF file at all, just text\n", f);
    fclose(f);
    assert_int_equal(elf_defines_at(path, "cuInit"), -1);
    f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(elf_defines_at(path, "cuInit"), -1);
    unlink(path);
    assert_int_equal(mkfifo(path, 0600), 0);
    assert_int_equal(elf_defines_at(path, "cuInit"), -1);
    unlink(path);
    assert_int_equal(elf_defines_at(dir, "cuInit"), -1);
    rmdir(dir);
}

#define UUID0 "GPU-8e2f0000-1111-2222-3333-444455556666"
#define UUID1 "GPU-aaaabbbb-cccc-dddd-eeee-ffff00001111"

static int parse(const char *text, struct glc_limits *l, char *msg)
{
    return glc_parse_limits(text, strlen(text), l, msg, 256);
}

/* What gpulet's Allocate writes, and what it must not be taken for. */
static void limits_file_text(void **state)
{
    (void)state;
    struct glc_limits l;
    char msg[256];
    assert_int_equal(parse("# gpulet CUDA limits v1\n"
                           "GPULET_CUDA_DEVICE_UUID_0=" UUID0 "\n"
                           "GPULET_CUDA_MEMORY_LIMIT_0=21474836480\n"
                           "GPULET_CUDA_COMPUTE_SHARE_0=12.5\n"
                           "\n"
                           "GPULET_CUDA_DEVICE_UUID_1=" UUID1 "\n"
                           "GPULET_CUDA_MEMORY_LIMIT_1=1Gi\n"
                           "GPULET_CUDA_COMPUTE_SHARE_1=100\n"
                           "GPULET_CUDA_STATE_DIR=/run/gpulet/cuda\n"
                           "GPULET_CUDA_CONTEXT_SIZE=1Mi",
                           &l, msg),
                     0);
    assert_true(l.by_uuid);
    assert_string_equal(l.dev[0].uuid, UUID0);
    assert_true(l.dev[0].limit == 20ULL << 30);
    assert_int_equal(l.dev[0].share, 1250);
    assert_true(l.dev[1].limit == 1ULL << 30);
    assert_int_equal(l.dev[1].share, 0); /* 100 %: no share */
    assert_string_equal(l.state_dir, "/run/gpulet/cuda");
    assert_true(l.context_bytes == 1ULL << 20);
    assert_int_equal(l.dev[2].limit, 0);

    assert_int_equal(parse("GPULET_CUDA_MEMORY_LIMIT_3=100\n", &l, msg), 0);
    assert_false(l.by_uuid);
    assert_int_equal(l.dev[3].limit, 100);
    assert_int_equal(parse("", &l, msg), 0);

    const char *bad[] = {
        "GPULET_CUDA_MEMORY_LIMIT_0=0\n",
        "GPULET_CUDA_MEMORY_LIMIT_0=1Gi\nGPULET_CUDA_MEMORY_LIMIT_0=99Gi\n", /* repeated */
        "GPULET_CUDA_MEMORY_LIMIT_0\n",
        "GPULET_CUDA_MEMORY_LIMIT=1Gi\n",     /* the all-device form is not the file's */
        "GPULET_CUDA_MEMORY_LIMIT_64=1Gi\n",  /* beyond the devices */
        "GPULET_CUDA_MEMORY_LIMIT_01=1Gi\n",
        "GPULET_CUDA_MEMORY_LIMIT_0=1Gi \n",  /* trailing space */
        "GPULET_CUDA_MEMORY_LIMIT_0=1Gi\r\n",
        " GPULET_CUDA_MEMORY_LIMIT_0=1Gi\n",
        "GPULET_CUDA_COMPUTE_SHARE_0=0\n",
        "GPULET_CUDA_COMPUTE_SHARE_0=101\n",
        "GPULET_CUDA_SOMETHING_0=1\n",
        "LD_PRELOAD=/tmp/x.so\n",
        "GPULET_CUDA_DEVICE_UUID_0=GPU-12\n",
        "GPULET_CUDA_DEVICE_UUID_0=" UUID0 "/1\n",
        "GPULET_CUDA_STATE_DIR=relative\n",
        "GPULET_CUDA_STATE_DIR=/a/../b\n",
        /* a UUID for one device and not the other */
        "GPULET_CUDA_DEVICE_UUID_0=" UUID0 "\nGPULET_CUDA_MEMORY_LIMIT_0=1\n"
        "GPULET_CUDA_MEMORY_LIMIT_1=1\n",
        NULL};
    for (int i = 0; bad[i]; i++) {
        msg[0] = '\0';
        assert_int_equal(parse(bad[i], &l, msg), -1);
        assert_true(strncmp(msg, "line", 4) == 0 || strstr(msg, "UUID") != NULL);
    }
    const char nul[] = "GPULET_CUDA_MEMORY_LIMIT_0=1\0Gi\n";
    assert_int_equal(glc_parse_limits(nul, sizeof nul - 1, &l, msg, sizeof msg), -1);
    static char big[GLC_LIMITS_MAX_BYTES + 2];
    memset(big, '#', sizeof big);
    assert_int_equal(glc_parse_limits(big, sizeof big, &l, msg, sizeof msg), -1);
    assert_non_null(strstr(msg, "4096"));
    /* comment lines up to the bound are fine */
    assert_int_equal(glc_parse_limits(big, GLC_LIMITS_MAX_BYTES, &l, msg, sizeof msg), 0);

    assert_true(glc_same_uuid(UUID0, "GPU-8E2F0000-1111-2222-3333-444455556666"));
    assert_true(glc_same_uuid("MIG-8e2f0000-1111-2222-3333-444455556666", UUID0));
    assert_false(glc_same_uuid(UUID0, UUID1));
    assert_false(glc_same_uuid("", UUID1));
    assert_false(glc_same_uuid(UUID0, "GPU-8e2f0000-1111-2222-3333-44445555666"));
}

/* The file on disk: absent, a link, a FIFO (must not hang), a folder,
 * oversized, unreadable are each told apart from a good one. */
/* What gpulet writes, the interposer reads back: one codec both ways. */
static void limits_file_written_and_read(void **state)
{
    (void)state;
    const struct glc_grant grants[] = {{UUID0, 10ULL << 30, 1250}, {UUID1, 5ULL << 20, 3333},
                                       {UUID0, 1ULL << 30, 10000}};
    char text[1024], msg[256];
    int n = glc_format_limits(grants, 3, 1ULL << 20, text, sizeof text);
    assert_true(n > 0 && (size_t)n == strlen(text));
    assert_contains(text, "GPULET_CUDA_COMPUTE_SHARE_0=12.5\n");
    assert_contains(text, "GPULET_CUDA_COMPUTE_SHARE_1=33.33\n");
    assert_contains(text, "GPULET_CUDA_COMPUTE_SHARE_2=100\n");
    struct glc_limits l;
    assert_int_equal(glc_parse_limits(text, (size_t)n, &l, msg, sizeof msg), 0);
    assert_true(l.by_uuid);
    assert_string_equal(l.dev[1].uuid, UUID1);
    assert_true(l.dev[0].limit == 10ULL << 30);
    assert_true(l.dev[1].limit == 5ULL << 20);
    assert_int_equal(l.dev[0].share, 1250);
    assert_int_equal(l.dev[1].share, 3333);
    assert_int_equal(l.dev[2].share, 0); /* the whole GPU: no share to hold it to */
    assert_true(l.context_bytes == 1ULL << 20);
    /* Without a context size, none is written. */
    n = glc_format_limits(grants, 1, 0, text, sizeof text);
    assert_null(strstr(text, "CONTEXT"));
    assert_int_equal(glc_parse_limits(text, (size_t)n, &l, msg, sizeof msg), 0);
    /* Too small a buffer is said, never a cut file. */
    for (size_t len = 0; len < 100; len++)
        assert_int_equal(glc_format_limits(grants, 1, 0, text, len), -1);
    char share[16];
    glc_format_percent(20000, share, sizeof share);
    assert_string_equal(share, "100");
    glc_format_percent(1, share, sizeof share);
    assert_string_equal(share, "0.01");
    /* A share that rounds to nothing (a grant of under 1/10000 of a GPU)
     * is the least the file can say, not a "0" it refuses to read. */
    const struct glc_grant tiny[] = {{UUID0, 4ULL << 20, 0}};
    n = glc_format_limits(tiny, 1, 0, text, sizeof text);
    assert_true(n > 0);
    assert_contains(text, "GPULET_CUDA_COMPUTE_SHARE_0=0.01\n");
    assert_int_equal(glc_parse_limits(text, (size_t)n, &l, msg, sizeof msg), 0);
    assert_int_equal(l.dev[0].share, 1);
}

static void limits_file_hostile(void **state)
{
    (void)state;
    char dir[64], path[128], other[128], msg[256];
    struct glc_limits l;
    snprintf(dir, sizeof dir, "/tmp/gpulet-limits-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/cuda-limits", dir);
    snprintf(other, sizeof other, "%s/other", dir);
    assert_int_equal(glc_read_limits(path, &l, msg, sizeof msg), 1);

    FILE *f = fopen(other, "w");
    assert_non_null(f);
    fputs("GPULET_CUDA_MEMORY_LIMIT_0=99Gi\n", f);
    fclose(f);
    assert_int_equal(glc_read_limits(other, &l, msg, sizeof msg), 0);
    assert_true(l.dev[0].limit == 99ULL << 30);
    assert_int_equal(symlink(other, path), 0);
    assert_int_equal(glc_read_limits(path, &l, msg, sizeof msg), -1);
    assert_non_null(strstr(msg, "symbolic link"));
    unlink(path);

    assert_int_equal(mkfifo(path, 0600), 0);
    assert_int_equal(glc_read_limits(path, &l, msg, sizeof msg), -1);
    assert_non_null(strstr(msg, "not a regular file"));
    unlink(path);

    assert_int_equal(mkdir(path, 0700), 0);
    assert_int_equal(glc_read_limits(path, &l, msg, sizeof msg), -1);
    rmdir(path);

    f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 600; i++)
        fputs("# padding\n", f);
    fclose(f);
    assert_int_equal(glc_read_limits(path, &l, msg, sizeof msg), -1);
    assert_non_null(strstr(msg, "4096"));

    f = fopen(path, "w");
    assert_non_null(f);
    fputs("GPULET_CUDA_MEMORY_LIMIT_0=1Gi\nbogus\n", f);
    fclose(f);
    assert_int_equal(glc_read_limits(path, &l, msg, sizeof msg), -1);
    assert_non_null(strstr(msg, "line 2"));
    unlink(path);
    unlink(other);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sizes_and_percents),     cmocka_unit_test(never_a_byte_over),
        cmocka_unit_test(processes_share_exactly), cmocka_unit_test(hostile_state_files),
        cmocka_unit_test(peek_at_state_files),    cmocka_unit_test(the_dead_give_back_at_once),
        cmocka_unit_test(other_uids_share_the_budget),
        cmocka_unit_test(bucket_holds_the_share),  cmocka_unit_test(array_sizes),
        cmocka_unit_test(allocation_map),         cmocka_unit_test(allocation_map_is_flat),
        cmocka_unit_test(elf_exports),            cmocka_unit_test(limits_file_text),
        cmocka_unit_test(limits_file_hostile), cmocka_unit_test(limits_file_written_and_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
