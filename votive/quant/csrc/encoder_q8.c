/* encoder_q8.c: Q8_0 weights times float activations for the encoders (votive.models.bert quantized at load),
 * as a tiled matrix product on AVX512-VNNI. The decoders' Q8_0 kernel (quant_kernels.c) follows ggml's
 * summation order so a GGUF decoder gives llama.cpp's logits bit for bit; it handles one weight block at a time
 * in 256-bit vectors. An encoder batch is a real matrix product (hundreds of rows), and its reference is the float
 * model, so here the same numbers (the weights' Q8_0 blocks, the activations quantized to Q8_0 blocks as ggml
 * does: d = max|x| / 127 kept as half, q = round-to-nearest-even(x * 127 / max|x|)) are summed in another order, two blocks per 512-bit
 * vector:
 *
 *   y[r][n] = sum over blocks b of  d_w[n][b] * d_a[r][b] * (sum of the 32 products q_w * q_a in block b)
 *
 * The integer block sums are exact (dpbusd: u8 x s8, with the activations offset by 128 to make them unsigned;
 * d_w * d_a * 128 * sum(q_w) is taken off each output at the end); each is converted to float and multiply-added with its two scales' product
 * into 16 lanes, summed at the end. Only the order of the float additions differs from the decoders' kernel.
 *
 * Layout (made once at load by votive.backends.numpy_linears.EncoderQ8Linear): the weight's quants as one int8
 * matrix (n_out, k) and its scales as float32 (n_out, k / 32). Tiles of 4 activation rows x 4 weight rows; the
 * threads take groups of 4 weight rows (vt_parallel_for), so a group's rows stay in L1 while every activation
 * row passes. A scalar twin for tests: votive.backends.numpy_linears.encoder_q8_reference.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vt_internal.h"

#define QK 32 /* elements per Q8_0 block */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define EQ8_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,f16c")))

static int eq8_cpu(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("f16c");
}

/* ---- activations: float rows -> Q8_0 quants offset by 128 (u8) and their scales ------------------------- */

struct quantize_job {
    const float *x;
    uint8_t *q;
    float *d;
    int64_t k;
};

EQ8_TARGET static void quantize_part(void *arg, int64_t begin, int64_t end) {
    const struct quantize_job *j = arg;
    const int64_t nb = j->k / QK;
    for (int64_t r = begin; r < end; r++) {
        for (int64_t b = 0; b < nb; b++) {
            const float *x = j->x + r * j->k + b * QK;
            __m512 lo = _mm512_loadu_ps(x), hi = _mm512_loadu_ps(x + 16);
            float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
            /* ggml keeps d as half (block_q8_0.d) and quantizes with the float 127 / max|x| */
            float d = _cvtsh_ss(_cvtss_sh(amax / 127.0f, _MM_FROUND_TO_NEAREST_INT)),
                  id = amax != 0.0f ? 127.0f / amax : 0.0f;
            __m512 s = _mm512_set1_ps(id);
            /* round to nearest even, as ggml's x86 quantize_row_q8_0 */
            __m512i qlo = _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_mul_ps(lo, s), _MM_FROUND_TO_NEAREST_INT));
            __m512i qhi = _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_mul_ps(hi, s), _MM_FROUND_TO_NEAREST_INT));
            __m128i blo = _mm512_cvtepi32_epi8(_mm512_add_epi32(qlo, _mm512_set1_epi32(128)));
            __m128i bhi = _mm512_cvtepi32_epi8(_mm512_add_epi32(qhi, _mm512_set1_epi32(128)));
            uint8_t *q = j->q + r * j->k + b * QK;
            _mm_storeu_si128((__m128i *)q, blo);
            _mm_storeu_si128((__m128i *)(q + 16), bhi);
            j->d[r * nb + b] = d;
        }
    }
}

/* ---- the product ------------------------------------------------------------------------------------------ */

struct matmul_job {
    const int8_t *wq;
    const float *wd, *we;
    const uint8_t *aq;
    const float *ad;
    float *y;
    int64_t m, n, k;
};

/* 16 lanes: the scale of block b in lanes 0-7, of block b + 1 in lanes 8-15 (0 where there is no block b + 1) */
EQ8_TARGET static inline __m512 eq8_scales(const float *d, int two) {
    const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    __m128 v = two ? _mm_castpd_ps(_mm_load_sd((const double *)d)) : _mm_load_ss(d);
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(v));
}

/* The lane sums of 4 accumulators as one vector [sum a[0], .., sum a[3]]: pairs merged by unpack and shuffle,
 * then the four 128-bit quarters added (about 13 instructions instead of 4 full reductions' 32). */
EQ8_TARGET static inline __m128 eq8_sum4(const __m512 a[4]) {
    __m512 a01 = _mm512_add_ps(_mm512_unpacklo_ps(a[0], a[1]), _mm512_unpackhi_ps(a[0], a[1]));
    __m512 a23 = _mm512_add_ps(_mm512_unpacklo_ps(a[2], a[3]), _mm512_unpackhi_ps(a[2], a[3]));
    /* per 128-bit quarter: a01 = [x0, x1, x0, x1], a23 = [x2, x3, x2, x3] (partial sums of columns 0..3) */
    __m512 q = _mm512_add_ps(_mm512_shuffle_ps(a01, a23, 0x44), _mm512_shuffle_ps(a01, a23, 0xee));
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(q), _mm512_extractf32x8_ps(q, 1));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* R activation rows x C weight rows, the whole k, into y (R, C known at compile time where inlined). */
EQ8_TARGET static inline __attribute__((always_inline)) void eq8_tile(const struct matmul_job *j, int64_t r0, int64_t n0,
                                                                     const int R, const int C) {
    const int64_t k = j->k, nb = k / QK;
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) /* all 4: the sums below reduce 4 columns at once */
            acc[r][c] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b += 2) {
        const int two = b + 1 < nb;
        const __mmask64 bytes = two ? ~(__mmask64)0 : (__mmask64)0xffffffffu;
        __m512i w[4];
        __m512 dw[4];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            w[c] = _mm512_maskz_loadu_epi8(bytes, j->wq + (n0 + c) * k + b * QK);
            dw[c] = eq8_scales(j->wd + (n0 + c) * nb + b, two);
        }
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const __m512i a = _mm512_maskz_loadu_epi8(bytes, j->aq + (r0 + r) * k + b * QK);
            const __m512 da = eq8_scales(j->ad + (r0 + r) * nb + b, two);
#pragma GCC unroll 4
            for (int c = 0; c < C; c++) {
                __m512 sums = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), a, w[c]));
                acc[r][c] = _mm512_fmadd_ps(sums, _mm512_mul_ps(dw[c], da), acc[r][c]);
            }
        }
    }
    /* the activations' offset: sum over blocks of d_w * d_a * 128 * sum(q_w) = sum of e[n][b] * d_a[r][b] */
    for (int64_t b = 0; b < nb; b += 16) {
        const __mmask16 lanes = nb - b >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (nb - b)) - 1);
        __m512 e[4];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++)
            e[c] = _mm512_maskz_loadu_ps(lanes, j->we + (n0 + c) * nb + b);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const __m512 da = _mm512_maskz_loadu_ps(lanes, j->ad + (r0 + r) * nb + b);
#pragma GCC unroll 4
            for (int c = 0; c < C; c++)
                acc[r][c] = _mm512_fnmadd_ps(e[c], da, acc[r][c]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
        _mm_mask_storeu_ps(j->y + (r0 + r) * j->n + n0, (__mmask8)((1u << C) - 1), eq8_sum4(acc[r]));
}

#define EQ8_ROWS(C)                                                                                                \
    do {                                                                                                           \
        int64_t r0 = 0;                                                                                            \
        for (; r0 + 4 <= j->m; r0 += 4)                                                                            \
            eq8_tile(j, r0, n0, 4, C);                                                                             \
        switch (j->m - r0) {                                                                                       \
        case 3: eq8_tile(j, r0, n0, 3, C); break;                                                                  \
        case 2: eq8_tile(j, r0, n0, 2, C); break;                                                                  \
        case 1: eq8_tile(j, r0, n0, 1, C); break;                                                                  \
        default: break;                                                                                            \
        }                                                                                                          \
    } while (0)

/* Weight rows per tile: 4 x 4 tiles keep their 16 accumulators and the 4 weight rows' quants and scales in the
 * 32 vector registers (the activations' offset is taken off at the end, not per block, to leave room). */
#define GROUP 4

/* units are groups of GROUP weight rows */
EQ8_TARGET static void matmul_part(void *arg, int64_t begin, int64_t end) {
    const struct matmul_job *j = arg;
    for (int64_t g = begin; g < end; g++) {
        const int64_t n0 = g * GROUP;
        switch (j->n - n0 < GROUP ? j->n - n0 : GROUP) {
        case 4: EQ8_ROWS(4); break;
        case 3: EQ8_ROWS(3); break;
        case 2: EQ8_ROWS(2); break;
        default: EQ8_ROWS(1); break;
        }
    }
}

VT_API int vt_eq8_supported(void) { return eq8_cpu(); }

/* y (m, n) = x (m, k) times the Q8_0 weight (wq (n, k) int8, wd (n, k / 32) float) transposed; we (n, k / 32) is
 * 128 * wd * (the block's sum of quants), which takes the activations' offset off. k a multiple of 32.
 * VT_EUNSUPPORTED on a CPU without AVX512-VNNI, VT_ENOMEM when the activations' scratch cannot be had. */
VT_API int vt_eq8_matmul(const int8_t *wq, const float *wd, const float *we, int64_t n, int64_t k, const float *x,
                         int64_t m, float *y) {
    if (n < 0 || k < 0 || m < 0 || k % QK || ((n * k > 0) && (!wq || !wd || !we)) || (m * k > 0 && !x) || (m * n > 0 && !y))
        return VT_EINVAL;
    if (!eq8_cpu())
        return VT_EUNSUPPORTED;
    if (m == 0 || n == 0)
        return VT_OK;
    if (k == 0) {
        memset(y, 0, (size_t)(m * n) * sizeof(float));
        return VT_OK;
    }
    uint8_t *aq = malloc((size_t)(m * k));
    float *ad = malloc((size_t)(m * (k / QK)) * sizeof(float));
    if (!aq || !ad) {
        free(aq);
        free(ad);
        return VT_ENOMEM;
    }
    struct quantize_job qj = {x, aq, ad, k};
    vt_parallel_for(m, 1 + 16384 / k, quantize_part, &qj);
    struct matmul_job mj = {wq, wd, we, aq, ad, y, m, n, k};
    /* a group of GROUP weight rows against every activation row: m * k * GROUP multiply-adds */
    vt_parallel_for((n + GROUP - 1) / GROUP, 1 + 65536 / (m * k), matmul_part, &mj);
    free(aq);
    free(ad);
    return VT_OK;
}

#else /* not x86-64: the Python side keeps the decoders' Q8_0 kernel */

VT_API int vt_eq8_supported(void) { return 0; }

VT_API int vt_eq8_matmul(const int8_t *wq, const float *wd, const float *we, int64_t n, int64_t k, const float *x,
                         int64_t m, float *y) {
    (void)wq, (void)wd, (void)we, (void)n, (void)k, (void)x, (void)m, (void)y;
    return VT_EUNSUPPORTED;
}

#endif
