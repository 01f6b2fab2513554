#include "cli.h"

#include <getopt.h>
#include <string.h>

#include "gpu/gpu.h"

static const char info_usage[] =
    "Usage: gpulet [--simulate NAME|FILE] info [--json]\n"
    "\n"
    "Describe the node's GPUs, as `nvidia-smi -L` does, then how each pair of\n"
    "GPUs connects (as `nvidia-smi topo -m` does).\n"
    "\n"
    "  --json     print the whole inventory as JSON\n"
    "  -h, --help show this help\n";

static void print_text(const struct gpu_inventory *inv)
{
    char cuda[16] = "unknown";
    if (inv->cuda_driver_version > 0)
        snprintf(cuda, sizeof cuda, "%d.%d", inv->cuda_driver_version / 1000,
                 (inv->cuda_driver_version % 1000) / 10);
    printf("Driver %s, CUDA %s, NVML %s", inv->driver_version[0] ? inv->driver_version : "unknown",
           cuda, inv->nvml_version[0] ? inv->nvml_version : "unknown");
    if (inv->simulated_node[0])
        printf(" (simulated node: %s)", inv->simulated_node);
    printf("\n");
    if (inv->gpu_count == 0) {
        printf("No GPUs found.\n");
        return;
    }
    printf("\n");
    for (size_t i = 0; i < inv->gpu_count; i++) {
        const struct gpu_device *g = &inv->gpus[i];
        if (g->lost) {
            printf("GPU %u: lost (fell off the bus; check dmesg for Xid 79)\n", g->index);
            continue;
        }
        printf("GPU %u: %s (UUID: %s)\n", g->index, g->name, g->uuid);
        for (size_t m = 0; m < g->mig_count; m++)
            printf("  MIG %-10s Device %2u: (UUID: %s)\n", g->migs[m].profile, g->migs[m].index,
                   g->migs[m].uuid);
    }

    printf("\n%-5s %-18s %10s %10s %10s %4s %4s %s\n", "GPU", "PCI BUS ID", "MEMORY", "RESERVED",
           "SLICEABLE", "CC", "NUMA", "MIG");
    for (size_t i = 0; i < inv->gpu_count; i++) {
        const struct gpu_device *g = &inv->gpus[i];
        if (g->lost)
            continue;
        char cc[8] = "-", numa[8] = "-";
        if (g->cc_major >= 0)
            snprintf(cc, sizeof cc, "%d.%d", g->cc_major, g->cc_minor);
        if (g->numa_node >= 0)
            snprintf(numa, sizeof numa, "%d", g->numa_node);
        const char *mig = !g->mig_capable ? "n/a" : g->mig_enabled ? "on" : "off";
        printf("%-5u %-18s %6llu MiB %6llu MiB %6llu MiB %4s %4s %s\n", g->index, g->pci_bus_id,
               g->memory_total_bytes / (1024 * 1024), g->memory_reserved_bytes / (1024 * 1024),
               gpu_slice_memory(g) / (1024 * 1024), cc, numa, mig);
    }
    printf("\nSLICEABLE: what GPU slices are cut from, MEMORY less what the driver RESERVED\n"
           "(docs/sharing.md).\n");

    printf("\nTopology:\n%-6s", "");
    for (size_t b = 0; b < inv->gpu_count; b++)
        printf(" GPU%-3zu", b);
    printf("\n");
    for (size_t a = 0; a < inv->gpu_count; a++) {
        printf("GPU%-3zu", a);
        for (size_t b = 0; b < inv->gpu_count; b++) {
            char label[16];
            if (a == b)
                snprintf(label, sizeof label, "X");
            else
                gpu_link_label(gpu_inventory_link(inv, a, b), label, sizeof label);
            printf(" %-6s", label);
        }
        printf("\n");
    }
    printf("\nLegend: X = self, NV# = that many NVLinks, PIX = one PCIe switch, PXB = several\n"
           "PCIe switches, PHB = a PCIe host bridge, NODE = within a NUMA node, SYS = across\n"
           "NUMA nodes (the SMP interconnect), BRD = the same board.\n");
}

int cli_info(const struct cli_options *opts, int argc, char **argv)
{
    static const struct option long_options[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool json = false;
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
        switch (c) {
        case 'j': json = true; break;
        case 'h': fputs(info_usage, stdout); return CLI_OK;
        default: return cli_option_error("info", c, argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage_error("info", "unexpected argument '%s'", argv[optind]);

    struct nvml *nvml;
    struct gpu_inventory *inv;
    int opened = cli_open_inventory(opts, &nvml, &inv);
    if (opened != CLI_OK)
        return opened;
    int rc = CLI_OK;
    if (json) {
        json_t *doc = gpu_inventory_to_json(inv);
        if (doc == NULL || json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0) {
            fprintf(stderr, "gpulet: cannot write the inventory as JSON\n");
            rc = CLI_FAILED;
        } else {
            printf("\n");
        }
        json_decref(doc);
    } else {
        print_text(inv);
    }
    gpu_inventory_free(inv);
    nvml_close(nvml);
    return rc;
}
