/* none.c: the CUDA entry points of a build configured --without-cuda.
 * Each says plainly that this build has no CUDA backend. */
#include "config.h"
#include "kernels/cuda/kcuda.h"

#include <stdio.h>

int kcuda_probe(char *info, size_t n)
{
	snprintf(info, n, "this build of modula has no CUDA backend (configured --without-cuda)");
	return -1;
}
