/* lanes16.h: ggml's 16-lane float accumulator (its AVX-512 vector) on this ISA's vectors, and its sum across in
 * GCC's _mm512_reduce_add_ps order. Shared by decoder_kernels.c (attention) and half_kernels.c (F16 / BF16
 * products), whose summation orders are built of it; include after simd.h. */
#ifndef VT_LANES16_H
#define VT_LANES16_H

#define LANES 16                    /* ggml's AVX-512 vector */
#define ACC_VECS (LANES / VT_LANES) /* this ISA's vectors per accumulator (1 AVX-512, 2 AVX2, 4 for 16 bytes) */

/* The sum of 16 lanes as _mm512_reduce_add_ps adds them: lane i + lane i + 8, then + 4, + 2, + 1. */
static inline float reduce16(float *v) {
    for (int w = LANES / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; l++)
            v[l] = v[l] + v[l + w];
    return v[0];
}

/* reduce16 of an accumulator, with vector adds where the ISA has them (the same additions in the same order) */
static inline float acc16_reduce(const vf *acc) {
#if defined(VT_ISA_AVX512) || defined(VT_ISA_AVX2)
#if defined(VT_ISA_AVX512)
    const __m512 v = (__m512)acc[0];
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
#else
    __m256 s8 = _mm256_add_ps((__m256)acc[0], (__m256)acc[1]);
#endif
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
#else
    float lanes[LANES];
    for (int v = 0; v < ACC_VECS; v++)
        v_store(lanes + v * VT_LANES, acc[v]);
    return reduce16(lanes);
#endif
}

#endif
