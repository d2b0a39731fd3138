/* kc_mma.cuh: the warp-level tensor-core instructions the flash kernels
 * use (flash.cu), as inline PTX on a GPU (sm_80 and later) and as the
 * CPU emulation's warp operations under tests/cuda-emu (emu_api.h):
 *
 *   kc_ldsm4(r, row)       ldmatrix.sync.aligned.m8n8.x4.shared.b16: lane i
 *                          gives the address of row i % 8 of 8x8 matrix
 *                          i / 8 (16-byte aligned, in shared memory); r[m]
 *                          gets matrix m's (row lane / 4, columns
 *                          2 (lane % 4), +1)
 *   kc_ldsm4t(r, row)      the same with .trans: (rows 2 (lane % 4), +1,
 *                          column lane / 4)
 *   kc_mma<T>(d, a, b0, b1) mma.sync.aligned.m16n8k16.row.col.f32.T.T.f32:
 *                          d += A B, A [16, 16] and B [16, 8] in the
 *                          layouts of the PTX manual (a: (g, c), (g+8, c),
 *                          (g, c+8), (g+8, c+8); b: (k c, n g), (k c+8,
 *                          n g); d: (g, c), (g, c+1), (g+8, c), (g+8, c+1),
 *                          with g = lane / 4 and c = 2 (lane % 4))
 *   kc_pack2<T>(lo, hi)    two floats rounded to T, lo in the low half
 *   kc_st2(p, v)           such a pair stored at p (4-byte aligned)
 *   kc_st2f(p, a, b)       two floats stored at p as one 8-byte store
 *                          (8-byte aligned)
 *   kc_cp16(dst, src, n)   cp.async.cg.shared.global: 16 bytes from global
 *                          src to shared dst, the last 16 - n of them (all,
 *                          n = 0) zeros; kc_cp_commit() closes a group of
 *                          them, kc_cp_wait<N>() waits until at most N
 *                          groups are in flight (the emulation lands a
 *                          group at a random later switch of its thread
 *                          or at the wait, so a read before the wait can
 *                          see old bytes)
 * They need sm_80 or later: compiled for an older target they trap, and
 * flash.cu's kc_flash_usable keeps such GPUs on the cuBLAS path.
 */
#ifndef MODULA_KC_MMA_CUH
#define MODULA_KC_MMA_CUH

#include "kernels/cuda/kc.cuh"

#include <stdint.h>

#ifdef MODULA_CUDA_EMU_H /* the CPU emulation (tests/cuda-emu/emu.h) */

static __device__ __forceinline__ void kc_ldsm4(uint32_t (&r)[4], const void *row)
{
	kc_emu::ldsm4(r, row, 0);
}

static __device__ __forceinline__ void kc_ldsm4t(uint32_t (&r)[4], const void *row)
{
	kc_emu::ldsm4(r, row, 1);
}

template <typename T>
static __device__ __forceinline__ void kc_mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
					      uint32_t b1)
{
	kc_emu::mma16816<T>(d, a, b0, b1);
}

template <typename T> static __device__ __forceinline__ uint32_t kc_pack2(float lo, float hi)
{
	T a = kc_st<T>(lo), b = kc_st<T>(hi);
	uint16_t ua, ub;

	memcpy(&ua, &a, 2);
	memcpy(&ub, &b, 2);
	return ua | (uint32_t)ub << 16;
}

template <typename T> static __device__ __forceinline__ void kc_st2(T *p, uint32_t v)
{
	if ((uintptr_t)p % 4)
		kc_emu::kernel_fault("kc_st2: %p not 4-byte aligned", (void *)p);
	memcpy(p, &v, 4);
}

static __device__ __forceinline__ void kc_st2f(float *p, float a, float b)
{
	if ((uintptr_t)p % 8)
		kc_emu::kernel_fault("kc_st2f: %p not 8-byte aligned", (void *)p);
	p[0] = a, p[1] = b;
}

static __device__ __forceinline__ void kc_cp16(void *dst, const void *src, int n)
{
	if ((uintptr_t)dst % 16 || (uintptr_t)src % 16)
		kc_emu::kernel_fault("cp.async: %p or %p not 16-byte aligned", dst, src);
	kc_emu::cp_async(dst, src, n);
}

static __device__ __forceinline__ void kc_cp_commit(void)
{
	kc_emu::cp_commit();
}

template <int N> static __device__ __forceinline__ void kc_cp_wait(void)
{
	kc_emu::cp_wait(N);
}

#else

/* the instructions below exist from sm_80 on (device passes for older
 * targets get a trap instead) */
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define KC_PTX(...) asm volatile(__VA_ARGS__)
#else
#define KC_PTX(...) __trap()
#endif

static __device__ __forceinline__ void kc_ldsm4(uint32_t (&r)[4], const void *row)
{
	unsigned a = (unsigned)__cvta_generic_to_shared(row);

	KC_PTX("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(a));
}

static __device__ __forceinline__ void kc_ldsm4t(uint32_t (&r)[4], const void *row)
{
	unsigned a = (unsigned)__cvta_generic_to_shared(row);

	KC_PTX("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(a));
}

template <typename T>
static __device__ __forceinline__ void kc_mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
					      uint32_t b1);

template <>
__device__ __forceinline__ void kc_mma<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4],
						      uint32_t b0, uint32_t b1)
{
	KC_PTX("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
		     "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
		     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
		     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void kc_mma<__half>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
					       uint32_t b1)
{
	KC_PTX("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
		     "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
		     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
		     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <typename T> static __device__ __forceinline__ uint32_t kc_pack2(float lo, float hi);

template <> __device__ __forceinline__ uint32_t kc_pack2<__nv_bfloat16>(float lo, float hi)
{
	__nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);

	return *reinterpret_cast<uint32_t *>(&v);
}

template <> __device__ __forceinline__ uint32_t kc_pack2<__half>(float lo, float hi)
{
	__half2 v = __floats2half2_rn(lo, hi);

	return *reinterpret_cast<uint32_t *>(&v);
}

template <typename T> static __device__ __forceinline__ void kc_st2(T *p, uint32_t v)
{
	*reinterpret_cast<uint32_t *>(p) = v;
}

static __device__ __forceinline__ void kc_st2f(float *p, float a, float b)
{
	*reinterpret_cast<float2 *>(p) = make_float2(a, b);
}

static __device__ __forceinline__ void kc_cp16(void *dst, const void *src, int n)
{
	unsigned a = (unsigned)__cvta_generic_to_shared(dst);

	KC_PTX("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(a), "l"(src), "r"(n));
}

static __device__ __forceinline__ void kc_cp_commit(void)
{
	KC_PTX("cp.async.commit_group;\n" ::);
}

template <int N> static __device__ __forceinline__ void kc_cp_wait(void)
{
	KC_PTX("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

#endif
#endif
