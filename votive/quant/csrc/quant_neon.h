/* quant_neon.h: the block products of quant_kernels.c with NEON integer instructions (the arm64 build).
 *
 * Weight quants are decoded to signed int8 vectors of 16 (every format's quants fit: at most -32..31 after
 * their offset, or 0..63 unsigned; Q8_0's -128..127), multiplied with the activations' int8 quants and summed
 * into int32 by NEON_DOT, then added across lanes per block. Each block's float term is then computed as
 * votive.quant.codecs.vec_dot writes it and added in block order, so these kernels agree with it bit for
 * bit, as the plain C ones do: on arm64 the integer work dominates, and horizontal adds are one instruction.
 *
 * The kernels are compiled twice: with the dot-product extension (sdot: 4 int8 products summed into each
 * int32 lane; FEAT_DotProd, optional from Armv8.2, so that copy targets Armv8.2; present on Graviton 2 and
 * later, Apple M1, Cortex-A55/A76 and later), and with vmull / vpadal for the rest. kernel_for picks at
 * run time from getauxval(AT_HWCAP).
 */
#include <sys/auxv.h>

#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20) /* linux/arch/arm64/include/uapi/asm/hwcap.h */
#endif

/* The low or high nibbles of 16 bytes, as int8. */
static inline int8x16_t neon_low4(uint8x16_t v) { return vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F))); }
static inline int8x16_t neon_high4(uint8x16_t v) { return vreinterpretq_s8_u8(vshrq_n_u8(v, 4)); }

/* Bits 2k..2k+1 (mask 3) or bit k (mask 1) of 16 bytes, shifted left by `up`. */
static inline int8x16_t neon_bits(uint8x16_t v, int shift, int mask, int up) {
    uint8x16_t b = vandq_u8(vshlq_u8(v, vdupq_n_s8((int8_t)-shift)), vdupq_n_u8((uint8_t)mask));
    return vreinterpretq_s8_u8(vshlq_u8(b, vdupq_n_s8((int8_t)up)));
}

/* 16 bytes holding 0x10 where bit `first + i` of qh is set (the fifth bits of Q5_0 and Q5_1). */
static inline int8x16_t neon_fifth_bits(uint32_t qh, int first) {
    static const uint8_t bit_of_byte[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    uint8x16_t spread = vcombine_u8(vdup_n_u8((uint8_t)(qh >> first)), vdup_n_u8((uint8_t)(qh >> (first + 8))));
    return vreinterpretq_s8_u8(vandq_u8(vtstq_u8(spread, vld1q_u8(bit_of_byte)), vdupq_n_u8(0x10)));
}

/* Sums of int8 products into int32 lanes: the grouping of products into lanes differs between the two, but
 * only lane totals are used. */
static inline int32x4_t neon_dot_mull(int32x4_t acc, int8x16_t a, int8x16_t b) {
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    return vpadalq_s16(acc, vmull_high_s8(a, b));
}

__attribute__((target("arch=armv8.2-a+dotprod"))) static inline int32x4_t neon_dot_sdot(int32x4_t acc, int8x16_t a, int8x16_t b) {
    return vdotq_s32(acc, a, b);
}

/* A weight super-block of a K-quant as 16 vectors of 16 quants, each with its scale and min. */
struct neon_block256 {
    float d, dmin;
    int has_min;
    int16_t sc[16], mn[16];
    int8x16_t q[16];
};

static inline void neon_unpack256(int type, const uint8_t *x, struct neon_block256 *u) {
    switch (type) {
    case VT_Q2_K: {
        const uint8_t *scales = x + offsetof(block_q2_K, scales);
        for (int i = 0; i < 16; i++) {
            u->sc[i] = scales[i] & 0x0F;
            u->mn[i] = scales[i] >> 4;
        }
        for (int h = 0; h < 2; h++) {
            uint8x16_t v0 = vld1q_u8(x + 16 + 32 * h), v1 = vld1q_u8(x + 32 + 32 * h);
            for (int j = 0; j < 4; j++) {
                u->q[8 * h + 2 * j] = neon_bits(v0, 2 * j, 3, 0);
                u->q[8 * h + 2 * j + 1] = neon_bits(v1, 2 * j, 3, 0);
            }
        }
        u->d = half_at(x + offsetof(block_q2_K, d));
        u->dmin = half_at(x + offsetof(block_q2_K, dmin));
        u->has_min = 1;
        break;
    }
    case VT_Q3_K: {
        scales_q3_K(x + offsetof(block_q3_K, scales), u->sc);
        const uint8_t *hmask = x + offsetof(block_q3_K, hmask);
        const uint8x16_t m0 = vld1q_u8(hmask), m1 = vld1q_u8(hmask + 16);
        for (int h = 0; h < 2; h++) {
            uint8x16_t v0 = vld1q_u8(x + 32 + 32 * h), v1 = vld1q_u8(x + 48 + 32 * h);
            for (int j = 0; j < 4; j++) { /* 2 low bits + 4 * high bit - 4 */
                int8x16_t four = vdupq_n_s8(4);
                u->q[8 * h + 2 * j] = vsubq_s8(vorrq_s8(neon_bits(v0, 2 * j, 3, 0), neon_bits(m0, 4 * h + j, 1, 2)), four);
                u->q[8 * h + 2 * j + 1] =
                    vsubq_s8(vorrq_s8(neon_bits(v1, 2 * j, 3, 0), neon_bits(m1, 4 * h + j, 1, 2)), four);
            }
        }
        u->d = half_at(x + offsetof(block_q3_K, d));
        u->dmin = 0.0f;
        u->has_min = 0;
        break;
    }
    case VT_Q4_K:
    case VT_Q5_K: {
        u->d = half_at(x + offsetof(block_q4_K, d));
        u->dmin = half_at(x + offsetof(block_q4_K, dmin));
        u->has_min = 1;
        scale_min_k4(x + offsetof(block_q4_K, scales), u->sc, u->mn);
        const uint8_t *qs = x + (type == VT_Q4_K ? offsetof(block_q4_K, qs) : offsetof(block_q5_K, qs));
        const uint8_t *qh = x + offsetof(block_q5_K, qh);
        const uint8x16_t h0 = vld1q_u8(qh), h1 = vld1q_u8(qh + 16);
        for (int c = 0; c < 4; c++) { /* sub-block 2c: low nibbles of 32 bytes, 2c + 1: their high nibbles */
            uint8x16_t v0 = vld1q_u8(qs + 32 * c), v1 = vld1q_u8(qs + 32 * c + 16);
            int8x16_t lo0 = neon_low4(v0), lo1 = neon_low4(v1), hi0 = neon_high4(v0), hi1 = neon_high4(v1);
            if (type == VT_Q5_K) {
                lo0 = vorrq_s8(lo0, neon_bits(h0, 2 * c, 1, 4));
                lo1 = vorrq_s8(lo1, neon_bits(h1, 2 * c, 1, 4));
                hi0 = vorrq_s8(hi0, neon_bits(h0, 2 * c + 1, 1, 4));
                hi1 = vorrq_s8(hi1, neon_bits(h1, 2 * c + 1, 1, 4));
            }
            u->q[4 * c] = lo0;
            u->q[4 * c + 1] = lo1;
            u->q[4 * c + 2] = hi0;
            u->q[4 * c + 3] = hi1;
        }
        break;
    }
    default: { /* VT_Q6_K */
        const int scales = offsetof(block_q6_K, scales); /* an int, as the index */
        for (int i = 0; i < 16; i++)
            u->sc[i] = (int8_t)x[scales + i];
        const int8x16_t offset = vdupq_n_s8(32);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = x + 64 * h, *qh = x + 128 + 32 * h;
            for (int half = 0; half < 2; half++) { /* l in 0..15, then 16..31 */
                uint8x16_t a = vld1q_u8(ql + 16 * half), b = vld1q_u8(ql + 32 + 16 * half);
                uint8x16_t c = vld1q_u8(qh + 16 * half);
                int8x16_t *q = u->q + 8 * h + half;
                q[0] = vsubq_s8(vorrq_s8(neon_low4(a), neon_bits(c, 0, 3, 4)), offset);
                q[2] = vsubq_s8(vorrq_s8(neon_low4(b), neon_bits(c, 2, 3, 4)), offset);
                q[4] = vsubq_s8(vorrq_s8(neon_high4(a), neon_bits(c, 4, 3, 4)), offset);
                q[6] = vsubq_s8(vorrq_s8(neon_high4(b), neon_bits(c, 6, 3, 4)), offset);
            }
        }
        u->d = half_at(x + offsetof(block_q6_K, d));
        u->dmin = 0.0f;
        u->has_min = 0;
    }
    }
}

/* sum over 16 groups of mn[g] * bsums[g] */
static inline int32_t neon_min_sum(const int16_t *mn, const int16_t *bsums) {
    int32x4_t acc = vmull_s16(vld1_s16(mn), vld1_s16(bsums));
    acc = vmlal_s16(acc, vld1_s16(mn + 4), vld1_s16(bsums + 4));
    acc = vmlal_s16(acc, vld1_s16(mn + 8), vld1_s16(bsums + 8));
    acc = vmlal_s16(acc, vld1_s16(mn + 12), vld1_s16(bsums + 12));
    return vaddvq_s32(acc);
}

#define NEON_DOT neon_dot_mull
#define NEON_NAME(name) name##_mull
#include "quant_neon_kernels.h"
#undef NEON_DOT
#undef NEON_NAME

#pragma GCC push_options
#pragma GCC target("arch=armv8.2-a+dotprod")
#define NEON_DOT neon_dot_sdot
#define NEON_NAME(name) name##_sdot
#include "quant_neon_kernels.h"
#undef NEON_DOT
#undef NEON_NAME
#pragma GCC pop_options

static int neon_dotprod_state = -1;  /* -1 until first asked, then whether the CPU has sdot */
static int neon_dotprod_allowed = 1; /* cleared by set_dot_isa("neon"), to test the vmull kernels */

static int neon_has_dotprod(void) {
    int state = __atomic_load_n(&neon_dotprod_state, __ATOMIC_RELAXED);
    if (state < 0) {
        state = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
        __atomic_store_n(&neon_dotprod_state, state, __ATOMIC_RELAXED);
    }
    return state;
}

static int neon_use_dotprod(void) {
    return neon_has_dotprod() && __atomic_load_n(&neon_dotprod_allowed, __ATOMIC_RELAXED);
}

#define NEON_MULL(format) neon_##format##_mull
#define NEON_SDOT(format) neon_##format##_sdot
static const tile_fn neon_mull_kernels[N_KERNELS] = KERNEL_TABLE(NEON_MULL);
static const tile_fn neon_sdot_kernels[N_KERNELS] = KERNEL_TABLE(NEON_SDOT);

static tile_fn kernel_for(int type, int order) {
    (void)order; /* llama.cpp's arm64 orders (its NEON repacks) are not followed */
    return (neon_use_dotprod() ? neon_sdot_kernels : neon_mull_kernels)[type];
}

static pair_fn pair_kernel_for(int type, int order, int64_t n) { /* one weight row at a time */
    (void)type, (void)order, (void)n;
    return NULL;
}

static const char *dot_isa(void) { return neon_use_dotprod() ? "neon+dotprod" : "neon"; }

static int set_dot_isa(const char *name) {
    if (strcmp(name, "neon") == 0)
        __atomic_store_n(&neon_dotprod_allowed, 0, __ATOMIC_RELAXED);
    else if (strcmp(name, "neon+dotprod") == 0 && neon_has_dotprod())
        __atomic_store_n(&neon_dotprod_allowed, 1, __ATOMIC_RELAXED);
    else
        return VT_EUNSUPPORTED;
    return VT_OK;
}
