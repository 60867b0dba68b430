/* simd.h: one float vector type and the vector math the kernels need, on GCC/Clang vector extensions.
 *
 * The same source is compiled once per instruction set (kernel_build.py passes -DVT_ISA_AVX2 -mavx2 ...),
 * and the vector width follows: 64 bytes for AVX-512, 32 for AVX2, 16 otherwise (SSE2 on x86_64, NEON on
 * arm64, where both are baseline). The compiler turns the operators below into that ISA's instructions,
 * so there is no intrinsic code to keep in step per ISA, and an unknown architecture still gets a working
 * build. No -ffast-math anywhere: the rounding trick in v_exp and NaN propagation depend on IEEE rules.
 */
#ifndef VT_SIMD_H
#define VT_SIMD_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(VT_ISA_AVX2) || defined(VT_ISA_AVX512)
#include <immintrin.h> /* masked loads for row tails only; everything else is plain vector code */
#endif

#if defined(VT_ISA_AVX512)
#if !defined(__AVX512F__)
#error "VT_ISA_AVX512 needs -mavx512f"
#endif
#define VT_VEC_BYTES 64
#define VT_ISA_NAME "avx512"
#define VT_SUFFIX(name) name##_avx512
#elif defined(VT_ISA_AVX2)
#if !defined(__AVX2__) || !defined(__FMA__)
#error "VT_ISA_AVX2 needs -mavx2 -mfma"
#endif
#define VT_VEC_BYTES 32
#define VT_ISA_NAME "avx2"
#define VT_SUFFIX(name) name##_avx2
#else
#define VT_VEC_BYTES 16
#if defined(__x86_64__) || defined(_M_X64)
#define VT_ISA_NAME "sse2"
#define VT_SUFFIX(name) name##_sse2
#elif defined(__aarch64__)
#define VT_ISA_NAME "neon"
#define VT_SUFFIX(name) name##_neon
#else
#define VT_ISA_NAME "generic"
#define VT_SUFFIX(name) name##_generic
#endif
#endif

#define VT_LANES (VT_VEC_BYTES / 4)

typedef float vf __attribute__((vector_size(VT_VEC_BYTES)));
typedef int32_t vi __attribute__((vector_size(VT_VEC_BYTES)));
typedef uint32_t vu __attribute__((vector_size(VT_VEC_BYTES)));

static inline vf v_splat(float s) {
    vf v = {0};
    return v + s;
}

/* Unaligned loads and stores; memcpy compiles to a single vector move. */
static inline vf v_load(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void v_store(float *p, vf v) { memcpy(p, &v, sizeof v); }

/* a * b + c rounded once, lane by lane (fmaf per lane): the FMA instruction where the ISA has one. */
static inline vf v_fma(vf a, vf b, vf c) {
#if defined(VT_ISA_AVX512)
    return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(VT_ISA_AVX2)
    return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
    for (int i = 0; i < VT_LANES; i++)
        c[i] = fmaf(a[i], b[i], c[i]);
    return c;
#endif
}

/* mask ? a : b, lane by lane; mask lanes are all ones or all zeros, as comparisons return. */
static inline vf v_select(vi mask, vf a, vf b) { return (vf)((mask & (vi)a) | (~mask & (vi)b)); }

/* The first n (< VT_LANES) floats at p, the other lanes set to fill. Tails go through the same vector
 * code as the body, so an element's result never depends on where a row or a chunk boundary falls.
 * AVX2 and AVX-512 load tails with masked loads, which matters for short rows (attention over 20 tokens
 * is one vector and a tail per row); elsewhere the tail goes through a buffer on the stack. */
#if defined(VT_ISA_AVX512)
static inline vf v_load_tail(const float *p, int64_t n, float fill) {
    return (vf)_mm512_mask_loadu_ps(_mm512_set1_ps(fill), (__mmask16)((1u << n) - 1), p);
}
#elif defined(VT_ISA_AVX2)
static inline __m256i tail_mask(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline vf v_load_tail(const float *p, int64_t n, float fill) {
    __m256i mask = tail_mask(n);
    return (vf)_mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, mask), _mm256_castsi256_ps(mask));
}
#else
static inline vf v_load_tail(const float *p, int64_t n, float fill) {
    float buf[VT_LANES];
    for (int i = 0; i < VT_LANES; i++)
        buf[i] = i < n ? p[i] : fill;
    return v_load(buf);
}
#endif

/* Tails are stored in pieces of halving width (8, 4, 2, 1 floats), not with masked stores: on x86 a masked
 * store stalls the loads that soon follow it into the same bytes (the next short row) by tens of cycles. */
static inline void v_store_tail(float *p, vf v, int64_t n) {
    float buf[VT_LANES];
    v_store(buf, v);
    int64_t i = 0;
    for (int64_t width = VT_LANES / 2; width > 0; width /= 2) {
        if (n & width) {
            memcpy(p + i, buf + i, (size_t)width * sizeof(float));
            i += width;
        }
    }
}

/* Loops step a whole vector at a time and pass n = the floats left (capped at VT_LANES); these take the
 * plain move for whole vectors and the padded path for the last one. */
static inline vf v_load_n(const float *p, int64_t n, float fill) {
    return n >= VT_LANES ? v_load(p) : v_load_tail(p, n, fill);
}

static inline void v_store_n(float *p, vf v, int64_t n) {
    if (n >= VT_LANES)
        v_store(p, v);
    else
        v_store_tail(p, v, n);
}

/* v with the lanes from n on replaced by fill. */
static inline vf v_keep_first(vf v, int64_t n, float fill) {
    if (n >= VT_LANES)
        return v;
    int32_t ids[VT_LANES];
    for (int i = 0; i < VT_LANES; i++)
        ids[i] = i;
    vi lane;
    memcpy(&lane, ids, sizeof lane);
    return v_select(lane < (int32_t)n, v, v_splat(fill));
}

static inline int64_t v_left(int64_t i, int64_t n) { return n - i < VT_LANES ? n - i : VT_LANES; }

/* max without NaN special-casing: a NaN lane in a leaves b. */
static inline vf v_max(vf a, vf b) { return v_select(a > b, a, b); }

static inline vf v_abs(vf a) { return (vf)((vi)a & 0x7fffffff); }

/* Lanes summed in a fixed order, so a row's sum does not depend on how rows are split over threads. */
static inline float v_hsum(vf v) {
    float buf[VT_LANES];
    v_store(buf, v);
    for (int width = VT_LANES / 2; width > 0; width /= 2)
        for (int i = 0; i < width; i++)
            buf[i] += buf[i + width];
    return buf[0];
}

static inline float v_hmax(vf v) {
    float buf[VT_LANES];
    v_store(buf, v);
    for (int width = VT_LANES / 2; width > 0; width /= 2)
        for (int i = 0; i < width; i++)
            buf[i] = buf[i + width] > buf[i] ? buf[i + width] : buf[i];
    return buf[0];
}

/* e^x within 1.5 ulp over float32's range: x = n ln2 + r with |r| <= ln2/2, e^r by its Taylor series
 * to r^7 (truncation error below 6e-9 relative), then 2^n built in the exponent bits, as two factors so
 * that n in [-126, 128] never needs a biased exponent outside [1, 254]. Below ln(FLT_MIN) the result is
 * flushed to 0 (the true value would be subnormal), above ln(FLT_MAX) it is +inf, NaN stays NaN. */
static inline vf v_exp(vf x) {
    const float ln_max = 88.72283935546875f;  /* the float just above ln(FLT_MAX) */
    const float ln_min = -87.33654022216797f; /* the float just above ln(FLT_MIN) */
    vi over = x > ln_max;
    vi under = x < ln_min;
    vf xc = v_select(over, v_splat(ln_max), x);
    xc = v_select(under, v_splat(ln_min), xc);

    /* n = round(x / ln2): adding 1.5 * 2^23 leaves the rounded integer in the low mantissa bits */
    const float round_magic = 12582912.0f;
    vf n = (xc * 1.44269504088896341f + round_magic) - round_magic;
    /* r = x - n ln2 with ln2 split in two (Cody and Waite) so n * ln2_hi is exact */
    vf r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;

    vf p = v_splat(1.0f / 5040.0f);
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;

    vi ni = __builtin_convertvector(n, vi);
    vi half = ni >> 1;
    vf scale_a = (vf)((vu)(half + 127) << 23);
    vf scale_b = (vf)((vu)(ni - half + 127) << 23);
    vf result = p * scale_a * scale_b;
    result = v_select(over, v_splat(INFINITY), result);
    return v_select(under, v_splat(0.0f), result);
}

/* Q(a) = P(Z > a) for a standard normal Z and a >= 0 (so Q(a) = erfc(a / sqrt 2) / 2) as
 * Q(a) = t exp(P(t) - a^2 / 2), t = 1 / (1 + 0.33 a), where P is a degree-9 polynomial fitted by
 * fit_normal_tail.py (the fit alone is within 1.1e-7 relative everywhere). In float32 the relative error is
 * below 1e-6 for a < 4 and grows to ~1e-5 at a = 13, where rounding the exponent (~ -a^2 / 2) costs its
 * ulp; GELU only sees a Q(a) times that, below 1e-9. For a = +inf or huge, t and the exponential go to 0
 * and so does Q; NaN stays NaN. */
static inline vf v_normal_tail(vf a) {
    vf t = 1.0f / (1.0f + 0.33f * a);
    vf p = v_splat(0.15515317f);
    p = p * t + -0.8422977f;
    p = p * t + 1.7778286f;
    p = p * t + -1.736531f;
    p = p * t + 0.75670224f;
    p = p * t + -0.33525887f;
    p = p * t + 0.17446224f;
    p = p * t + 0.38394272f;
    p = p * t + 1.0004648f;
    p = p * t + -2.0276134f;
    return t * v_exp(p - 0.5f * a * a);
}

/* gelu(x) = x Phi(x), with Phi(x) = 1 - Q(x) for x >= 0 and Q(-x) for x < 0. */
static inline vf v_gelu(vf x) {
    vf q = v_normal_tail(v_abs(x));
    vf phi = v_select(x < 0.0f, q, 1.0f - q);
    return x * phi;
}

#endif /* VT_SIMD_H */
