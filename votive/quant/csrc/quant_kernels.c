/* quant_kernels.c: GGML-quantized weight matrices times float activations, and row gathers (embeddings).
 *
 * Compiled once per ISA like nn_kernels.c; dispatch.c checks arguments, quantizes the activations and splits
 * weight rows over threads. Each product works on the stored blocks directly, as ggml's CPU backend does:
 * the activation rows are quantized once per call (and format) to int8 blocks (Q8_0, Q8_1 or Q8_K, see
 * vt_internal.h for our layout), and each weight block is multiplied with them in integers, scaled and summed
 * in float32.
 *
 * Three implementations of the block products, one of which a build uses:
 *   quant_x86.h   AVX2 (maddubs / madd, or AVX-VNNI / AVX512-VNNI dpbusd where the CPU has it),
 *                 for the avx2 and avx512 builds;
 *   quant_neon.h  NEON (sdot where the CPU has it, vmull otherwise), for arm64;
 *   below         plain C, for the sse2 and generic builds: the portable path.
 * The plain C and NEON kernels follow the float order of votive.quant.codecs.vec_dot (a term per block,
 * computed as there, summed in block order), so they agree with it bit for bit. The x86 kernels follow the
 * orders of llama.cpp's x86 CPU backend (enum vt_order in vt_internal.h, chosen per product by dispatch.c):
 * to float32 rounding the same sum, and bit for bit what llama.cpp computes, so that decoders give its logits.
 *
 * Tiling: a matrix product walks weight rows in groups of ROW_GROUP, and for each group the activation rows
 * in tiles of up to TILE: each weight block is decoded once per tile and multiplied with every row of the
 * tile, while the group's weight rows and the tile stay in L1. Every output is computed with the same
 * instructions whatever the tile size; within one order, a row of a matrix product equals the matrix-vector
 * product of that row, bit for bit (the orders themselves change with the number of rows, as llama.cpp's do).
 *
 * Built with -ffp-contract=off (kernel_build.py): the quantizers must round as ggml's reference C does, and
 * the SIMD code writes its fused multiply-adds explicitly.
 */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ggml_block_structs.h"
#include "half.h"
#include "simd.h"
#include "vt_internal.h"

#if defined(VT_ISA_AVX2) || defined(VT_ISA_AVX512)
#define VT_QUANT_X86 1
#include <immintrin.h>
#elif defined(__aarch64__)
#define VT_QUANT_NEON 1
#include <arm_neon.h>
#endif

#define VT_INLINE static inline __attribute__((always_inline))

/* activation rows per decoded weight block: 8 where AVX-512's 32 vector registers hold a tile's accumulators and
 * scales (a weight block's decode and a kernel call's set-up then serve twice the rows), 4 elsewhere */
#if defined(VT_ISA_AVX512)
#define TILE 8
#else
#define TILE 4
#endif
#define ROW_GROUP 16 /* weight rows per pass over a tile of activation rows */

/* Weights stream from memory once per product. Some machines' hardware prefetchers do not run far enough ahead
 * of a stream (measured on a KVM guest: matrix-vector products from DRAM at a third of the read bandwidth), so
 * each kernel asks for the weights PREFETCH_AHEAD bytes beyond the block it works on, into L2 (locality 2):
 * L2 keeps more misses in flight than L1's fill buffers. 4 KB ahead did best there (2 KB into L1: 10% less on
 * a decoder's sequence of products); a prefetch never faults, past the end of the matrix included. */
#define PREFETCH_AHEAD 4096
#define PREFETCH_LOCALITY 2

static inline void prefetch_weights(const uint8_t *x, int bytes) {
    for (int offset = 0; offset < bytes; offset += 64)
        __builtin_prefetch(x + PREFETCH_AHEAD + offset, 0, PREFETCH_LOCALITY);
}

static inline float half_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return f16_to_f32(h);
}

/* ---- activations: float rows -> Q8_0, Q8_1 or Q8_K in our layout (vt_internal.h) ------------------------ */

static inline vi v_select_int(vi mask, vi a, int b) { return (mask & a) | (~mask & b); }

/* The quantizers work a vector of VT_LANES floats at a time (simd.h); VT_LANES divides 16. */
typedef int8_t vq __attribute__((vector_size(VT_LANES)));

static inline void store_int8(int8_t *dst, vi v) {
    vq narrow = __builtin_convertvector(v, vq);
    memcpy(dst, &narrow, sizeof narrow);
}

static inline int hsum_int(vi v) {
    int32_t lanes[VT_LANES];
    memcpy(lanes, &v, sizeof lanes);
    int sum = 0;
    for (int i = 0; i < VT_LANES; i++)
        sum += lanes[i];
    return sum;
}

/* max |x| over n floats (a multiple of VT_LANES), and whether all are finite (not inf, not NaN) */
static inline float abs_max(const float *x, int n, int *finite) {
    vf amax = v_splat(0.0f);
    vi bad = {0};
    for (int i = 0; i < n; i += VT_LANES) {
        vf a = v_abs(v_load(x + i));
        amax = v_max(a, amax);
        bad |= ~(a <= FLT_MAX); /* true for inf and NaN */
    }
    *finite = hsum_int(bad) == 0;
    return v_hmax(amax);
}

/* ggml's nearest_int: round to nearest even through the float adder (v + 1.5 * 2^23); |v| < 2^22. */
static inline vi nearest_int(vf v) {
    vi bits = (vi)(v + 12582912.0f);
    return (bits & 0x007fffff) - 0x00400000;
}

/* Q8_0 and Q8_1 per 32 elements as ggml's x86 code: d = max|x| / 127, q = x * (127 / max|x|) rounded half to
 * even (its reference C, for weights, rounds x * (1 / d) half away: activations follow the code llama.cpp runs);
 * Q8_1's s from the float32 d, as ggml computes it, and Q8_0's Q5_0 offsets (vt_internal.h). */
static void quantize_row_q8_32(const float *x, int64_t nb, uint8_t *row, int q8_1) {
    int8_t *q = (int8_t *)row;
    float *d = (float *)(row + nb * 32), *s = q8_1 ? d + nb : NULL;
    for (int64_t b = 0; b < nb; b++) {
        const float *xb = x + b * 32;
        int finite;
        float amax = abs_max(xb, 32, &finite);
        if (!finite) {
            memset(q + b * 32, 0, 32);
            d[b] = NAN;
            if (s)
                s[b] = NAN;
            continue;
        }
        float db = amax / 127.0f;
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        vi sum = {0};
        for (int i = 0; i < 32; i += VT_LANES) {
            vi v = nearest_int(v_load(xb + i) * id);
            store_int8(q + b * 32 + i, v);
            sum += v;
        }
        d[b] = f16_to_f32(f32_to_f16(db));
        if (s)
            s[b] = f16_to_f32(f32_to_f16((float)hsum_int(sum) * db));
    }
    if (q8_1)
        return;
    int32_t *offsets = (int32_t *)(row + vt_q5_0_offsets_at(nb)); /* a NaN block's quants are 0, and its offsets */
    for (int64_t i = 0; i < nb * 8; i++)
        offsets[i] = -16 * (q[4 * i] + q[4 * i + 1] + q[4 * i + 2] + q[4 * i + 3]);
}

/* Q8_K per 256 elements: the value of largest magnitude (the first of equals) maps to -127, as ggml's
 * quantize_row_q8_K_ref does; bsums are sums of 16 quants. */
static void quantize_row_q8_K(const float *x, int64_t nb, uint8_t *row) {
    int8_t *q = (int8_t *)row;
    float *d = (float *)(row + nb * 256);
    int16_t *bsums = (int16_t *)(d + nb);
    for (int64_t b = 0; b < nb; b++) {
        const float *xb = x + b * 256;
        int8_t *qb = q + b * 256;
        int finite;
        float amax = abs_max(xb, 256, &finite);
        if (!finite || amax == 0.0f) {
            memset(qb, 0, 256);
            memset(bsums + b * 16, 0, 32);
            d[b] = finite ? 0.0f : NAN;
            continue;
        }
        int first = 0;
        while (fabsf(xb[first]) != amax)
            first++;
        float iscale = -127.0f / xb[first];
        for (int g = 0; g < 16; g++) {
            vi sum = {0};
            for (int i = 16 * g; i < 16 * g + 16; i += VT_LANES) {
                vi v = nearest_int(v_load(xb + i) * iscale);
                v = v_select_int(v < 127, v, 127);
                store_int8(qb + i, v);
                sum += v;
            }
            bsums[b * 16 + g] = (int16_t)hsum_int(sum);
        }
        d[b] = 1.0f / iscale;
    }
}

static void quantize_rows(int act_type, const float *x, int64_t rows, int64_t cols, uint8_t *act,
                          int64_t act_stride) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        uint8_t *row = act + r * act_stride;
        if (act_type == VT_Q8_K)
            quantize_row_q8_K(xr, cols / 256, row);
        else
            quantize_row_q8_32(xr, cols / 32, row, act_type == VT_Q8_1);
    }
}

/* ---- weight blocks as integers (plain C): the portable kernels and the dequantizers use these ---------- */

/* A 32-element block: x[i] = d * q[i] (+ m for Q4_1 and Q5_1). */
struct block32 {
    float d, m;
    int8_t q[32];
};

static inline void unpack_nibbles(const uint8_t *qs, int offset, int8_t *q) {
    /* element j is the low nibble of byte j, element j + 16 its high nibble */
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)((qs[j] & 0x0F) - offset);
        q[j + 16] = (int8_t)((qs[j] >> 4) - offset);
    }
}

static inline void unpack_fifth_bits(const uint8_t *qh_bytes, int8_t *q) {
    uint32_t qh;
    memcpy(&qh, qh_bytes, sizeof qh);
    for (int j = 0; j < 32; j++)
        q[j] = (int8_t)(q[j] + (((qh >> j) & 1) << 4)); /* bit j of qh is the fifth bit of element j */
}

/* unpack32 and the SIMD kernels read d at the start of any 32-element block, and Q4_1's and Q5_1's m alike. */
_Static_assert(offsetof(block_q4_0, d) == 0 && offsetof(block_q4_1, d) == 0 && offsetof(block_q5_0, d) == 0 &&
                   offsetof(block_q5_1, d) == 0 && offsetof(block_q8_0, d) == 0,
               "every 32-element block starts with its d");
_Static_assert(offsetof(block_q4_1, m) == offsetof(block_q5_1, m), "Q4_1 and Q5_1 keep m at the same byte");

static inline void unpack32(int type, const uint8_t *b, struct block32 *u) {
    u->d = half_at(b);
    u->m = 0.0f;
    switch (type) {
    case VT_Q4_0: /* q - 8 */
        unpack_nibbles(b + offsetof(block_q4_0, qs), 8, u->q);
        break;
    case VT_Q4_1:
        u->m = half_at(b + offsetof(block_q4_1, m));
        unpack_nibbles(b + offsetof(block_q4_1, qs), 0, u->q);
        break;
    case VT_Q5_0: /* q - 16 */
        unpack_nibbles(b + offsetof(block_q5_0, qs), 0, u->q);
        unpack_fifth_bits(b + offsetof(block_q5_0, qh), u->q);
        for (int j = 0; j < 32; j++)
            u->q[j] = (int8_t)(u->q[j] - 16);
        break;
    case VT_Q5_1:
        u->m = half_at(b + offsetof(block_q5_1, m));
        unpack_nibbles(b + offsetof(block_q5_1, qs), 0, u->q);
        unpack_fifth_bits(b + offsetof(block_q5_1, qh), u->q);
        break;
    default: /* VT_Q8_0 */
        memcpy(u->q, b + offsetof(block_q8_0, qs), sizeof u->q);
    }
}

/* A 256-element K-quant super-block: x[i] = d * sc[i / 16] * q[i] - dmin * mn[i / 16]. Scales and mins are
 * given per 16 elements (Q4_K and Q5_K's 32-element ones twice), so one loop serves every K format. */
struct block256 {
    float d, dmin;
    int has_min;
    int16_t sc[16], mn[16];
    int8_t q[256];
};

/* Q4_K and Q5_K's eight 6-bit scales and mins, packed in 12 bytes (ggml's get_scale_min_k4). */
static inline void scale_min_k4(const uint8_t *s, int16_t *sc, int16_t *mn) {
    for (int j = 0; j < 8; j++) {
        int scale, min;
        if (j < 4) {
            scale = s[j] & 63;
            min = s[j + 4] & 63;
        } else {
            scale = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
            min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        }
        sc[2 * j] = sc[2 * j + 1] = (int16_t)scale;
        mn[2 * j] = mn[2 * j + 1] = (int16_t)min;
    }
}

/* Q3_K's sixteen 6-bit scales (minus 32), packed in 12 bytes: scale i has its low 4 bits in byte i (i < 8)
 * or the high nibble of byte i - 8, and its high 2 bits at bit 2 * (i / 4) of byte 8 + i % 4. */
static inline void scales_q3_K(const uint8_t *s, int16_t *sc) {
    for (int i = 0; i < 16; i++) {
        int low = i < 8 ? s[i] & 0x0F : s[i - 8] >> 4;
        int high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        sc[i] = (int16_t)((low | (high << 4)) - 32);
    }
}

/* Q4_K and Q5_K share their first fields, which the kernels read the same way for both. */
_Static_assert(offsetof(block_q4_K, d) == offsetof(block_q5_K, d) &&
                   offsetof(block_q4_K, dmin) == offsetof(block_q5_K, dmin) &&
                   offsetof(block_q4_K, scales) == offsetof(block_q5_K, scales),
               "Q4_K and Q5_K keep d, dmin and scales at the same bytes");

static inline void unpack256(int type, const uint8_t *b, struct block256 *u) {
    switch (type) {
    case VT_Q2_K: { /* scales: 4-bit scale | 4-bit min << 4 */
        const int scales = offsetof(block_q2_K, scales), qs = offsetof(block_q2_K, qs); /* ints, as the indices */
        for (int i = 0; i < 16; i++) {
            u->sc[i] = b[scales + i] & 0x0F;
            u->mn[i] = b[scales + i] >> 4;
        }
        for (int h = 0; h < 2; h++) /* element 128h + 32j + l: bits 2j..2j+1 of qs[32h + l] */
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < 32; l++)
                    u->q[128 * h + 32 * j + l] = (int8_t)((b[qs + 32 * h + l] >> (2 * j)) & 3);
        u->d = half_at(b + offsetof(block_q2_K, d));
        u->dmin = half_at(b + offsetof(block_q2_K, dmin));
        u->has_min = 1;
        break;
    }
    case VT_Q3_K: { /* q = 2 low bits - (high bit clear ? 4 : 0) */
        const int hmask = offsetof(block_q3_K, hmask), qs = offsetof(block_q3_K, qs); /* ints, as the indices */
        scales_q3_K(b + offsetof(block_q3_K, scales), u->sc);
        for (int h = 0; h < 2; h++)
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < 32; l++) {
                    int low = (b[qs + 32 * h + l] >> (2 * j)) & 3;
                    int high = (b[hmask + l] >> (4 * h + j)) & 1;
                    u->q[128 * h + 32 * j + l] = (int8_t)(low - (high ? 0 : 4));
                }
        u->d = half_at(b + offsetof(block_q3_K, d));
        u->dmin = 0.0f;
        u->has_min = 0;
        break;
    }
    case VT_Q4_K: /* qs: 64 elements per 32 bytes, low nibbles first */
    case VT_Q5_K: /* and qh: the fifth bit of sub-block j is bit j of qh */
        u->d = half_at(b + offsetof(block_q4_K, d));
        u->dmin = half_at(b + offsetof(block_q4_K, dmin));
        u->has_min = 1;
        scale_min_k4(b + offsetof(block_q4_K, scales), u->sc, u->mn);
        {
            const uint8_t *qs = b + (type == VT_Q4_K ? offsetof(block_q4_K, qs) : offsetof(block_q5_K, qs));
            const uint8_t *qh = b + offsetof(block_q5_K, qh);
            for (int c = 0; c < 4; c++)
                for (int l = 0; l < 32; l++) {
                    int lo = qs[32 * c + l] & 0x0F, hi = qs[32 * c + l] >> 4;
                    if (type == VT_Q5_K) {
                        lo |= ((qh[l] >> (2 * c)) & 1) << 4;
                        hi |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
                    }
                    u->q[64 * c + l] = (int8_t)lo;
                    u->q[64 * c + 32 + l] = (int8_t)hi;
                }
        }
        break;
    default: { /* VT_Q6_K: q = 4 low bits + 2 high bits - 32 */
        const int scales = offsetof(block_q6_K, scales); /* an int, as the index */
        for (int i = 0; i < 16; i++)
            u->sc[i] = (int8_t)b[scales + i];
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b + offsetof(block_q6_K, ql) + 64 * h, *qh = b + offsetof(block_q6_K, qh) + 32 * h;
            int8_t *q = u->q + 128 * h;
            for (int l = 0; l < 32; l++) {
                q[l] = (int8_t)(((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32);
                q[l + 32] = (int8_t)(((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32);
                q[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                q[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
            }
        }
        u->d = half_at(b + offsetof(block_q6_K, d));
        u->dmin = 0.0f;
        u->has_min = 0;
    }
    }
}

/* ---- dequantization (get_rows), exactly as ggml's dequantize_row_* ------------------------------------ */

static void dequantize_row(int type, const uint8_t *row, float *out, int64_t cols) {
    const struct vt_format *f = vt_format(type);
    int64_t nb = cols / f->block_elems;
    switch (type) {
    case VT_F32:
        memcpy(out, row, (size_t)cols * sizeof *out);
        return;
    case VT_F16:
        for (int64_t i = 0; i < cols; i++)
            out[i] = half_at(row + 2 * i);
        return;
    case VT_BF16: /* the top half of a float32 */
        for (int64_t i = 0; i < cols; i++) {
            uint16_t h;
            memcpy(&h, row + 2 * i, sizeof h);
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&out[i], &bits, sizeof bits);
        }
        return;
    case VT_Q4_0:
    case VT_Q4_1:
    case VT_Q5_0:
    case VT_Q5_1:
    case VT_Q8_0:
        for (int64_t b = 0; b < nb; b++) {
            struct block32 u;
            unpack32(type, row + b * f->block_bytes, &u);
            /* q * d is exact (11 x 8 bits): only + m rounds. No + 0 without a min: 0 * -d must stay -0. */
            if (type == VT_Q4_1 || type == VT_Q5_1)
                for (int i = 0; i < 32; i++)
                    out[b * 32 + i] = (float)u.q[i] * u.d + u.m;
            else
                for (int i = 0; i < 32; i++)
                    out[b * 32 + i] = (float)u.q[i] * u.d;
        }
        return;
    default: /* K-quants: (d * sc) * q - dmin * m; d * sc and its product with q are exact */
        for (int64_t b = 0; b < nb; b++) {
            struct block256 u;
            unpack256(type, row + b * f->block_bytes, &u);
            for (int g = 0; g < 16; g++) {
                float dl = u.d * (float)u.sc[g], ml = u.dmin * (float)u.mn[g];
                for (int i = 0; i < 16; i++) {
                    float v = dl * (float)u.q[g * 16 + i];
                    out[b * 256 + g * 16 + i] = u.has_min ? v - ml : v;
                }
            }
        }
    }
}

/* ---- block products in plain C: the float order of votive.quant.codecs.vec_dot ----------------------- */

/* A 32-element block's float term from its integer dot sumi, the weight's d (and m) and the activation's d
 * (and Q8_1's s): ggml_vec_dot_*_generic's expressions, which quants.vec_dot mirrors. */
static inline float term32(int type, float sumi, float dx, float mx, float dy, float sy) {
    switch (type) {
    case VT_Q4_0:
        return (sumi * dx) * dy;
    case VT_Q4_1:
    case VT_Q5_1:
        return (dx * dy) * sumi + mx * sy;
    case VT_Q5_0:
        return (dx * dy) * sumi;
    default: /* VT_Q8_0 */
        return sumi * (dx * dy);
    }
}

/* A K-quant super-block's: isum = sum of scale x sub-block dot, msum = sum of min x activation sum. */
static inline float term256(int has_min, float isum, float msum, float d, float dmin, float dy) {
    float term = (d * dy) * isum;
    return has_min ? term - (dmin * dy) * msum : term;
}

/* One weight row times `tile` activation rows (act, act + act_stride, ...) -> out[t * out_stride]. */
VT_INLINE void plain_dot32(int type, int tile, int64_t nb, const uint8_t *w, const uint8_t *act,
                           int64_t act_stride, float *out, int64_t out_stride) {
    const int bytes = vt_format(type)->block_bytes;
    float sum[TILE] = {0};
    for (int64_t b = 0; b < nb; b++) {
        struct block32 u;
        prefetch_weights(w + b * bytes, bytes);
        unpack32(type, w + b * bytes, &u);
        for (int t = 0; t < tile; t++) {
            const uint8_t *row = act + t * act_stride;
            const int8_t *qy = (const int8_t *)row + b * 32;
            const float dy = ((const float *)(row + nb * 32))[b];
            const float sy = type == VT_Q4_1 || type == VT_Q5_1 ? ((const float *)(row + nb * 32))[nb + b] : 0.0f;
            int sumi = 0;
            for (int i = 0; i < 32; i++)
                sumi += u.q[i] * qy[i];
            sum[t] += term32(type, (float)sumi, u.d, u.m, dy, sy);
        }
    }
    for (int t = 0; t < tile; t++)
        out[t * out_stride] = sum[t];
}

VT_INLINE void plain_dot256(int type, int tile, int64_t nb, const uint8_t *w, const uint8_t *act,
                            int64_t act_stride, float *out, int64_t out_stride) {
    const int bytes = vt_format(type)->block_bytes;
    float sum[TILE] = {0};
    for (int64_t b = 0; b < nb; b++) {
        struct block256 u;
        prefetch_weights(w + b * bytes, bytes);
        unpack256(type, w + b * bytes, &u);
        for (int t = 0; t < tile; t++) {
            const uint8_t *row = act + t * act_stride;
            const int8_t *qy = (const int8_t *)row + b * 256;
            const float dy = ((const float *)(row + nb * 256))[b];
            const int16_t *bsums = (const int16_t *)((const float *)(row + nb * 256) + nb) + b * 16;
            int32_t isum = 0, msum = 0;
            for (int g = 0; g < 16; g++) {
                int dot = 0;
                for (int i = 0; i < 16; i++)
                    dot += u.q[g * 16 + i] * qy[g * 16 + i];
                isum += u.sc[g] * dot;
                msum += u.mn[g] * bsums[g];
            }
            sum[t] += term256(u.has_min, (float)isum, (float)msum, u.d, u.dmin, dy);
        }
    }
    for (int t = 0; t < tile; t++)
        out[t * out_stride] = sum[t];
}

/* ---- kernels, tables, the row loop ------------------------------------------------------------------- */

/* A kernel: one weight row (nb blocks at w) times `tile` (1..TILE) activation rows -> out[t * out_stride]. */
typedef void (*tile_fn)(int tile, int64_t nb, const uint8_t *w, const uint8_t *act, int64_t act_stride,
                        float *out, int64_t out_stride);

/* A tile_fn from an always-inline body(type, T, ...), inlined once per tile size so that T is a constant. */
#define TILE_KERNEL(name, body, type)                                                                              \
    static void name(int tile, int64_t nb, const uint8_t *w, const uint8_t *act, int64_t act_stride, float *out,    \
                     int64_t out_stride) {                                                                          \
        switch (tile) {                                                                                             \
        TILE_CASES_ABOVE_4(body, type)                                                                              \
        case 4: body(type, 4, nb, w, act, act_stride, out, out_stride); break;                                     \
        case 3: body(type, 3, nb, w, act, act_stride, out, out_stride); break;                                     \
        case 2: body(type, 2, nb, w, act, act_stride, out, out_stride); break;                                     \
        default: body(type, 1, nb, w, act, act_stride, out, out_stride);                                           \
        }                                                                                                           \
    }
#if TILE == 8
#define TILE_CASES_ABOVE_4(body, type)                                                                             \
    case 8: body(type, 8, nb, w, act, act_stride, out, out_stride); break;                                         \
    case 7: body(type, 7, nb, w, act, act_stride, out, out_stride); break;                                         \
    case 6: body(type, 6, nb, w, act, act_stride, out, out_stride); break;                                         \
    case 5: body(type, 5, nb, w, act, act_stride, out, out_stride); break;
#else
#define TILE_CASES_ABOVE_4(body, type)
_Static_assert(TILE == 4, "TILE_KERNEL spells out tiles 1..4, or 1..8");
#endif

/* A kernel of two weight rows (at w and w + w_stride) times `tile` activation rows -> out[t * out_stride] and the
 * float after it: the same outputs as its tile_fn called on each row, bit for bit, with each activation block read
 * once for both. */
typedef void (*pair_fn)(int tile, int64_t nb, const uint8_t *w, int64_t w_stride, const uint8_t *act,
                        int64_t act_stride, float *out, int64_t out_stride);
#define PAIR_KERNEL(name, body, type)                                                                              \
    static void name(int tile, int64_t nb, const uint8_t *w, int64_t w_stride, const uint8_t *act,                 \
                     int64_t act_stride, float *out, int64_t out_stride) {                                         \
        switch (tile) {                                                                                             \
        PAIR_CASES_ABOVE_4(body, type)                                                                              \
        case 4: body(type, 4, nb, w, w_stride, act, act_stride, out, out_stride); break;                           \
        case 3: body(type, 3, nb, w, w_stride, act, act_stride, out, out_stride); break;                           \
        case 2: body(type, 2, nb, w, w_stride, act, act_stride, out, out_stride); break;                           \
        default: body(type, 1, nb, w, w_stride, act, act_stride, out, out_stride);                                 \
        }                                                                                                           \
    }
/* A pair kernel taken for one activation row only (pair_kernel_for's n == 1): tile is always 1, no other is built */
#define PAIR_KERNEL_ONE_ROW(name, body, type)                                                                      \
    static void name(int tile, int64_t nb, const uint8_t *w, int64_t w_stride, const uint8_t *act,                 \
                     int64_t act_stride, float *out, int64_t out_stride) {                                         \
        (void)tile;                                                                                                 \
        body(type, 1, nb, w, w_stride, act, act_stride, out, out_stride);                                          \
    }
#if TILE == 8
#define PAIR_CASES_ABOVE_4(body, type)                                                                             \
    case 8: body(type, 8, nb, w, w_stride, act, act_stride, out, out_stride); break;                               \
    case 7: body(type, 7, nb, w, w_stride, act, act_stride, out, out_stride); break;                               \
    case 6: body(type, 6, nb, w, w_stride, act, act_stride, out, out_stride); break;                               \
    case 5: body(type, 5, nb, w, w_stride, act, act_stride, out, out_stride); break;
#else
#define PAIR_CASES_ABOVE_4(body, type)
#endif

/* The kernels of one implementation, by GGML type: NAME(q4_0) names its Q4_0 kernel, and so on. */
#define KERNEL_TABLE(NAME)                                                                                         \
    {                                                                                                              \
        [VT_Q4_0] = NAME(q4_0), [VT_Q4_1] = NAME(q4_1), [VT_Q5_0] = NAME(q5_0), [VT_Q5_1] = NAME(q5_1),            \
        [VT_Q8_0] = NAME(q8_0), [VT_Q2_K] = NAME(q2_K), [VT_Q3_K] = NAME(q3_K), [VT_Q4_K] = NAME(q4_K),            \
        [VT_Q5_K] = NAME(q5_K), [VT_Q6_K] = NAME(q6_K),                                                            \
    }
#define N_KERNELS (VT_Q6_K + 1)

#if defined(VT_QUANT_X86)
#include "quant_x86.h" /* kernel_for(type, order), dot_isa(), set_dot_isa() */
#elif defined(VT_QUANT_NEON)
#include "quant_neon.h"
#else
TILE_KERNEL(plain_q4_0, plain_dot32, VT_Q4_0)
TILE_KERNEL(plain_q4_1, plain_dot32, VT_Q4_1)
TILE_KERNEL(plain_q5_0, plain_dot32, VT_Q5_0)
TILE_KERNEL(plain_q5_1, plain_dot32, VT_Q5_1)
TILE_KERNEL(plain_q8_0, plain_dot32, VT_Q8_0)
TILE_KERNEL(plain_q2_K, plain_dot256, VT_Q2_K)
TILE_KERNEL(plain_q3_K, plain_dot256, VT_Q3_K)
TILE_KERNEL(plain_q4_K, plain_dot256, VT_Q4_K)
TILE_KERNEL(plain_q5_K, plain_dot256, VT_Q5_K)
TILE_KERNEL(plain_q6_K, plain_dot256, VT_Q6_K)

#define PLAIN_NAME(format) plain_##format
static const tile_fn plain_kernels[N_KERNELS] = KERNEL_TABLE(PLAIN_NAME);

static tile_fn kernel_for(int type, int order) {
    (void)order; /* one order: ggml's reference loops */
    return plain_kernels[type];
}

static pair_fn pair_kernel_for(int type, int order, int64_t n) {
    (void)type, (void)order, (void)n;
    return NULL;
}

static const char *dot_isa(void) { return "scalar"; }

static int set_dot_isa(const char *name) { return strcmp(name, "scalar") == 0 ? VT_OK : VT_EUNSUPPORTED; }
#endif

/* Weight rows in groups of ROW_GROUP; per group, the activation rows in tiles of TILE. */
static void matmul_rows(int type, int order, const uint8_t *w, int64_t w_stride, int64_t r_begin, int64_t r_end,
                        const uint8_t *act, int64_t act_stride, int64_t n, int64_t cols, float *out,
                        int64_t out_stride) {
    const tile_fn kernel = kernel_for(type, order);
    const int64_t nb = cols / vt_format(type)->block_elems;
    /* the kernels prefetch PREFETCH_AHEAD bytes ahead of where they read: ask for the bytes before that at
     * once, so that a chunk of rows starts streaming without waiting on a miss per cache line */
    const int64_t chunk_bytes = (r_end - r_begin) * w_stride;
    prefetch_weights(w + r_begin * w_stride - PREFETCH_AHEAD,
                     (int)(chunk_bytes < PREFETCH_AHEAD ? chunk_bytes : PREFETCH_AHEAD));
    /* llama.cpp's repacked matrices take activation rows in fours but the last n % 4 (vt_internal.h) */
    const int64_t fours = order == VT_ORDER_REPACK && n > 3 ? n - n % 4 : 0;
    const tile_fn kernel_4 = fours ? kernel_for(type, VT_ORDER_REPACK_4) : kernel;
    const pair_fn pair = fours ? NULL : pair_kernel_for(type, order, n);
    for (int64_t group = r_begin; group < r_end; group += ROW_GROUP) {
        int64_t group_end = group + ROW_GROUP < r_end ? group + ROW_GROUP : r_end;
        for (int64_t c = 0; c < n;) {
            int64_t end = c < fours ? fours : n;
            int tile = end - c < TILE ? (int)(end - c) : TILE;
            for (int64_t r = group; r < group_end; r++) {
                if (pair && r + 1 < group_end) {
                    pair(tile, nb, w + r * w_stride, w_stride, act + c * act_stride, act_stride,
                         out + c * out_stride + r, out_stride);
                    r++;
                    continue;
                }
                (c < fours ? kernel_4 : kernel)(tile, nb, w + r * w_stride, act + c * act_stride, act_stride,
                                                out + c * out_stride + r, out_stride);
            }
            c += tile;
        }
    }
}

const struct vt_quant_kernels VT_SUFFIX(vt_quant) = {
    .isa = VT_ISA_NAME,
    .quantize_rows = quantize_rows,
    .matmul_rows = matmul_rows,
    .dequantize_row = dequantize_row,
    .dot_isa = dot_isa,
    .set_dot_isa = set_dot_isa,
};
