/* quant_x86_kernels.h: the x86 block products, included by quant_x86.h once per way of summing u8 x s8
 * products: X86_DOT4(u, s) gives the 8 int32 sums of 4 adjacent products, X86_NAME(name) names this copy's
 * functions. Not a header to include anywhere else.
 */

/* ---- 32-element formats ----------------------------------------------------------------------------------
 *
 * Per block: the weight quants as 32 bytes, then per activation row int32 sums of products, converted and
 * scaled by d_w * d_a into that row's 8-lane accumulator. Q4_0, Q5_0 and Q8_0 quants are signed: their
 * magnitudes are multiplied with the activations carrying their signs. Q4_1 and Q5_1 are unsigned and add
 * m * s per block, s being the activation block's d * sum(q) that Q8_1 stores.
 */

/* Block b of a 32-element format -> its quants as 32 bytes, *dx its scale, *mx its min (Q4_1, Q5_1). */
VT_INLINE __m256i X86_NAME(x86_block32)(const int type, const uint8_t *x, float *dx, float *mx) {
    *dx = half_at(x);
    *mx = type == VT_Q4_1 || type == VT_Q5_1 ? half_at(x + 2) : 0.0f;
    switch (type) {
    case VT_Q4_0: /* nibbles - 8 */
        return _mm256_sub_epi8(x86_nibbles(x + 2), _mm256_set1_epi8(8));
    case VT_Q4_1:
        return x86_nibbles(x + 4);
    case VT_Q5_0: /* nibble | fifth bit << 4, - 16: the nibble as is where the bit is set, else nibble | 0xF0 */
        return x86_with_fifth_bits(x + 6, x + 2, 0, (char)0xF0);
    case VT_Q5_1:
        return x86_with_fifth_bits(x + 8, x + 4, 0x10, 0);
    default: /* VT_Q8_0 */
        return x86_load(x + 2);
    }
}

/* The int32 sums of weight quants q (their magnitudes u for signed formats) times activation block y. */
VT_INLINE __m256 X86_NAME(x86_sums32)(const int is_signed, __m256i q, __m256i u, const uint8_t *y) {
    const __m256i a = x86_load(y);
    return _mm256_cvtepi32_ps(X86_DOT4(u, is_signed ? _mm256_sign_epi8(a, q) : a));
}

VT_INLINE void X86_NAME(x86_dot32)(const int type, const int T, int64_t nb, const uint8_t *w, const uint8_t *act,
                                   int64_t act_stride, float *out, int64_t out_stride) {
    const int bytes = type == VT_Q4_0 ? 18 : type == VT_Q4_1 ? 20 : type == VT_Q5_0 ? 22 : type == VT_Q5_1 ? 24 : 34;
    const int is_signed = type == VT_Q4_0 || type == VT_Q5_0 || type == VT_Q8_0;
    const int has_min = type == VT_Q4_1 || type == VT_Q5_1;
    __m256 acc[TILE];
    float macc[TILE];
    for (int t = 0; t < T; t++) {
        acc[t] = _mm256_setzero_ps();
        macc[t] = 0.0f;
    }
    /* Blocks in pairs, summed together before they meet the accumulator: one add per two blocks on its
     * dependency chain (an add per block would hold a matrix-vector product to one block per add latency). */
    int64_t b = 0;
    for (; b + 1 < nb; b += 2) {
        float dx0, mx0, dx1, mx1;
        prefetch_weights(w + b * bytes, 2 * bytes);
        const __m256i q0 = X86_NAME(x86_block32)(type, w + b * bytes, &dx0, &mx0);
        const __m256i q1 = X86_NAME(x86_block32)(type, w + (b + 1) * bytes, &dx1, &mx1);
        const __m256i u0 = is_signed ? _mm256_sign_epi8(q0, q0) : q0, u1 = is_signed ? _mm256_sign_epi8(q1, q1) : q1;
        for (int t = 0; t < T; t++) {
            const float *d = ACT_D(t, 32);
            __m256 pair = _mm256_mul_ps(_mm256_set1_ps(dx0 * d[b]),
                                        X86_NAME(x86_sums32)(is_signed, q0, u0, ACT_ROW(t) + b * 32));
            pair = _mm256_fmadd_ps(_mm256_set1_ps(dx1 * d[b + 1]),
                                   X86_NAME(x86_sums32)(is_signed, q1, u1, ACT_ROW(t) + (b + 1) * 32), pair);
            acc[t] = _mm256_add_ps(acc[t], pair);
            if (has_min)
                macc[t] += mx0 * d[nb + b] + mx1 * d[nb + b + 1];
        }
    }
    if (b < nb) {
        float dx, mx;
        prefetch_weights(w + b * bytes, bytes);
        const __m256i q = X86_NAME(x86_block32)(type, w + b * bytes, &dx, &mx);
        const __m256i u = is_signed ? _mm256_sign_epi8(q, q) : q;
        for (int t = 0; t < T; t++) {
            const float *d = ACT_D(t, 32);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx * d[b]), X86_NAME(x86_sums32)(is_signed, q, u, ACT_ROW(t) + b * 32),
                                     acc[t]);
            if (has_min)
                macc[t] += mx * d[nb + b];
        }
    }
    for (int t = 0; t < T; t++)
        out[t * out_stride] = x86_hsum(acc[t]) + macc[t];
}

/* ---- K-quants ------------------------------------------------------------------------------------------ */

/* Q4_K and Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins; mins meet the activations' bsums. */
VT_INLINE void X86_NAME(x86_q45_K)(const int type, const int T, int64_t nb, const uint8_t *w, const uint8_t *act,
                                   int64_t act_stride, float *out, int64_t out_stride) {
    const int bytes = type == VT_Q4_K ? 144 : 176;
    __m256 acc[TILE];
    for (int t = 0; t < T; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *x = w + b * bytes;
        prefetch_weights(x, bytes);
        const float d = half_at(x), dmin = half_at(x + 2);
        uint32_t s[3];
        memcpy(s, x + 4, sizeof s);
        /* bytes 0..7: the scales, 8..15: the mins (get_scale_min_k4 on four at once) */
        const __m128i sm = _mm_setr_epi32((int)(s[0] & 0x3f3f3f3f),
                                          (int)((s[2] & 0x0f0f0f0f) | ((s[0] >> 2) & 0x30303030)),
                                          (int)(s[1] & 0x3f3f3f3f),
                                          (int)(((s[2] >> 4) & 0x0f0f0f0f) | ((s[1] >> 2) & 0x30303030)));
        const __m256i scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
        const __m256i mins = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm)); /* m0 m0 m1 m1 ...: per 16 */
        __m256i sumi[TILE];
        for (int t = 0; t < T; t++) {
            const int16_t *bsums = (const int16_t *)(ACT_D(t, 256) + nb) + b * 16;
            __m256i msum = _mm256_madd_epi16(mins, x86_load(bsums));
            acc[t] = _mm256_fnmadd_ps(_mm256_set1_ps(dmin * ACT_D(t, 256)[b]), _mm256_cvtepi32_ps(msum), acc[t]);
            sumi[t] = _mm256_setzero_si256();
        }
        const uint8_t *qs = x + (type == VT_Q4_K ? 16 : 48);
        const __m256i qh = type == VT_Q5_K ? x86_load(x + 16) : _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) { /* 64 elements: sub-blocks 2c (low nibbles) and 2c + 1 (high nibbles) */
            const __m256i q = x86_load(qs + 32 * c);
            __m256i lo = _mm256_and_si256(q, _mm256_set1_epi8(0x0F)), hi = x86_bits(q, 4, 0x0F);
            if (type == VT_Q5_K) {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(x86_bits(qh, 2 * c, 1), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(x86_bits(qh, 2 * c + 1, 1), 4));
            }
            const __m256i s_lo = x86_pick16(scales, 2 * c), s_hi = x86_pick16(scales, 2 * c + 1);
            for (int t = 0; t < T; t++) {
                const int8_t *y = (const int8_t *)ACT_ROW(t) + b * 256 + 64 * c;
                sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(x86_scaled_dot(lo, y, s_lo),
                                                                     x86_scaled_dot(hi, y + 32, s_hi)));
            }
        }
        for (int t = 0; t < T; t++)
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * ACT_D(t, 256)[b]), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
    }
    for (int t = 0; t < T; t++)
        out[t * out_stride] = x86_hsum(acc[t]);
}

/* Q2_K, Q3_K and Q6_K: 16 sub-blocks of 16, in groups of 32 elements that share a 32-byte vector. Q3_K and
 * Q6_K quants are signed (-4..3, -32..31): they are multiplied as unsigned (+4, +32) and offset * scale *
 * bsum is taken off; Q2_K's are unsigned with a min per sub-block. */
VT_INLINE void X86_NAME(x86_q236_K)(const int type, const int T, int64_t nb, const uint8_t *w, const uint8_t *act,
                                              int64_t act_stride, float *out, int64_t out_stride) {
    const int bytes = type == VT_Q2_K ? 84 : type == VT_Q3_K ? 110 : 210;
    __m256 acc[TILE];
    for (int t = 0; t < T; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *x = w + b * bytes;
        prefetch_weights(x, bytes);
        float d;
        __m128i scales8; /* the 16 sub-block scales as bytes */
        __m256i sumi[TILE];
        if (type == VT_Q2_K) { /* scales[16]: scale | min << 4 */
            d = half_at(x + 80);
            const float dmin = half_at(x + 82);
            const __m128i packed = _mm_loadu_si128((const __m128i *)x);
            scales8 = _mm_and_si128(packed, _mm_set1_epi8(0x0F));
            const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0F)));
            for (int t = 0; t < T; t++) {
                const int16_t *bsums = (const int16_t *)(ACT_D(t, 256) + nb) + b * 16;
                __m256i msum = _mm256_madd_epi16(mins, x86_load(bsums));
                acc[t] = _mm256_fnmadd_ps(_mm256_set1_ps(dmin * ACT_D(t, 256)[b]), _mm256_cvtepi32_ps(msum),
                                          acc[t]);
                sumi[t] = _mm256_setzero_si256();
            }
        } else {
            int offset;
            if (type == VT_Q3_K) { /* 12 bytes of 6-bit scales, unpacked as scales_q3_K does */
                d = half_at(x + 108);
                uint32_t s[3];
                memcpy(s, x + 96, sizeof s);
                const uint32_t k2 = 0x0f0f0f0f, k1 = 0x03030303;
                scales8 = _mm_sub_epi8(_mm_setr_epi32((int)((s[0] & k2) | ((s[2] & k1) << 4)),
                                                      (int)((s[1] & k2) | (((s[2] >> 2) & k1) << 4)),
                                                      (int)(((s[0] >> 4) & k2) | (((s[2] >> 4) & k1) << 4)),
                                                      (int)(((s[1] >> 4) & k2) | (((s[2] >> 6) & k1) << 4))),
                                       _mm_set1_epi8(32));
                offset = 2; /* log2(4) */
            } else { /* Q6_K: int8 scales[16] */
                d = half_at(x + 208);
                scales8 = _mm_loadu_si128((const __m128i *)(x + 192));
                offset = 5; /* log2(32) */
            }
            const __m256i scales16 = _mm256_cvtepi8_epi16(scales8);
            for (int t = 0; t < T; t++) { /* sumi = -offset * sum_s sc_s bsum_s */
                const int16_t *bsums = (const int16_t *)(ACT_D(t, 256) + nb) + b * 16;
                __m256i corr = _mm256_slli_epi32(_mm256_madd_epi16(scales16, x86_load(bsums)), offset);
                sumi[t] = _mm256_sub_epi32(_mm256_setzero_si256(), corr);
            }
        }
        const __m256i hmask = type == VT_Q3_K ? x86_load(x) : _mm256_setzero_si256();
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) { /* elements 128h .. 128h + 127 */
            __m256i q[4];
            if (type == VT_Q6_K) { /* 4 low bits from ql, 2 high bits from qh */
                const __m256i ql0 = x86_load(x + 64 * h), ql1 = x86_load(x + 64 * h + 32);
                const __m256i qh = x86_load(x + 128 + 32 * h);
                q[0] = _mm256_or_si256(_mm256_and_si256(ql0, _mm256_set1_epi8(0x0F)),
                                       _mm256_slli_epi16(x86_bits(qh, 0, 3), 4));
                q[1] = _mm256_or_si256(_mm256_and_si256(ql1, _mm256_set1_epi8(0x0F)),
                                       _mm256_slli_epi16(x86_bits(qh, 2, 3), 4));
                q[2] = _mm256_or_si256(x86_bits(ql0, 4, 0x0F), _mm256_slli_epi16(x86_bits(qh, 4, 3), 4));
                q[3] = _mm256_or_si256(x86_bits(ql1, 4, 0x0F), _mm256_slli_epi16(x86_bits(qh, 6, 3), 4));
            } else { /* 2 bits per element from qs, plus Q3_K's high bit from hmask */
                const __m256i qs = x86_load(x + (type == VT_Q2_K ? 16 : 32) + 32 * h);
#pragma GCC unroll 4
                for (int j = 0; j < 4; j++) {
                    q[j] = x86_bits(qs, 2 * j, 3);
                    if (type == VT_Q3_K)
                        q[j] = _mm256_or_si256(q[j], _mm256_slli_epi16(x86_bits(hmask, 4 * h + j, 1), 2));
                }
            }
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                const __m256i sc = x86_pair_scales(scales8, 8 * h + 2 * j, type != VT_Q2_K);
                for (int t = 0; t < T; t++) {
                    const int8_t *y = (const int8_t *)ACT_ROW(t) + b * 256 + 128 * h + 32 * j;
                    sumi[t] = _mm256_add_epi32(sumi[t], x86_scaled_dot(q[j], y, sc));
                }
            }
        }
        for (int t = 0; t < T; t++)
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * ACT_D(t, 256)[b]), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
    }
    for (int t = 0; t < T; t++)
        out[t * out_stride] = x86_hsum(acc[t]);
}

TILE_KERNEL(X86_NAME(x86_q4_0), X86_NAME(x86_dot32), VT_Q4_0)
TILE_KERNEL(X86_NAME(x86_q4_1), X86_NAME(x86_dot32), VT_Q4_1)
TILE_KERNEL(X86_NAME(x86_q5_0), X86_NAME(x86_dot32), VT_Q5_0)
TILE_KERNEL(X86_NAME(x86_q5_1), X86_NAME(x86_dot32), VT_Q5_1)
TILE_KERNEL(X86_NAME(x86_q8_0), X86_NAME(x86_dot32), VT_Q8_0)
TILE_KERNEL(X86_NAME(x86_q2_K), X86_NAME(x86_q236_K), VT_Q2_K)
TILE_KERNEL(X86_NAME(x86_q3_K), X86_NAME(x86_q236_K), VT_Q3_K)
TILE_KERNEL(X86_NAME(x86_q4_K), X86_NAME(x86_q45_K), VT_Q4_K)
TILE_KERNEL(X86_NAME(x86_q5_K), X86_NAME(x86_q45_K), VT_Q5_K)
TILE_KERNEL(X86_NAME(x86_q6_K), X86_NAME(x86_q236_K), VT_Q6_K)
