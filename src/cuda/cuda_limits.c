/* The interposer's bookkeeping; see cuda_limits.h. */
#include "cuda/cuda_limits.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* "GLC2": slots are held by locks. Files of "GLC1" (slots matched by PID)
 * are still read by glc_peek, never joined. */
#define GLC_MAGIC 0x474c4332U
#define GLC_MAGIC_V1 0x474c4331U
#define GLC_MIN_DEBT_NS 100000LL
/* Slot i is held by an open file description's write lock on byte
 * GLC_LOCK_BASE + i of the state file (past its end, where nothing is
 * read): the kernel drops it when the process ends, however it ends, and
 * locks know no PID namespaces. */
#define GLC_LOCK_BASE ((off_t)1 << 32)

struct glc_proc {
    int32_t pid;    /* the holder's PID in its own namespace: for people, not matching */
    uint64_t taken; /* non-zero while the slot is held */
    uint64_t used;
};

struct glc_shared {
    uint32_t magic;
    pthread_mutex_t lock;
    uint64_t used;
    int64_t tokens_ns;
    uint64_t refilled_ns;
    struct glc_proc procs[GLC_MAX_PROCS];
    /* Since the second layout: all GPU time charged, for gpulet's metrics.
     * A file of the first layout (without it) is still used, uncounted. */
    uint64_t charged_ns;
};

#define GLC_V1_BYTES offsetof(struct glc_shared, charged_ns)

struct glc_file {
    struct glc_shared *s;
    size_t size; /* of the mapping */
    bool mapped;
    int slot;   /* this process's slot, -1 until it takes memory */
    int32_t pid; /* the process that holds fd's locks */
    int fd;     /* the state file, for the slot locks; -1 when in this process only */
    char *path;
};

int glc_parse_size(const char *text, uint64_t *bytes)
{
    if (text == NULL || *text < '0' || *text > '9')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0)
        return -1;
    static const struct {
        const char *suffix;
        uint64_t mult;
    } units[] = {{"", 1},          {"Ki", 1ULL << 10}, {"Mi", 1ULL << 20}, {"Gi", 1ULL << 30},
                 {"Ti", 1ULL << 40}, {"K", 1000},      {"M", 1000000},     {"G", 1000000000ULL},
                 {"T", 1000000000000ULL}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcmp(end, units[i].suffix) == 0) {
            uint64_t r;
            if (__builtin_mul_overflow((uint64_t)v, units[i].mult, &r) || r == 0)
                return -1;
            *bytes = r;
            return 0;
        }
    return -1;
}

int glc_parse_percent(const char *text, unsigned int *hundredths)
{
    if (text == NULL || *text < '0' || *text > '9')
        return -1;
    unsigned long v = 0;
    const char *p = text;
    for (; *p >= '0' && *p <= '9' && v <= 100; p++)
        v = v * 10 + (unsigned long)(*p - '0');
    v *= 100;
    if (*p == '.') {
        p++;
        for (unsigned long scale = 10; scale > 0; scale /= 10, p++) {
            if (*p < '0' || *p > '9')
                break;
            v += (unsigned long)(*p - '0') * scale;
        }
        if (p[-1] == '.') /* "30." */
            return -1;
    }
    if (*p != '\0' || v < 1 || v > 10000)
        return -1;
    *hundredths = (unsigned int)v;
    return 0;
}

static void init_shared(struct glc_shared *s)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&s->lock, &a);
    pthread_mutexattr_destroy(&a);
    __atomic_store_n(&s->magic, GLC_MAGIC, __ATOMIC_RELEASE);
}

/* Every process of a container shares the file, whatever its UID (the
 * folder is the container's alone): read-write for all, umask aside. */
static struct glc_shared *map_file(const char *path, int *fd_out, size_t *size, char *msg,
                                   size_t msg_len)
{
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd < 0) {
        snprintf(msg, msg_len, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct glc_shared *s = NULL;
    struct stat st;
    /* The flock orders the first process's initialisation before anyone
     * maps the file. */
    if (flock(fd, LOCK_EX) < 0 || fstat(fd, &st) < 0) {
        snprintf(msg, msg_len, "cannot lock %s: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode) || (st.st_size != 0 && st.st_size != (off_t)sizeof *s)) {
        snprintf(msg, msg_len, "%s is not a gpulet state file of this version (remove it)", path);
    } else if (st.st_size == 0 && ftruncate(fd, (off_t)sizeof *s) < 0) {
        snprintf(msg, msg_len, "cannot size %s: %s", path, strerror(errno));
    } else {
        if (st.st_size == 0)
            (void)fchmod(fd, 0666); /* best effort: the umask took bits off */
        *size = sizeof *s;
        s = mmap(NULL, *size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (s == MAP_FAILED) {
            s = NULL;
            snprintf(msg, msg_len, "cannot map %s: %s", path, strerror(errno));
        } else if (st.st_size == 0) {
            init_shared(s);
        } else if (__atomic_load_n(&s->magic, __ATOMIC_ACQUIRE) != GLC_MAGIC) {
            snprintf(msg, msg_len, "%s is not a gpulet state file of this version (remove it)",
                     path);
            munmap(s, *size);
            s = NULL;
        }
    }
    /* The mapping keeps the open file, and with it the flock: unlock. */
    flock(fd, LOCK_UN);
    if (s == NULL)
        close(fd);
    else
        *fd_out = fd;
    return s;
}

struct glc_file *glc_open(const char *dir, const char *name, char *msg, size_t msg_len)
{
    struct glc_file *f = calloc(1, sizeof *f);
    if (f == NULL) {
        snprintf(msg, msg_len, "out of memory");
        return NULL;
    }
    f->slot = -1;
    f->pid = (int32_t)getpid();
    f->fd = -1;
    if (dir && dir[0]) {
        size_t len = strlen(dir) + strlen(name) + 2;
        f->path = malloc(len);
        if (f->path == NULL) {
            snprintf(msg, msg_len, "out of memory");
            free(f);
            return NULL;
        }
        snprintf(f->path, len, "%s/%s", dir, name);
        f->s = map_file(f->path, &f->fd, &f->size, msg, msg_len);
        f->mapped = true;
    } else {
        f->s = calloc(1, sizeof *f->s);
        f->size = sizeof *f->s;
        if (f->s)
            init_shared(f->s);
        else
            snprintf(msg, msg_len, "out of memory");
    }
    if (f->s == NULL) {
        free(f->path);
        free(f);
        return NULL;
    }
    return f;
}

void glc_close(struct glc_file *f)
{
    if (f == NULL)
        return;
    if (f->mapped)
        munmap(f->s, f->size);
    else {
        pthread_mutex_destroy(&f->s->lock);
        free(f->s);
    }
    if (f->fd >= 0)
        close(f->fd);
    free(f->path);
    free(f);
}

static void lock(struct glc_shared *s)
{
    /* A process that died holding the lock may have left the total off
     * from the slots: recount. */
    if (pthread_mutex_lock(&s->lock) == EOWNERDEAD) {
        uint64_t sum = 0;
        for (size_t i = 0; i < GLC_MAX_PROCS; i++)
            sum += s->procs[i].used;
        s->used = sum;
        pthread_mutex_consistent(&s->lock);
    }
}

static bool try_lock(int fd, int slot, short type)
{
    struct flock l = {.l_type = type, .l_whence = SEEK_SET, .l_start = GLC_LOCK_BASE + slot,
                      .l_len = 1};
    return fcntl(fd, F_OFD_SETLK, &l) == 0;
}

/* Takes back the slots whose holders are gone: their locks are free. */
static void reclaim_dead(struct glc_file *f)
{
    struct glc_shared *s = f->s;
    if (f->fd < 0)
        return;
    for (int i = 0; i < GLC_MAX_PROCS; i++) {
        struct glc_proc *p = &s->procs[i];
        if (p->taken == 0 || i == f->slot || !try_lock(f->fd, i, F_WRLCK))
            continue;
        s->used -= p->used < s->used ? p->used : s->used;
        *p = (struct glc_proc){0};
        try_lock(f->fd, i, F_UNLCK);
    }
}

void glc_forked(struct glc_file *f)
{
    f->pid = (int32_t)getpid();
    f->slot = -1;
    if (f->fd < 0)
        return;
    close(f->fd);
    f->fd = open(f->path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
}

/* This process's slot; -1 when all are held by live processes, or the
 * file cannot be locked. */
static int own_slot(struct glc_file *f)
{
    struct glc_shared *s = f->s;
    if (f->slot >= 0)
        return f->slot;
    if (!f->mapped)
        return f->slot = 0;
    if (f->fd < 0)
        return -1;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < GLC_MAX_PROCS; i++)
            if (s->procs[i].taken == 0 && try_lock(f->fd, i, F_WRLCK)) {
                s->procs[i] = (struct glc_proc){f->pid, 1, 0};
                return f->slot = i;
            }
        reclaim_dead(f);
    }
    return -1;
}

bool glc_reserve(struct glc_file *f, uint64_t bytes, uint64_t limit)
{
    struct glc_shared *s = f->s;
    lock(s);
    uint64_t after;
    bool fits = !__builtin_add_overflow(s->used, bytes, &after) && after <= limit;
    if (!fits) {
        reclaim_dead(f);
        fits = !__builtin_add_overflow(s->used, bytes, &after) && after <= limit;
    }
    int slot = fits ? own_slot(f) : -1;
    if (slot >= 0) {
        s->procs[slot].used += bytes;
        s->used += bytes;
    }
    pthread_mutex_unlock(&s->lock);
    return slot >= 0;
}

void glc_release(struct glc_file *f, uint64_t bytes)
{
    struct glc_shared *s = f->s;
    lock(s);
    int slot = f->slot; /* a process without one has nothing to give back */
    if (slot >= 0) {
        uint64_t n = bytes < s->procs[slot].used ? bytes : s->procs[slot].used;
        s->procs[slot].used -= n;
        s->used -= n < s->used ? n : s->used;
    }
    pthread_mutex_unlock(&s->lock);
}

uint64_t glc_used(struct glc_file *f)
{
    lock(f->s);
    reclaim_dead(f);
    uint64_t used = f->s->used;
    pthread_mutex_unlock(&f->s->lock);
    return used;
}

uint64_t glc_charge(struct glc_file *f, unsigned int share, uint64_t cost_ns, uint64_t burst_ns,
                    uint64_t now_ns)
{
    struct glc_shared *s = f->s;
    lock(s);
    if (s->refilled_ns == 0 || now_ns < s->refilled_ns)
        s->refilled_ns = now_ns;
    int64_t gain = (int64_t)((now_ns - s->refilled_ns) * share / 10000);
    s->refilled_ns = now_ns;
    s->tokens_ns = s->tokens_ns + gain > (int64_t)burst_ns ? (int64_t)burst_ns : s->tokens_ns + gain;
    /* Whoever comes after waits for this charge: a launch never waits for
     * its own cost, only for the debt before it, and only once the debt is
     * worth a sleep (a short one costs a timer's slack, tens of us, each). */
    uint64_t wait = s->tokens_ns < -GLC_MIN_DEBT_NS ? (uint64_t)(-s->tokens_ns) * 10000 / share : 0;
    s->tokens_ns -= (int64_t)(cost_ns > INT64_MAX / 4 ? INT64_MAX / 4 : cost_ns);
    s->charged_ns += cost_ns; /* wraps after centuries */
    pthread_mutex_unlock(&s->lock);
    return wait;
}

/* The bytes held by the processes still alive: the slots whose locks are
 * held. A process killed a moment ago counts no more, whether or not a
 * process of its container has looked since. */
static int live_usage(int fd, uint64_t *used)
{
    struct glc_proc procs[128];
    uint64_t sum = 0;
    for (int first = 0; first < GLC_MAX_PROCS; first += 128) {
        if (pread(fd, procs, sizeof procs,
                  (off_t)(offsetof(struct glc_shared, procs) + first * sizeof procs[0])) !=
            (ssize_t)sizeof procs)
            return -1;
        for (int i = 0; i < 128; i++) {
            struct flock l = {.l_type = F_WRLCK, .l_whence = SEEK_SET,
                              .l_start = GLC_LOCK_BASE + first + i, .l_len = 1};
            if (procs[i].taken == 0 || procs[i].used == 0)
                continue;
            if (fcntl(fd, F_OFD_GETLK, &l) < 0)
                return -1;
            if (l.l_type != F_UNLCK && __builtin_add_overflow(sum, procs[i].used, &sum))
                sum = UINT64_MAX;
        }
    }
    *used = sum;
    return 0;
}

int glc_peek(int dir_fd, const char *name, struct glc_usage *out, char *msg, size_t msg_len)
{
    /* The container writes this file: never follow a link, never block on
     * a FIFO, and believe nothing but the exact size and the magic. The
     * lock is not taken: a container could hold it for ever. */
    int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(msg, msg_len, "cannot open %s: %s", name, strerror(errno));
        return -1;
    }
    struct stat st;
    uint32_t magic = 0;
    int rc = -1;
    *out = (struct glc_usage){0};
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
        (st.st_size != (off_t)sizeof(struct glc_shared) && st.st_size != (off_t)GLC_V1_BYTES))
        snprintf(msg, msg_len, "%s is not a regular file of a state file's size", name);
    else if (pread(fd, &magic, sizeof magic, 0) != (ssize_t)sizeof magic ||
             (magic != GLC_MAGIC_V1 && (magic != GLC_MAGIC || st.st_size == (off_t)GLC_V1_BYTES)) ||
             pread(fd, &out->used, sizeof out->used, offsetof(struct glc_shared, used)) !=
                 (ssize_t)sizeof out->used)
        snprintf(msg, msg_len, "%s has no state file's magic", name);
    else if (st.st_size == (off_t)GLC_V1_BYTES)
        rc = 0;
    else if (pread(fd, &out->charged_ns, sizeof out->charged_ns,
                   offsetof(struct glc_shared, charged_ns)) != (ssize_t)sizeof out->charged_ns)
        snprintf(msg, msg_len, "cannot read %s", name);
    else if (magic == GLC_MAGIC && live_usage(fd, &out->used) < 0)
        snprintf(msg, msg_len, "cannot read the slots of %s", name);
    else {
        out->counted = true;
        rc = 0;
    }
    close(fd);
    return rc;
}

uint64_t glc_array_bytes(uint64_t w, uint64_t h, uint64_t d, uint64_t elem_bytes,
                         unsigned int channels, unsigned int levels)
{
    uint64_t total = 0;
    if (levels == 0)
        levels = 1;
    for (unsigned int l = 0; l < levels && l < 64; l++) {
        uint64_t lw = w >> l ? w >> l : 1, lh = h >> l ? h >> l : 1, ld = d >> l ? d >> l : 1, b;
        if (__builtin_mul_overflow(lw, lh, &b) || __builtin_mul_overflow(b, ld, &b) ||
            __builtin_mul_overflow(b, elem_bytes, &b) || __builtin_mul_overflow(b, channels, &b) ||
            __builtin_add_overflow(total, b, &total))
            return UINT64_MAX;
    }
    return total;
}

/* ---- recognising the driver by what it exports ---- */

/* Larger files are not read: the driver is a few hundred MiB at most. */
#define GLC_ELF_MAX_BYTES (1ULL << 30)

static bool in_file(uint64_t off, uint64_t len, uint64_t size)
{
    return off <= size && len <= size - off;
}

int glc_elf_defines(int fd, const char *name)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < (off_t)sizeof(Elf64_Ehdr) ||
        (uint64_t)st.st_size > GLC_ELF_MAX_BYTES)
        return -1;
    uint64_t size = (uint64_t)st.st_size;
    const unsigned char *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED)
        return -1;
    int found = -1;
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)m;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
        eh->e_shentsize != sizeof(Elf64_Shdr) ||
        !in_file(eh->e_shoff, (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr), size) ||
        eh->e_shoff % _Alignof(Elf64_Shdr) != 0)
        goto out;
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(m + eh->e_shoff);
    size_t want = strlen(name);
    for (unsigned int i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_type != SHT_DYNSYM)
            continue;
        const Elf64_Shdr *syms = &sh[i];
        if (syms->sh_link >= eh->e_shnum || syms->sh_entsize != sizeof(Elf64_Sym) ||
            !in_file(syms->sh_offset, syms->sh_size, size) ||
            syms->sh_offset % _Alignof(Elf64_Sym) != 0)
            goto out;
        const Elf64_Shdr *str = &sh[syms->sh_link];
        if (!in_file(str->sh_offset, str->sh_size, size))
            goto out;
        const Elf64_Sym *sym = (const Elf64_Sym *)(m + syms->sh_offset);
        const char *names = (const char *)(m + str->sh_offset);
        found = 0;
        for (uint64_t k = 0; k < syms->sh_size / sizeof(Elf64_Sym); k++) {
            uint64_t at = sym[k].st_name;
            if (sym[k].st_shndx == SHN_UNDEF || at >= str->sh_size ||
                str->sh_size - at <= want || memcmp(names + at, name, want + 1) != 0)
                continue;
            found = 1;
            break;
        }
        break;
    }
out:
    munmap((void *)m, size);
    return found;
}

/* ---- the allocation map: open addressing, linear probing ---- */

/* Fibonacci hashing: the top bits of the product depend on every bit of
 * the key. Lower bits would not: keys differing only in high bits (the
 * simulator's pointers, large real allocations) would all collide. */
static size_t hash(uint32_t kind, uint64_t key, size_t cap)
{
    uint64_t x = (key ^ ((uint64_t)kind << 59)) * 0x9E3779B97F4A7C15ULL;
    return (size_t)(x >> (64 - __builtin_ctzll((unsigned long long)cap)));
}

static int grow(struct glc_map *m)
{
    size_t cap = m->cap ? m->cap * 2 : 256;
    if (m->live * 4 < m->cap)
        cap = m->cap; /* mostly tombstones: rebuild at the same size */
    struct glc_entry *e = calloc(cap, sizeof *e);
    if (e == NULL)
        return -1;
    for (size_t i = 0; i < m->cap; i++)
        if (m->e[i].kind != 0 && m->e[i].kind != UINT32_MAX) {
            size_t j = hash(m->e[i].kind, m->e[i].key, cap);
            while (e[j].kind != 0)
                j = (j + 1) & (cap - 1);
            e[j] = m->e[i];
        }
    free(m->e);
    m->e = e;
    m->cap = cap;
    m->used = m->live;
    return 0;
}

int glc_map_put(struct glc_map *m, uint32_t kind, uint64_t key, int dev, uint64_t bytes)
{
    if ((m->used + 1) * 4 > m->cap * 3 && grow(m) < 0)
        return -1;
    size_t i = hash(kind, key, m->cap);
    while (m->e[i].kind != 0 && m->e[i].kind != UINT32_MAX) {
        if (m->e[i].kind == kind && m->e[i].key == key) {
            m->e[i].dev = dev;
            m->e[i].bytes = bytes;
            return 0;
        }
        i = (i + 1) & (m->cap - 1);
    }
    if (m->e[i].kind == 0)
        m->used++;
    m->e[i] = (struct glc_entry){key, kind, dev, bytes};
    m->live++;
    return 0;
}

static struct glc_entry *find(const struct glc_map *m, uint32_t kind, uint64_t key)
{
    if (m->cap == 0)
        return NULL;
    size_t i = hash(kind, key, m->cap);
    while (m->e[i].kind != 0) {
        if (m->e[i].kind == kind && m->e[i].key == key)
            return &m->e[i];
        i = (i + 1) & (m->cap - 1);
    }
    return NULL;
}

bool glc_map_take(struct glc_map *m, uint32_t kind, uint64_t key, int *dev, uint64_t *bytes)
{
    struct glc_entry *e = find(m, kind, key);
    if (e == NULL)
        return false;
    *dev = e->dev;
    *bytes = e->bytes;
    e->kind = UINT32_MAX;
    m->live--;
    return true;
}

bool glc_map_get(const struct glc_map *m, uint32_t kind, uint64_t key, int *dev, uint64_t *bytes)
{
    const struct glc_entry *e = find(m, kind, key);
    if (e == NULL)
        return false;
    *dev = e->dev;
    *bytes = e->bytes;
    return true;
}

void glc_map_free(struct glc_map *m)
{
    free(m->e);
    *m = (struct glc_map){0};
}

/* ---- the limits file ---- */

/* "12" of "GPULET_CUDA_MEMORY_LIMIT_12": an ordinal below GLC_MAX_DEVS,
 * decimal without leading zeros; -1 otherwise. */
static int ordinal(const char *text)
{
    if (text[0] < '0' || text[0] > '9' || (text[0] == '0' && text[1] != '\0'))
        return -1;
    int v = 0;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9' || (v = v * 10 + (*p - '0')) >= GLC_MAX_DEVS)
            return -1;
    }
    return v;
}

static bool valid_uuid(const char *v)
{
    size_t n = strlen(v), hex = 0;
    if (n < 5 || n >= sizeof ((struct glc_limits *)0)->dev[0].uuid ||
        (strncmp(v, "GPU-", 4) != 0 && strncmp(v, "MIG-", 4) != 0))
        return false;
    for (const char *p = v + 4; *p; p++) {
        bool is_hex = (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') ||
                      (*p >= 'A' && *p <= 'F');
        if (!is_hex && *p != '-')
            return false;
        hex += is_hex;
    }
    return hex == 32;
}

bool glc_same_uuid(const char *a, const char *b)
{
    if (strlen(a) < 4 || strlen(b) < 4)
        return false;
    a += 4;
    b += 4;
    for (;;) {
        while (*a == '-')
            a++;
        while (*b == '-')
            b++;
        char x = *a >= 'A' && *a <= 'F' ? (char)(*a - 'A' + 'a') : *a;
        char y = *b >= 'A' && *b <= 'F' ? (char)(*b - 'A' + 'a') : *b;
        if (x != y)
            return false;
        if (x == '\0')
            return true;
        a++;
        b++;
    }
}

void glc_format_percent(unsigned long hundredths, char *buf, size_t len)
{
    if (hundredths > 10000)
        hundredths = 10000;
    if (hundredths == 0) /* a share that rounded to nothing: the least there is */
        hundredths = 1;
    if (hundredths % 100 == 0)
        snprintf(buf, len, "%lu", hundredths / 100);
    else if (hundredths % 10 == 0)
        snprintf(buf, len, "%lu.%lu", hundredths / 100, hundredths % 100 / 10);
    else
        snprintf(buf, len, "%lu.%02lu", hundredths / 100, hundredths % 100);
}

/* Appends to the text in buf (*at bytes so far); false once it does not fit. */
__attribute__((format(printf, 4, 5))) static bool append(char *buf, size_t len, size_t *at,
                                                         const char *fmt, ...)
{
    if (*at >= len)
        return false;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + *at, len - *at, fmt, ap);
    va_end(ap);
    if (w < 0 || (size_t)w >= len - *at)
        return false;
    *at += (size_t)w;
    return true;
}

int glc_format_limits(const struct glc_grant *devs, size_t n, uint64_t context_bytes, char *buf,
                      size_t len)
{
    size_t at = 0;
    bool fits = append(buf, len, &at, "# gpulet CUDA limits v1: ordinal = CUDA device in this "
                                      "container\n");
    for (size_t i = 0; i < n && fits; i++) {
        char share[16];
        glc_format_percent(devs[i].share, share, sizeof share);
        /* the UUID for an interposer that matches devices by UUID, not by order */
        fits = append(buf, len, &at,
                      "GPULET_CUDA_DEVICE_UUID_%zu=%s\nGPULET_CUDA_MEMORY_LIMIT_%zu=%llu\n"
                      "GPULET_CUDA_COMPUTE_SHARE_%zu=%s\n",
                      i, devs[i].uuid, i, (unsigned long long)devs[i].limit, i, share);
    }
    if (fits && context_bytes)
        fits = append(buf, len, &at, "GPULET_CUDA_CONTEXT_SIZE=%llu\n",
                      (unsigned long long)context_bytes);
    return fits ? (int)at : -1;
}

int glc_parse_limits(const char *text, size_t len, struct glc_limits *out, char *msg,
                     size_t msg_len)
{
    enum { K_UUID, K_MEM, K_SHARE };
    static const char *const prefix[] = {"GPULET_CUDA_DEVICE_UUID_", "GPULET_CUDA_MEMORY_LIMIT_",
                                         "GPULET_CUDA_COMPUTE_SHARE_"};
    uint8_t seen[GLC_MAX_DEVS] = {0}; /* a bit per kind of key */
    bool seen_dir = false, seen_ctx = false;
    *out = (struct glc_limits){0};
    if (len > GLC_LIMITS_MAX_BYTES || memchr(text, '\0', len) != NULL) {
        snprintf(msg, msg_len, "%s", len > GLC_LIMITS_MAX_BYTES ? "over 4096 bytes" : "a NUL byte");
        return -1;
    }
    char line[GLC_LIMITS_MAX_BYTES + 1];
    size_t at = 0;
    for (int number = 1; at < len; number++) {
        const char *nl = memchr(text + at, '\n', len - at);
        size_t n = nl ? (size_t)(nl - (text + at)) : len - at;
        memcpy(line, text + at, n);
        line[n] = '\0';
        at += n + 1;
        if (n == 0 || line[0] == '#')
            continue;
        char *eq = strchr(line, '=');
        if (eq == NULL) {
            snprintf(msg, msg_len, "line %d: not KEY=VALUE", number);
            return -1;
        }
        *eq = '\0';
        const char *key = line, *value = eq + 1;
        bool ok = false, repeated = false;
        if (strcmp(key, "GPULET_CUDA_STATE_DIR") == 0) {
            repeated = seen_dir;
            seen_dir = true;
            ok = value[0] == '/' && strlen(value) < sizeof out->state_dir &&
                 strstr(value, "/../") == NULL;
            if (ok)
                snprintf(out->state_dir, sizeof out->state_dir, "%s", value);
        } else if (strcmp(key, "GPULET_CUDA_CONTEXT_SIZE") == 0) {
            repeated = seen_ctx;
            seen_ctx = true;
            ok = glc_parse_size(value, &out->context_bytes) == 0;
        } else {
            for (int k = K_UUID; k <= K_SHARE; k++) {
                size_t plen = strlen(prefix[k]);
                int i = strncmp(key, prefix[k], plen) == 0 ? ordinal(key + plen) : -1;
                if (i < 0)
                    continue;
                repeated = seen[i] & (1U << k);
                seen[i] |= (uint8_t)(1U << k);
                if (k == K_UUID && (ok = valid_uuid(value)))
                    snprintf(out->dev[i].uuid, sizeof out->dev[i].uuid, "%s", value);
                else if (k == K_MEM)
                    ok = glc_parse_size(value, &out->dev[i].limit) == 0;
                else if (k == K_SHARE && (ok = glc_parse_percent(value, &out->dev[i].share) == 0))
                    out->dev[i].share = out->dev[i].share < 10000 ? out->dev[i].share : 0;
                break;
            }
        }
        if (repeated || !ok) {
            snprintf(msg, msg_len, "line %d: %s %.64s", number,
                     repeated ? "repeated key" : "unknown key or bad value for", key);
            return -1;
        }
    }
    /* UUIDs for all devices or for none: half would leave the rest to order. */
    int with = 0, without = 0;
    for (int i = 0; i < GLC_MAX_DEVS; i++) {
        if (seen[i] == 0)
            continue;
        if (out->dev[i].uuid[0])
            with++;
        else
            without++;
    }
    if (with && without) {
        snprintf(msg, msg_len, "GPULET_CUDA_DEVICE_UUID_<i> is given for some devices, not all");
        return -1;
    }
    out->by_uuid = with > 0;
    return 0;
}

int glc_read_limits(const char *path, struct glc_limits *out, char *msg, size_t msg_len)
{
    /* O_NONBLOCK: a FIFO put there must not hang the program. */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0 && errno == ENOENT)
        return 1;
    if (fd < 0) {
        snprintf(msg, msg_len, "%s: %s", path, errno == ELOOP ? "a symbolic link" : strerror(errno));
        return -1;
    }
    struct stat st;
    char buf[GLC_LIMITS_MAX_BYTES + 1];
    ssize_t n = -1;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        snprintf(msg, msg_len, "%s: not a regular file", path);
    else if (st.st_size > GLC_LIMITS_MAX_BYTES)
        snprintf(msg, msg_len, "%s: over %d bytes", path, GLC_LIMITS_MAX_BYTES);
    else {
        size_t got = 0;
        while (got < sizeof buf && (n = read(fd, buf + got, sizeof buf - got)) != 0) {
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                break;
            got += (size_t)n;
        }
        if (n < 0)
            snprintf(msg, msg_len, "%s: %s", path, strerror(errno));
        else
            n = (ssize_t)got;
    }
    close(fd);
    if (n < 0)
        return -1;
    char why[256];
    if (glc_parse_limits(buf, (size_t)n, out, why, sizeof why) < 0) {
        snprintf(msg, msg_len, "%s %s", path, why);
        return -1;
    }
    return 0;
}
