/*
 * sim_procfs: the /proc/driver files of a simulated node's NVIDIA driver.
 *
 * NVIDIA's device plugin and nvidia-ctk find the device nodes of MIG
 * capabilities in /proc/driver/nvidia-caps/mig-minors. sim_procfs_write()
 * makes <root>/driver/nvidia-caps/mig-minors from the node file, numbered
 * as the driver numbers them, so the tree can be mounted over /proc/driver
 * for those programs. The file is replaced atomically.
 */
#ifndef GPULET_SIM_PROCFS_H
#define GPULET_SIM_PROCFS_H

#include "error/error.h"
#include "sim_node.h"

int sim_procfs_write(const struct sim_node *node, const char *root, struct gpulet_error *err);

#endif
