/* half_kernels.c: x @ W.T for W stored as F16 or BF16, in the order llama.cpp's CPU backend sums it (see
 * half_kernels.h for the two orders), so that a GGUF file with such matrices gives llama.cpp's logits bit for bit.
 *
 * Each output is a chain of 16-lane accumulators whose every step is the same in every build: the vectors of this
 * ISA (one AVX-512 register, two AVX2 ones, four of 16 bytes) each hold a slice of the 16 lanes. Products of two
 * halves (or two bfloat16s) are exact in float, so builds without FMA multiply then add and round as ggml's fused
 * instructions do. Outputs are computed a tile at a time (several weight rows by several rows of x) only to keep
 * the FMA units busy; the tiling never changes an output's own additions. Not reproduced: vdpbf16ps also flushes
 * a partial sum below 2^-126 to zero, which a bfloat16 product needs inputs near 1e-19 to reach.
 *
 * Compiled once per ISA (kernel_build.py, -ffp-contract=off); half_matmul.c picks the build and splits the rows.
 */
#include <stdint.h>
#include <string.h>

#include "half.h"
#include "half_kernels.h"
#include "simd.h"
#include "lanes16.h" /* the accumulator every order below is built of */


/* Weight rows by rows of x per tile: TILE_R * TILE_C accumulators stay in registers (16 vectors, plus the
 * widened weights: AVX-512 and AVX2 have 32 and 16 vector registers). VEC_R: rows per step of a single query. */
#if VT_LANES == 16
#define TILE_R 4
#define TILE_C 4
#define VEC_R 4
#else
#define TILE_R 2
#define TILE_C 2
#define VEC_R 1
#endif
#define X_BLOCK 32 /* rows of x per pass over a thread's weight rows: their activations stay in L2 */

/* a * b + c with one rounding, b * c being a product of two halves or two bfloat16s (exact in float). */
static inline vf madd(vf a, vf b, vf c) {
#if defined(VT_ISA_AVX512) || defined(VT_ISA_AVX2) || defined(__aarch64__)
    return v_fma(a, b, c);
#else
    return a * b + c; /* the product is exact: one rounding, as the FMA's (fmaf per lane would be a slow call) */
#endif
}

static inline uint16_t load_u16(const uint16_t *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* 16 halves at h -> floats, exactly. */
static inline void widen16_f16(vf out[ACC_VECS], const uint16_t *h) {
#if defined(VT_ISA_AVX512)
    out[0] = (vf)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h));
#elif defined(VT_ISA_AVX2)
    out[0] = (vf)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
    out[1] = (vf)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + 8)));
#else
    float f[LANES];
    for (int l = 0; l < LANES; l++)
        f[l] = f16_to_f32(load_u16(h + l));
    for (int v = 0; v < ACC_VECS; v++)
        out[v] = v_load(f + v * VT_LANES);
#endif
}

/* bfloat16 bits in the top half of each lane -> their floats, inputs below 2^-126 as zeros (vdpbf16ps's DAZ). */
static inline vf bf16_daz(vu bits) {
    vu normal = (vu)((bits & 0x7f800000u) != 0);
    return (vf)(bits & (normal | 0x80000000u));
}

/* 32 bfloat16s at p -> the odd ones (2j + 1) and the even ones (2j) as floats in lane j, as vdpbf16ps pairs them. */
static inline void widen32_bf16(vf odd[ACC_VECS], vf even[ACC_VECS], const uint16_t *p) {
    for (int v = 0; v < ACC_VECS; v++) {
        vu words;
        memcpy(&words, p + 2 * v * VT_LANES, sizeof words); /* lane j: element 2j low, 2j + 1 high */
        odd[v] = bf16_daz(words & 0xffff0000u);
        even[v] = bf16_daz(words << 16);
    }
}

static inline float bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* ---- the tiled order (tinyBLAS) ---------------------------------------------------------------------------- */

/* rm weight rows (w, w_stride apart) by rn activation rows (act, cols apart): out[c * out_stride + r]. Called with
 * constant rm <= TILE_R and rn <= TILE_C, so that the accumulators live in registers. */
static inline __attribute__((always_inline)) void tiled_tile(int type, const uint8_t *w, int64_t w_stride,
                                                            const void *act, int64_t cols, float *out,
                                                            int64_t out_stride, const int rm, const int rn) {
    vf acc[TILE_C][TILE_R][ACC_VECS];
    memset(acc, 0, sizeof acc);
    if (type == VT_F16) {
        const float *x = act;
        for (int64_t k = 0; k < cols; k += LANES) {
            vf wv[TILE_R][ACC_VECS];
            for (int r = 0; r < rm; r++)
                widen16_f16(wv[r], (const uint16_t *)(w + r * w_stride) + k);
            for (int c = 0; c < rn; c++)
                for (int v = 0; v < ACC_VECS; v++) {
                    const vf xv = v_load(x + c * cols + k + v * VT_LANES);
                    for (int r = 0; r < rm; r++)
                        acc[c][r][v] = madd(wv[r][v], xv, acc[c][r][v]);
                }
        }
    } else {
        const uint16_t *x = act;
        for (int64_t k = 0; k < cols; k += 2 * LANES) {
            vf w_odd[TILE_R][ACC_VECS], w_even[TILE_R][ACC_VECS];
            for (int r = 0; r < rm; r++)
                widen32_bf16(w_odd[r], w_even[r], (const uint16_t *)(w + r * w_stride) + k);
            for (int c = 0; c < rn; c++) {
                vf x_odd[ACC_VECS], x_even[ACC_VECS];
                widen32_bf16(x_odd, x_even, x + c * cols + k);
                for (int v = 0; v < ACC_VECS; v++)
                    for (int r = 0; r < rm; r++) /* vdpbf16ps: the odd element's product first */
                        acc[c][r][v] = madd(w_even[r][v], x_even[v], madd(w_odd[r][v], x_odd[v], acc[c][r][v]));
            }
        }
    }
    for (int c = 0; c < rn; c++)
        for (int r = 0; r < rm; r++)
            out[c * out_stride + r] = acc16_reduce(acc[c][r]);
}

static void tiled_rows(int type, const uint8_t *w, int64_t w_stride, int64_t r_begin, int64_t r_end,
                       const void *act, int64_t n, int64_t cols, float *out, int64_t out_stride) {
    const size_t act_row = type == VT_F16 ? sizeof(float) : sizeof(uint16_t);
    for (int64_t c0 = 0; c0 < n; c0 += X_BLOCK) {
        const int64_t c1 = c0 + X_BLOCK < n ? c0 + X_BLOCK : n;
        int64_t r = r_begin;
        for (; r + TILE_R <= r_end; r += TILE_R) {
            const uint8_t *wr = w + r * w_stride;
            int64_t c = c0;
            for (; c + TILE_C <= c1; c += TILE_C)
                tiled_tile(type, wr, w_stride, (const char *)act + c * cols * act_row, cols, out + c * out_stride + r,
                           out_stride, TILE_R, TILE_C);
            for (; c < c1; c++)
                tiled_tile(type, wr, w_stride, (const char *)act + c * cols * act_row, cols, out + c * out_stride + r,
                           out_stride, TILE_R, 1);
        }
        for (; r < r_end; r++)
            for (int64_t c = c0; c < c1; c++)
                tiled_tile(type, w + r * w_stride, w_stride, (const char *)act + c * cols * act_row, cols,
                           out + c * out_stride + r, out_stride, 1, 1);
    }
}

/* ---- the vec_dot order ----------------------------------------------------------------------------------------- */

/* rm weight rows by one activation row, ggml_vec_dot_f16's or ggml_vec_dot_bf16's sum for each: out[r]. */
static inline __attribute__((always_inline)) void vec_dot_tile(int type, const uint8_t *w, int64_t w_stride,
                                                              const void *act, int64_t cols, float *out,
                                                              const int rm) {
    const int64_t whole = cols - cols % (4 * LANES);
    double sum[VEC_R];
    if (type == VT_F16) {
        const float *x = act;
        vf acc[VEC_R][4][ACC_VECS];
        memset(acc, 0, sizeof acc);
        for (int64_t k = 0; k < whole; k += 4 * LANES)
            for (int j = 0; j < 4; j++) {
                vf xv[ACC_VECS];
                for (int v = 0; v < ACC_VECS; v++)
                    xv[v] = v_load(x + k + j * LANES + v * VT_LANES);
                for (int r = 0; r < rm; r++) {
                    vf wv[ACC_VECS];
                    widen16_f16(wv, (const uint16_t *)(w + r * w_stride) + k + j * LANES);
                    for (int v = 0; v < ACC_VECS; v++)
                        acc[r][j][v] = madd(wv[v], xv[v], acc[r][j][v]);
                }
            }
        for (int r = 0; r < rm; r++) {
            for (int v = 0; v < ACC_VECS; v++) /* GGML_F16_VEC_REDUCE: 0 += 2, 1 += 3, 0 += 1 */
                acc[r][0][v] = (acc[r][0][v] + acc[r][2][v]) + (acc[r][1][v] + acc[r][3][v]);
            sum[r] = acc16_reduce(acc[r][0]);
            const uint16_t *wr = (const uint16_t *)(w + r * w_stride);
            for (int64_t k = whole; k < cols; k++)
                sum[r] += (double)(f16_to_f32(load_u16(wr + k)) * x[k]);
        }
    } else {
        const uint16_t *x = act;
        vf acc[VEC_R][2][ACC_VECS];
        memset(acc, 0, sizeof acc);
        for (int64_t k = 0; k < whole; k += 4 * LANES)
            for (int j = 0; j < 2; j++) {
                vf x_odd[ACC_VECS], x_even[ACC_VECS];
                widen32_bf16(x_odd, x_even, x + k + j * 2 * LANES);
                for (int r = 0; r < rm; r++) {
                    vf w_odd[ACC_VECS], w_even[ACC_VECS];
                    widen32_bf16(w_odd, w_even, (const uint16_t *)(w + r * w_stride) + k + j * 2 * LANES);
                    for (int v = 0; v < ACC_VECS; v++)
                        acc[r][j][v] = madd(w_even[v], x_even[v], madd(w_odd[v], x_odd[v], acc[r][j][v]));
                }
            }
        for (int r = 0; r < rm; r++) {
            sum[r] = (double)acc16_reduce(acc[r][0]) + (double)acc16_reduce(acc[r][1]);
            const uint16_t *wr = (const uint16_t *)(w + r * w_stride);
            for (int64_t k = whole; k < cols; k++)
                sum[r] += (double)(bf16_to_f32(load_u16(wr + k)) * bf16_to_f32(x[k]));
        }
    }
    for (int r = 0; r < rm; r++)
        out[r] = (float)sum[r];
}

static void vec_dot_rows(int type, const uint8_t *w, int64_t w_stride, int64_t r_begin, int64_t r_end,
                         const void *act, int64_t n, int64_t cols, float *out, int64_t out_stride) {
    const size_t act_row = type == VT_F16 ? sizeof(float) : sizeof(uint16_t);
    for (int64_t c = 0; c < n; c++) {
        const void *x = (const char *)act + c * cols * act_row;
        int64_t r = r_begin;
        for (; r + VEC_R <= r_end; r += VEC_R)
            vec_dot_tile(type, w + r * w_stride, w_stride, x, cols, out + c * out_stride + r, VEC_R);
        for (; r < r_end; r++)
            vec_dot_tile(type, w + r * w_stride, w_stride, x, cols, out + c * out_stride + r, 1);
    }
}

static void matmul_rows(int type, int order, const uint8_t *w, int64_t w_stride, int64_t r_begin, int64_t r_end,
                        const void *act, int64_t n, int64_t cols, float *out, int64_t out_stride) {
    if (order == VT_HALF_TILED)
        tiled_rows(type, w, w_stride, r_begin, r_end, act, n, cols, out, out_stride);
    else
        vec_dot_rows(type, w, w_stride, r_begin, r_end, act, n, cols, out, out_stride);
}

/* ---- activations ------------------------------------------------------------------------------------------------ */

/* float -> bfloat16 bits, rounded to nearest even, a NaN kept quiet: ggml's GGML_FP32_TO_BF16. */
static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 64);
    return (uint16_t)((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

static void round_rows(int type, const float *x, int64_t count, void *act) {
    if (type == VT_BF16) {
        uint16_t *b = act;
        for (int64_t i = 0; i < count; i++)
            b[i] = f32_to_bf16(x[i]);
        return;
    }
    float *h = act;
    int64_t i = 0;
#if defined(VT_HALF_X86)
    for (; i + 8 <= count; i += 8) /* vcvtps2ph rounds to nearest even, as ggml_cpu_fp32_to_fp16 */
        _mm256_storeu_ps(h + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT)));
#endif
    for (; i < count; i++)
        h[i] = f16_to_f32(f32_to_f16(x[i]));
}

const struct vt_half_kernels VT_SUFFIX(vt_half) = {
    .isa = VT_ISA_NAME,
    .round_rows = round_rows,
    .matmul_rows = matmul_rows,
};
