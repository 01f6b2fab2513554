/*
 * sim_sysfs: the sysfs files a simulated node's GPUs would have.
 *
 * Programs that find GPUs through PCI (NVIDIA's gpu-feature-discovery,
 * gpulet's gpu.mode and NUMA fallbacks) read /sys/bus/pci/devices/<bus
 * id>/ and /sys/class/dmi/id/product_name. sim_sysfs_write() makes that
 * tree under a root folder, from the node file: vendor, device,
 * subsystem_vendor, subsystem_device, class, revision, numa_node,
 * resource and a 256-byte config space per GPU, in the device's folder
 * under its PCIe root complex (devices/pci<domain>:<bus>/<id>), which
 * bus/pci/devices/<id> links to. Each file is replaced atomically, so
 * concurrent readers see whole files.
 */
#ifndef GPULET_SIM_SYSFS_H
#define GPULET_SIM_SYSFS_H

#include "error/error.h"
#include "sim_node.h"

int sim_sysfs_write(const struct sim_node *node, const char *root, struct gpulet_error *err);

/* Removes what sim_sysfs_write made under root, and root itself when empty. */
void sim_sysfs_remove(const struct sim_node *node, const char *root);

#endif
