/* device.h: choosing the compute backend at run time (--device cpu|cuda|auto).
 *
 * The CPU backend always exists. The CUDA backend exists when the build
 * found the toolkit (HAVE_CUDA) and, at run time, a GPU answers. This module
 * only chooses; the ops live in kernels/cpu and kernels/cuda.
 */
#ifndef MODULA_KERNELS_DEVICE_H
#define MODULA_KERNELS_DEVICE_H

#include <stddef.h>

enum kdevice { KDEV_CPU = 0, KDEV_CUDA = 1 };

/* Parse "cpu", "cuda" or "auto" into a request; "auto" gives -1 in *out
 * (resolved by kdevice_resolve). 0, or -1 via err_set(). */
int kdevice_parse(const char *name, int *out);

/* Resolve a request (KDEV_CPU, KDEV_CUDA or -1 for auto) to a backend.
 * "auto" picks CUDA when a GPU answers, else the CPU. An explicit "cuda"
 * without a usable GPU is an error: -1 via err_set() saying why. */
int kdevice_resolve(int request, enum kdevice *out);

/* Describe the devices this process sees, one per line, into buf. */
void kdevice_describe(char *buf, size_t n);

const char *kdevice_name(enum kdevice d);

#endif
