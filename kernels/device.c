/* device.c: see device.h. */
#include "config.h"
#include "kernels/device.h"
#include "kernels/cuda/kcuda.h"
#include "err.h"

#include <stdio.h>
#include <string.h>

int kdevice_parse(const char *name, int *out)
{
	if (strcmp(name, "cpu") == 0)
		*out = KDEV_CPU;
	else if (strcmp(name, "cuda") == 0)
		*out = KDEV_CUDA;
	else if (strcmp(name, "auto") == 0)
		*out = -1;
	else
		return err_set("unknown device '%s': use cpu, cuda or auto", name);
	return 0;
}

int kdevice_resolve(int request, enum kdevice *out)
{
	char why[256];

	if (request == KDEV_CPU) {
		*out = KDEV_CPU;
		return 0;
	}
	if (kcuda_probe(why, sizeof why) == 0) {
		*out = KDEV_CUDA;
		return 0;
	}
	if (request == KDEV_CUDA)
		return err_set("--device cuda: %s", why);
	*out = KDEV_CPU;
	return 0;
}

void kdevice_describe(char *buf, size_t n)
{
	char why[256];
	size_t k = (size_t)snprintf(buf, n, "cpu: always available\n");

	if (k >= n)
		return;
	if (kcuda_probe(why, sizeof why) == 0)
		snprintf(buf + k, n - k, "cuda: %s\n", why);
	else
		snprintf(buf + k, n - k, "cuda: unavailable (%s)\n", why);
}

const char *kdevice_name(enum kdevice d)
{
	return d == KDEV_CUDA ? "cuda" : "cpu";
}
