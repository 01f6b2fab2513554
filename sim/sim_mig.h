/*
 * sim_mig: the MIG GPU instances, compute instances, profiles and
 * placements that a simulated GPU's MIG devices imply.
 *
 * A node file lists MIG devices only (one per compute instance). NVML
 * consumers also ask for the GPU instances holding them, the profiles the
 * GPU offers and where each instance sits; this module derives those the
 * way an A100/H100 lays them out: 7 compute slices, 8 memory slices,
 * profiles of 1, 2, 3, 4 and 7 slices. docs/simulator.md gives the rules.
 */
#ifndef GPULET_SIM_MIG_H
#define GPULET_SIM_MIG_H

#include <stdbool.h>
#include <stddef.h>

#include "error/error.h"
#include "sim_node.h"

#define SIM_GI_PROFILES 5 /* GPU instance profile indexes 0..4: 1, 2, 3, 4, 7 slices */
#define SIM_MEMORY_SLICES 8

struct sim_profile {
    unsigned int id;           /* the driver's profile number (19 for 1 slice, ...) */
    unsigned int slices;       /* compute slices */
    unsigned int memory_slices;
    unsigned int instances;    /* how many fit on an empty GPU */
    unsigned long long memory_mib;
    unsigned int multiprocessors;
    unsigned int copy_engines, decoders, encoders, jpegs, ofas;
    char name[32];             /* "1g.5gb" */
};

struct sim_gpu_instance {
    unsigned int id;           /* gpu_instance_id of its MIG devices */
    unsigned int profile;      /* profile index, NVML_GPU_INSTANCE_PROFILE_* */
    unsigned int start, size;  /* placement in memory slices */
    size_t mig_count;          /* its compute instances: MIG devices migs[i] */
    size_t migs[SIM_MAX_MIGS];
};

/* The GPU instance profile with this index on g; false when g does not offer it. */
bool sim_gi_profile(const struct sim_gpu *g, unsigned int index, struct sim_profile *out);

/* The compute instance profile with this index inside a GPU instance of
 * profile gi_profile; false when it does not fit there. */
bool sim_ci_profile(const struct sim_gpu *g, unsigned int gi_profile, unsigned int index,
                    struct sim_profile *out);

/* The profile index whose slice count is `slices`; -1 when there is none. */
int sim_profile_index(unsigned int slices);

/* The GPU instances of g in the order of their first MIG device, each
 * placed as the driver would (largest first, lowest free aligned start).
 * -1 with a message when the MIG devices cannot be laid out on one GPU. */
int sim_gpu_instances(const struct sim_gpu *g, struct sim_gpu_instance out[SIM_MAX_MIGS],
                      size_t *count, struct gpulet_error *err);

/* Where MIG device m sits inside its GPU instance: compute slices from
 * start, packed in compute instance id order. */
void sim_ci_placement(const struct sim_gpu *g, const struct sim_gpu_instance *gi, size_t m,
                      unsigned int *start, unsigned int *size);

#endif
