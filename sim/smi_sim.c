/*
 * The simulated node's nvidia-smi: the two settings NVIDIA's DRA driver
 * changes on a GPU, as the real program takes them,
 *
 *   nvidia-smi compute-policy -i <UUID|index> --set-timeslice <0..3>
 *   nvidia-smi -i <UUID|index> -c <DEFAULT|EXCLUSIVE_PROCESS|PROHIBITED|0|2|3>
 *
 * recorded per GPU in the node's policy file (GPULET_SIM_DEVICE_STATE with
 * ".policy" added, by default $TMPDIR/gpulet-sim-<uid>-<node>.policy), one
 * line a GPU: "<UUID> timeslice=<n> compute_mode=<mode>", where tests and
 * people read them. The node is GPULET_SIM_NODE's, as for the simulated
 * libnvidia-ml.so.1 (gpulet --simulate sets it for its children). Anything
 * else it is asked says so and fails.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "sim_node.h"

#define POLICY_MAX 8192

static int usage(void)
{
    fprintf(stderr, "nvidia-smi (gpulet's simulator): only `compute-policy -i ID "
                    "--set-timeslice N` and `-i ID -c MODE` are simulated\n");
    return 1;
}

static const struct sim_gpu *find_gpu(const struct sim_node *node, const char *id)
{
    char *end;
    unsigned long index = strtoul(id, &end, 10);
    if (*end == '\0' && id[0])
        return index < node->gpu_count ? &node->gpus[index] : NULL;
    for (size_t i = 0; i < node->gpu_count; i++)
        if (strcmp(node->gpus[i].uuid, id) == 0)
            return &node->gpus[i];
    return NULL;
}

static const char *mode_name(const char *arg)
{
    static const char *const names[][2] = {{"0", "DEFAULT"}, {"DEFAULT", "DEFAULT"},
                                           {"2", "PROHIBITED"}, {"PROHIBITED", "PROHIBITED"},
                                           {"3", "EXCLUSIVE_PROCESS"},
                                           {"EXCLUSIVE_PROCESS", "EXCLUSIVE_PROCESS"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(arg, names[i][0]) == 0)
            return names[i][1];
    return NULL;
}

/* Rewrites the GPU's line of the policy file: key=value changed, the
 * other setting kept. */
static int record(const struct sim_node *node, const char *uuid, int timeslice,
                  const char *mode)
{
    char path[4096];
    const char *state = getenv("GPULET_SIM_DEVICE_STATE");
    if (state && state[0]) {
        snprintf(path, sizeof path, "%s.policy", state);
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(path, sizeof path, "%s/gpulet-sim-%u-%s.policy", tmp && tmp[0] ? tmp : "/tmp",
                 (unsigned int)getuid(), node->name);
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0 || flock(fd, LOCK_EX) != 0) {
        fprintf(stderr, "nvidia-smi (simulated): cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    char old[POLICY_MAX + 1], out[POLICY_MAX + 256];
    ssize_t n = read(fd, old, POLICY_MAX);
    old[n > 0 ? n : 0] = '\0';
    size_t o = 0;
    int cur_ts = 0;
    char cur_mode[32] = "DEFAULT";
    for (char *line = strtok(old, "\n"); line; line = strtok(NULL, "\n")) {
        size_t l = strlen(uuid);
        if (strncmp(line, uuid, l) == 0 && line[l] == ' ') {
            sscanf(line + l, " timeslice=%d compute_mode=%31s", &cur_ts, cur_mode);
            continue;
        }
        o += (size_t)snprintf(out + o, sizeof out - o, "%s\n", line);
    }
    if (timeslice >= 0)
        cur_ts = timeslice;
    if (mode)
        snprintf(cur_mode, sizeof cur_mode, "%s", mode);
    o += (size_t)snprintf(out + o, sizeof out - o, "%s timeslice=%d compute_mode=%s\n", uuid,
                          cur_ts, cur_mode);
    int rc = ftruncate(fd, 0) == 0 && pwrite(fd, out, o, 0) == (ssize_t)o ? 0 : -1;
    close(fd);
    return rc;
}

int main(int argc, char **argv)
{
    const char *id = NULL, *slice = NULL, *mode = NULL;
    bool policy = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "compute-policy") == 0 && i == 1)
            policy = true;
        else if (strcmp(argv[i], "-i") == 0 && i + 1 < argc)
            id = argv[++i];
        else if (strcmp(argv[i], "--set-timeslice") == 0 && i + 1 < argc && policy)
            slice = argv[++i];
        else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc && !policy)
            mode = argv[++i];
        else
            return usage();
    }
    if (id == NULL || (slice == NULL) == (mode == NULL))
        return usage();
    const char *path = getenv("GPULET_SIM_NODE");
    struct sim_node *node = calloc(1, sizeof *node);
    struct gpulet_error err = {0};
    if (node == NULL || path == NULL || sim_node_load(path, node, &err) < 0) {
        fprintf(stderr, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA "
                        "driver (simulated: GPULET_SIM_NODE %s)\n", path ? err.msg : "is not set");
        free(node);
        return 9;
    }
    const struct sim_gpu *g = find_gpu(node, id);
    if (g == NULL) {
        fprintf(stderr, "No devices were found matching %s\n", id);
        free(node);
        return 6;
    }
    int rc = 0;
    if (slice) {
        char *end;
        long v = strtol(slice, &end, 10);
        if (*end || v < 0 || v > 3) {
            fprintf(stderr, "Invalid timeslice value %s: it is 0 (default), 1 (short), "
                            "2 (medium) or 3 (long)\n", slice);
            rc = 2;
        } else if (record(node, g->uuid, (int)v, NULL) < 0) {
            rc = 1;
        } else {
            printf("Set timeslice to %ld for GPU %s.\n", v, g->uuid);
        }
    } else {
        const char *m = mode_name(mode);
        if (m == NULL) {
            fprintf(stderr, "Invalid compute mode %s\n", mode);
            rc = 2;
        } else if (record(node, g->uuid, -1, m) < 0) {
            rc = 1;
        } else {
            printf("Set compute mode to %s for GPU %s.\n", m, g->uuid);
        }
    }
    free(node);
    return rc;
}
