/* decoder_kernels.c: the row kernels of LLaMA-family decoders, computed in ggml's float order.
 *
 * Greedy decoding is a chain of argmaxes: a logit that moves by one float rounding can pick another token when
 * two are near a tie, and every later token follows. To give llama.cpp's tokens for llama.cpp's GGUF files these
 * kernels do the arithmetic of ggml's CPU backend (x86 build) operation for operation, and not only to within a
 * rounding: RMSNorm sums squares in double; RoPE's angles come from the float recurrence theta *= base^(-2/d)
 * with libm's cosf/sinf, and the rotation is fused-multiply-added; SiLU uses ggml's polynomial exp; attention
 * keeps K and V as halves, rounds queries and probabilities to half before their products, and sums those
 * products in the lane order of ggml's kernels (16 lanes; one accumulator for a batch of queries, where ggml
 * uses its tiled GEMM, four for a single query, where it uses ggml_vec_dot_f16). Every fused multiply-add is an
 * explicit fmaf and the file is built with -ffp-contract=off, so the result is the same on every ISA this file
 * is compiled for; the compiler vectorizes the 16-lane loops where the ISA has FMA.
 *
 * Compiled once per ISA (kernel_build.py); dispatch.c splits rows, heads, keys and value dimensions over threads.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "half.h"
#include "simd.h"
#include "lanes16.h"
#include "vt_internal.h"


/* A float rounded to the nearest half (ties to even), as F16C's vcvtps2ph and ggml's FP32_TO_FP16 round. */
static inline float round_to_half(float f) { return f16_to_f32(f32_to_f16(f)); }

/* out[i] = round_to_half(x[i]) for n floats (16 to an instruction pair on AVX-512: the same conversion). */
static void round_row_to_half(float *out, const float *x, int64_t n) {
    int64_t i = 0;
#if defined(VT_ISA_AVX512)
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_loadu_ps(x + i),
                                                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
#endif
    for (; i < n; i++)
        out[i] = round_to_half(x[i]);
}

/* ---- ggml's exp and SiLU ------------------------------------------------------------------------------------ */

/* ggml_v_expf: e^x as 2^n * p(b), n = round(x / ln 2), b the reduced argument, p a degree-5 polynomial. */
static inline float ggml_expf(float x) {
    const float r = 0x1.8p23f;
    const float z = fmaf(x, 0x1.715476p+0f, r);
    const float n = z - r;
    const float b = fmaf(-n, 0x1.7f7d1cp-20f, fmaf(-n, 0x1.62e4p-1f, x));
    const float u = b * b;
    const float j = fmaf(fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                         u, fmaf(0x1.ffffecp-1f, b, 1.0f));
    if (fabsf(n) > 192.0f)
        return n <= 0.0f ? 0.0f : INFINITY;
    if (n != n) /* x is NaN */
        return n;
    if (n >= -126.0f && n <= 127.0f) { /* 2^n is a normal float: j * 2^n rounds once, as ldexpf (a libm call) */
        const uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
        float scale;
        memcpy(&scale, &bits, sizeof scale);
        return j * scale;
    }
    return ldexpf(j, (int)n);
}

/* out = silu(gate) * up over a row: 16 at a time with ggml's exp, a tail with libm's, as ggml_vec_swiglu_f32. */
static void swiglu_rows(float *out, const float *gate, const float *up, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; r++) {
        const float *g = gate + r * cols, *u = up + r * cols;
        float *o = out + r * cols;
        int64_t i = 0;
        for (; i + LANES <= cols; i += LANES)
            for (int l = 0; l < LANES; l++)
                o[i + l] = g[i + l] / (1.0f + ggml_expf(0.0f - g[i + l])) * u[i + l];
        for (; i < cols; i++)
            o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}

/* The half a GeGLU gate looks its GELU up at: f32_to_f16's, every NaN made the one quiet NaN of the portable
 * f32_to_f16 (F16C keeps a NaN's payload), so that every ISA looks up the same entry. */
static inline uint16_t gelu_index(uint16_t h) { return (h & 0x7fff) > 0x7c00 ? (uint16_t)((h & 0x8000) | 0x7e00) : h; }

/* gelu(g) * u for a gate g whose half is h: the table's GELU at h, g itself from 10 up and 0 from -10 down
 * (ggml_vec_geglu_f32) */
static inline float geglu_one(float g, uint16_t h, float u, const float *table) {
    return g >= 10.0f ? g * u : g <= -10.0f ? 0.0f : table[gelu_index(h)] * u;
}

/* gelu(gate) * up into gate, as votive/backends/numpy_backend.py's geglu. With F16C eight gates are rounded to half
 * at once (to nearest even, as f32_to_f16 rounds): the rounding one at a time was a third of the time. */
static void geglu(float *gate, const float *up, const float *table, int64_t n) {
    int64_t i = 0;
#if defined(VT_HALF_X86)
    for (; i + 8 <= n; i += 8) {
        uint16_t h[8];
        _mm_storeu_si128((__m128i *)h, _mm256_cvtps_ph(_mm256_loadu_ps(gate + i), _MM_FROUND_TO_NEAREST_INT));
        for (int l = 0; l < 8; l++)
            gate[i + l] = geglu_one(gate[i + l], h[l], up[i + l], table);
    }
#endif
    for (; i < n; i++)
        gate[i] = geglu_one(gate[i], f32_to_f16(gate[i]), up[i], table);
}

/* ---- RMSNorm ------------------------------------------------------------------------------------------------ */

static void rms_norm_rows(float *out, const float *x, const float *weight, int64_t rows, int64_t cols, float eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *h = x + r * cols;
        float *o = out + r * cols;
        double sum = 0.0;
        for (int64_t i = 0; i < cols; i++)
            sum += (double)(h[i] * h[i]);
        const float mean = (float)(sum / (double)cols);
        const float scale = 1.0f / sqrtf(mean + eps);
        for (int64_t i = 0; i < cols; i++)
            o[i] = weight ? (h[i] * scale) * weight[i] : h[i] * scale;
    }
}

/* ---- RoPE --------------------------------------------------------------------------------------------------- */

/* ggml-cpu ops.cpp rope_yarn_ramp: 1 below corr_low, 0 above corr_high, linear between, in pair index i0 / 2
 * (an integer division, as ggml's `const int i0` makes it). */
static float rope_yarn_ramp(const float low, const float high, const int64_t i0) {
    const float y = (float)(i0 / 2) - low;
    const float r = y / (high - low > 0.001f ? high - low : 0.001f);
    return 1.0f - (r < 0.0f ? 0.0f : (r > 1.0f ? 1.0f : r));
}

/* cache[p][i0], cache[p][i0 + 1] = cos, sin of position (first + p), as ggml-cpu ops.cpp ggml_rope_cache_init and
 * rope_yarn compute them (ggml-org/llama.cpp, the CPU path that llama-cpp-python 0.3.36 runs):
 *   theta      = pos * base^(-2/dims)^(i0/2), stepped by float multiplication (theta *= theta_scale)
 *   extrap     = theta / freq_factors[i0/2]           (Llama 3's rope_freqs; NULL: 1)
 *   interp     = freq_scale * extrap                  (linear scaling: 1 / rope.scaling.factor)
 *   ext_factor != 0 (YaRN): theta = interp * (1 - ramp) + extrap * ramp, ramp = rope_yarn_ramp * ext_factor,
 *                           mscale = attn_factor * (1 + 0.1 * logf(1 / freq_scale))
 *   cos, sin   = cosf(theta) * mscale, sinf(theta) * mscale
 * ggml builds ops.cpp with GCC's default -ffp-contract=fast; the two sums of products there become fused
 * multiply-adds of the first product (as in rope_rows below), so they are explicit fmaf here. With freq_scale 1,
 * no factors, ext_factor 0 and attn_factor 1 every step is exact and the table is the plain one. */
static void rope_cache_rows(float *cache, int64_t first, int64_t n_pos, int64_t dims, float base, float freq_scale,
                            const float *freq_factors, float ext_factor, float attn_factor, float corr_low,
                            float corr_high) {
    const float theta_scale = powf(base, -2.0f / (float)dims);
    float mscale = attn_factor;
    if (ext_factor != 0.0f)
        mscale *= fmaf(0.1f, logf(1.0f / freq_scale), 1.0f);
    for (int64_t p = 0; p < n_pos; p++) {
        float theta = (float)(first + p);
        float *c = cache + p * dims;
        for (int64_t i = 0; i < dims; i += 2) {
            const float extrap = theta / (freq_factors ? freq_factors[i / 2] : 1.0f);
            const float interp = freq_scale * extrap;
            float t = interp;
            if (ext_factor != 0.0f) {
                const float ramp_mix = rope_yarn_ramp(corr_low, corr_high, i) * ext_factor;
                t = fmaf(interp, 1.0f - ramp_mix, extrap * ramp_mix);
            }
            c[i] = cosf(t) * mscale;
            c[i + 1] = sinf(t) * mscale;
            theta *= theta_scale;
        }
    }
}

/* Rotate x (rows of `heads` vectors of `dims`) in place; row r uses cache row r. neox pairs element i with
 * i + dims/2, otherwise with i + 1 (ggml's "normal" mode). */
static void rope_rows(float *x, const float *cache, int64_t rows, int64_t heads, int64_t dims, int neox) {
    const int64_t half = dims / 2;
    for (int64_t r = 0; r < rows; r++) {
        const float *c = cache + r * dims;
        for (int64_t h = 0; h < heads; h++) {
            float *v = x + (r * heads + h) * dims;
            for (int64_t i = 0; i < half; i++) {
                float *a = neox ? v + i : v + 2 * i, *b = neox ? v + i + half : v + 2 * i + 1;
                const float cos_t = c[2 * i], sin_t = c[2 * i + 1], x0 = *a, x1 = *b;
                *a = fmaf(x0, cos_t, -(x1 * sin_t));
                *b = fmaf(x0, sin_t, x1 * cos_t);
            }
        }
    }
}

/* ---- attention ---------------------------------------------------------------------------------------------- */

/* acc (16 lanes) += a[0..15] * b[0..15], each lane fused */
static inline void acc16_fma(vf *acc, const float *a, const float *b) {
    for (int v = 0; v < ACC_VECS; v++)
        acc[v] = v_fma(v_load(a + v * VT_LANES), v_load(b + v * VT_LANES), acc[v]);
}

/* Products of nr <= SHARED_DOTS rows a[r] of n halves (given as floats) with one row b, out[r] = a[r] . b, each in
 * ggml_vec_dot_f16's order (one query: a decoded token): four 16-lane chains over the whole 64s, added (0 + 2) +
 * (1 + 3), summed across as acc16_reduce sums, the rest past the 64s added in double. The rows' chains run side by
 * side (one product's four chains alone wait on the multiply-add latency) and each vector of b is loaded once for
 * all of them. Inlined with nr a constant. chains_shared leaves each row's four chains added together, its lanes
 * not yet summed. */
#define SHARED_DOTS (ACC_VECS == 1 ? 4 : ACC_VECS == 2 ? 2 : 1) /* the accumulators that fit the registers */
static inline __attribute__((always_inline)) void chains_shared(const float *const a[], const float *b,
                                                                int64_t whole, int nr, vf sums[][ACC_VECS]) {
    vf acc[SHARED_DOTS][4][ACC_VECS];
    #pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
        #pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            #pragma GCC unroll 4
            for (int v = 0; v < ACC_VECS; v++)
                acc[r][j][v] = v_splat(0.0f);
    for (int64_t k = 0; k < whole; k += 4 * LANES)
        #pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            #pragma GCC unroll 4
            for (int r = 0; r < nr; r++)
                acc16_fma(acc[r][j], a[r] + k + j * LANES, b + k + j * LANES);
    #pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
        #pragma GCC unroll 4
        for (int v = 0; v < ACC_VECS; v++)
            sums[r][v] = (acc[r][0][v] + acc[r][2][v]) + (acc[r][1][v] + acc[r][3][v]);
}

static inline __attribute__((always_inline)) void dot_halves_shared(const float *const a[], const float *b,
                                                                    int64_t n, int nr, float *out) {
    vf sums[SHARED_DOTS][ACC_VECS];
    const int64_t whole = n - n % (4 * LANES);
    chains_shared(a, b, whole, nr, sums);
    #pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        double sum = acc16_reduce(sums[r]);
        for (int64_t k = whole; k < n; k++)
            sum += (double)(a[r][k] * b[k]);
        out[r] = (float)sum;
    }
}

#if ACC_VECS == 1
/* chains_shared with b given as halves, each vector of them widened in a register where it is multiplied (once for
 * all nr rows) instead of into a buffer first: b's halves before b_hi are read, the rest of the 64s taken as +0
 * (masked loads: nothing from b_hi on is read). The same products and sums: the same bits. */
static inline __attribute__((always_inline)) void chains_on_halves(const float *const a[], const uint16_t *b,
                                                                   int64_t whole, int64_t b_hi, int nr,
                                                                   vf sums[][1]) {
    vf acc[SHARED_DOTS][4];
    #pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
        #pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            acc[r][j] = v_splat(0.0f);
    for (int64_t k = 0; k < whole; k += 4 * LANES) {
        vf bj[4];
        #pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const int64_t at = k + j * LANES, left = b_hi - at;
            const __mmask16 keep = left >= LANES ? (__mmask16)0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
            bj[j] = (vf)_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(keep, b + at));
        }
        #pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            #pragma GCC unroll 4
            for (int r = 0; r < nr; r++)
                acc[r][j] = v_fma(v_load(a[r] + k + j * LANES), bj[j], acc[r][j]);
    }
    #pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
        sums[r][0] = (acc[r][0] + acc[r][2]) + (acc[r][1] + acc[r][3]);
}

static void chains_halves_rows(const float *const a[], const uint16_t *b, int64_t whole, int64_t b_hi, int nr,
                               vf sums[][1]) {
    switch (nr) {
    case 4: chains_on_halves(a, b, whole, b_hi, 4, sums); break;
    case 3: chains_on_halves(a, b, whole, b_hi, 3, sums); break;
    case 2: chains_on_halves(a, b, whole, b_hi, 2, sums); break;
    default: chains_on_halves(a, b, whole, b_hi, 1, sums);
    }
}
#endif

/* Dot product of n halves (given as floats) a . b in the batched order, ggml's tiled GEMM for a batch of queries:
 * one 16-lane accumulator, where n is whole 16s; otherwise in ggml_vec_dot_f16's (dot_halves_shared). */
static inline float dot_halves(const float *a, const float *b, int64_t n) {
    if (n % LANES != 0) {
        float out;
        dot_halves_shared(&a, b, n, 1, &out);
        return out;
    }
    vf acc[ACC_VECS] = {0};
    for (int64_t k = 0; k + LANES <= n; k += LANES)
        acc16_fma(acc, a + k, b + k);
    return acc16_reduce(acc);
}

/* dot_halves_shared for any number of rows: the rows in runs of SHARED_DOTS, rows stride floats apart */
static void dot_halves_rows(const float *a, int64_t stride, int64_t nr, const float *b, int64_t n, float *out,
                            int64_t out_stride) {
    for (int64_t r = 0; r < nr; r += SHARED_DOTS) {
        const float *rows[SHARED_DOTS];
        float s[SHARED_DOTS] = {0};
        const int take = nr - r < SHARED_DOTS ? (int)(nr - r) : SHARED_DOTS;
        for (int t = 0; t < take; t++)
            rows[t] = a + (r + t) * stride;
        switch (take) {
#if SHARED_DOTS >= 4
        case 4: dot_halves_shared(rows, b, n, 4, s); break;
        case 3: dot_halves_shared(rows, b, n, 3, s); break;
#endif
#if SHARED_DOTS >= 2
        case 2: dot_halves_shared(rows, b, n, 2, s); break;
#endif
        default: dot_halves_shared(rows, b, n, 1, s);
        }
        for (int t = 0; t < take; t++)
            out[(r + t) * out_stride] = s[t];
    }
}

/* out[r] = a . b[r] for four vectors b[r], each summed exactly as dot_halves sums it: the four chains run side
 * by side (what keeps the FMA units busy), none of them in another order. */
static inline void dot_halves4(const float *a, const float *const b[4], int64_t n, float out[4]) {
    if (n % LANES != 0) {
        for (int r = 0; r < 4; r++)
            out[r] = dot_halves(a, b[r], n);
        return;
    }
    vf acc[4][ACC_VECS] = {{{0}}};
    for (int64_t k = 0; k + LANES <= n; k += LANES)
        for (int r = 0; r < 4; r++)
            acc16_fma(acc[r], a + k, b[r] + k);
    for (int r = 0; r < 4; r++)
        out[r] = acc16_reduce(acc[r]);
}

/* Halves -> floats, exactly (the attention's K and V: a prompt's once per call and KV head, a decoded token's a row
 * at a time where AVX-512 does not widen them in registers). */
static void halves_to_floats(float *out, const uint16_t *h, int64_t n) {
    int64_t i = 0;
#if defined(VT_ISA_AVX512)
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + i))));
#endif
#if defined(VT_HALF_X86)
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
#endif
    for (; i < n; i++)
        out[i] = f16_to_f32(h[i]);
}

#if defined(VT_ISA_AVX512)
/* The lanes of keys g .. g + 15 inside [lo, hi) (g >= lo rounded down to 16, g < hi). */
static inline __mmask16 window_mask(int64_t g, int64_t lo, int64_t hi) {
    unsigned m = 0xffffu;
    if (lo > g)
        m &= 0xffffu << (lo - g);
    if (hi - g < LANES)
        m &= 0xffffu >> (LANES - (hi - g));
    return (__mmask16)m;
}

/* 2^e for integer-valued e in [-126, 127] (the exponent bits of a normal float). */
static inline vf pow2_normal(vf e) { return (vf)((__builtin_convertvector(e, vi) + 127) << 23); }

/* ggml_expf lane by lane, the same operations (a vector select for each of its branches): the same bits. */
static inline vf ggml_expf_v(vf x) {
    const vf r = v_splat(0x1.8p23f);
    const vf z = v_fma(x, v_splat(0x1.715476p+0f), r);
    const vf n = z - r;
    const vf b = v_fma(-n, v_splat(0x1.7f7d1cp-20f), v_fma(-n, v_splat(0x1.62e4p-1f), x));
    const vf u = b * b;
    const vf j = v_fma(v_fma(v_fma(v_splat(0x1.0e4020p-7f), b, v_splat(0x1.573e2ep-5f)), u,
                             v_fma(v_splat(0x1.555e66p-3f), b, v_splat(0x1.fffdb6p-2f))),
                       u, v_fma(v_splat(0x1.ffffecp-1f), b, v_splat(1.0f)));
    const vi low = n < -126.0f, high = n > 127.0f;
    /* inside [-126, 127]: j * 2^n; outside, ldexpf's one rounding as an exact scaling by 2^(n +- 100 or 127) then
     * one product that rounds (n in [-192, 127) or (127, 192]: each factor a normal float) */
    const vf normal = j * pow2_normal(v_select(low | high, v_splat(0.0f), n));
    const vf below = (j * pow2_normal(v_select(low, n + 100.0f, v_splat(0.0f)))) * 0x1p-100f;
    const vf above = (j * pow2_normal(v_select(high, n - 127.0f, v_splat(0.0f)))) * 0x1p127f;
    vf e = v_select(low, below, v_select(high, above, normal));
    e = v_select(v_abs(n) > 192.0f, v_select(n <= 0.0f, v_splat(0.0f), v_splat(INFINITY)), e);
    return v_select(n != n, n, e); /* x NaN */
}
#endif

/* The scores row[lo, hi) (unscaled) become their probabilities rounded to half, as ggml's soft_max_ext (scale,
 * then the -inf mask of keys outside [lo, hi), whose exps are exact zeros) and its conversion for the product with
 * V: the exps summed in double, 16 keys at a time from a multiple of 16 (row[] is written up to hi rounded up to
 * 16, with zeros past hi). On AVX-512 the same operations 16 keys to a vector: the same bits (the maximum is the
 * same float whatever the order, but for the sign of a zero, which no exp below sees). */
static void softmax_window(float *row, int64_t lo, int64_t hi, float scale) {
#if defined(VT_ISA_AVX512)
    const int64_t g0 = lo / LANES * LANES;
    vf top = v_splat(-INFINITY);
    for (int64_t g = g0; g < hi; g += LANES) {
        const __mmask16 in = window_mask(g, lo, hi);
        const __m512 x = _mm512_mask_mul_ps(_mm512_loadu_ps(row + g), in, _mm512_loadu_ps(row + g),
                                            _mm512_set1_ps(scale));
        _mm512_storeu_ps(row + g, x);
        top = (vf)_mm512_mask_mov_ps((__m512)top, _mm512_cmp_ps_mask(x, (__m512)top, _CMP_GT_OQ) & in, x);
    }
    float lanes[LANES], mx = -INFINITY;
    v_store(lanes, top);
    for (int l = 0; l < LANES; l++)
        mx = lanes[l] > mx ? lanes[l] : mx;
    double sum = 0.0;
    for (int64_t g = g0; g < hi; g += LANES) {
        vf e = (vf)_mm512_maskz_mov_ps(window_mask(g, lo, hi), (__m512)ggml_expf_v(v_load(row + g) - mx));
        v_store(row + g, e);
        sum += (double)acc16_reduce(&e);
    }
    const __m512 inv = _mm512_set1_ps((float)(1.0 / sum));
    for (int64_t g = g0; g < hi; g += LANES) {
        const __m512 p = _mm512_mul_ps(_mm512_loadu_ps(row + g), inv);
        const __m512 h = _mm512_cvtph_ps(_mm512_cvtps_ph(p, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        _mm512_storeu_ps(row + g, _mm512_mask_mov_ps(_mm512_loadu_ps(row + g), window_mask(g, lo, hi), h));
    }
#else
    float mx = -INFINITY;
    for (int64_t j = lo; j < hi; j++) {
        row[j] *= scale;
        mx = row[j] > mx ? row[j] : mx;
    }
    double sum = 0.0;
    for (int64_t g = lo / LANES * LANES; g < hi; g += LANES) {
        float e[LANES];
        for (int l = 0; l < LANES; l++) {
            const int64_t i = g + l;
            e[l] = i >= lo && i < hi ? ggml_expf(row[i] - mx) : 0.0f;
            row[i] = e[l];
        }
        sum += (double)reduce16(e);
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t j = lo; j < hi; j++)
        row[j] = round_to_half(row[j] * inv);
#endif
}

/* One query of a prompt (the batched order: ggml's tiled GEMM; a decoded token's is group_scores' and
 * group_values') against keys [lo, hi) of one KV head, whose keys k (hi, dims) and transposed values v (dims rows
 * v_stride apart, v_stride >= hi rounded up to 64, finite values) hold halves' values as floats; see
 * vt_attention_f16 in votive.h. scratch holds dims + (hi rounded up to 64) floats. Keys before lo are outside the
 * window: ggml masks them to -inf. */
static void attend(float *out, const float *q, const float *k, const float *v, int64_t v_stride, int64_t dims,
                   int64_t lo, int64_t hi, float scale, float *scratch) {
    const int64_t span = (hi + 4 * LANES - 1) / (4 * LANES) * (4 * LANES); /* whole 64-key groups from key 0 */
    float *qh = scratch, *row = scratch + dims;
    round_row_to_half(qh, q, dims);

    /* scores, then softmax over [lo, hi): keys outside are ggml's -inf mask, so exp gives exact zeros */
    for (int64_t j = 0; j < span; j++)
        row[j] = 0.0f;
    int64_t j = lo;
    for (; j + 4 <= hi; j += 4) {
        const float *keys[4] = {k + j * dims, k + (j + 1) * dims, k + (j + 2) * dims, k + (j + 3) * dims};
        dot_halves4(qh, keys, dims, row + j);
    }
    for (; j < hi; j++)
        row[j] = dot_halves(qh, k + j * dims, dims);
    softmax_window(row, lo, hi, scale);

    /* out[d] = probabilities . V[d, :], over whole 64-key groups: the probabilities outside [lo, hi) are 0, and 0
     * times a finite value adds nothing (ggml multiplies its masked zeros too) */
    const int64_t first = lo / (4 * LANES) * (4 * LANES);
    /* The one 16-lane accumulator stops after the 16 keys holding the last: the groups of 16 after it add only
     * (+0) * (a finite value) to each lane, which leaves the lane's bits as they are (a lane is never -0: it starts
     * at +0, and no product of two halves' values underflows to a zero). */
    const int64_t end = (hi + LANES - 1) / LANES * LANES;
    int64_t d = 0;
    for (; d + 4 <= dims; d += 4) {
        const float *rows[4] = {v + d * v_stride + first, v + (d + 1) * v_stride + first,
                                v + (d + 2) * v_stride + first, v + (d + 3) * v_stride + first};
        dot_halves4(row + first, rows, end - first, out + d);
    }
    for (; d < dims; d++)
        out[d] = dot_halves(row + first, v + d * v_stride + first, end - first);
}

/* A decoded token's attention: one query per head, every product in ggml_vec_dot_f16's unbatched order, on the half
 * cache itself. It comes in three steps that the dispatcher (dispatch.c) can split over threads without changing a
 * bit, since every score and every output element is one dot_halves_shared product of its own: group_scores for a
 * range of keys, softmax_window for each head, group_values for a range of value dimensions. The nq heads sharing a
 * KV head go together: each key row and value row is widened to floats once, into `wide`, for all of them (widening
 * the whole cache first wrote and reread megabytes per token at a few thousand positions). Threads take disjoint
 * keys, then disjoint dimensions, so the cache is read once per token whatever the thread count (giving each thread
 * whole heads read all of it per thread). */

#if ACC_VECS == 1
/* out[i] = acc16_reduce(v[i]) for 16 vectors at once: the same additions of the same lanes in each (its halves, then
 * quarters, pairs and the last two), with the vectors side by side, 15 adds instead of 64 and no extraction each. */
static inline void reduce16_of_16(vf v[][1], float out[16]) {
    __m512 t[8], u[4], w[2];
    for (int i = 0; i < 8; i++) /* lanes l and l + 8 of v[2i] in blocks 0, 1, of v[2i + 1] in blocks 2, 3 */
        t[i] = _mm512_add_ps(_mm512_shuffle_f32x4((__m512)v[2 * i][0], (__m512)v[2 * i + 1][0], 0x44),
                             _mm512_shuffle_f32x4((__m512)v[2 * i][0], (__m512)v[2 * i + 1][0], 0xEE));
    for (int i = 0; i < 4; i++) /* then l and l + 4: block k of u[i] is v[4i + k]'s */
        u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], 0xDD));
    for (int i = 0; i < 2; i++) /* then l and l + 2: v[8i + k]'s two in block k, then v[8i + 4 + k]'s */
        w[i] = _mm512_add_ps((__m512)_mm512_unpacklo_pd((__m512d)u[2 * i], (__m512d)u[2 * i + 1]),
                             (__m512)_mm512_unpackhi_pd((__m512d)u[2 * i], (__m512d)u[2 * i + 1]));
    /* then the last two: lane 4k + m holds v[4m + k]'s sum */
    const __m512 r = _mm512_add_ps(_mm512_shuffle_ps(w[0], w[1], 0x88), _mm512_shuffle_ps(w[0], w[1], 0xDD));
    _mm512_storeu_ps(out, _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11,
                                                                  15), r));
}
#endif

/* rows[r * stride + j] = qh_r . key j for the keys [j0, j1) of keys k (rows of dims halves), and each of the nq
 * query rows qh (rounded to half, dims apart); wide: dims floats (with dims a multiple of 64, AVX-512 widens in
 * registers instead and sums the lanes of 16 scores at once) */
static void group_scores(float *rows, int64_t stride, const float *qh, int64_t nq, const uint16_t *k, int64_t dims,
                         int64_t j0, int64_t j1, float *wide) {
#if ACC_VECS == 1
    if (dims % (4 * LANES) == 0) { /* no tail: each score is its four chains' sum across, reduced 16 at a time */
        vf pending[16 + SHARED_DOTS][1];
        float *to[16 + SHARED_DOTS], sums[16];
        int held = 0;
        for (int64_t j = j0; j < j1; j++) {
            for (int64_t r = 0; r < nq; r += SHARED_DOTS) {
                const int take = nq - r < SHARED_DOTS ? (int)(nq - r) : SHARED_DOTS;
                const float *q[SHARED_DOTS];
                for (int t = 0; t < take; t++) {
                    q[t] = qh + (r + t) * dims;
                    to[held + t] = rows + (r + t) * stride + j;
                }
                chains_halves_rows(q, k + j * dims, dims, dims, take, pending + held);
                held += take;
                if (held >= 16) {
                    reduce16_of_16(pending, sums);
                    for (int i = 0; i < 16; i++)
                        *to[i] = sums[i];
                    for (int i = 16; i < held; i++) {
                        pending[i - 16][0] = pending[i][0];
                        to[i - 16] = to[i];
                    }
                    held -= 16;
                }
            }
        }
        for (int i = 0; i < held; i++)
            *to[i] = acc16_reduce(pending[i]);
        return;
    }
#endif
    for (int64_t j = j0; j < j1; j++) {
        halves_to_floats(wide, k + j * dims, dims);
        dot_halves_rows(qh, dims, nq, wide, dims, rows + j, stride);
    }
}

/* out[r * dims + d] = probabilities r (rows[r * stride + first ..]) . value row d over [first, span), for the
 * dimensions [d0, d1) of values v (rows v_stride apart, positions [first, hi) filled, the rest of a row whatever
 * it holds: past hi the product takes attend's zero padding). The probabilities are zero outside the window, first
 * is its start rounded down to 64 and span its end rounded up to 64: attend's range. wide: span - first floats
 * (AVX-512 widens in registers). */
static void group_values(float *out, const float *rows, int64_t stride, int64_t nq, const uint16_t *v,
                         int64_t v_stride, int64_t dims, int64_t first, int64_t hi, int64_t span, int64_t d0,
                         int64_t d1, float *wide) {
#if ACC_VECS == 1 /* each value row widened in registers; past hi its halves are not read but taken as +0 */
    (void)wide;
    for (int64_t d = d0; d < d1; d++)
        for (int64_t r = 0; r < nq; r += SHARED_DOTS) {
            const int take = nq - r < SHARED_DOTS ? (int)(nq - r) : SHARED_DOTS;
            const float *p[SHARED_DOTS];
            vf sums[SHARED_DOTS][1];
            for (int t = 0; t < take; t++)
                p[t] = rows + (r + t) * stride + first;
            chains_halves_rows(p, v + d * v_stride + first, span - first, hi - first, take, sums);
            for (int t = 0; t < take; t++)
                out[(r + t) * dims + d] = acc16_reduce(sums[t]);
        }
#else
    for (int64_t d = d0; d < d1; d++) {
        halves_to_floats(wide, v + d * v_stride + first, hi - first);
        for (int64_t t = hi - first; t < span - first; t++)
            wide[t] = 0.0f;
        dot_halves_rows(rows + first, stride, nq, wide, span - first, out + d, dims);
    }
#endif
}

#if ACC_VECS == 1
/* ---- several queries of one head at once (a prompt) ----------------------------------------------------------
 * ATTEND_Q queries of one KV head, each with its own keys [lo[r], hi[r]) (a prompt's consecutive positions), as
 * attend computes them batched: every score and every output element is the same one-chain dot product in key or
 * dimension order, reduced by acc16_reduce, so the bits are attend's. The tiles only let ATTEND_Q x ATTEND_C chains
 * run side by side, each vector of queries, keys, probabilities or values loaded once for all of them (one query's
 * four chains alone wait on the multiply-add latency and load more than they multiply).
 *
 * A query's product with V runs over the tile's common range of keys [F, E) instead of its own [first, end): its
 * probabilities outside [lo, hi) are +0, and a chain that starts at +0 and adds (+0) * (a finite value) stays +0
 * (+0 + -0 is +0), so the extra leading and trailing terms leave every lane's bits as they are (attend's own
 * comment on the trailing groups says the same; ggml multiplies all of them). Only on 16-lane vectors (AVX-512),
 * where 16 chains fit the registers; the other ISAs call attend per query. */
#define ATTEND_Q 4
#define ATTEND_C 4
_Static_assert(ATTEND_Q <= VT_DECODER_QUERIES, "the dispatcher's scratch holds VT_DECODER_QUERIES queries");

/* acc[r][c] = the dot products of a[r] and b[c] over n (a multiple of 16) for R x C pairs (constants where
 * inlined), each one chain as dot_halves sums it. */
static inline __attribute__((always_inline)) void dot_tile(const float *const *a, const float *const *b, int64_t n,
                                                           float out[ATTEND_Q][ATTEND_C], const int R, const int C) {
    vf acc[ATTEND_Q][ATTEND_C];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int c = 0; c < C; c++)
            acc[r][c] = v_splat(0.0f);
    for (int64_t k = 0; k < n; k += LANES) {
        vf bv[ATTEND_C];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++)
            bv[c] = v_load(b[c] + k);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const vf av = v_load(a[r] + k);
#pragma GCC unroll 4
            for (int c = 0; c < C; c++)
                acc[r][c] = v_fma(av, bv[c], acc[r][c]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int c = 0; c < C; c++)
            out[r][c] = acc16_reduce(&acc[r][c]);
}

static void dot_tile_any(const float *const *a, const float *const *b, int64_t n, float out[ATTEND_Q][ATTEND_C],
                         int rows, int cols) {
    if (rows == ATTEND_Q && cols == ATTEND_C)
        dot_tile(a, b, n, out, ATTEND_Q, ATTEND_C);
    else if (cols == ATTEND_C)
        switch (rows) {
        case 3: dot_tile(a, b, n, out, 3, ATTEND_C); break;
        case 2: dot_tile(a, b, n, out, 2, ATTEND_C); break;
        default: dot_tile(a, b, n, out, 1, ATTEND_C); break;
        }
    else
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) {
                float one[ATTEND_Q][ATTEND_C];
                dot_tile(a + r, b + c, n, one, 1, 1);
                out[r][c] = one[0][0];
            }
}

/* nq (<= ATTEND_Q) queries q + r * q_stride against keys [lo[r], hi[r]) into out + r * out_stride; k, v, v_stride,
 * dims, scale as attend's, dims a multiple of 16. scratch: ATTEND_Q * (dims + v_stride) floats. */
static void attend_queries(float *out, int64_t out_stride, const float *q, int64_t q_stride, const float *k,
                           const float *v, int64_t v_stride, int64_t dims, const int64_t *lo, const int64_t *hi,
                           int nq, float scale, float *scratch) {
    int64_t jlo = lo[0], jhi = hi[0], first = lo[0] / (4 * LANES) * (4 * LANES), end = 0;
    const float *qh[ATTEND_Q];
    float *row[ATTEND_Q];
    for (int r = 0; r < nq; r++) {
        float *h = scratch + r * (dims + v_stride);
        round_row_to_half(h, q + r * q_stride, dims);
        qh[r] = h;
        row[r] = h + dims;
        for (int64_t j = 0; j < v_stride; j++)
            row[r][j] = 0.0f;
        jlo = lo[r] < jlo ? lo[r] : jlo;
        jhi = hi[r] > jhi ? hi[r] : jhi;
        const int64_t f = lo[r] / (4 * LANES) * (4 * LANES), e = (hi[r] + LANES - 1) / LANES * LANES;
        first = f < first ? f : first;
        end = e > end ? e : end;
    }
    float s[ATTEND_Q][ATTEND_C];
    for (int64_t j = jlo; j < jhi; j += ATTEND_C) {
        const int cols = jhi - j < ATTEND_C ? (int)(jhi - j) : ATTEND_C;
        const float *keys[ATTEND_C];
        for (int c = 0; c < cols; c++)
            keys[c] = k + (j + c) * dims;
        dot_tile_any(qh, keys, dims, s, nq, cols);
        for (int r = 0; r < nq; r++)
            for (int c = 0; c < cols; c++)
                if (j + c >= lo[r] && j + c < hi[r])
                    row[r][j + c] = s[r][c];
    }
    for (int r = 0; r < nq; r++)
        softmax_window(row[r], lo[r], hi[r], scale);
    const float *probs[ATTEND_Q];
    for (int r = 0; r < nq; r++)
        probs[r] = row[r] + first;
    for (int64_t d = 0; d < dims; d += ATTEND_C) {
        const int cols = dims - d < ATTEND_C ? (int)(dims - d) : ATTEND_C;
        const float *vals[ATTEND_C];
        for (int c = 0; c < cols; c++)
            vals[c] = v + (d + c) * v_stride + first;
        dot_tile_any(probs, vals, end - first, s, nq, cols);
        for (int r = 0; r < nq; r++)
            for (int c = 0; c < cols; c++)
                out[r * out_stride + d + c] = s[r][c];
    }
}
#endif

const struct vt_decoder_kernels VT_SUFFIX(vt_decoder) = {
    .rms_norm_rows = rms_norm_rows,
    .rope_cache_rows = rope_cache_rows,
    .rope_rows = rope_rows,
    .swiglu_rows = swiglu_rows,
    .geglu = geglu,
    .halves_to_floats = halves_to_floats,
    .attend = attend,
    .round_to_halves = round_row_to_half,
    .softmax_window = softmax_window,
    .group_scores = group_scores,
    .group_values = group_values,
#if ACC_VECS == 1
    .attend_queries = attend_queries,
#endif
};
