/* tests/cuda-emu/emu.h: a CPU emulation of the part of CUDA, cuBLAS and
 * cuBLASLt that kernels/cuda/ uses, so that its kernels run on a machine
 * without a GPU, against the CPU reference, in every `make check`.
 *
 * What it is for: the CUDA backend's kernels were written and compiled on
 * machines with no GPU and run on one only a few minutes at a time. This
 * runs the very same source (the .cu files of kernels/cuda, made C++ by
 * cu2cc.py) over emulated threads, so indexing, bounds (under
 * AddressSanitizer in the sanitizer build: device buffers are plain heap
 * blocks), barriers and the arithmetic are checked here. What it is not:
 * a GPU. Memory ordering, timing, the tensor cores' summation order and
 * anything about speed are not modelled; tests/gpu/check.sh on a GPU is
 * still the check of the backend.
 *
 * The model:
 *   - a launch runs its blocks one after the other; a block's threads are
 *     fibers (own stacks, switched by a few instructions of assembly) that
 *     switch only at __syncthreads and the warp operations (__syncwarp,
 *     __shfl_*_sync), in a shuffled order (emu.cc, s_take), so a read of
 *     shared memory another thread writes without a barrier in between
 *     sees the old value in some interleavings (on a GPU: a race);
 *   - a barrier that not every live thread of its block (or warp) reaches,
 *     lanes of a warp at different warp operations, and a shuffle that
 *     reads a lane not in it are reported and fail the launch;
 *   - __shared__ variables are static locals (one block at a time; 0xff
 *     bytes when each block starts, as the garbage a GPU leaves), the
 *     dynamic shared memory one 128-byte aligned buffer, filled the same;
 *   - ldmatrix and mma.sync m16n8k16 move the lanes' registers as the
 *     PTX manual lays them out (emu_api.h), so a value in the wrong lane
 *     or register gives wrong numbers; cp.async copies land at a random
 *     later switch of their thread or at its wait (emu.cc);
 *   - every call on a stream runs at once (the host waits for nothing);
 *     events time the host; graphs cannot be captured;
 *   - cuBLAS products are plain loops in fp32 (cuBLASLt offers three
 *     "algorithms", all the same loops, so that tune.cu's timing, file and
 *     epilogue paths run).
 */
#ifndef MODULA_CUDA_EMU_H
#define MODULA_CUDA_EMU_H

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#include <math.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
/* __shared__ is rewritten by cu2cc.py: a static array (filled at each block's
 * start) or, for the dynamic one, a pointer from kc_emu::dyn_smem() */

/* ---- vector and index types -------------------------------------------- */

struct dim3 {
	unsigned x, y, z;
	dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
	unsigned x, y, z;
};
struct __attribute__((aligned(16))) int4 {
	int x, y, z, w;
};
struct __attribute__((aligned(16))) float4 {
	float x, y, z, w;
};
struct __attribute__((aligned(8))) float2 {
	float x, y;
};
static inline int4 make_int4(int x, int y, int z, int w) { return int4{ x, y, z, w }; }
static inline float4 make_float4(float x, float y, float z, float w) { return float4{ x, y, z, w }; }

/* CUDA's min and max take mixed integer types in device code */
template <typename A, typename B> static inline auto min(A a, B b) -> typename std::common_type<A, B>::type
{
	return b < a ? b : a;
}
template <typename A, typename B> static inline auto max(A a, B b) -> typename std::common_type<A, B>::type
{
	return a < b ? b : a;
}

/* ---- 16-bit floats --------------------------------------------------- */

struct __nv_bfloat16 {
	uint16_t raw;
};
struct __half {
	uint16_t raw;
};

static inline float __bfloat162float(__nv_bfloat16 h)
{
	uint32_t u = (uint32_t)h.raw << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static inline __nv_bfloat16 __float2bfloat16(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN stays NaN */
		return __nv_bfloat16{ (uint16_t)((u >> 16) | 0x40) };
	u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
	return __nv_bfloat16{ (uint16_t)(u >> 16) };
}

static inline float __half2float(__half h)
{
	_Float16 v;
	memcpy(&v, &h.raw, 2);
	return (float)v;
}

static inline __half __float2half(float f)
{
	_Float16 v = (_Float16)f; /* round to nearest even */
	__half h;
	memcpy(&h.raw, &v, 2);
	return h;
}

/* ---- the emulated threads ------------------------------------------------ */

namespace kc_emu {

struct fiber; /* emu.cc */
extern uint3 g_bid;           /* blockIdx of the block running */
extern dim3 g_bdim, g_gdim;   /* blockDim, gridDim of the launch running */
extern fiber *g_self;         /* the thread running */
const uint3 &tid(const fiber *f);

void syncthreads();
void syncwarp(unsigned mask);
/* The warp's lanes each put v, then each gets the v of lane src(lane). */
uint64_t exchange(unsigned mask, uint64_t v, int mode, int arg, int width);
/* X_GATHER: a barrier of a warp-level matrix instruction (emu_api.h's
 * warp_gather), the instruction named by the width, so that lanes at
 * different ones are reported */
enum { X_IDX, X_XOR, X_DOWN, X_UP, X_GATHER };
int lane();

/* Run fn for every thread of a launch; smem is the dynamic shared memory
 * asked. Returns 0, or -1 (a barrier that not every thread reached, a
 * configuration the GPU would refuse) with a message in cudaGetLastError. */
int run_grid(dim3 grid, dim3 block, size_t smem, const std::function<void()> &fn, const void *k);
/* this launch's dynamic shared memory (extern __shared__, see cu2cc.py) */
void *dyn_smem();
/* a static __shared__ array declared: filled with 0xff once per block */
void shared_poison(void *p, size_t n);
/* cp.async.cg (16 bytes, the last 16 - n zeros), commit_group, wait_group
 * n: a committed group lands at a random later switch of its thread or at
 * the wait (emu.cc) */
void cp_async(void *dst, const void *src, int n);
void cp_commit();
void cp_wait(int n);
/* a kernel used an API wrongly (an ldmatrix row's alignment...): the launch
 * fails after the block, with this message */
void kernel_fault(const char *fmt, ...);

struct launcher {
	dim3 grid, block;
	size_t smem;
	launcher(dim3 g, dim3 b, size_t s = 0, void * = nullptr) : grid(g), block(b), smem(s) {}
	template <typename... P, typename... A> void operator()(void (*k)(P...), A &&...a)
	{
		std::tuple<typename std::decay<P>::type...> args(
			static_cast<typename std::decay<P>::type>(a)...);
		run_grid(grid, block, smem, [&]() { std::apply(k, args); }, (const void *)k);
	}
};

} // namespace kc_emu

#define threadIdx (kc_emu::tid(kc_emu::g_self))
#define blockIdx (kc_emu::g_bid)
#define blockDim (kc_emu::g_bdim)
#define gridDim (kc_emu::g_gdim)
#define warpSize 32

static inline void __syncthreads() { kc_emu::syncthreads(); }
static inline void __syncwarp(unsigned mask = 0xffffffffu) { kc_emu::syncwarp(mask); }

template <typename T> static inline T kc_emu_shfl(unsigned mask, T v, int mode, int arg, int width)
{
	static_assert(sizeof(T) <= 8, "shuffles move up to 8 bytes");
	uint64_t u = 0;
	memcpy(&u, &v, sizeof(T));
	u = kc_emu::exchange(mask, u, mode, arg, width);
	memcpy(&v, &u, sizeof(T));
	return v;
}
template <typename T> static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32)
{
	return kc_emu_shfl(mask, v, kc_emu::X_IDX, src, width);
}
template <typename T> static inline T __shfl_xor_sync(unsigned mask, T v, int m, int width = 32)
{
	return kc_emu_shfl(mask, v, kc_emu::X_XOR, m, width);
}
template <typename T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32)
{
	return kc_emu_shfl(mask, v, kc_emu::X_DOWN, (int)d, width);
}
template <typename T> static inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32)
{
	return kc_emu_shfl(mask, v, kc_emu::X_UP, (int)d, width);
}

/* one thread runs at a time: atomics are plain read-modify-writes */
template <typename T> static inline T atomicAdd(T *p, T v)
{
	T old = *p;
	*p = old + v;
	return old;
}
template <typename T> static inline T __ldg(const T *p) { return *p; }
template <typename T> static inline T __ldcg(const T *p) { return *p; }
/* blocks run one after the other: every write is seen by the next block */
static inline void __threadfence() {}
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }

#endif
