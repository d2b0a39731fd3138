/* probe.h: whether the GPU tests can run here, and the skip reason when
 * not (shared by the C programs of tests/gpu; header-only, like tap.h). */
#ifndef MODULA_TESTS_GPU_PROBE_H
#define MODULA_TESTS_GPU_PROBE_H

#include "config.h"
#include "kernels/cuda/kcuda.h"

#include <stdio.h>

/* 1 when a CUDA device answers (info then describes it); 0 with `skip` set
 * to the reason every case is printed as skipped. */
static inline int gpu_probe(char *info, size_t ni, char *skip, size_t ns)
{
	/* MODULA_CUDA_EMU: linked with the CPU emulation of CUDA (tests/cuda-emu),
	 * in builds with or without the real backend */
#if defined(HAVE_CUDA) || defined(MODULA_CUDA_EMU)
	if (kcuda_probe(info, ni) == 0)
		return 1;
	snprintf(skip, ns, "no CUDA device: %.*s", (int)(ns > 20 ? ns - 20 : 0), info);
#else
	snprintf(info, ni, "no CUDA in this build");
	snprintf(skip, ns, "no CUDA in this build");
#endif
	return 0;
}

#endif
