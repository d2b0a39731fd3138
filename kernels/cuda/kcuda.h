/* kcuda.h: the C face of the CUDA backend (the .cu files in kernels/cuda).
 *
 * Every function here is callable from C whether or not the build has CUDA:
 * without HAVE_CUDA the stubs in kernels/cuda/none.c report that the build
 * has no CUDA backend. Every CUDA call inside is checked; failures come back
 * as negative returns with err_set() messages, never as exits.
 */
#ifndef MODULA_KCUDA_H
#define MODULA_KCUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 0 when a CUDA device answers and cuBLAS starts; `info` then describes it
 * ("NVIDIA H100 80GB HBM3, sm_90, 79.6 GiB free of 79.6 GiB"). Otherwise -1
 * and `info` says why ("no CUDA device: ..." or "built without CUDA"). */
int kcuda_probe(char *info, size_t n);

#ifdef __cplusplus
}
#endif

#endif
