#include "sim_mig.h"

#include <stdio.h>
#include <string.h>

/* Per profile index: compute slices, memory slices, instances on an empty
 * GPU and the driver's profile number (what `nvidia-smi mig -lgip` shows). */
static const struct {
    unsigned int slices, memory_slices, instances, id;
} gi_table[SIM_GI_PROFILES] = {
    {1, 1, 7, 19}, {2, 2, 3, 14}, {3, 4, 2, 9}, {4, 4, 1, 5}, {7, 8, 1, 0},
};

int sim_profile_index(unsigned int slices)
{
    for (int i = 0; i < SIM_GI_PROFILES; i++)
        if (gi_table[i].slices == slices)
            return i;
    return -1;
}

/* One memory slice rounded down to 128 MiB, as the driver carves them. */
static unsigned long long memory_slice_mib(const struct sim_gpu *g)
{
    return (g->memory_mib - g->memory_reserved_mib) / SIM_MEMORY_SLICES / 128 * 128;
}

static unsigned int sms_per_slice(const struct sim_gpu *g)
{
    for (size_t i = 0; i < g->mig_count; i++)
        if (g->migs[i].multiprocessors)
            return g->migs[i].multiprocessors / g->migs[i].ci_slices;
    return g->multiprocessors / SIM_MEMORY_SLICES;
}

bool sim_gi_profile(const struct sim_gpu *g, unsigned int index, struct sim_profile *out)
{
    if (!g->mig_capable || index >= SIM_GI_PROFILES)
        return false;
    memset(out, 0, sizeof *out);
    out->id = gi_table[index].id;
    out->slices = gi_table[index].slices;
    out->memory_slices = gi_table[index].memory_slices;
    out->instances = gi_table[index].instances;
    const struct sim_mig *like = NULL;
    for (size_t i = 0; i < g->mig_count && like == NULL; i++)
        if (g->migs[i].slices == out->slices)
            like = &g->migs[i];
    if (like) {
        /* A device of this size on the GPU: its values are the profile's. */
        out->memory_mib = like->memory_mib;
        out->multiprocessors = like->multiprocessors / like->ci_slices * like->slices;
        out->copy_engines = like->copy_engines;
        out->decoders = like->decoders;
        out->encoders = like->encoders;
        out->jpegs = like->jpegs;
        out->ofas = like->ofas;
    } else {
        /* The whole GPU's usable memory for the full profile, else its slices. */
        out->memory_mib = out->memory_slices == SIM_MEMORY_SLICES
                              ? (g->memory_mib - g->memory_reserved_mib) / 128 * 128
                              : memory_slice_mib(g) * out->memory_slices;
        out->multiprocessors = sms_per_slice(g) * out->slices;
        out->copy_engines = out->slices;
        out->decoders = out->memory_slices / 2;
        out->jpegs = out->ofas = out->slices == 7 ? 1 : 0;
    }
    snprintf(out->name, sizeof out->name, "%ug.%llugb", out->slices,
             (out->memory_mib + 1023) / 1024);
    return true;
}

bool sim_ci_profile(const struct sim_gpu *g, unsigned int gi_profile, unsigned int index,
                    struct sim_profile *out)
{
    struct sim_profile gi;
    if (!sim_gi_profile(g, gi_profile, &gi) || index >= SIM_GI_PROFILES ||
        gi_table[index].slices > gi.slices)
        return false;
    *out = gi;
    out->id = index; /* compute instance profile numbers are their indexes */
    out->slices = gi_table[index].slices;
    out->instances = gi.slices / out->slices;
    out->multiprocessors = sms_per_slice(g) * out->slices;
    if (out->slices == gi.slices)
        snprintf(out->name, sizeof out->name, "%s", gi.name);
    else
        snprintf(out->name, sizeof out->name, "%uc.%s", out->slices, gi.name);
    return true;
}

int sim_gpu_instances(const struct sim_gpu *g, struct sim_gpu_instance out[SIM_MAX_MIGS],
                      size_t *count, struct gpulet_error *err)
{
    size_t n = 0;
    for (size_t i = 0; i < g->mig_count; i++) {
        const struct sim_mig *m = &g->migs[i];
        size_t k = 0;
        while (k < n && out[k].id != m->gpu_instance_id)
            k++;
        if (k == n) {
            int profile = sim_profile_index(m->slices);
            if (profile < 0)
                return gpulet_error_set(err, GPULET_ERR_INPUT,
                                        "MIG device %zu has %u slices; a GPU instance has 1, 2, "
                                        "3, 4 or 7", i, m->slices);
            out[n++] = (struct sim_gpu_instance){.id = m->gpu_instance_id,
                                                 .profile = (unsigned int)profile,
                                                 .size = gi_table[profile].memory_slices};
        } else if (gi_table[out[k].profile].slices != m->slices) {
            return gpulet_error_set(err, GPULET_ERR_INPUT,
                                    "MIG device %zu is in GPU instance %u but has %u slices, not "
                                    "%u like the others there", i, m->gpu_instance_id, m->slices,
                                    gi_table[out[k].profile].slices);
        }
        if (sim_profile_index(m->ci_slices) < 0)
            return gpulet_error_set(err, GPULET_ERR_INPUT,
                                    "MIG device %zu has ci_slices %u; a compute instance has 1, "
                                    "2, 3, 4 or 7", i, m->ci_slices);
        out[k].migs[out[k].mig_count++] = i;
    }
    /* Largest first, each at the lowest free start its profile allows. */
    unsigned int used = 0; /* bit per memory slice */
    for (unsigned int size = SIM_MEMORY_SLICES; size >= 1; size /= 2) {
        for (size_t k = 0; k < n; k++) {
            if (out[k].size != size)
                continue;
            unsigned int mask = (1U << size) - 1, start = 0;
            bool placed = false;
            for (unsigned int p = 0; p < gi_table[out[k].profile].instances && !placed; p++) {
                start = p * size;
                placed = (used & (mask << start)) == 0;
            }
            if (!placed)
                return gpulet_error_set(err, GPULET_ERR_INPUT,
                                        "the MIG devices do not fit on one GPU: no free place "
                                        "for GPU instance %u (%u memory slices of %d)",
                                        out[k].id, size, SIM_MEMORY_SLICES);
            used |= mask << start;
            out[k].start = start;
        }
    }
    *count = n;
    return 0;
}

void sim_ci_placement(const struct sim_gpu *g, const struct sim_gpu_instance *gi, size_t m,
                      unsigned int *start, unsigned int *size)
{
    *start = 0;
    *size = g->migs[m].ci_slices;
    for (size_t i = 0; i < gi->mig_count; i++) {
        const struct sim_mig *other = &g->migs[gi->migs[i]];
        if (other->compute_instance_id < g->migs[m].compute_instance_id)
            *start += other->ci_slices;
    }
}
