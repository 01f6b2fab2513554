/* The shared GPU state of a simulated node; see sim_device.h. */
#include "sim_device.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SIM_DEV_MAGIC 0x47504432U /* "GPD2": with per-process busy periods */

uint64_t sim_dev_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

static int init_file(int fd, unsigned int gpu_count)
{
    struct sim_dev_file *f = mmap(NULL, sizeof *f, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (f == MAP_FAILED)
        return -1;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&f->lock, &a);
    pthread_mutexattr_destroy(&a);
    f->gpu_count = gpu_count;
    __atomic_store_n(&f->magic, SIM_DEV_MAGIC, __ATOMIC_RELEASE);
    munmap(f, sizeof *f);
    return 0;
}

struct sim_dev_file *sim_dev_open(const struct sim_node *node, bool create, char *msg,
                                  size_t msg_len)
{
    msg[0] = '\0';
    char def[4096];
    const char *path = getenv("GPULET_SIM_DEVICE_STATE");
    if (path == NULL || path[0] == '\0') {
        const char *tmp = getenv("TMPDIR");
        snprintf(def, sizeof def, "%s/gpulet-sim-%u-%s.device", tmp && tmp[0] ? tmp : "/tmp",
                 (unsigned int)getuid(), node->name);
        path = def;
    }
    /* Every user of the node shares the simulated GPUs, as a real GPU is
     * shared: read-write for all, whatever the umask. */
    int fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC | (create ? O_CREAT : 0), 0666);
    if (fd < 0) {
        if (!create && errno == ENOENT)
            return NULL;
        snprintf(msg, msg_len, "cannot open the simulated device state %s: %s", path,
                 strerror(errno));
        return NULL;
    }
    /* The first process sizes and initialises it; the others wait on the
     * flock and then see the magic. */
    struct stat st;
    struct sim_dev_file *f = NULL;
    if (flock(fd, LOCK_EX) < 0 || fstat(fd, &st) < 0) {
        snprintf(msg, msg_len, "cannot lock %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(msg, msg_len, "%s is not a regular file", path);
        goto out;
    }
    /* The default path is a fixed name in a shared TMPDIR: another user's
     * file there is theirs to change under this process. Root's is trusted:
     * a simulated GPU's file is shared by every UID of a container, as a
     * real GPU is. */
    if (st.st_uid != geteuid() && st.st_uid != 0) {
        snprintf(msg, msg_len,
                 "%s belongs to another user (uid %u): remove it, or name another file in "
                 "GPULET_SIM_DEVICE_STATE",
                 path, (unsigned int)st.st_uid);
        goto out;
    }
    if (st.st_size == 0)
        (void)fchmod(fd, 0666); /* best effort: the umask took bits off */
    if (st.st_size == 0 &&
        (ftruncate(fd, (off_t)sizeof *f) < 0 || init_file(fd, (unsigned int)node->gpu_count) < 0)) {
        snprintf(msg, msg_len, "cannot create %s: %s", path, strerror(errno));
        goto out;
    }
    if (st.st_size != 0 && st.st_size != (off_t)sizeof *f) {
        snprintf(msg, msg_len, "%s has the wrong size (%lld bytes): remove it", path,
                 (long long)st.st_size);
        goto out;
    }
    f = mmap(NULL, sizeof *f, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (f == MAP_FAILED) {
        f = NULL;
        snprintf(msg, msg_len, "cannot map %s: %s", path, strerror(errno));
    } else if (__atomic_load_n(&f->magic, __ATOMIC_ACQUIRE) != SIM_DEV_MAGIC ||
               f->gpu_count != node->gpu_count) {
        snprintf(msg, msg_len, "%s belongs to another node or is damaged: remove it", path);
        munmap(f, sizeof *f);
        f = NULL;
    }
out:
    /* The mapping keeps the open file, and with it the flock: unlock. */
    flock(fd, LOCK_UN);
    close(fd);
    return f;
}

static void lock(struct sim_dev_file *f)
{
    /* A process that died holding the lock left simple counters behind;
     * they stay usable. */
    if (pthread_mutex_lock(&f->lock) == EOWNERDEAD)
        pthread_mutex_consistent(&f->lock);
}

static void unlock(struct sim_dev_file *f)
{
    pthread_mutex_unlock(&f->lock);
}

static bool alive(int32_t pid)
{
    return kill(pid, 0) == 0 || errno != ESRCH;
}

static void reclaim_dead(struct sim_dev_gpu *g)
{
    for (size_t i = 0; i < SIM_DEV_MAX_PROCS; i++) {
        struct sim_dev_proc *p = &g->procs[i];
        if (p->pid != 0 && !alive(p->pid)) {
            g->used_bytes -= p->used_bytes < g->used_bytes ? p->used_bytes : g->used_bytes;
            *p = (struct sim_dev_proc){0};
        }
    }
}

/* This process's slot on g; NULL when every slot is taken by a live one. */
static struct sim_dev_proc *find_slot(struct sim_dev_gpu *g)
{
    int32_t pid = (int32_t)getpid();
    struct sim_dev_proc *free_slot = NULL;
    for (size_t i = 0; i < SIM_DEV_MAX_PROCS; i++) {
        if (g->procs[i].pid == pid)
            return &g->procs[i];
        if (g->procs[i].pid == 0 && free_slot == NULL)
            free_slot = &g->procs[i];
    }
    if (free_slot)
        *free_slot = (struct sim_dev_proc){.pid = pid};
    return free_slot;
}

static struct sim_dev_proc *own_slot(struct sim_dev_gpu *g)
{
    struct sim_dev_proc *p = find_slot(g);
    if (p == NULL) {
        reclaim_dead(g);
        p = find_slot(g);
    }
    return p;
}

bool sim_dev_alloc(struct sim_dev_file *f, unsigned int gpu, uint64_t bytes, uint64_t capacity)
{
    struct sim_dev_gpu *g = &f->gpus[gpu];
    lock(f);
    if (g->used_bytes + bytes > capacity || g->used_bytes + bytes < bytes)
        reclaim_dead(g);
    bool ok = g->used_bytes + bytes <= capacity && g->used_bytes + bytes >= bytes;
    struct sim_dev_proc *p = ok ? own_slot(g) : NULL;
    if (p) {
        g->used_bytes += bytes;
        p->used_bytes += bytes;
    }
    unlock(f);
    return p != NULL;
}

void sim_dev_free(struct sim_dev_file *f, unsigned int gpu, uint64_t bytes)
{
    struct sim_dev_gpu *g = &f->gpus[gpu];
    lock(f);
    struct sim_dev_proc *p = own_slot(g);
    if (p) {
        uint64_t n = bytes < p->used_bytes ? bytes : p->used_bytes;
        p->used_bytes -= n;
        g->used_bytes -= n < g->used_bytes ? n : g->used_bytes;
    }
    unlock(f);
}

uint64_t sim_dev_used(struct sim_dev_file *f, unsigned int gpu)
{
    lock(f);
    reclaim_dead(&f->gpus[gpu]);
    uint64_t used = f->gpus[gpu].used_bytes;
    unlock(f);
    return used;
}

/* Spreads [start, end) over the periods it covers, in a ring of slots (a
 * kernel longer than the ring counts for the last periods only). */
static void add_busy(uint64_t *period, uint64_t *busy, size_t slots, uint64_t start, uint64_t end)
{
    uint64_t first = start / SIM_DEV_PERIOD_NS, last = (end - 1) / SIM_DEV_PERIOD_NS;
    if (last - first >= slots)
        first = last - slots + 1;
    for (uint64_t p = first; p <= last; p++) {
        size_t i = p % slots;
        if (period[i] != p) {
            period[i] = p;
            busy[i] = 0;
        }
        uint64_t s = start > p * SIM_DEV_PERIOD_NS ? start : p * SIM_DEV_PERIOD_NS;
        uint64_t e = end < (p + 1) * SIM_DEV_PERIOD_NS ? end : (p + 1) * SIM_DEV_PERIOD_NS;
        busy[i] += e > s ? e - s : 0;
    }
}

/* The ten whole periods before the current one: the last second, in percent. */
static unsigned int last_second_pct(const uint64_t *period, const uint64_t *busy, size_t slots,
                                    uint64_t now_ns)
{
    const uint64_t n = 1000000000ULL / SIM_DEV_PERIOD_NS;
    uint64_t cur = now_ns / SIM_DEV_PERIOD_NS, sum = 0;
    for (uint64_t p = cur > n ? cur - n : 0; p < cur; p++)
        if (period[p % slots] == p)
            sum += busy[p % slots];
    sum = sum * 100 / (n * SIM_DEV_PERIOD_NS);
    return (unsigned int)(sum < 100 ? sum : 100);
}

uint64_t sim_dev_enqueue(struct sim_dev_file *f, unsigned int gpu, uint64_t dur_ns)
{
    struct sim_dev_gpu *g = &f->gpus[gpu];
    uint64_t now = sim_dev_now_ns();
    lock(f);
    uint64_t start = g->busy_until_ns > now ? g->busy_until_ns : now;
    uint64_t end = start + dur_ns;
    if (dur_ns > 0) {
        g->busy_until_ns = end;
        g->busy_total_ns += dur_ns;
        struct sim_dev_proc *p = own_slot(g);
        if (p) {
            p->busy_ns += dur_ns;
            add_busy(p->period, p->period_busy_ns, SIM_DEV_PROC_PERIODS, start, end);
        }
        add_busy(g->period, g->period_busy_ns, SIM_DEV_PERIODS, start, end);
    }
    unlock(f);
    return end;
}

unsigned int sim_dev_utilization(struct sim_dev_file *f, unsigned int gpu)
{
    struct sim_dev_gpu *g = &f->gpus[gpu];
    uint64_t now = sim_dev_now_ns();
    lock(f);
    unsigned int pct = last_second_pct(g->period, g->period_busy_ns, SIM_DEV_PERIODS, now);
    unlock(f);
    return pct;
}

unsigned int sim_dev_proc_utilization(const struct sim_dev_proc *p, uint64_t now_ns)
{
    return last_second_pct(p->period, p->period_busy_ns, SIM_DEV_PROC_PERIODS, now_ns);
}

size_t sim_dev_processes(struct sim_dev_file *f, unsigned int gpu, struct sim_dev_proc *out,
                         size_t max)
{
    struct sim_dev_gpu *g = &f->gpus[gpu];
    size_t n = 0;
    lock(f);
    reclaim_dead(g);
    for (size_t i = 0; i < SIM_DEV_MAX_PROCS; i++)
        if (g->procs[i].pid != 0 && g->procs[i].used_bytes > 0) {
            if (n < max)
                out[n] = g->procs[i];
            n++;
        }
    unlock(f);
    return n;
}
