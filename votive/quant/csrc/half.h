/* half.h: IEEE half <-> float conversions, exact one way and rounding to nearest even the other (F16C on the x86
 * builds that have it, the arm64 half type, plain bit arithmetic elsewhere: the same results everywhere). Shared by
 * quant_kernels.c (GGML block scales) and decoder_kernels.c (the float16 KV cache). */
#ifndef VT_HALF_H
#define VT_HALF_H

#include <stdint.h>
#include <string.h>

#if defined(VT_ISA_AVX2) || defined(VT_ISA_AVX512)
#define VT_HALF_X86 1
#include <immintrin.h>
#elif defined(__aarch64__)
#define VT_HALF_NEON 1
#endif

/* IEEE half -> float, exact. */
static inline float f16_to_f32(uint16_t h) {
#if defined(VT_HALF_X86)
    return _cvtsh_ss(h);
#elif defined(VT_HALF_NEON)
    __fp16 v;
    memcpy(&v, &h, sizeof v);
    return (float)v;
#else
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, em = h & 0x7fffu, bits;
    if (em >= 0x7c00) /* inf, NaN */
        bits = sign | 0x7f800000 | ((em & 0x3ff) << 13);
    else if (em >= 0x0400) /* normal: rebias the exponent */
        bits = sign | ((em << 13) + 0x38000000);
    else { /* zero or subnormal: em units of 2^-24 */
        float f = (float)em * 5.9604644775390625e-8f;
        return sign ? -f : f;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
#endif
}

/* float -> IEEE half bits, rounding to nearest even (GGML_FP32_TO_FP16); overflow gives inf. */
static inline uint16_t f32_to_f16(float f) {
#if defined(VT_HALF_X86)
    return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
#elif defined(VT_HALF_NEON)
    __fp16 v = (__fp16)f;
    uint16_t h;
    memcpy(&h, &v, sizeof h);
    return h;
#else
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000, ax = x & 0x7fffffff;
    if (ax >= 0x7f800000) /* inf, NaN (kept quiet) */
        return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 : 0));
    if (ax >= 0x477ff000) /* rounds to 65520 or more: inf */
        return (uint16_t)(sign | 0x7c00);
    if (ax < 0x38800000) { /* below 2^-14: a subnormal half, f / 2^-24 rounded to an even integer */
        float a, v;
        memcpy(&a, &ax, sizeof a);
        v = a * 16777216.0f + 12582912.0f; /* exact scaling, then the add rounds to an integer */
        uint32_t bits;
        memcpy(&bits, &v, sizeof bits);
        return (uint16_t)(sign | ((bits & 0x7fffff) - 0x400000));
    }
    /* normal: drop 13 mantissa bits, rounding to nearest even; a carry moves into the exponent as it should */
    return (uint16_t)(sign | ((ax - 0x38000000 + 0xfff + ((ax >> 13) & 1)) >> 13));
#endif
}

#endif /* VT_HALF_H */
