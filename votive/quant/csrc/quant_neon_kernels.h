/* quant_neon_kernels.h: the NEON block products, included by quant_neon.h once per way of summing int8
 * products: NEON_DOT(acc, a, b) adds the products of two int8x16 into int32x4 lanes, NEON_NAME(name) names this
 * copy's functions. Not a header to include anywhere else.
 *
 * Float terms per block are those of votive.quant.codecs.vec_dot (term32 and term256 in quant_kernels.c),
 * added in block order.
 */

VT_INLINE void NEON_NAME(neon_dot32)(const int type, const int T, int64_t nb, const uint8_t *w, const uint8_t *act,
                                     int64_t act_stride, float *out, int64_t out_stride) {
    const int bytes = vt_format(type)->block_bytes;
    float sum[TILE] = {0};
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *x = w + b * bytes;
        prefetch_weights(x, bytes);
        const float dx = half_at(x); /* every 32-element block starts with d */
        float mx = 0.0f;
        int8x16_t q0, q1; /* elements 0..15 and 16..31 */
        uint32_t qh;
        switch (type) {
        case VT_Q4_0: {
            uint8x16_t v = vld1q_u8(x + offsetof(block_q4_0, qs));
            q0 = vsubq_s8(neon_low4(v), vdupq_n_s8(8));
            q1 = vsubq_s8(neon_high4(v), vdupq_n_s8(8));
            break;
        }
        case VT_Q4_1: {
            mx = half_at(x + offsetof(block_q4_1, m));
            uint8x16_t v = vld1q_u8(x + offsetof(block_q4_1, qs));
            q0 = neon_low4(v);
            q1 = neon_high4(v);
            break;
        }
        case VT_Q5_0: {
            memcpy(&qh, x + offsetof(block_q5_0, qh), sizeof qh);
            uint8x16_t v = vld1q_u8(x + offsetof(block_q5_0, qs));
            q0 = vsubq_s8(vorrq_s8(neon_low4(v), neon_fifth_bits(qh, 0)), vdupq_n_s8(16));
            q1 = vsubq_s8(vorrq_s8(neon_high4(v), neon_fifth_bits(qh, 16)), vdupq_n_s8(16));
            break;
        }
        case VT_Q5_1: {
            mx = half_at(x + offsetof(block_q5_1, m));
            memcpy(&qh, x + offsetof(block_q5_1, qh), sizeof qh);
            uint8x16_t v = vld1q_u8(x + offsetof(block_q5_1, qs));
            q0 = vorrq_s8(neon_low4(v), neon_fifth_bits(qh, 0));
            q1 = vorrq_s8(neon_high4(v), neon_fifth_bits(qh, 16));
            break;
        }
        default: /* VT_Q8_0 */
            q0 = vld1q_s8((const int8_t *)(x + offsetof(block_q8_0, qs)));
            q1 = vld1q_s8((const int8_t *)(x + offsetof(block_q8_0, qs)) + 16);
        }
        for (int t = 0; t < T; t++) {
            const uint8_t *row = act + t * act_stride;
            const int8_t *y = (const int8_t *)row + b * 32;
            const float dy = ((const float *)(row + nb * 32))[b];
            const float sy = type == VT_Q4_1 || type == VT_Q5_1 ? ((const float *)(row + nb * 32))[nb + b] : 0.0f;
            int32x4_t lanes = NEON_DOT(NEON_DOT(vdupq_n_s32(0), q0, vld1q_s8(y)), q1, vld1q_s8(y + 16));
            sum[t] += term32(type, (float)vaddvq_s32(lanes), dx, mx, dy, sy);
        }
    }
    for (int t = 0; t < T; t++)
        out[t * out_stride] = sum[t];
}

VT_INLINE void NEON_NAME(neon_dot256)(const int type, const int T, int64_t nb, const uint8_t *w, const uint8_t *act,
                                      int64_t act_stride, float *out, int64_t out_stride) {
    const int bytes = vt_format(type)->block_bytes;
    float sum[TILE] = {0};
    for (int64_t b = 0; b < nb; b++) {
        struct neon_block256 u;
        prefetch_weights(w + b * bytes, bytes);
        neon_unpack256(type, w + b * bytes, &u);
        for (int t = 0; t < T; t++) {
            const uint8_t *row = act + t * act_stride;
            const int8_t *y = (const int8_t *)row + b * 256;
            const float *d = (const float *)(row + nb * 256);
            int32x4_t acc = vdupq_n_s32(0);
            for (int g = 0; g < 16; g++)
                acc = vmlaq_n_s32(acc, NEON_DOT(vdupq_n_s32(0), u.q[g], vld1q_s8(y + 16 * g)), u.sc[g]);
            const float msum = u.has_min ? (float)neon_min_sum(u.mn, (const int16_t *)(d + nb) + b * 16) : 0.0f;
            sum[t] += term256(u.has_min, (float)vaddvq_s32(acc), msum, u.d, u.dmin, d[b]);
        }
    }
    for (int t = 0; t < T; t++)
        out[t * out_stride] = sum[t];
}

TILE_KERNEL(NEON_NAME(neon_q4_0), NEON_NAME(neon_dot32), VT_Q4_0)
TILE_KERNEL(NEON_NAME(neon_q4_1), NEON_NAME(neon_dot32), VT_Q4_1)
TILE_KERNEL(NEON_NAME(neon_q5_0), NEON_NAME(neon_dot32), VT_Q5_0)
TILE_KERNEL(NEON_NAME(neon_q5_1), NEON_NAME(neon_dot32), VT_Q5_1)
TILE_KERNEL(NEON_NAME(neon_q8_0), NEON_NAME(neon_dot32), VT_Q8_0)
TILE_KERNEL(NEON_NAME(neon_q2_K), NEON_NAME(neon_dot256), VT_Q2_K)
TILE_KERNEL(NEON_NAME(neon_q3_K), NEON_NAME(neon_dot256), VT_Q3_K)
TILE_KERNEL(NEON_NAME(neon_q4_K), NEON_NAME(neon_dot256), VT_Q4_K)
TILE_KERNEL(NEON_NAME(neon_q5_K), NEON_NAME(neon_dot256), VT_Q5_K)
TILE_KERNEL(NEON_NAME(neon_q6_K), NEON_NAME(neon_dot256), VT_Q6_K)
