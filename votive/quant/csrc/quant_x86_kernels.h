/* quant_x86_kernels.h: the x86 block products, included by quant_x86.h once per way of summing u8 x s8
 * products: X86_DOT4(acc, u, s) adds the 8 int32 sums of 4 adjacent products to acc (X86_FULL_BYTES: exactly for
 * any unsigned u, else for the operands quant_x86.h names), X86_SCALED_DOT(acc, u, y, scales) adds the sums of
 * maddubs' pairs times int16 scales to acc, X86_NAME(name) names this copy's functions. Not a header to include
 * anywhere else.
 */

/* ---- 32-element formats ----------------------------------------------------------------------------------
 *
 * In ggml's order (its x86 ggml_vec_dot_q*_q8_*), so that a decoder gives llama.cpp's logits bit for bit: per
 * block, the 8 int32 sums of 4 adjacent products, as floats, are multiply-added into an 8-lane accumulator with
 * d_w * d_a; the lanes are summed at the end (x86_hsum, ggml's hsum_float_8). Q4_1 and Q5_1 add the blocks' min
 * terms m * s one after the other to a separate float, added last. The signed formats (Q4_0, Q5_0, Q8_0) go
 * through maddubs / VNNI as |w| times a with w's signs, so every block's integer sum is exact; Q5_0 as its
 * unsigned q (0..31) times a, onto -16 times a's sums of 4 (made with the activations, at vt_q5_0_offsets_at):
 * the same integers.
 *
 * Blocks go in groups of 8: their scales are widened from half with one instruction and multiplied with the 8
 * activation scales as one vector; each block then takes its lane of those products.
 *
 * Q4_0 matrices that llama.cpp repacks (VT_ORDER_REPACK) are summed as its ggml_gemv_q4_0_8x8_q8_0 and
 * ggml_gemm_q4_0_8x8_q8_0 do (ggml-cpu/arch/x86/repack.cpp): per output one float, into which each block's
 * integer sum is multiply-added with d_w * d_a, block after block (llama_orders.py, "repack").
 */

/* Quants of the 32-element block at x as bytes: unsigned for Q4_1 / Q5_1 and Q5_0 (whose offset 16 the activations'
 * vt_q5_0_offsets_at take off), signed (value minus offset) else. */
VT_INLINE __m256i X86_NAME(x86_quants32)(const int type, const uint8_t *x) {
    switch (type) {
    case VT_Q4_0:
        return _mm256_sub_epi8(x86_nibbles(x + offsetof(block_q4_0, qs)), _mm256_set1_epi8(8));
    case VT_Q4_1:
        return x86_nibbles(x + offsetof(block_q4_1, qs));
    case VT_Q5_0: /* nibble | fifth bit << 4 */
        return x86_with_fifth_bits(x + offsetof(block_q5_0, qs), x + offsetof(block_q5_0, qh), 0x10, 0);
    case VT_Q5_1:
        return x86_with_fifth_bits(x + offsetof(block_q5_1, qs), x + offsetof(block_q5_1, qh), 0x10, 0);
    default: /* VT_Q8_0 */
        return x86_load(x + offsetof(block_q8_0, qs));
    }
}

VT_INLINE void X86_NAME(x86_dot32)(const int type, const int T, int64_t nb, const uint8_t *w, const uint8_t *act,
                                   int64_t act_stride, float *out, int64_t out_stride, const int order) {
    const int bytes = (int)(type == VT_Q4_0   ? sizeof(block_q4_0)
                            : type == VT_Q4_1 ? sizeof(block_q4_1)
                            : type == VT_Q5_0 ? sizeof(block_q5_0)
                            : type == VT_Q5_1 ? sizeof(block_q5_1)
                                              : sizeof(block_q8_0));
    const int has_min = type == VT_Q4_1 || type == VT_Q5_1, offset16 = type == VT_Q5_0;
    const int64_t offsets_from_quants = vt_q5_0_offsets_at(nb); /* from a row's first quant */
    __m256 acc[TILE];
    float summs[TILE], sum[TILE]; /* sum: the repack order's float */
    #pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        acc[t] = _mm256_setzero_ps();
        summs[t] = sum[t] = 0.0f;
    }
    for (int64_t b0 = 0; b0 < nb; b0 += 8) {
        const int count = nb - b0 < 8 ? (int)(nb - b0) : 8;
        const uint8_t *x0 = w + b0 * bytes;
        const __m256 dx = x86_halves8(x0, bytes, count); /* every 32-element block starts with d */
        /* d_w * d_a of the 8 blocks per activation row, as floats: each block's product is broadcast from memory
         * into its FMA (one instruction with AVX-512VL), not picked out of a register by a shuffle per row */
        float scales[TILE][8];
        #pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const float *d = ACT_D(t, 32);
            _mm256_storeu_ps(scales[t], _mm256_mul_ps(dx, x86_floats8(d + b0, count)));
            if (has_min) { /* m * s per block, summed in block order */
                summs[t] = x86_add_lanes(summs[t], _mm256_mul_ps(x86_halves8(x0 + offsetof(block_q4_1, m), bytes,
                                                                             count),
                                                                 x86_floats8(d + nb + b0, count)), count);
            }
        }
#pragma GCC unroll 8
        for (int k = 0; k < count; k++) {
            const uint8_t *x = x0 + k * bytes;
            prefetch_weights(x, bytes);
            const __m256i q = X86_NAME(x86_quants32)(type, x);
            const __m256i u = has_min || offset16 ? q : _mm256_sign_epi8(q, q);
            #pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                const uint8_t *at = ACT_ROW(t) + (b0 + k) * 32;
                const __m256i a = x86_load(at);
                /* the block's offsets lie the same distance after its quants in every row: one register */
                const __m256i sums =
                    offset16 ? X86_DOT4(x86_load(at + offsets_from_quants), u, a)
                             : X86_DOT4(_mm256_setzero_si256(), u, has_min ? a : _mm256_sign_epi8(a, q));
                if (order == VT_ORDER_REPACK) /* the block's exact integer sum into the one float */
                    sum[t] = fmaf((float)x86_hsum_int(sums), scales[t][k], sum[t]);
                else
                    acc[t] = _mm256_fmadd_ps(_mm256_broadcast_ss(&scales[t][k]), _mm256_cvtepi32_ps(sums), acc[t]);
            }
        }
    }
    #pragma GCC unroll 8
    for (int t = 0; t < T; t++)
        out[t * out_stride] = order == VT_ORDER_REPACK ? sum[t] : x86_hsum(acc[t]) + summs[t];
}

/* Q5_0, Q8_0, Q4_1 and Q5_1 for two weight rows at once (at w and w + w_stride, into out[t * out_stride] and the
 * next float): each block of activations (and its offsets) is loaded once for both rows. The weights' quants are
 * multiplied as unsigned bytes (Q5_0's q, Q8_0's q + 128) onto the activations' offsets (vt_q5_0_offsets_at) times
 * 1 or 8 (-16 or -128 times each 4 activations' sum), which gives the integers ggml's sign trick gives; Q4_1's and
 * Q5_1's quants are unsigned as they stand, and their min terms m * s go, block after block, into a float per row.
 * Every output's scales and float order are x86_dot32's (vec_dot order), and so are its bits. Q8_0's unsigned
 * quants reach 255: VNNI only (maddubs' pairs would saturate); Q5_1's reach 31 against an int8 activation, as in
 * x86_dot32. */
VT_INLINE void X86_NAME(x86_pair_body)(const int type, const int T, int64_t nb, const uint8_t *w, int64_t w_stride,
                                       const uint8_t *act, int64_t act_stride, float *out, int64_t out_stride) {
    const int bytes = (int)(type == VT_Q5_0   ? sizeof(block_q5_0)
                            : type == VT_Q4_1 ? sizeof(block_q4_1)
                            : type == VT_Q5_1 ? sizeof(block_q5_1)
                                              : sizeof(block_q8_0));
    const int has_min = type == VT_Q4_1 || type == VT_Q5_1;
    const int64_t offsets_from_quants = vt_q5_0_offsets_at(nb); /* from a row's first quant */
    __m256 acc[2][TILE];
    float summs[2][TILE];
    #pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        acc[0][t] = acc[1][t] = _mm256_setzero_ps();
        summs[0][t] = summs[1][t] = 0.0f;
    }
    for (int64_t b0 = 0; b0 < nb; b0 += 8) {
        const int count = nb - b0 < 8 ? (int)(nb - b0) : 8;
        const uint8_t *x0[2] = {w + b0 * bytes, w + w_stride + b0 * bytes};
        __m256 dx0, dx1, m0, m1; /* Q4_1 / Q5_1: each block's d and m in one load (whole groups of 8) */
        if (has_min && count == 8) {
            x86_half_pairs8(x0[0], bytes, &dx0, &m0);
            x86_half_pairs8(x0[1], bytes, &dx1, &m1);
        } else {
            dx0 = x86_halves8(x0[0], bytes, count);
            dx1 = x86_halves8(x0[1], bytes, count);
            if (has_min) {
                m0 = x86_halves8(x0[0] + offsetof(block_q4_1, m), bytes, count);
                m1 = x86_halves8(x0[1] + offsetof(block_q4_1, m), bytes, count);
            }
        }
        float scales[2][TILE][8];
        #pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const __m256 da = x86_floats8(ACT_D(t, 32) + b0, count);
            _mm256_storeu_ps(scales[0][t], _mm256_mul_ps(dx0, da));
            _mm256_storeu_ps(scales[1][t], _mm256_mul_ps(dx1, da));
        }
        if (has_min) { /* m * s per block, summed in block order, per row */
            #pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                const __m256 s = x86_floats8(ACT_D(t, 32) + nb + b0, count);
                summs[0][t] = x86_add_lanes(summs[0][t], _mm256_mul_ps(m0, s), count);
                summs[1][t] = x86_add_lanes(summs[1][t], _mm256_mul_ps(m1, s), count);
            }
        }
#pragma GCC unroll 8
        for (int k = 0; k < count; k++) {
            prefetch_weights(x0[0] + k * bytes, bytes);
            prefetch_weights(x0[1] + k * bytes, bytes);
            __m256i u0 = X86_NAME(x86_quants32)(type, x0[0] + k * bytes);
            __m256i u1 = X86_NAME(x86_quants32)(type, x0[1] + k * bytes);
            if (type == VT_Q8_0) { /* q + 128 */
                u0 = _mm256_xor_si256(u0, _mm256_set1_epi8(-128));
                u1 = _mm256_xor_si256(u1, _mm256_set1_epi8(-128));
            }
            #pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                const uint8_t *at = ACT_ROW(t) + (b0 + k) * 32;
                const __m256i a = x86_load(at);
                const __m256i offsets = has_min           ? _mm256_setzero_si256()
                                        : type == VT_Q8_0 ? _mm256_slli_epi32(x86_load(at + offsets_from_quants), 3)
                                                          : x86_load(at + offsets_from_quants);
                acc[0][t] = _mm256_fmadd_ps(_mm256_broadcast_ss(&scales[0][t][k]),
                                            _mm256_cvtepi32_ps(X86_DOT4(offsets, u0, a)), acc[0][t]);
                acc[1][t] = _mm256_fmadd_ps(_mm256_broadcast_ss(&scales[1][t][k]),
                                            _mm256_cvtepi32_ps(X86_DOT4(offsets, u1, a)), acc[1][t]);
            }
        }
    }
    #pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        out[t * out_stride] = x86_hsum(acc[0][t]) + summs[0][t];
        out[t * out_stride + 1] = x86_hsum(acc[1][t]) + summs[1][t];
    }
}

/* ---- K-quants ------------------------------------------------------------------------------------------
 *
 * Each block's integer sums are exact; the float order follows `order` (vt_order in vt_internal.h): vec_dot's
 * 8 lanes, or one float per output (two with the min sums) for the repack and tiled orders. In vec_dot's order
 * Q5_K's min sums go into one float beside the lanes, added after their sum, as ggml_vec_dot_q5_K_q8_K does on
 * x86 (arch/x86/quants.c: `summs += dmin * ...`, contracted to an FMA; `*s = hsum_float_8(acc) + summs`); Q4_K's
 * are taken off the lanes. The tiled order multiply-adds each block's term r times the activation's d into the
 * output (fused, as measured against llama.cpp on an AVX-512 VNNI machine, whose build takes its AVX2 tiled
 * kernel).
 */

/* A Q4_K / Q5_K block's 6-bit scales (each twice, per 16 lanes of a 32-element sub-block) and mins (m0 m0 m1 m1
 * ...), as 16-bit lanes: get_scale_min_k4 on four at once. */
VT_INLINE void X86_NAME(x86_q4_K_scales_mins)(const uint8_t *x, __m256i *scales, __m256i *mins) {
    uint32_t s[3];
    memcpy(s, x + offsetof(block_q4_K, scales), sizeof s);
    /* bytes 0..7: the scales, 8..15: the mins */
    const __m128i sm = _mm_setr_epi32((int)(s[0] & 0x3f3f3f3f),
                                      (int)((s[2] & 0x0f0f0f0f) | ((s[0] >> 2) & 0x30303030)),
                                      (int)(s[1] & 0x3f3f3f3f),
                                      (int)(((s[2] >> 4) & 0x0f0f0f0f) | ((s[1] >> 2) & 0x30303030)));
    *scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
    *mins = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm));
}

/* Q4_K and Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins; mins meet the activations' bsums. */
VT_INLINE void X86_NAME(x86_q45_K)(const int type, const int T, int64_t nb, const uint8_t *w, const uint8_t *act,
                                   int64_t act_stride, float *out, int64_t out_stride, const int order) {
    const int bytes = (int)(type == VT_Q4_K ? sizeof(block_q4_K) : sizeof(block_q5_K));
    __m256 acc[TILE];
    float sum[TILE], min_sum[TILE]; /* the repack and tiled orders' floats */
    #pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        acc[t] = _mm256_setzero_ps();
        sum[t] = min_sum[t] = 0.0f;
    }
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *x = w + b * bytes;
        prefetch_weights(x, bytes);
        const float d = half_at(x + offsetof(block_q4_K, d)), dmin = half_at(x + offsetof(block_q4_K, dmin));
        __m256i scales, mins;
        X86_NAME(x86_q4_K_scales_mins)(x, &scales, &mins);
        __m256i sumi[TILE], msum[TILE];
        #pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const int16_t *bsums = (const int16_t *)(ACT_D(t, 256) + nb) + b * 16;
            msum[t] = _mm256_madd_epi16(mins, x86_load(bsums));
            if (order == VT_ORDER_VEC_DOT && type == VT_Q5_K) /* one float, fused as ggml's compiler fuses it */
                min_sum[t] = fmaf(-(ACT_D(t, 256)[b] * dmin), (float)x86_hsum_int(msum[t]), min_sum[t]);
            else if (order == VT_ORDER_VEC_DOT)
                acc[t] = _mm256_fnmadd_ps(_mm256_set1_ps(dmin * ACT_D(t, 256)[b]), _mm256_cvtepi32_ps(msum[t]), acc[t]);
            sumi[t] = _mm256_setzero_si256();
        }
        const uint8_t *qs = x + (type == VT_Q4_K ? offsetof(block_q4_K, qs) : offsetof(block_q5_K, qs));
        const __m256i qh = type == VT_Q5_K ? x86_load(x + offsetof(block_q5_K, qh)) : _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) { /* 64 elements: sub-blocks 2c (low nibbles) and 2c + 1 (high nibbles) */
            const __m256i q = x86_load(qs + 32 * c);
            __m256i lo = _mm256_and_si256(q, _mm256_set1_epi8(0x0F)), hi = x86_bits(q, 4, 0x0F);
            if (type == VT_Q5_K) {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(x86_bits(qh, 2 * c, 1), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(x86_bits(qh, 2 * c + 1, 1), 4));
            }
            const __m256i s_lo = x86_pick16(scales, 2 * c), s_hi = x86_pick16(scales, 2 * c + 1);
            #pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                const int8_t *y = (const int8_t *)ACT_ROW(t) + b * 256 + 64 * c;
                sumi[t] = X86_SCALED_DOT(X86_SCALED_DOT(sumi[t], lo, y, s_lo), hi, y + 32, s_hi);
            }
        }
        #pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const float da = ACT_D(t, 256)[b];
            if (order == VT_ORDER_VEC_DOT) {
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * da), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
            } else if (order == VT_ORDER_REPACK) {
                sum[t] = fmaf((float)x86_hsum_int(sumi[t]), d * da, sum[t]);
                min_sum[t] = fmaf((float)x86_hsum_int(msum[t]), dmin * da, min_sum[t]);
            } else if (order == VT_ORDER_TILED) {
                const float r = fmaf(-dmin, (float)x86_hsum_int(msum[t]), (float)x86_hsum_int(sumi[t]) * d);
                sum[t] = fmaf(r, da, sum[t]);
            }
        }
    }
    #pragma GCC unroll 8
    for (int t = 0; t < T; t++)
        out[t * out_stride] = order != VT_ORDER_VEC_DOT ? sum[t] - min_sum[t]
                              : type == VT_Q5_K         ? x86_hsum(acc[t]) + min_sum[t]
                                                        : x86_hsum(acc[t]);
}

/* Q4_K in the repack_4 order (ggml_gemm_q4_K_8x8_q8_K): per 64 elements (sub-blocks 2c and 2c + 1) each row's
 * exact integer sum goes into its float at once, fmaf(sum, d * da, float), and the two sub-blocks' min terms into
 * a second, fmaf(m_2c bsum_2c + m_2c+1 bsum_2c+1, dmin * da, mins), which is taken off at the end. The float work
 * is done for the tile's rows at once: the integer sums (x86_hsum4_int) are transposed so that lane t holds row
 * t's, and each fmaf is lane t of one vector FMA. Done row by row, the reductions, conversions and the min terms
 * read back from the stack cost more than the products themselves (measured: the kernel ran twice as long). Lanes
 * T.. compute zeros and are not stored. */
VT_INLINE void X86_NAME(x86_q4_K_gemm4)(const int type, const int T, int64_t nb, const uint8_t *w, const uint8_t *act,
                                        int64_t act_stride, float *out, int64_t out_stride) {
    (void)type;
    __m256 sum = _mm256_setzero_ps(), min_sum = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *x = w + b * sizeof(block_q4_K);
        prefetch_weights(x, sizeof(block_q4_K));
        const float d = half_at(x + offsetof(block_q4_K, d)), dmin = half_at(x + offsetof(block_q4_K, dmin));
        __m256i scales, mins;
        X86_NAME(x86_q4_K_scales_mins)(x, &scales, &mins);
        const uint8_t *qs = x + offsetof(block_q4_K, qs);
        __m256i lo[4], hi[4];
        #pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            const __m256i q = x86_load(qs + 32 * c);
            lo[c] = _mm256_and_si256(q, _mm256_set1_epi8(0x0F));
            hi[c] = x86_bits(q, 4, 0x0F);
        }
        __m128i parts[8], min_parts[8]; /* row t: the 4 chunks' sums, and their min terms */
        float da[8];
        #pragma GCC unroll 8
        for (int t = 0; t < 8; t++) {
            if (t >= T) {
                parts[t] = min_parts[t] = _mm_setzero_si128();
                da[t] = 0.0f;
                continue;
            }
            const int8_t *y = (const int8_t *)ACT_ROW(t) + b * 256;
            __m256i p[4];
            #pragma GCC unroll 4
            for (int c = 0; c < 4; c++) {
                const int8_t *yc = y + 64 * c;
                const __m256i low = X86_SCALED_DOT(_mm256_setzero_si256(), lo[c], yc, x86_pick16(scales, 2 * c));
                p[c] = X86_SCALED_DOT(low, hi[c], yc + 32, x86_pick16(scales, 2 * c + 1));
            }
            parts[t] = x86_hsum4_int(p[0], p[1], p[2], p[3]);
            const int16_t *bsums = (const int16_t *)(ACT_D(t, 256) + nb) + b * 16;
            const __m256i msum = _mm256_madd_epi16(mins, x86_load(bsums)); /* per sub-block of 32 */
            min_parts[t] = _mm_hadd_epi32(_mm256_castsi256_si128(msum), _mm256_extracti128_si256(msum, 1));
            da[t] = ACT_D(t, 256)[b];
        }
        const __m256 da8 = _mm256_setr_ps(da[0], da[1], da[2], da[3], da[4], da[5], da[6], da[7]);
        const __m256 d8 = _mm256_mul_ps(_mm256_set1_ps(d), da8), dmin8 = _mm256_mul_ps(_mm256_set1_ps(dmin), da8);
        __m256i chunk[4], min_chunk[4]; /* chunk c of every row */
        x86_transpose4x8(parts, chunk);
        x86_transpose4x8(min_parts, min_chunk);
        #pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            sum = _mm256_fmadd_ps(_mm256_cvtepi32_ps(chunk[c]), d8, sum);
            min_sum = _mm256_fmadd_ps(_mm256_cvtepi32_ps(min_chunk[c]), dmin8, min_sum);
        }
    }
    x86_store_lanes(_mm256_sub_ps(sum, min_sum), T, out, out_stride);
}

/* Q2_K, Q3_K and Q6_K: 16 sub-blocks of 16, in groups of 32 elements that share a 32-byte vector. Q3_K and
 * Q6_K quants are signed (-4..3, -32..31): they are multiplied as unsigned (+4, +32) and offset * scale *
 * bsum is taken off; Q2_K's are unsigned with a min per sub-block. */
VT_INLINE void X86_NAME(x86_q236_K)(const int type, const int T, int64_t nb, const uint8_t *w, const uint8_t *act,
                                    int64_t act_stride, float *out, int64_t out_stride, const int order) {
    const int bytes = (int)(type == VT_Q2_K   ? sizeof(block_q2_K)
                            : type == VT_Q3_K ? sizeof(block_q3_K)
                                              : sizeof(block_q6_K));
    __m256 acc[TILE];
    __m256 sum8 = _mm256_setzero_ps(); /* the tiled order's floats (Q3_K, Q6_K): lane t for row t */
    #pragma GCC unroll 8
    for (int t = 0; t < T; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *x = w + b * bytes;
        prefetch_weights(x, bytes);
        float d;
        __m128i scales8; /* the 16 sub-block scales as bytes */
        __m256i sumi[TILE];
        if (type == VT_Q2_K) { /* scales[16]: scale | min << 4 */
            d = half_at(x + offsetof(block_q2_K, d));
            const float dmin = half_at(x + offsetof(block_q2_K, dmin));
            const __m128i packed = _mm_loadu_si128((const __m128i *)(x + offsetof(block_q2_K, scales)));
            scales8 = _mm_and_si128(packed, _mm_set1_epi8(0x0F));
            const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0F)));
            #pragma GCC unroll 8
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
                d = half_at(x + offsetof(block_q3_K, d));
                uint32_t s[3];
                memcpy(s, x + offsetof(block_q3_K, scales), sizeof s);
                const uint32_t k2 = 0x0f0f0f0f, k1 = 0x03030303;
                scales8 = _mm_sub_epi8(_mm_setr_epi32((int)((s[0] & k2) | ((s[2] & k1) << 4)),
                                                      (int)((s[1] & k2) | (((s[2] >> 2) & k1) << 4)),
                                                      (int)(((s[0] >> 4) & k2) | (((s[2] >> 4) & k1) << 4)),
                                                      (int)(((s[1] >> 4) & k2) | (((s[2] >> 6) & k1) << 4))),
                                       _mm_set1_epi8(32));
                offset = 2; /* log2(4) */
            } else { /* Q6_K: int8 scales[16] */
                d = half_at(x + offsetof(block_q6_K, d));
                scales8 = _mm_loadu_si128((const __m128i *)(x + offsetof(block_q6_K, scales)));
                offset = 5; /* log2(32) */
            }
            const __m256i scales16 = _mm256_cvtepi8_epi16(scales8);
            #pragma GCC unroll 8
            for (int t = 0; t < T; t++) { /* sumi = -offset * sum_s sc_s bsum_s */
                const int16_t *bsums = (const int16_t *)(ACT_D(t, 256) + nb) + b * 16;
                __m256i corr = _mm256_slli_epi32(_mm256_madd_epi16(scales16, x86_load(bsums)), offset);
                sumi[t] = _mm256_sub_epi32(_mm256_setzero_si256(), corr);
            }
        }
        const __m256i hmask = type == VT_Q3_K ? x86_load(x + offsetof(block_q3_K, hmask)) : _mm256_setzero_si256();
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
                #pragma GCC unroll 8
                for (int t = 0; t < T; t++) {
                    const int8_t *y = (const int8_t *)ACT_ROW(t) + b * 256 + 128 * h + 32 * j;
                    sumi[t] = X86_SCALED_DOT(sumi[t], q[j], y, sc);
                }
            }
        }
        if (order == VT_ORDER_TILED) { /* per row fmaf((float)sum * d, da, row's float), the 8 rows at once */
            __m256i rows[8];
            float da[8];
            #pragma GCC unroll 8
            for (int t = 0; t < 8; t++) {
                rows[t] = t < T ? sumi[t] : _mm256_setzero_si256();
                da[t] = t < T ? ACT_D(t, 256)[b] : 0.0f;
            }
            const __m256i sums = _mm256_inserti128_si256(
                _mm256_castsi128_si256(x86_hsum4_int(rows[0], rows[1], rows[2], rows[3])),
                x86_hsum4_int(rows[4], rows[5], rows[6], rows[7]), 1);
            const __m256 da8 = _mm256_setr_ps(da[0], da[1], da[2], da[3], da[4], da[5], da[6], da[7]);
            sum8 = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(d)), da8, sum8);
        } else {
            #pragma GCC unroll 8
            for (int t = 0; t < T; t++)
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * ACT_D(t, 256)[b]), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
        }
    }
    if (order == VT_ORDER_TILED) {
        x86_store_lanes(sum8, T, out, out_stride);
    } else {
        #pragma GCC unroll 8
        for (int t = 0; t < T; t++)
            out[t * out_stride] = x86_hsum(acc[t]);
    }
}

/* The bodies in each order they are used in (vt_order). */
#define X86_ORDERED(body, suffix, order)                                                                           \
    VT_INLINE void X86_NAME(body##suffix)(const int type, const int T, int64_t nb, const uint8_t *w,                 \
                                          const uint8_t *act, int64_t act_stride, float *out, int64_t out_stride) { \
        X86_NAME(body)(type, T, nb, w, act, act_stride, out, out_stride, order);                                   \
    }
X86_ORDERED(x86_dot32, _vec_dot, VT_ORDER_VEC_DOT)
X86_ORDERED(x86_dot32, _repack, VT_ORDER_REPACK)
X86_ORDERED(x86_q45_K, _vec_dot, VT_ORDER_VEC_DOT)
X86_ORDERED(x86_q45_K, _repack, VT_ORDER_REPACK)
X86_ORDERED(x86_q45_K, _tiled, VT_ORDER_TILED)
X86_ORDERED(x86_q236_K, _vec_dot, VT_ORDER_VEC_DOT)
X86_ORDERED(x86_q236_K, _tiled, VT_ORDER_TILED)
#undef X86_ORDERED

PAIR_KERNEL(X86_NAME(x86_q5_0_pair), X86_NAME(x86_pair_body), VT_Q5_0)
PAIR_KERNEL_ONE_ROW(X86_NAME(x86_q4_1_pair), X86_NAME(x86_pair_body), VT_Q4_1)
PAIR_KERNEL_ONE_ROW(X86_NAME(x86_q5_1_pair), X86_NAME(x86_pair_body), VT_Q5_1)
#if X86_FULL_BYTES /* unsigned bytes up to 255: VNNI's dpbusd, not maddubs */
PAIR_KERNEL(X86_NAME(x86_q8_0_pair), X86_NAME(x86_pair_body), VT_Q8_0)
#endif
TILE_KERNEL(X86_NAME(x86_q4_0), X86_NAME(x86_dot32_vec_dot), VT_Q4_0)
TILE_KERNEL(X86_NAME(x86_q4_1), X86_NAME(x86_dot32_vec_dot), VT_Q4_1)
TILE_KERNEL(X86_NAME(x86_q5_0), X86_NAME(x86_dot32_vec_dot), VT_Q5_0)
TILE_KERNEL(X86_NAME(x86_q5_1), X86_NAME(x86_dot32_vec_dot), VT_Q5_1)
TILE_KERNEL(X86_NAME(x86_q8_0), X86_NAME(x86_dot32_vec_dot), VT_Q8_0)
TILE_KERNEL(X86_NAME(x86_q2_K), X86_NAME(x86_q236_K_vec_dot), VT_Q2_K)
TILE_KERNEL(X86_NAME(x86_q3_K), X86_NAME(x86_q236_K_vec_dot), VT_Q3_K)
TILE_KERNEL(X86_NAME(x86_q4_K), X86_NAME(x86_q45_K_vec_dot), VT_Q4_K)
TILE_KERNEL(X86_NAME(x86_q5_K), X86_NAME(x86_q45_K_vec_dot), VT_Q5_K)
TILE_KERNEL(X86_NAME(x86_q6_K), X86_NAME(x86_q236_K_vec_dot), VT_Q6_K)
TILE_KERNEL(X86_NAME(x86_q4_0_repack), X86_NAME(x86_dot32_repack), VT_Q4_0)
TILE_KERNEL(X86_NAME(x86_q4_K_repack), X86_NAME(x86_q45_K_repack), VT_Q4_K)
TILE_KERNEL(X86_NAME(x86_q4_K_repack_4), X86_NAME(x86_q4_K_gemm4), VT_Q4_K)
TILE_KERNEL(X86_NAME(x86_q3_K_tiled), X86_NAME(x86_q236_K_tiled), VT_Q3_K)
TILE_KERNEL(X86_NAME(x86_q4_K_tiled), X86_NAME(x86_q45_K_tiled), VT_Q4_K)
TILE_KERNEL(X86_NAME(x86_q5_K_tiled), X86_NAME(x86_q45_K_tiled), VT_Q5_K)
TILE_KERNEL(X86_NAME(x86_q6_K_tiled), X86_NAME(x86_q236_K_tiled), VT_Q6_K)
