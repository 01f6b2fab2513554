#include "sim_procfs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "fileio/fileio.h"

/* The driver's numbering: config 1, monitor 2, then per GPU minor 15 GPU
 * instance ids, each an access capability followed by 8 compute instance
 * ones, so gpu<g>/gi<i>/access is 3 + 135 g + 9 i and its ci<c> one more
 * plus c (gpu0/gi2/access 21, gpu0/gi2/ci0/access 22). */
#define GI_PER_GPU 15
#define CI_PER_GI 8

int sim_procfs_write(const struct sim_node *node, const char *root, struct gpulet_error *err)
{
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/driver/nvidia-caps", root);
    if (fileio_mkdirs(dir, 0755, 0755, err) < 0)
        return -1;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL)
        return gpulet_error_errno(err, errno, "cannot write %s/mig-minors", dir);
    fputs("config 1\nmonitor 2\n", f);
    for (size_t i = 0; i < node->gpu_count; i++) {
        unsigned long g = node->gpus[i].minor;
        for (unsigned long gi = 0; gi < GI_PER_GPU; gi++) {
            unsigned long base = 3 + g * GI_PER_GPU * (1 + CI_PER_GI) + gi * (1 + CI_PER_GI);
            fprintf(f, "gpu%lu/gi%lu/access %lu\n", g, gi, base);
            for (unsigned long ci = 0; ci < CI_PER_GI; ci++)
                fprintf(f, "gpu%lu/gi%lu/ci%lu/access %lu\n", g, gi, ci, base + 1 + ci);
        }
    }
    if (fclose(f) != 0) {
        free(text);
        return gpulet_error_errno(err, errno, "cannot write %s/mig-minors", dir);
    }
    snprintf(path, sizeof path, "%s/mig-minors", dir);
    int rc = fileio_replace(path, text, len, 0, err);
    free(text);
    return rc;
}
