#include "devices.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Beyond this many partitions the exhaustive search gives way to a greedy
 * one, so an answer for 16 or more GPUs stays fast. 8 GPUs need at most
 * 280 (sets of 3) or 105 (pairs); 16 GPUs 6,435 for eights, millions for
 * pairs to sevens. */
#define MAX_PARTITIONS 20000

int devices_pair_score(const struct gpu_inventory *inv, unsigned int a, unsigned int b)
{
    if (a >= inv->gpu_count || b >= inv->gpu_count || a == b)
        return 0;
    const struct gpu_link *l = gpu_inventory_link(inv, a, b);
    int pcie;
    switch (l->pcie_level) {
    case NVML_TOPOLOGY_INTERNAL: pcie = 60; break;
    case NVML_TOPOLOGY_SINGLE: pcie = 50; break;
    case NVML_TOPOLOGY_MULTIPLE: pcie = 40; break;
    case NVML_TOPOLOGY_HOSTBRIDGE: pcie = 30; break;
    case NVML_TOPOLOGY_NODE: pcie = 20; break;
    case NVML_TOPOLOGY_SYSTEM: pcie = 10; break;
    default: pcie = 0; break;
    }
    return pcie + 100 * (int)l->nvlinks;
}

/* The search over partitions of the candidates into sets of `size`.
 * NVIDIA's best-effort policy pads the candidates with empty slots up to a
 * multiple of the size and only considers partitions that keep all the
 * padding in one set: here the padding comes first (slots 0..pad-1), in
 * set 0, so no other partition is ever built. */
struct search {
    size_t n;                /* slots: padding, then the candidates */
    size_t pad;              /* empty slots, all in set 0 */
    const long *score;       /* n × n pair scores, 0 for padding */
    const bool *required;    /* per slot */
    size_t n_required;
    size_t size;
    int *group;              /* per slot: its set in the partition being built */
    size_t *members;         /* the slots of each set, set after set, ascending */
    size_t *open, *open_len; /* per set: the slots that may join it (n each), how many */
    long *set_score;         /* per complete set */
    int required_set;        /* where the required GPUs go; -1: none placed yet */
    size_t required_placed;
    size_t *best_set;        /* the answer: its slots, ascending */
    long best_score, best_set_score;
    bool found;
    unsigned long visited;
    const struct timespec *until; /* NULL: no time limit */
    bool out_of_time;
};

/* Whether the CLOCK_MONOTONIC time `until` has passed. */
static bool passed(const struct timespec *until)
{
    if (until == NULL)
        return false;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > until->tv_sec ||
           (now.tv_sec == until->tv_sec && now.tv_nsec >= until->tv_nsec);
}

/* Whether set a comes before set b in the order of the candidates. */
static bool earlier(const size_t *a, const size_t *b, size_t k)
{
    for (size_t i = 0; i < k; i++)
        if (a[i] != b[i])
            return a[i] < b[i];
    return false;
}

/* Puts slot i in a set as its j-th member, unless it is a required GPU
 * that would leave the others or join the padding: a partition counts only
 * if a set without padding holds every required GPU. */
static bool put(struct search *s, size_t i, int set, size_t j)
{
    if (s->required[i]) {
        if ((s->pad > 0 && set == 0) || (s->required_set >= 0 && s->required_set != set))
            return false;
        s->required_set = set;
        s->required_placed++;
    }
    s->group[i] = set;
    s->members[(size_t)set * s->size + j] = i;
    return true;
}

static void take(struct search *s, size_t i)
{
    if (s->required[i] && --s->required_placed == 0)
        s->required_set = -1;
    s->group[i] = -1;
}

/* A complete partition: its answer is the required GPUs' set, or with none
 * the best set without padding. Partitions that tie go by their answers'
 * scores, so the answer never scores below the one NVIDIA's order of
 * enumeration would give, then by which answer comes first among the
 * candidates, as NVIDIA's mostly does. */
static void finish_partition(struct search *s, int sets, long total)
{
    if (s->visited++ % 256 == 0 && passed(s->until))
        s->out_of_time = true;
    int answer = s->required_set;
    if (answer < 0) {
        answer = s->pad > 0 ? 1 : 0;
        for (int g = answer + 1; g < sets; g++)
            if (s->set_score[g] > s->set_score[answer])
                answer = g;
    }
    const size_t *m = s->members + (size_t)answer * s->size;
    long score = s->set_score[answer];
    if (!s->found || total > s->best_score ||
        (total == s->best_score && (score > s->best_set_score ||
                                    (score == s->best_set_score &&
                                     earlier(m, s->best_set, s->size))))) {
        s->found = true;
        s->best_score = total;
        s->best_set_score = score;
        memcpy(s->best_set, m, s->size * sizeof *m);
    }
}

/* Lists the unplaced slots after `after` as the candidates to join `set`:
 * once per set, so choosing companions scans no placed slots. */
static void open_set(struct search *s, int set, size_t after)
{
    size_t *list = s->open + (size_t)set * s->n, len = 0;
    for (size_t i = after + 1; i < s->n; i++)
        if (s->group[i] < 0)
            list[len++] = i;
    s->open_len[set] = len;
}

/* Adds size-members companions to the set being built, chosen in order
 * from its open list at `pos` on; a full set opens the next one with the
 * first unplaced slot. `total` scores the complete sets, `partial` the one
 * being built. */
static void place(struct search *s, int set, size_t members, size_t pos, long total,
                  long partial)
{
    if (s->visited >= MAX_PARTITIONS || s->out_of_time)
        return;
    if (members == s->size) {
        s->set_score[set] = partial;
        total += partial;
        size_t first = s->members[(size_t)set * s->size];
        while (first < s->n && s->group[first] >= 0)
            first++;
        if (first == s->n) {
            finish_partition(s, set + 1, total);
            return;
        }
        if (put(s, first, set + 1, 0)) {
            open_set(s, set + 1, first);
            place(s, set + 1, 1, 0, total, 0);
            take(s, first);
        }
        return;
    }
    const size_t *list = s->open + (size_t)set * s->n;
    const size_t *m = s->members + (size_t)set * s->size;
    /* Only companions that leave enough open slots to fill the set. */
    for (size_t j = pos; j + (s->size - members) <= s->open_len[set]; j++) {
        size_t i = list[j];
        long add = 0;
        for (size_t k = 0; k < members; k++)
            add += s->score[i * s->n + m[k]];
        if (put(s, i, set, members)) {
            place(s, set, members + 1, j + 1, total, partial + add);
            take(s, i);
        }
    }
}

/* Fallback for big searches: start from the required GPUs and keep adding
 * the candidate that connects best to those already chosen. */
static void greedy(const struct search *s, bool *chosen)
{
    size_t have = 0;
    for (size_t i = 0; i < s->n; i++) {
        chosen[i] = s->required[i];
        have += chosen[i];
    }
    while (have < s->size) {
        long best = -1;
        size_t pick = 0;
        for (size_t i = s->pad; i < s->n; i++) {
            if (chosen[i])
                continue;
            long score = 0;
            for (size_t j = 0; j < s->n; j++)
                if (chosen[j])
                    score += s->score[i * s->n + j];
            if (score > best) {
                best = score;
                pick = i;
            }
        }
        if (best < 0)
            return;
        chosen[pick] = true;
        have++;
    }
}

/* a choose b, as a double: exact while it matters (up to MAX_PARTITIONS). */
static double choose(size_t a, size_t b)
{
    if (b > a)
        return 0;
    double c = 1;
    for (size_t i = 1; i <= b; i++)
        c = c * (double)(a - b + i) / (double)i;
    return c;
}

/* How many partitions the search would score: the padding's companions
 * (never required), the required GPUs' set, then full sets of the rest.
 * Stops counting once past the bound. */
static double partitions(size_t n_cand, size_t n_required, size_t size)
{
    size_t beside = n_cand % size; /* real GPUs in the set with the padding */
    double count = choose(n_cand - n_required, beside);
    size_t rest = n_cand - beside;
    if (n_required > 0) {
        count *= choose(rest - n_required, size - n_required);
        rest -= size;
    }
    for (; rest > 0 && count <= MAX_PARTITIONS; rest -= size)
        count *= choose(rest - 1, size - 1);
    return count;
}

static int best_effort(const struct gpu_inventory *inv, const struct devices_device **cand,
                       const bool *required, size_t n_cand, size_t n_required, size_t size,
                       const struct timespec *until, bool *chosen)
{
    int rc = -1;
    size_t pad = (size - n_cand % size) % size;
    size_t n = n_cand + pad;
    long *score = calloc(n * n, sizeof *score);
    bool *req = calloc(n, sizeof *req);
    int *group = calloc(n, sizeof *group);
    size_t *best = calloc(size, sizeof *best);
    size_t *members = calloc(n, sizeof *members);
    long *set_score = calloc(n / size, sizeof *set_score);
    size_t *open = calloc(n / size * n, sizeof *open);
    size_t *open_len = calloc(n / size, sizeof *open_len);
    bool *pick = calloc(n, sizeof *pick);
    if (!score || !req || !group || !best || !members || !set_score || !open || !open_len ||
        !pick)
        goto done;
    for (size_t i = pad; i < n; i++) {
        req[i] = required[i - pad];
        for (size_t j = pad; j < n; j++)
            score[i * n + j] = devices_pair_score(inv, cand[i - pad]->gpu, cand[j - pad]->gpu);
    }
    struct search s = {.n = n, .pad = pad, .score = score, .required = req,
                       .n_required = n_required, .size = size, .group = group,
                       .members = members, .open = open, .open_len = open_len,
                       .set_score = set_score, .required_set = -1,
                       .best_set = best, .until = until};
    if (partitions(n_cand, n_required, size) <= MAX_PARTITIONS) {
        for (size_t i = 0; i < n; i++)
            group[i] = -1;
        size_t leaders = pad > 0 ? pad : 1; /* set 0 so far: the padding, or slot 0 */
        for (size_t i = 0; i < leaders; i++)
            put(&s, i, 0, i); /* padding is never required; slot 0 alone may be */
        open_set(&s, 0, leaders - 1);
        place(&s, 0, leaders, 0, 0, 0);
        if (s.out_of_time)
            goto done;
    }
    if (s.found) {
        for (size_t i = 0; i < size; i++)
            pick[best[i]] = true;
    } else {
        greedy(&s, pick);
    }
    for (size_t i = 0; i < n_cand; i++)
        chosen[i] = pick[i + pad];
    rc = 0;
done:
    free(score);
    free(req);
    free(group);
    free(best);
    free(members);
    free(set_score);
    free(open);
    free(open_len);
    free(pick);
    return rc;
}

/* Replicas, distributed (NVIDIA's policy): each pick goes to the GPU with
 * the fewest replicas taken — by other containers, by the request's
 * must-include devices and by its picks so far — so a request spreads over
 * GPUs while they are equally loaded. A single slice (gpulet's own) goes
 * to the GPU with the most slices free, where GPUs of different sizes
 * hold different numbers of them. Packed: the GPU with the fewest free,
 * staying on the request's GPUs. Ties go to the GPU whose next free
 * replica comes first in the request.
 * Candidates are grouped by physical device once, so a pick costs one pass
 * over the groups, not over every pair of candidates. */
struct replica_group {
    unsigned int gpu;
    int mig;
    size_t total;  /* replicas of the device in the resource */
    size_t free;   /* candidates not chosen */
    bool mine;     /* one of them is chosen */
    size_t *members; /* candidate indexes in request order, into the shared array */
    size_t n_members, next; /* next: first member maybe not chosen */
};

static int spread_replicas(const struct devices_pool *r, const struct devices_device **cand,
                           const bool *required, size_t n_cand, size_t size, bool *chosen)
{
    struct replica_group *groups = calloc(n_cand + 1, sizeof *groups);
    size_t *group_of = calloc(n_cand + 1, sizeof *group_of);
    size_t *members = calloc(n_cand + 1, sizeof *members);
    size_t n_groups = 0, have = 0;
    int rc = -1;
    if (!groups || !group_of || !members)
        goto done;
    for (size_t i = 0; i < n_cand; i++) {
        size_t g = 0; /* the physical devices are few: a scan finds the group */
        while (g < n_groups && !(groups[g].gpu == cand[i]->gpu && groups[g].mig == cand[i]->mig))
            g++;
        if (g == n_groups) {
            groups[g].gpu = cand[i]->gpu;
            groups[g].mig = cand[i]->mig;
            n_groups++;
        }
        group_of[i] = g;
        groups[g].n_members++;
    }
    for (size_t i = 0; i < r->count; i++)
        for (size_t g = 0; g < n_groups; g++)
            if (groups[g].gpu == r->devices[i].gpu && groups[g].mig == r->devices[i].mig) {
                groups[g].total++;
                break;
            }
    size_t at = 0;
    for (size_t g = 0; g < n_groups; g++) {
        groups[g].members = members + at;
        at += groups[g].n_members;
        groups[g].n_members = 0;
    }
    for (size_t i = 0; i < n_cand; i++) {
        struct replica_group *g = &groups[group_of[i]];
        g->members[g->n_members++] = i;
        chosen[i] = required[i];
        have += chosen[i];
        if (chosen[i])
            g->mine = true;
        else
            g->free++;
    }
    long spread = (long)r->count * 2;
    while (have < size) {
        struct replica_group *pick = NULL;
        long best = 0;
        size_t pick_first = 0;
        for (size_t k = 0; k < n_groups; k++) {
            struct replica_group *g = &groups[k];
            if (g->free == 0)
                continue;
            while (chosen[g->members[g->next]])
                g->next++;
            size_t first = g->members[g->next];
            long score = r->packed                     ? -(long)g->free + (g->mine ? spread : 0)
                         : r->sharing == SHARING_SLICES ? (long)g->free
                                                        : -((long)g->total - (long)g->free);
            if (pick == NULL || score > best || (score == best && first < pick_first)) {
                pick = g;
                best = score;
                pick_first = first;
            }
        }
        if (pick == NULL)
            break;
        chosen[pick_first] = true;
        pick->free--;
        pick->mine = true;
        have++;
    }
    rc = 0;
done:
    free(groups);
    free(group_of);
    free(members);
    return rc;
}

/* Slices, several in one request: as few GPUs as possible, so the
 * container gets one limit the size of its request rather than crumbs on
 * many GPUs. The request's own GPUs (must-include) fill first; then the
 * GPU with the fewest free slices that still holds the rest (best fit,
 * keeping large holes for large requests); failing that, the GPU with the
 * most free slices, and again. */
static int pack_slices(const struct devices_device **cand, const bool *required, size_t n_cand,
                       size_t size, bool *chosen)
{
    /* A group (a GPU or MIG device) is named by its first candidate. */
    size_t *group_of = calloc(n_cand + 1, sizeof *group_of);
    size_t *leaders = calloc(n_cand + 1, sizeof *leaders);
    size_t *free_of = calloc(n_cand + 1, sizeof *free_of);
    bool *mine = calloc(n_cand + 1, sizeof *mine);
    int rc = -1;
    if (!group_of || !leaders || !free_of || !mine)
        goto done;
    size_t have = 0, n_groups = 0;
    for (size_t i = 0; i < n_cand; i++) {
        size_t k = 0; /* the physical devices are few: a scan finds the group */
        while (k < n_groups && !(cand[leaders[k]]->gpu == cand[i]->gpu &&
                                 cand[leaders[k]]->mig == cand[i]->mig))
            k++;
        if (k == n_groups)
            leaders[n_groups++] = i;
        group_of[i] = k;
        chosen[i] = required[i];
        have += chosen[i];
        if (required[i])
            mine[k] = true;
        else
            free_of[k]++;
    }
    /* Each pass either finishes or empties a group: at most n_groups + 1. */
    while (have < size) {
        size_t need = size - have, pick = n_groups;
        for (size_t g = 0; g < n_groups; g++) {
            if (free_of[g] == 0)
                continue;
            if (pick == n_groups) {
                pick = g;
                continue;
            }
            bool fits = free_of[g] >= need, pick_fits = free_of[pick] >= need;
            if (mine[g] != mine[pick]) {
                if (mine[g])
                    pick = g;
            } else if (fits != pick_fits) {
                if (fits)
                    pick = g;
            } else if (fits ? free_of[g] < free_of[pick] : free_of[g] > free_of[pick]) {
                pick = g;
            }
        }
        if (pick == n_groups)
            break;
        for (size_t i = leaders[pick]; i < n_cand && have < size; i++)
            if (group_of[i] == pick && !chosen[i]) {
                chosen[i] = true;
                free_of[pick]--;
                have++;
            }
        mine[pick] = true;
    }
    rc = 0;
done:
    free(group_of);
    free(leaders);
    free(free_of);
    free(mine);
    return rc;
}

int devices_preferred(const struct devices_pool *r, const struct gpu_inventory *inv,
                      char *const *available, size_t n_available, char *const *must,
                      size_t n_must, int size, const struct timespec *until, char **out,
                      size_t *n_out)
{
    *n_out = 0;
    if (size <= 0 || (size_t)size > n_available || n_must > (size_t)size)
        return 0;
    int rc = 0;
    const struct devices_device **cand = calloc(n_available + 1, sizeof *cand);
    char **names = calloc(n_available + 1, sizeof *names);
    bool *required = calloc(n_available + 1, sizeof *required);
    bool *chosen = calloc(n_available + 1, sizeof *chosen);
    /* Per device of the resource: seen among the available, must include. */
    bool *seen = calloc(r->count + 1, sizeof *seen);
    bool *needed = calloc(r->count + 1, sizeof *needed);
    size_t n = 0, n_req = 0;
    if (!cand || !names || !required || !chosen || !seen || !needed)
        goto done;
    for (size_t k = 0; k < n_must; k++) {
        const struct devices_device *d = devices_find(r, must[k]);
        if (d)
            needed[d - r->devices] = true;
    }
    /* Unknown or repeated IDs (a GPU gone since) are left out, not fatal. */
    for (size_t i = 0; i < n_available; i++) {
        const struct devices_device *d = devices_find(r, available[i]);
        if (d == NULL || seen[d - r->devices])
            continue;
        seen[d - r->devices] = true;
        cand[n] = d;
        names[n] = available[i];
        required[n] = needed[d - r->devices];
        n_req += required[n];
        n++;
    }
    if (n_req != n_must || (size_t)size > n)
        goto done; /* a must-include device is not available: impossible */
    bool mig = n > 0 && cand[0]->mig >= 0;
    if ((size_t)size == n) {
        for (size_t i = 0; i < n; i++)
            chosen[i] = true;
    } else if (r->sharing == SHARING_SLICES && size > 1) {
        if (pack_slices(cand, required, n, (size_t)size, chosen) < 0)
            goto done;
    } else if (r->sharing != SHARING_NONE) {
        if (spread_replicas(r, cand, required, n, (size_t)size, chosen) < 0)
            goto done;
    } else if (mig) {
        /* MIG devices have no topology between them worth ranking. */
        size_t have = n_req;
        for (size_t i = 0; i < n; i++) {
            chosen[i] = required[i] || (have < (size_t)size && !required[i] && ++have);
        }
    } else if (best_effort(inv, cand, required, n, n_req, (size_t)size, until, chosen) < 0) {
        rc = passed(until) ? -1 : 0;
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        if (chosen[i])
            out[(*n_out)++] = names[i];
    if (*n_out != (size_t)size)
        *n_out = 0;
done:
    free(cand);
    free(names);
    free(required);
    free(chosen);
    free(seen);
    free(needed);
    return rc;
}
