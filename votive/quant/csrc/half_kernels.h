/* half_kernels.h: products of float activations with F16 and BF16 matrices in ggml's order, shared by
 * half_kernels.c (the arithmetic, compiled once per ISA) and half_matmul.c (vt_half_matmul: checks, the order,
 * the rounded activations, the split over threads). */
#ifndef VT_HALF_KERNELS_H
#define VT_HALF_KERNELS_H

#include <stdint.h>

#include "vt_internal.h"

/* The two orders llama.cpp's CPU backend (x86, AVX-512 build) sums these products in, after rounding x to the
 * weight's type (type_traits_cpu[F16 / BF16].vec_dot_type); every product of two halves (two bfloat16s) is exact
 * in float, so only the order of the additions matters:
 * - VT_HALF_TILED: llamafile_sgemm's tinyBLAS (llamafile/sgemm.cpp), which takes a product of 2 rows of x and more
 *   when the weight has a multiple of 4 rows and its rows are whole 16-element (F16) or 32-element (BF16) steps:
 *   per output one 16-lane accumulator over the whole row, fused-multiply-added 16 elements a step (F16), or per
 *   32-element step vdpbf16ps (BF16: lane j adds element 2j+1's product, then element 2j's, inputs below 2^-126
 *   read as zeros), then summed across as GCC's _mm512_reduce_add_ps does (halves 8, 4, 2, 1);
 * - VT_HALF_VEC_DOT: every other product, one row of x included (ggml_vec_dot_f16 / ggml_vec_dot_bf16 in
 *   ggml-cpu/vec.cpp): F16 in four such accumulators taking the 16-element quarters of each 64-element step,
 *   added (0 + 2) + (1 + 3) and summed across; BF16 in two, taking the 32-element halves of each 64-element
 *   step through vdpbf16ps, each summed across, added in double; then the elements past the last whole
 *   64-element step, float products added in double, the total rounded to float. */
enum { VT_HALF_VEC_DOT = 0, VT_HALF_TILED = 1 };

/* Rows of activations as the products read them (act): for F16, floats rounded to the nearest half (the values
 * of ggml_cpu_fp32_to_fp16's halves); for BF16, the bfloat16 bits ggml_cpu_fp32_to_bf16 gives (rounded to
 * nearest even, NaNs kept quiet), cols uint16 per row. */
struct vt_half_kernels {
    const char *isa; /* vt_nn()'s name for the same build */
    /* count floats of x -> count activations at act */
    void (*round_rows)(int type, const float *x, int64_t count, void *act);
    /* out[c * out_stride + r] = weight row r . activation row c, for r in [r_begin, r_end) and c in [0, n), in
     * `order`; weight row r starts at w + r * w_stride and holds cols elements of `type` (VT_F16 or VT_BF16) */
    void (*matmul_rows)(int type, int order, const uint8_t *w, int64_t w_stride, int64_t r_begin, int64_t r_end,
                        const void *act, int64_t n, int64_t cols, float *out, int64_t out_stride);
};

#if defined(VT_X86_64)
extern const struct vt_half_kernels vt_half_sse2, vt_half_avx2, vt_half_avx512;
#elif defined(__aarch64__)
extern const struct vt_half_kernels vt_half_neon;
#else
extern const struct vt_half_kernels vt_half_generic;
#endif

#endif /* VT_HALF_KERNELS_H */
