/* votive.h: the C API of libvotive, the compute kernels behind votive's CPU backend.
 *
 * Python binds these through ctypes (votive/runtime/kernels.py); selftest.c links them directly. Every
 * function taking arrays expects float32, C-contiguous rows (row r starts at base + r * cols) and returns
 * VT_OK, or VT_EINVAL without touching memory when a size is negative or a required pointer is NULL. The
 * callers check shapes and dtypes; the C side trusts the pointers it is given.
 *
 * Layout of the library (votive/runtime/csrc/):
 *   votive.h        this API; bump VT_ABI_VERSION whenever a signature or meaning changes.
 *   vt_internal.h   what the .c files share: the thread pool, the ISA tables, the export macro.
 *   threadpool.c    the persistent worker pool and vt_parallel_for.
 *   dispatch.c      CPU feature detection, the active ISA, and the exported kernels (argument checks and
 *                   the split of rows over threads; the arithmetic lives in the per-ISA files).
 *   simd.h          one vector type and the vector math (exp, normal tail) on GCC vector extensions.
 *   nn_kernels.c    elementwise and row kernels (GELU, LayerNorm, softmax), compiled once per ISA.
 *   selftest.c      a standalone program checking every kernel on every ISA against scalar loops.
 *
 * Adding a kernel: write its single-threaded body over a range of rows in an ISA-compiled file, add a
 * pointer for it to that file's table type in vt_internal.h, and export a wrapper in dispatch.c that
 * checks arguments and calls vt_parallel_for. Quantized matmuls (Q4_0, Q8_0, K-quants) go in their own
 * file (e.g. quant_kernels.c) with their own table, following nn_kernels.c.
 */
#ifndef VOTIVE_H
#define VOTIVE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VT_ABI_VERSION 1

#define VT_OK 0
#define VT_EINVAL (-1) /* a negative size or a required pointer is NULL */
#define VT_EUNSUPPORTED (-2) /* an ISA this build or this CPU does not have */

#if defined(__GNUC__)
#define VT_API __attribute__((visibility("default")))
#else
#define VT_API
#endif

/* VT_ABI_VERSION of the compiled library; the Python loader refuses a library whose version differs. */
VT_API int vt_abi_version(void);

/* ---- instruction sets ---------------------------------------------------------------------------- */

/* Name of the kernel set in use: "avx512", "avx2" or "sse2" on x86_64, "neon" on arm64, "generic"
 * elsewhere. The best one the CPU supports is picked at first use. */
VT_API const char *vt_isa(void);

/* 1 when this build has the named kernel set and this CPU can run it, else 0. */
VT_API int vt_isa_supported(const char *name);

/* Switch to the named kernel set (tests and benchmarks compare them). VT_EUNSUPPORTED if unavailable. */
VT_API int vt_set_isa(const char *name);

/* ---- threads --------------------------------------------------------------------------------------- */

/* Threads a kernel may use, the caller included. n < 1 means the cores this process may run on. The pool
 * is rebuilt lazily at the next parallel kernel; a call waits for any kernel running in another thread. */
VT_API void vt_set_num_threads(int n);
VT_API int vt_num_threads(void);

/* ---- kernels ----------------------------------------------------------------------------------------- */

/* x[r, c] = gelu(x[r, c] + bias[c]) in place, with exact (erf) GELU as torch.nn.functional.gelu's default.
 * bias may be NULL. gelu(+inf) = +inf, gelu(-inf) = NaN as in PyTorch, NaN stays NaN. */
VT_API int vt_gelu(float *x, const float *bias, int64_t rows, int64_t cols);

/* out[r] = (h - mean(h)) / sqrt(var(h) + eps) * weight + bias, h = x[r] + residual[r] (residual may be
 * NULL; weight and bias may be NULL, meaning 1 and 0). out may be x or residual (in place). */
VT_API int vt_layer_norm(float *out, const float *x, const float *residual, const float *weight,
                         const float *bias, int64_t rows, int64_t cols, float eps);

/* Softmax of each row of x, in place, of x * scale + mask. Row r adds mask row (r / mask_div) % mask_mod,
 * which covers masks broadcast over leading axes, e.g. an attention mask (batch, 1, 1, keys) against
 * scores (batch, heads, queries, keys): mask_div = heads * queries, mask_mod = batch. mask may be NULL.
 * A row whose every entry is -inf comes out NaN, as numpy and PyTorch give. */
VT_API int vt_softmax(float *x, const float *mask, int64_t mask_div, int64_t mask_mod, float scale,
                      int64_t rows, int64_t cols);

#ifdef __cplusplus
}
#endif

#endif /* VOTIVE_H */
