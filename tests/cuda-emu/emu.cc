/* tests/cuda-emu/emu.cc: the CPU emulation of CUDA, cuBLAS and cuBLASLt
 * behind emu_api.h (what it models and what not: emu.h). */
#include "emu_api.h"

#include <cblas.h>
#include <chrono>
#include <stdarg.h>
#include <unordered_map>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif

namespace kc_emu {

enum { READY, AT_BLOCK, AT_WARP, DONE };

/* The switch between the scheduler and the threads: swapcontext makes a
 * system call (the signal mask) per switch, too slow for millions of
 * them, so the callee-saved registers and the stack pointer are switched
 * here (System V x86-64). */
extern "C" void kc_emu_switch(void **save_sp, void *to_sp);
__asm__(".text\n"
	".globl kc_emu_switch\n"
	".type kc_emu_switch,@function\n"
	"kc_emu_switch:\n"
	"\tpushq %rbp\n\tpushq %rbx\n\tpushq %r12\n\tpushq %r13\n\tpushq %r14\n\tpushq %r15\n"
	"\tmovq %rsp, (%rdi)\n"
	"\tmovq %rsi, %rsp\n"
	"\tpopq %r15\n\tpopq %r14\n\tpopq %r13\n\tpopq %r12\n\tpopq %rbx\n\tpopq %rbp\n"
	"\tret\n"
	".size kc_emu_switch, .-kc_emu_switch\n");

struct cp_copy {
	void *dst;
	const void *src;
	int n;
};

static void s_cp_do(const std::vector<cp_copy> &g)
{
	for (const cp_copy &c : g) {
		memset(c.dst, 0, 16);
		memcpy(c.dst, c.src, (size_t)c.n);
	}
}

struct fiber {
	void *sp;         /* its saved stack pointer while switched away */
	char *stack;
	uint3 tid;
	int lin;          /* the thread's index in its block */
	int state;
	unsigned mask;    /* at a warp barrier: the lanes it names */
	int xop;          /* an exchange (mode + 1), or 0 for a plain barrier */
	int xarg, xwidth;
	uint64_t xval, xres;
	void *fake;       /* AddressSanitizer's fake stack while switched away */
	/* cp.async copies not yet done: the open group, then the committed
	 * ones, oldest first */
	std::vector<cp_copy> cp_open;
	std::vector<std::vector<cp_copy>> cp_groups;
};

uint3 g_bid;
dim3 g_bdim, g_gdim;
fiber *g_self;

#define EMU_STACK (256u << 10)
static void *s_main_sp;
static std::vector<fiber> s_f;
static const std::function<void()> *s_fn;
[[maybe_unused]] static const void *s_main_bottom;
[[maybe_unused]] static size_t s_main_size;
static unsigned char *s_smem;   /* this launch's dynamic shared memory */
static std::vector<void *> s_poisoned; /* static __shared__ arrays filled this block */
static char s_fault[512];       /* a kernel's misuse of an API, reported after its block */
static cudaError_t s_last = cudaSuccess;
static char s_why[512];

static void s_fail(cudaError_t e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s_why, sizeof s_why, fmt, ap);
	va_end(ap);
	fprintf(stderr, "cuda-emu: %s\n", s_why);
	s_last = e;
}

const uint3 &tid(const fiber *f)
{
	return f->tid;
}

int lane()
{
	return g_self->lin % 32;
}

void *dyn_smem()
{
	return s_smem;
}

/* Shared memory starts each block as garbage on a GPU: here as 0xff
 * bytes (NaN in every float type), so that a read of what this block did
 * not write shows. The first thread of a block to reach a declaration
 * fills it. */
void shared_poison(void *p, size_t n)
{
	if (std::find(s_poisoned.begin(), s_poisoned.end(), p) != s_poisoned.end())
		return;
	memset(p, 0xff, n);
	s_poisoned.push_back(p);
}

/* cp.async: a committed group's copies are made at one of the thread's
 * later switches (s_to_main, by chance) or at the latest when it waits
 * for the group, so a read of the destination before the wait, or a copy
 * into a tile other threads still read, shows as wrong numbers. */
void cp_async(void *dst, const void *src, int n)
{
	g_self->cp_open.push_back(cp_copy{ dst, src, n });
}

void cp_commit()
{
	g_self->cp_groups.push_back(std::move(g_self->cp_open));
	g_self->cp_open.clear();
}

void cp_wait(int n)
{
	fiber *f = g_self;

	while ((int)f->cp_groups.size() > n) {
		s_cp_do(f->cp_groups.front());
		f->cp_groups.erase(f->cp_groups.begin());
	}
}

void kernel_fault(const char *fmt, ...)
{
	va_list ap;

	if (s_fault[0])
		return;
	va_start(ap, fmt);
	vsnprintf(s_fault, sizeof s_fault, fmt, ap);
	va_end(ap);
}

static uint64_t s_rng = 0x9e3779b97f4a7c15ull;

static uint64_t s_next(void)
{
	s_rng ^= s_rng << 13, s_rng ^= s_rng >> 7, s_rng ^= s_rng << 17;
	return s_rng;
}

static void s_to_main(fiber *f)
{
	/* its committed cp.async groups land at a time of the GPU's choosing:
	 * here, each at one of the thread's switches, oldest first, by chance */
	while (!f->cp_groups.empty() && (s_next() & 1)) {
		s_cp_do(f->cp_groups.front());
		f->cp_groups.erase(f->cp_groups.begin());
	}
#if EMU_ASAN
	__sanitizer_start_switch_fiber(&f->fake, s_main_bottom, s_main_size);
#endif
	kc_emu_switch(&f->sp, s_main_sp);
#if EMU_ASAN
	__sanitizer_finish_switch_fiber(f->fake, NULL, NULL);
#endif
}

/* A thread's first frame: the kernel, then back to the scheduler for good. */
static void s_entry()
{
	fiber *f = g_self;
	void *dead;
#if EMU_ASAN
	__sanitizer_finish_switch_fiber(NULL, &s_main_bottom, &s_main_size);
#endif
	f->cp_open.clear();
	f->cp_groups.clear();
	(*s_fn)();
	/* copies it never waited for land anyway, as on a GPU */
	for (const auto &g : f->cp_groups)
		s_cp_do(g);
	s_cp_do(f->cp_open);
	f->state = DONE;
#if EMU_ASAN
	__sanitizer_start_switch_fiber(NULL, s_main_bottom, s_main_size);
#endif
	kc_emu_switch(&dead, s_main_sp);
	abort(); /* never resumed */
}

/* A fresh stack whose first switch "returns" into s_entry with the
 * alignment of a call (rsp + 8 a multiple of 16 at its first instruction). */
static void s_fiber_init(fiber *f)
{
	uintptr_t top = ((uintptr_t)f->stack + EMU_STACK) & ~(uintptr_t)15;
	void **at = (void **)(top - 16);

#if EMU_ASAN
	/* the frames of its last thread left their redzones poisoned */
	ASAN_UNPOISON_MEMORY_REGION(f->stack, EMU_STACK);
#endif
	at[0] = (void *)s_entry;
	for (int i = 1; i <= 6; i++)
		at[-i] = NULL; /* rbp rbx r12 r13 r14 r15 */
	f->sp = (void *)(at - 6);
}

void syncthreads()
{
	fiber *f = g_self;

	f->state = AT_BLOCK;
	s_to_main(f);
}

static uint64_t s_warp_wait(unsigned mask, int xop, uint64_t v, int arg, int width)
{
	fiber *f = g_self;

	f->state = AT_WARP, f->mask = mask, f->xop = xop, f->xval = v, f->xarg = arg;
	f->xwidth = width;
	s_to_main(f);
	return f->xres;
}

void syncwarp(unsigned mask)
{
	s_warp_wait(mask, 0, 0, 0, 32);
}

uint64_t exchange(unsigned mask, uint64_t v, int mode, int arg, int width)
{
	return s_warp_wait(mask, mode + 1, v, arg, width);
}

/* Release the warp's barrier when every live lane its members name has
 * arrived: 1 released (the lanes are READY again), 0 still waiting, -1
 * broken (reported). */
static int s_warp_release(int w, int nthreads, std::vector<int> &ready)
{
	int first = w * 32, last = std::min(first + 32, nthreads);
	unsigned mask = 0;

	for (int i = first; i < last; i++)
		if (s_f[i].state == AT_WARP)
			mask |= s_f[i].mask;
	if (!mask)
		return 0;
	for (int i = first; i < last; i++)
		if ((mask & (1u << (i - first))) && s_f[i].state == READY)
			return 0; /* not there yet */
	for (int i = first; i < last; i++) {
		const fiber &f = s_f[i], *ref = NULL;
		for (int j = first; j < last && !ref; j++)
			if (s_f[j].state == AT_WARP)
				ref = &s_f[j];
		if (f.state == AT_WARP &&
		    (f.mask != ref->mask || f.xop != ref->xop || f.xwidth != ref->xwidth)) {
			s_fail(cudaErrorLaunchFailure,
			       "block (%u,%u,%u): lanes of warp %d wait at different warp operations "
			       "(mask %08x / %08x, kind %d / %d, width %d / %d)",
			       g_bid.x, g_bid.y, g_bid.z, w, f.mask, ref->mask, f.xop, ref->xop,
			       f.xwidth, ref->xwidth);
			return -1;
		}
	}
	for (int i = first; i < last; i++) {
		if ((mask & (1u << (i - first))) && s_f[i].state == AT_BLOCK) {
			s_fail(cudaErrorLaunchFailure,
			       "block (%u,%u,%u): lane %d of warp %d waits at __syncthreads while others of "
			       "its warp wait at a warp operation it names it in (divergent barriers)",
			       g_bid.x, g_bid.y, g_bid.z, i - first, w);
			return -1;
		}
	}
	for (int i = first; i < last; i++) {
		fiber &f = s_f[i];
		int l = i - first;
		if (f.state != AT_WARP || !f.xop)
			continue;
		if (f.xop - 1 == X_GATHER) {
			f.xres = f.xval;
			continue;
		}
		int width = f.xwidth, base = l & ~(width - 1), src = l;
		switch (f.xop - 1) {
		case X_IDX: src = base + (f.xarg & (width - 1)); break;
		case X_XOR: src = l ^ f.xarg; break;
		case X_DOWN: src = l + f.xarg; break;
		case X_UP: src = l - f.xarg; break;
		}
		/* a later segment's lane is out of reach (the lane keeps its own
		 * value); xor may read an earlier segment, the others may not */
		if (src >= base + width || src < 0 || (src < base && f.xop - 1 != X_XOR))
			src = l;
		if (first + src >= last || s_f[first + src].state != AT_WARP || !s_f[first + src].xop) {
			s_fail(cudaErrorLaunchFailure,
			       "block (%u,%u,%u): lane %d of warp %d reads lane %d, which is not in the "
			       "shuffle",
			       g_bid.x, g_bid.y, g_bid.z, l, w, src);
			return -1;
		}
		f.xres = s_f[first + src].xval;
	}
	for (int i = first; i < last; i++)
		if (s_f[i].state == AT_WARP) {
			s_f[i].state = READY;
			ready.push_back(i);
		}
	return 1;
}

/* The next thread to run: any ready one, drawn from a fixed sequence (so
 * runs repeat), as a GPU promises no order between its threads, not even
 * between the lanes of a warp (independent thread scheduling). A thread
 * runs until it waits at a barrier or ends, and a warp's lanes are ready
 * again as soon as its last one arrives, while other threads may not have
 * run since the last __syncthreads: a kernel that reads what another
 * thread writes without a barrier in between reads old values in some
 * interleavings and fails its check. CUDA_EMU_ORDER=forward runs the
 * lowest ready thread each time instead. */
static int s_forward = -1;

static int s_take(std::vector<int> &ready)
{
	size_t at;
	int i;

	if (s_forward) {
		at = (size_t)(std::min_element(ready.begin(), ready.end()) - ready.begin());
	} else {
		at = (size_t)(s_next() % ready.size());
	}
	i = ready[at];
	ready[at] = ready.back();
	ready.pop_back();
	return i;
}

static int s_run_block(int nthreads)
{
	std::vector<int> ready;

	if (s_forward < 0)
		s_forward = getenv("CUDA_EMU_ORDER") && !strcmp(getenv("CUDA_EMU_ORDER"), "forward");
	for (int i = 0; i < nthreads; i++)
		ready.push_back(i);
	for (;;) {
		while (!ready.empty()) {
			int i = s_take(ready);
			fiber &f = s_f[i];
			g_self = &f;
#if EMU_ASAN
			void *fake = NULL;
			__sanitizer_start_switch_fiber(&fake, f.stack, EMU_STACK);
#endif
			kc_emu_switch(&s_main_sp, f.sp);
#if EMU_ASAN
			__sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
			g_self = NULL;
			/* its warp may be complete now (it arrived, or it ended) */
			if (s_warp_release(i / 32, nthreads, ready) < 0)
				return -1;
		}
		int live = 0, at_block = 0;
		for (int i = 0; i < nthreads; i++) {
			live += s_f[i].state != DONE;
			at_block += s_f[i].state == AT_BLOCK;
		}
		if (!live)
			return 0;
		if (at_block == live) {
			for (int i = 0; i < nthreads; i++)
				if (s_f[i].state == AT_BLOCK) {
					s_f[i].state = READY;
					ready.push_back(i);
				}
			continue;
		}
		s_fail(cudaErrorLaunchFailure,
		       "block (%u,%u,%u): %d of %d live threads wait at __syncthreads, the others at warp "
		       "operations that cannot complete (a barrier not every thread reaches)",
		       g_bid.x, g_bid.y, g_bid.z, at_block, live);
		return -1;
	}
}

/* the threads' stacks go with the process (destroyed before s_f, which
 * is defined earlier, so that nothing is left for the leak checker) */
static struct stacks_free {
	~stacks_free()
	{
		for (fiber &f : s_f)
			free(f.stack);
		s_f.clear();
	}
} s_stacks_free;

static std::unordered_map<const void *, int> s_smem_granted;

int run_grid(dim3 grid, dim3 block, size_t smem, const std::function<void()> &fn, const void *k)
{
	int nthreads = (int)(block.x * block.y * block.z);
	size_t limit = 48u << 10;
	auto g = s_smem_granted.find(k);

	if (g != s_smem_granted.end())
		limit = (size_t)g->second;
	if (nthreads <= 0 || nthreads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 ||
	    grid.z == 0 || grid.y > 65535 || grid.z > 65535 || grid.x > 2147483647u) {
		s_fail(cudaErrorInvalidConfiguration, "launch of %ux%ux%u blocks of %ux%ux%u threads",
		       grid.x, grid.y, grid.z, block.x, block.y, block.z);
		return -1;
	}
	if (smem > limit) {
		s_fail(cudaErrorInvalidValue,
		       "launch asks %zu bytes of dynamic shared memory; the kernel may have %zu "
		       "(cudaFuncSetAttribute raises it)",
		       smem, limit);
		return -1;
	}
	if ((int)s_f.size() < nthreads) {
		size_t old = s_f.size();
		s_f.resize(nthreads);
		for (size_t i = old; i < s_f.size(); i++)
			s_f[i].stack = (char *)malloc(EMU_STACK);
	}
	if (getenv("CUDA_EMU_TRACE"))
		fprintf(stderr, "cuda-emu: launch %ux%ux%u x %ux%ux%u, %zu bytes of dynamic shared memory\n",
			grid.x, grid.y, grid.z, block.x, block.y, block.z, smem);
	/* 128-byte aligned, as CUDA's */
	s_smem = (unsigned char *)aligned_alloc(128, (smem + 127) / 128 * 128 + 128);
	s_fn = &fn;
	g_gdim = grid, g_bdim = block;
	for (unsigned bz = 0; bz < grid.z; bz++)
		for (unsigned by = 0; by < grid.y; by++)
			for (unsigned bx = 0; bx < grid.x; bx++) {
				g_bid = uint3{ bx, by, bz };
				memset(s_smem, 0xff, smem);
				s_poisoned.clear();
				for (int i = 0; i < nthreads; i++) {
					fiber &f = s_f[i];
					f.lin = i;
					f.tid = uint3{ i % block.x, i / block.x % block.y,
						       i / (block.x * block.y) };
					f.state = READY;
					f.fake = NULL;
					s_fiber_init(&f);
				}
				if (s_run_block(nthreads) < 0 || s_fault[0]) {
					if (s_fault[0])
						s_fail(cudaErrorLaunchFailure, "block (%u,%u,%u): %s", bx, by,
						       bz, s_fault);
					s_fault[0] = 0;
					free(s_smem);
					s_smem = NULL;
					return -1;
				}
			}
	free(s_smem);
	s_smem = NULL;
	return 0;
}

void grant_smem(const void *k, int bytes)
{
	s_smem_granted[k] = bytes;
}

cudaError_t take_last()
{
	cudaError_t e = s_last;
	s_last = cudaSuccess;
	return e;
}

const char *why()
{
	return s_why;
}

} // namespace kc_emu

/* ---- runtime ------------------------------------------------------------ */

using namespace kc_emu;

#define EMU_TOTAL ((size_t)16 << 30)
static std::unordered_map<void *, size_t> s_blocks;
static uint64_t s_used, s_peak;
struct kc_emu_event {
	std::chrono::steady_clock::time_point t;
};

cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return cudaSuccess; }
cudaError_t cudaDriverGetVersion(int *v) { *v = 13000; return cudaSuccess; }
cudaError_t cudaRuntimeGetVersion(int *v) { *v = 13000; return cudaSuccess; }
cudaError_t cudaGetDevice(int *dev) { *dev = 0; return cudaSuccess; }
/* a failed call's error is kept for cudaGetLastError, as the runtime does */
static cudaError_t s_ret(cudaError_t e)
{
	if (e != cudaSuccess)
		s_last = e;
	return e;
}

cudaError_t cudaSetDevice(int dev) { return s_ret(dev == 0 ? cudaSuccess : cudaErrorInvalidValue); }

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev)
{
	memset(p, 0, sizeof *p);
	snprintf(p->name, sizeof p->name, "CPU emulation of CUDA (tests/cuda-emu)");
	p->major = 9, p->minor = 0, p->multiProcessorCount = 4;
	p->totalGlobalMem = EMU_TOTAL, p->sharedMemPerBlock = 48u << 10;
	p->sharedMemPerBlockOptin = 227u << 10;
	return dev == 0 ? cudaSuccess : cudaErrorInvalidValue;
}

cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int dev)
{
	(void)dev;
	/* as an H100's, but for the SMs: as many as cudaGetDeviceProperties says */
	*v = a == cudaDevAttrComputeCapabilityMajor ? 9 : a == cudaDevAttrMultiProcessorCount ? 4
											       : 227 << 10;
	return cudaSuccess;
}

cudaError_t cudaGetLastError(void)
{
	return take_last();
}

const char *cudaGetErrorString(cudaError_t e)
{
	switch (e) {
	case cudaSuccess: return "no error";
	case cudaErrorMemoryAllocation: return "out of memory";
	case cudaErrorNotSupported: return "operation not supported (the CPU emulation of CUDA)";
	default: return why()[0] ? why() : "emulated CUDA error";
	}
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags)
{
	(void)flags;
	*s = (cudaStream_t)1;
	return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) { (void)s; return cudaSuccess; }

cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t *p, int dev)
{
	(void)dev;
	*p = (cudaMemPool_t)1;
	return cudaSuccess;
}

cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t p, cudaMemPoolAttr a, void *v)
{
	(void)p, (void)a, (void)v;
	return cudaSuccess;
}

cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t p, cudaMemPoolAttr a, void *v)
{
	(void)p;
	*(uint64_t *)v = a == cudaMemPoolAttrUsedMemHigh ? s_peak : s_used;
	return cudaSuccess;
}

cudaError_t cudaDeviceGetGraphMemAttribute(int dev, cudaGraphMemAttributeType a, void *v)
{
	(void)dev, (void)a;
	*(uint64_t *)v = 0;
	return cudaSuccess;
}

/* plain heap blocks of the exact size: AddressSanitizer sees every overrun */
cudaError_t cudaMallocAsync(void **p, size_t bytes, cudaStream_t s)
{
	(void)s;
	if (s_used + bytes > EMU_TOTAL || !(*p = malloc(bytes ? bytes : 1)))
		return s_ret(cudaErrorMemoryAllocation);
	s_blocks[*p] = bytes;
	s_used += bytes;
	s_peak = std::max(s_peak, s_used);
	return cudaSuccess;
}

cudaError_t cudaFreeAsync(void *p, cudaStream_t s)
{
	(void)s;
	auto b = s_blocks.find(p);
	if (!p)
		return cudaSuccess;
	if (b == s_blocks.end()) {
		s_fail(cudaErrorInvalidValue, "cudaFreeAsync of %p, which cudaMallocAsync did not give", p);
		return s_ret(cudaErrorInvalidValue);
	}
	s_used -= b->second;
	s_blocks.erase(b);
	free(p);
	return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b)
{
	*free_b = EMU_TOTAL - s_used, *total_b = EMU_TOTAL;
	return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind k, cudaStream_t s)
{
	(void)k, (void)s;
	memmove(dst, src, n);
	return cudaSuccess;
}

cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
			      size_t height, cudaMemcpyKind k, cudaStream_t s)
{
	(void)k, (void)s;
	if (width > dpitch || width > spitch)
		return s_ret(cudaErrorInvalidValue);
	for (size_t r = 0; r < height; r++)
		memmove((char *)dst + r * dpitch, (const char *)src + r * spitch, width);
	return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s)
{
	(void)s;
	memset(p, v, n);
	return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *e)
{
	*e = new kc_emu_event;
	return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e)
{
	delete e;
	return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
	(void)s;
	e->t = std::chrono::steady_clock::now();
	return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) { (void)e; return cudaSuccess; }

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
	*ms = std::chrono::duration<float, std::milli>(b->t - a->t).count();
	return cudaSuccess;
}

/* every call runs at once: nothing can be recorded for later */
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode m)
{
	(void)s, (void)m;
	return s_ret(cudaErrorNotSupported);
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g)
{
	(void)s;
	*g = NULL;
	return s_ret(cudaErrorNotSupported);
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long f)
{
	(void)g, (void)f;
	*x = NULL;
	return s_ret(cudaErrorNotSupported);
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s)
{
	(void)x, (void)s;
	return s_ret(cudaErrorNotSupported);
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x) { (void)x; return cudaSuccess; }
cudaError_t cudaGraphDestroy(cudaGraph_t g) { (void)g; return cudaSuccess; }

/* ---- cuBLAS: column-major products in fp32 ------------------------------ */

struct kc_emu_blas {
	int unused;
};

cublasStatus_t cublasCreate(cublasHandle_t *h) { *h = new kc_emu_blas; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasDestroy(cublasHandle_t h) { delete h; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) { (void)h, (void)s; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *w, size_t n) { (void)h, (void)w, (void)n; return CUBLAS_STATUS_SUCCESS; }

const char *cublasGetStatusString(cublasStatus_t s)
{
	switch (s) {
	case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
	case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
	case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
	default: return "CUBLAS_STATUS (emulated) error";
	}
}

static float s_get(const void *p, cudaDataType_t t, size_t i)
{
	switch (t) {
	case CUDA_R_16BF: return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
	case CUDA_R_16F: return __half2float(((const __half *)p)[i]);
	default: return ((const float *)p)[i];
	}
}

static void s_put(void *p, cudaDataType_t t, size_t i, float v)
{
	switch (t) {
	case CUDA_R_16BF: ((__nv_bfloat16 *)p)[i] = __float2bfloat16(v); break;
	case CUDA_R_16F: ((__half *)p)[i] = __float2half(v); break;
	default: ((float *)p)[i] = v; break;
	}
}

/* D[m,n] = alpha op(A) op(B) + beta C (column-major, C and D with ldc;
 * C not read when beta is 0), the product in fp32 by OpenBLAS. */
static cublasStatus_t s_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
			     float alpha, const void *a, cudaDataType_t at, int lda, const void *b,
			     cudaDataType_t bt, int ldb, float beta, const void *c, void *d,
			     cudaDataType_t ct, int ldc)
{
	int ar = ta == CUBLAS_OP_N ? m : k, ac = ta == CUBLAS_OP_N ? k : m;
	int br = tb == CUBLAS_OP_N ? k : n, bc = tb == CUBLAS_OP_N ? n : k;
	std::vector<float> fa((size_t)ar * ac), fb((size_t)br * bc), fc((size_t)m * n);

	if (m < 0 || n < 0 || k < 0 || lda < std::max(1, ar) || ldb < std::max(1, br) ||
	    ldc < std::max(1, m))
		return CUBLAS_STATUS_INVALID_VALUE;
	if (m == 0 || n == 0)
		return CUBLAS_STATUS_SUCCESS;
	for (int j = 0; j < ac; j++)
		for (int i = 0; i < ar; i++)
			fa[(size_t)j * ar + i] = s_get(a, at, (size_t)j * lda + i);
	for (int j = 0; j < bc; j++)
		for (int i = 0; i < br; i++)
			fb[(size_t)j * br + i] = s_get(b, bt, (size_t)j * ldb + i);
	if (k > 0)
		cblas_sgemm(CblasColMajor, ta == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
			    tb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, m, n, k, 1.0f, fa.data(), ar,
			    fb.data(), br, 0.0f, fc.data(), m);
	for (int j = 0; j < n; j++)
		for (int i = 0; i < m; i++) {
			size_t at_ = (size_t)j * ldc + i;
			float v = alpha * fc[(size_t)j * m + i];
			if (beta != 0.0f)
				v += beta * s_get(c, ct, at_);
			s_put(d, ct, at_, v);
		}
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
			    int n, int k, const void *alpha, const void *a, cudaDataType_t at, int lda,
			    const void *b, cudaDataType_t bt, int ldb, const void *beta, void *c,
			    cudaDataType_t ct, int ldc, cublasComputeType_t comp, cublasGemmAlgo_t algo)
{
	(void)h, (void)comp, (void)algo;
	if (at != bt)
		return CUBLAS_STATUS_NOT_SUPPORTED;
	return s_gemm(ta, tb, m, n, k, *(const float *)alpha, a, at, lda, b, bt, ldb,
		      *(const float *)beta, c, c, ct, ldc);
}

cublasStatus_t cublasGemmBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
				   int m, int n, int k, const void *alpha, const void *const a[],
				   cudaDataType_t at, int lda, const void *const b[], cudaDataType_t bt,
				   int ldb, const void *beta, void *const c[], cudaDataType_t ct,
				   int ldc, int count, cublasComputeType_t comp, cublasGemmAlgo_t algo)
{
	for (int i = 0; i < count; i++) {
		cublasStatus_t s = cublasGemmEx(h, ta, tb, m, n, k, alpha, a[i], at, lda, b[i], bt, ldb,
						beta, c[i], ct, ldc, comp, algo);
		if (s != CUBLAS_STATUS_SUCCESS)
			return s;
	}
	return CUBLAS_STATUS_SUCCESS;
}

/* ---- cuBLASLt: three "algorithms", all s_gemm --------------------------- */

#define EMU_LT_ALGOS 3
struct kc_emu_lt {
	int unused;
};
struct kc_emu_lt_op {
	cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
};
struct kc_emu_lt_layout {
	cudaDataType_t t;
	uint64_t rows, cols;
	int64_t ld;
};
struct kc_emu_lt_pref {
	uint64_t ws = 0;
};

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) { *h = new kc_emu_lt; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) { delete h; return CUBLAS_STATUS_SUCCESS; }
size_t cublasLtGetVersion(void) { return 130001; }

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t c,
					cudaDataType_t scale)
{
	if (c != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F)
		return CUBLAS_STATUS_NOT_SUPPORTED;
	*d = new kc_emu_lt_op;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) { delete d; return CUBLAS_STATUS_SUCCESS; }

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
					      cublasLtMatmulDescAttributes_t a, const void *v,
					      size_t n)
{
	int32_t op;

	if (n != sizeof op)
		return CUBLAS_STATUS_INVALID_VALUE;
	memcpy(&op, v, sizeof op);
	if (a == CUBLASLT_MATMUL_DESC_TRANSA)
		d->ta = (cublasOperation_t)op;
	else if (a == CUBLASLT_MATMUL_DESC_TRANSB)
		d->tb = (cublasOperation_t)op;
	else
		return CUBLAS_STATUS_INVALID_VALUE;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t t,
					  uint64_t rows, uint64_t cols, int64_t ld)
{
	if (ld < (int64_t)std::max<uint64_t>(1, rows))
		return CUBLAS_STATUS_INVALID_VALUE;
	*l = new kc_emu_lt_layout{ t, rows, cols, ld };
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) { delete l; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) { *p = new kc_emu_lt_pref; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) { delete p; return CUBLAS_STATUS_SUCCESS; }

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
						    cublasLtMatmulPreferenceAttributes_t a,
						    const void *v, size_t n)
{
	if (a == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) {
		if (n != sizeof(uint64_t))
			return CUBLAS_STATUS_INVALID_VALUE;
		memcpy(&p->ws, v, n);
	} else if (n != sizeof(uint32_t)) {
		return CUBLAS_STATUS_INVALID_VALUE;
	}
	return CUBLAS_STATUS_SUCCESS;
}

/* The layouts must describe one product: op(A) [m,k], op(B) [k,n], C and D [m,n]. */
static int s_lt_shape(const kc_emu_lt_op *op, const kc_emu_lt_layout *a, const kc_emu_lt_layout *b,
		      const kc_emu_lt_layout *c, const kc_emu_lt_layout *d, int *m, int *n, int *k)
{
	uint64_t am = op->ta == CUBLAS_OP_N ? a->rows : a->cols;
	uint64_t ak = op->ta == CUBLAS_OP_N ? a->cols : a->rows;
	uint64_t bk = op->tb == CUBLAS_OP_N ? b->rows : b->cols;
	uint64_t bn = op->tb == CUBLAS_OP_N ? b->cols : b->rows;

	if (ak != bk || c->rows != am || c->cols != bn || d->rows != am || d->cols != bn ||
	    c->ld != d->ld || a->t != b->t || c->t != d->t)
		return -1;
	*m = (int)am, *n = (int)bn, *k = (int)ak;
	return 0;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t op,
					      cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
					      cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
					      cublasLtMatmulPreference_t p, int want,
					      cublasLtMatmulHeuristicResult_t *res, int *got)
{
	int m, n, k;

	(void)h, (void)p;
	*got = 0;
	if (s_lt_shape(op, a, b, c, d, &m, &n, &k) < 0)
		return CUBLAS_STATUS_INVALID_VALUE;
	if (a->t == CUDA_R_32F)
		return CUBLAS_STATUS_NOT_SUPPORTED;
	for (int i = 0; i < want && i < EMU_LT_ALGOS; i++) {
		memset(&res[i], 0, sizeof res[i]);
		res[i].algo.data[0] = 0x454d55ull; /* "EMU" */
		res[i].algo.data[1] = (uint64_t)i + 1;
		res[i].workspaceSize = (size_t)i << 20;
		res[i].state = CUBLAS_STATUS_SUCCESS;
		res[i].wavesCount = 1.0f;
		*got = i + 1;
	}
	return CUBLAS_STATUS_SUCCESS;
}

static int s_lt_algo_ok(const cublasLtMatmulAlgo_t *algo)
{
	return algo->data[0] == 0x454d55ull && algo->data[1] >= 1 && algo->data[1] <= EMU_LT_ALGOS;
}

cublasStatus_t cublasLtMatmulAlgoCheck(cublasLtHandle_t h, cublasLtMatmulDesc_t op,
				       cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
				       cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
				       const cublasLtMatmulAlgo_t *algo,
				       cublasLtMatmulHeuristicResult_t *res)
{
	int m, n, k;

	(void)h;
	if (s_lt_shape(op, a, b, c, d, &m, &n, &k) < 0)
		return CUBLAS_STATUS_INVALID_VALUE;
	if (!s_lt_algo_ok(algo))
		return CUBLAS_STATUS_NOT_SUPPORTED;
	memset(res, 0, sizeof *res);
	res->algo = *algo;
	res->workspaceSize = (size_t)(algo->data[1] - 1) << 20;
	res->state = CUBLAS_STATUS_SUCCESS;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t op, const void *alpha,
			      const void *a, cublasLtMatrixLayout_t al, const void *b,
			      cublasLtMatrixLayout_t bl, const void *beta, const void *c,
			      cublasLtMatrixLayout_t cl, void *d, cublasLtMatrixLayout_t dl,
			      const cublasLtMatmulAlgo_t *algo, void *ws, size_t wsbytes,
			      cudaStream_t s)
{
	int m, n, k;

	(void)h, (void)s;
	if (s_lt_shape(op, al, bl, cl, dl, &m, &n, &k) < 0)
		return CUBLAS_STATUS_INVALID_VALUE;
	if (!algo || !s_lt_algo_ok(algo) || ((size_t)(algo->data[1] - 1) << 20) > wsbytes ||
	    (wsbytes && !ws))
		return CUBLAS_STATUS_NOT_SUPPORTED;
	return s_gemm(op->ta, op->tb, m, n, k, *(const float *)alpha, a, al->t, (int)al->ld, b, bl->t,
		      (int)bl->ld, *(const float *)beta, c, d, dl->t, (int)dl->ld);
}

cudaError_t kc_emu_func_set_attribute_for(const void *k, cudaFuncAttribute a, int v)
{
	if (a == cudaFuncAttributePreferredSharedMemoryCarveout) /* a hint: nothing to emulate */
		return v < -1 || v > 100 ? s_ret(cudaErrorInvalidValue) : cudaSuccess;
	if (a != cudaFuncAttributeMaxDynamicSharedMemorySize || v < 0 || v > (227 << 10))
		return s_ret(cudaErrorInvalidValue);
	grant_smem(k, v);
	return cudaSuccess;
}
