/* encoder_q8.c: the encoders' int8 products on AVX512-VNNI (votive.models.bert quantized at load): Q8_0 weights
 * (vt_eq8_matmul, here first) and int8 weights with one scale per row (vt_i8_matmul, below), times float
 * activations quantized on the way, as tiled matrix products. The decoders' Q8_0 kernel (quant_kernels.c) follows ggml's
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

/* ---- per-channel int8: one scale per weight row and one per activation row ----------------------------------
 *
 *   y[r][n] = s_a[r] * s_w[n] * (sum over k of q_a[r][k] * q_w[n][k]) + b[n]
 *
 * q_w = round(W / s_w), s_w = max|W[n]| / 127, made once at load (votive.backends.numpy_linears.EncoderI8Linear);
 * q_a likewise per row of x, here, on every call. The whole row's integer sum is exact (dpbusd on the activations
 * offset by 128, 128 * sum(q_w[n]) taken off at the end), so one conversion to float per output, where Q8_0 pays
 * one per 32 products.
 *
 * The weight comes packed at load so that each 32-bit lane is one output column: blocks of 16 columns, and within
 * a block, for each 4 consecutive k, the 16 columns' 4 bytes (wp[n / 16][k / 4][16][4], k and n padded with zero
 * quants to multiples of 4 and 16). One dpbusd then adds 4 products to each of 16 outputs, with 4 bytes of an
 * activation row broadcast to every lane: no sums across lanes at the end. Tiles of 4 activation rows by 4 blocks
 * (64 columns): 16 accumulators, 4 weight loads and 4 broadcasts per 16 dpbusd (6 rows spill registers). */

#define I8_ROWS 4
#define I8_BLOCKS 4 /* blocks of 16 columns per tile */
#define I8_M_BLOCK 48
#define I8_GRAIN_MACS 524288

struct i8_quantize_job {
    const float *x;
    uint8_t *q;
    float *s;
    int64_t k, k4;
};

/* A row's int8 scale, max|x| / 127, and (*inv) the multiplier before rounding, 127 / max|x| (0 for a zero row);
 * the scale is NaN where the row holds inf or NaN, so that its outputs are NaN (max alone would drop a NaN). */
EQ8_TARGET static inline float i8_row_scale(const float *x, int64_t k, float *inv) {
    __m512 m = _mm512_setzero_ps(), bad = _mm512_setzero_ps(); /* bad: x * 0, NaN where x is inf or NaN */
    for (int64_t i = 0; i < k; i += 16) {
        const __mmask16 lanes = k - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (k - i)) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(lanes, x + i);
        m = _mm512_max_ps(m, _mm512_abs_ps(v));
        bad = _mm512_add_ps(bad, _mm512_mul_ps(v, _mm512_setzero_ps()));
    }
    const float amax = _mm512_reduce_max_ps(m);
    *inv = amax != 0.0f ? 127.0f / amax : 0.0f;
    return _mm512_reduce_add_ps(bad) == 0.0f ? amax / 127.0f : NAN;
}

/* round-to-nearest-even(x[i .. i + 16) * inv) as 16 int32 lanes, 0 past k */
EQ8_TARGET static inline __m512i i8_round16(const float *x, int64_t i, int64_t k, __m512 inv) {
    const __mmask16 lanes = k - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (k - i)) - 1);
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, x + i), inv);
    return _mm512_maskz_cvtps_epi32(lanes, _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT));
}

/* s = max|x| / 127 and q = round-to-nearest-even(x * (127 / max|x|)) + 128, per row (k4 bytes apart, the bytes past
 * k set to 128, whose weights are zero); a zero row: s = 0, q = 128; a row with inf or NaN: s = NaN */
EQ8_TARGET static void i8_quantize_part(void *arg, int64_t begin, int64_t end) {
    const struct i8_quantize_job *j = arg;
    const int64_t k = j->k;
    for (int64_t r = begin; r < end; r++) {
        const float *x = j->x + r * k;
        float inv;
        j->s[r] = i8_row_scale(x, k, &inv);
        uint8_t *q = j->q + r * j->k4;
        for (int64_t i = 0; i < k; i += 16) {
            const __mmask16 lanes = k - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (k - i)) - 1);
            const __m512i qi = i8_round16(x, i, k, _mm512_set1_ps(inv));
            _mm_mask_storeu_epi8(q + i, lanes, _mm512_cvtepi32_epi8(_mm512_add_epi32(qi, _mm512_set1_epi32(128))));
        }
        for (int64_t i = k; i < j->k4; i++)
            q[i] = 128;
    }
}

struct i8_job {
    const int8_t *wp;
    const float *ws, *b;
    const int32_t *wsum;
    const uint8_t *aq;
    const float *as;
    float *y;
    int64_t m, n, k4, blocks, panels;
};

/* R activation rows from r0 by B blocks of 16 columns from block c0, the whole k, into y (R and B constants where
 * inlined: the accumulators stay in registers) */
EQ8_TARGET static inline __attribute__((always_inline)) void i8_tile(const struct i8_job *j, int64_t r0, int64_t c0,
                                                                    const int R, const int B) {
    const int64_t k4 = j->k4, groups = k4 / 4;
    const uint8_t *a = j->aq + r0 * k4;
    const int8_t *w = j->wp + c0 * 16 * k4; /* block c0's bytes, then block c0 + 1's, ... (16 * k4 bytes each) */
    __m512i acc[I8_ROWS][I8_BLOCKS];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int c = 0; c < B; c++)
            acc[r][c] = _mm512_setzero_si512();
    for (int64_t g = 0; g < groups; g++) {
        __m512i wv[I8_BLOCKS];
#pragma GCC unroll 4
        for (int c = 0; c < B; c++)
            wv[c] = _mm512_loadu_si512((const void *)(w + c * 16 * k4 + g * 64));
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const __m512i av = _mm512_set1_epi32(*(const int32_t *)(const void *)(a + r * k4 + g * 4));
#pragma GCC unroll 4
            for (int c = 0; c < B; c++)
                acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], av, wv[c]);
        }
    }
#pragma GCC unroll 4
    for (int c = 0; c < B; c++) {
        const int64_t n0 = (c0 + c) * 16, left = j->n - n0;
        const __mmask16 cols = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
        const __m512i offset = _mm512_slli_epi32(_mm512_maskz_loadu_epi32(cols, j->wsum + n0), 7); /* 128 sum q_w */
        const __m512 ws = _mm512_maskz_loadu_ps(cols, j->ws + n0);
        const __m512 bias = j->b ? _mm512_maskz_loadu_ps(cols, j->b + n0) : _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][c], offset));
            v = _mm512_mul_ps(v, _mm512_mul_ps(_mm512_set1_ps(j->as[r0 + r]), ws));
            if (j->b)
                v = _mm512_add_ps(v, bias);
            _mm512_mask_storeu_ps(j->y + (r0 + r) * j->n + n0, cols, v);
        }
    }
}

#define I8_TILE_CASE(R, B)                                                                                         \
    case R: i8_tile(j, r, c0, (R) <= I8_ROWS ? (R) : 1, B); break
/* rows [r0, r1) against B blocks from c0, in tiles of as even a height as I8_ROWS allows */
#define I8_ROWS_AGAINST(B)                                                                                         \
    do {                                                                                                           \
        const int64_t rows = r1 - r0, tiles = (rows + I8_ROWS - 1) / I8_ROWS;                                      \
        for (int64_t t = 0, r = r0; t < tiles; t++) {                                                              \
            const int64_t h = rows / tiles + (t < rows % tiles);                                                   \
            switch (h) {                                                                                           \
                I8_TILE_CASE(6, B);                                                                                \
                I8_TILE_CASE(5, B);                                                                                \
                I8_TILE_CASE(4, B);                                                                                \
                I8_TILE_CASE(3, B);                                                                                \
                I8_TILE_CASE(2, B);                                                                                \
            default: i8_tile(j, r, c0, 1, B); break;                                                               \
            }                                                                                                      \
            r += h;                                                                                                \
        }                                                                                                          \
    } while (0)

/* units: (a block of I8_M_BLOCK rows, a panel of I8_BLOCKS blocks of 16 columns) */
EQ8_TARGET static void i8_part(void *arg, int64_t begin, int64_t end) {
    const struct i8_job *j = arg;
    for (int64_t u = begin; u < end; u++) {
        const int64_t r0 = u / j->panels * I8_M_BLOCK, r1 = r0 + I8_M_BLOCK < j->m ? r0 + I8_M_BLOCK : j->m;
        const int64_t c0 = u % j->panels * I8_BLOCKS;
        switch (j->blocks - c0 < I8_BLOCKS ? j->blocks - c0 : I8_BLOCKS) {
        case 4: I8_ROWS_AGAINST(4); break;
        case 3: I8_ROWS_AGAINST(3); break;
        case 2: I8_ROWS_AGAINST(2); break;
        default: I8_ROWS_AGAINST(1); break;
        }
    }
}

/* ---- the weight quantized and packed at load, rows split over the threads ---------------------------------- */

struct i8_pack_job {
    const float *w;
    int8_t *wp;
    float *ws;
    int32_t *wsum;
    int64_t k, k4;
};

/* Row n of w (n_rows, k): scale max|row| / 127 (NaN for a row holding inf or NaN, whose quants stay 0), quants
 * round-to-nearest-even(row * (127 / max|row|)) into the packed layout (already zeroed), their sum. The same
 * float32 arithmetic as the activations' rows above and numpy_linears.quantize_rows_i8. */
EQ8_TARGET static void i8_pack_part(void *arg, int64_t begin, int64_t end) {
    const struct i8_pack_job *j = arg;
    const int64_t k = j->k, groups = j->k4 / 4;
    for (int64_t n = begin; n < end; n++) {
        const float *x = j->w + n * k;
        float inv;
        int32_t sum = 0;
        j->ws[n] = i8_row_scale(x, k, &inv);
        if (j->ws[n] == j->ws[n]) { /* a NaN scale (inf or NaN in the row) leaves the quants 0 */
            int8_t *block = j->wp + (n / 16) * groups * 64 + (n % 16) * 4; /* this row's 4 bytes of group 0 */
            for (int64_t i = 0; i < k; i += 16) {
                const __m512i qi = i8_round16(x, i, k, _mm512_set1_ps(inv));
                sum += _mm512_reduce_add_epi32(qi);
                int32_t words[4];
                _mm_storeu_si128((__m128i *)(void *)words, _mm512_cvtepi32_epi8(qi)); /* 16 quants, 4 per group */
                for (int g = 0; g < 4 && i + 4 * g < k; g++)
                    memcpy(block + (i / 4 + g) * 64, &words[g], 4);
            }
        }
        j->wsum[n] = sum;
    }
}

/* w (n, k) float32 quantized per row to int8 and packed for vt_i8_matmul: wp (zeroed, n / 16 * k / 4 * 64 bytes,
 * both rounded up), ws (n,) scales, wsum (n,) sums of the quants. VT_EUNSUPPORTED where vt_eq8_supported() is 0. */
VT_API int vt_i8_pack(const float *w, int64_t n, int64_t k, int8_t *wp, float *ws, int32_t *wsum) {
    if (n < 0 || k < 0 || k > (1 << 24) || (n * k > 0 && (!w || !wp)) || (n > 0 && (!ws || !wsum)))
        return VT_EINVAL;
    if (!eq8_cpu())
        return VT_EUNSUPPORTED;
    struct i8_pack_job job = {w, wp, ws, wsum, k, (k + 3) / 4 * 4};
    vt_parallel_for(n, 1 + 16384 / (k > 0 ? k : 1), i8_pack_part, &job);
    return VT_OK;
}

/* y (m, n) = x (m, k) times the int8 weight (wp packed as above from quants (n, k); row scales ws (n,); row sums of
 * quants wsum (n,)) transposed, + b (n,) or NULL. VT_EUNSUPPORTED without AVX512-VNNI, VT_ENOMEM when the scratch
 * cannot be had. */
VT_API int vt_i8_matmul(const int8_t *wp, const float *ws, const int32_t *wsum, int64_t n, int64_t k, const float *x,
                        int64_t m, const float *b, float *y) {
    if (n < 0 || k < 0 || m < 0 || k > (1 << 24) || ((n * k > 0) && !wp) || (n > 0 && (!ws || !wsum)) ||
        (m * k > 0 && !x) || (m * n > 0 && !y))
        return VT_EINVAL;
    if (!eq8_cpu())
        return VT_EUNSUPPORTED;
    if (m == 0 || n == 0)
        return VT_OK;
    const int64_t k4 = (k + 3) / 4 * 4;
    uint8_t *aq = malloc((size_t)(m * (k4 > 0 ? k4 : 1)));
    float *as = malloc((size_t)m * sizeof(float));
    if (!aq || !as) {
        free(aq);
        free(as);
        return VT_ENOMEM;
    }
    struct i8_quantize_job qj = {x, aq, as, k, k4};
    vt_parallel_for(m, 1 + 16384 / (k > 0 ? k : 1), i8_quantize_part, &qj);
    const int64_t blocks = (n + 15) / 16;
    struct i8_job job = {wp, ws, b, wsum, aq, as, y, m, n, k4, blocks, (blocks + I8_BLOCKS - 1) / I8_BLOCKS};
    const int64_t rows = m < I8_M_BLOCK ? m : I8_M_BLOCK, unit = rows * I8_BLOCKS * 16 * (k4 > 0 ? k4 : 1);
    vt_parallel_for((m + I8_M_BLOCK - 1) / I8_M_BLOCK * job.panels, 1 + I8_GRAIN_MACS / unit, i8_part, &job);
    free(aq);
    free(as);
    return VT_OK;
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

VT_API int vt_i8_pack(const float *w, int64_t n, int64_t k, int8_t *wp, float *ws, int32_t *wsum) {
    (void)w, (void)n, (void)k, (void)wp, (void)ws, (void)wsum;
    return VT_EUNSUPPORTED;
}

VT_API int vt_i8_matmul(const int8_t *wp, const float *ws, const int32_t *wsum, int64_t n, int64_t k, const float *x,
                        int64_t m, const float *b, float *y) {
    (void)wp, (void)ws, (void)wsum, (void)n, (void)k, (void)x, (void)m, (void)b, (void)y;
    return VT_EUNSUPPORTED;
}

VT_API int vt_eq8_supported(void) { return 0; }

VT_API int vt_eq8_matmul(const int8_t *wq, const float *wd, const float *we, int64_t n, int64_t k, const float *x,
                         int64_t m, float *y) {
    (void)wq, (void)wd, (void)we, (void)n, (void)k, (void)x, (void)m, (void)y;
    return VT_EUNSUPPORTED;
}

#endif
