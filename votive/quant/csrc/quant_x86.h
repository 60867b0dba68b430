/* quant_x86.h: the block products of quant_kernels.c with AVX2 integer instructions (avx2 and avx512 builds).
 *
 * Each kernel multiplies one weight row with a tile of T activation rows (T a compile-time constant, 1..TILE):
 * a weight block's quants are decoded once into a 32-byte vector of unsigned bytes (or signed, handled with
 * sign flips) and multiplied with each activation row's int8 quants by maddubs (u8 x s8 -> pairs of int16)
 * and madd (-> int32, with the K-quants' sub-block scales as the int16 factor). Each output keeps its own float
 * accumulator, fed the same way for any T: 8 lanes summed at the end (ggml's vec_dot order) or, for repacked
 * Q4_0 and the K-quants in llama.cpp's repack and tiled orders (vt_order), one float per output.
 *
 * No int16 pair of maddubs can saturate: its unsigned side is at most 128 (|Q8_0 quant|) with int8 activations
 * within +-127 (2 x 128 x 127 < 32767), or at most 63 (Q6_K).
 *
 * The kernels (quant_x86_kernels.h) are compiled twice, once with plain AVX2 and once for CPUs with VNNI
 * (dpbusd: four u8 x s8 products summed into int32 in one instruction), and kernel_for picks at run time. The
 * 32-element formats use dpbusd; the K-quants need the int16 step of maddubs for their sub-block scales and
 * use dpwssd after it (the madd by the scales and the add into the sum in one instruction).
 */

static inline __m256i x86_load(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* 16 bytes of nibbles -> 32 bytes: the low nibbles (elements 0..15), then the high ones (elements 16..31).
 * The bytes are loaded into both halves and the upper half shifted by 4: no lane-crossing instruction. */
static inline __m256i x86_nibbles(const uint8_t *p) {
    __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
    return _mm256_and_si256(_mm256_srlv_epi64(both, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0F));
}

/* The nibbles at p with bit j of the 32 bits at qh (the fifth bits of Q5_0 and Q5_1) selecting, for element j,
 * `set` | nibble where it is set and `clear` | nibble where not. */
static inline __m256i x86_with_fifth_bits(const uint8_t *p, const uint8_t *qh, char set, char clear) {
    uint32_t bits;
    memcpy(&bits, qh, sizeof bits);
    const __m256i nibbles = x86_nibbles(p);
#if defined(VT_ISA_AVX512) /* AVX512BW+VL: the bits are a byte mask as they stand */
    return _mm256_mask_blend_epi8((__mmask32)bits, _mm256_or_si256(nibbles, _mm256_set1_epi8(clear)),
                                  _mm256_or_si256(nibbles, _mm256_set1_epi8(set)));
#else /* spread byte j / 8 of the bits over byte j, keep bit j % 8: 0xFF where set */
    const __m256i which = _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), which);
    __m256i is_set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    return _mm256_or_si256(nibbles, _mm256_blendv_epi8(_mm256_set1_epi8(clear), _mm256_set1_epi8(set), is_set));
#endif
}

/* Bits 2k..2k+1 of each byte (k = 0..3), or bit k when mask is 1: per-byte shifts done on 16-bit lanes, safe
 * because the mask drops whatever crossed over from the neighbouring byte. */
static inline __m256i x86_bits(__m256i v, int shift, int mask) {
    return _mm256_and_si256(_mm256_srli_epi16(v, shift), _mm256_set1_epi8((char)mask));
}

/* int16 lanes of `scales` (the same 8 in both halves) -> every lane set to scale k. */
static inline __m256i x86_pick16(__m256i scales, int k) {
    return _mm256_shuffle_epi8(scales, _mm256_set1_epi16((short)(((2 * k + 1) << 8) | (2 * k))));
}

/* 16 int8 scales -> 16 int16 lanes: scale k in lanes 0..7 (the first 16 elements of a 32), k + 1 in 8..15. */
static inline __m256i x86_pair_scales(__m128i scales8, int k, int is_signed) {
    __m128i pair = _mm_shuffle_epi8(scales8, _mm_set_epi64x((long long)(0x0101010101010101ULL * (unsigned)(k + 1)),
                                                            (long long)(0x0101010101010101ULL * (unsigned)k)));
    return is_signed ? _mm256_cvtepi8_epi16(pair) : _mm256_cvtepu8_epi16(pair);
}

/* acc + the 32 products u x y summed in pairs by maddubs, then times `scales` (int16 per pair) in fours */
static inline __m256i x86_scaled_dot_mad(__m256i acc, __m256i u, const int8_t *y, __m256i scales) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, x86_load(y)), scales));
}

/* The exact sum of 8 int32 lanes (no lane or sum here comes near overflow). */
static inline int32_t x86_hsum_int(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    return _mm_cvtsi128_si32(s);
}

static inline float x86_hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* [sum of a's lanes, b's, c's, d's], exact. */
static inline __attribute__((always_inline)) __m128i x86_hsum4_int(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i ab = _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b));
    const __m256i cd = _mm256_add_epi32(_mm256_unpacklo_epi32(c, d), _mm256_unpackhi_epi32(c, d));
    const __m256i abcd = _mm256_add_epi32(_mm256_unpacklo_epi64(ab, cd), _mm256_unpackhi_epi64(ab, cd));
    return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

/* rows[t] = [v_t0 v_t1 v_t2 v_t3] for t = 0..7 -> cols[c] = [v_0c v_1c ... v_7c], in registers: inlined, with
 * no loop, so that no array here goes through the stack (halves stored and read back as one vector stall). */
static inline __attribute__((always_inline)) void x86_transpose4x8(const __m128i rows[8], __m256i cols[4]) {
    const __m256i r0 = _mm256_inserti128_si256(_mm256_castsi128_si256(rows[0]), rows[4], 1);
    const __m256i r1 = _mm256_inserti128_si256(_mm256_castsi128_si256(rows[1]), rows[5], 1);
    const __m256i r2 = _mm256_inserti128_si256(_mm256_castsi128_si256(rows[2]), rows[6], 1);
    const __m256i r3 = _mm256_inserti128_si256(_mm256_castsi128_si256(rows[3]), rows[7], 1);
    const __m256i t0 = _mm256_unpacklo_epi32(r0, r1), t1 = _mm256_unpackhi_epi32(r0, r1);
    const __m256i t2 = _mm256_unpacklo_epi32(r2, r3), t3 = _mm256_unpackhi_epi32(r2, r3);
    cols[0] = _mm256_unpacklo_epi64(t0, t2);
    cols[1] = _mm256_unpackhi_epi64(t0, t2);
    cols[2] = _mm256_unpacklo_epi64(t1, t3);
    cols[3] = _mm256_unpackhi_epi64(t1, t3);
}

/* out[t * stride] = lane t of v for t < count, taken from the register (not stored and read back). */
static inline __attribute__((always_inline)) void x86_store_lanes(__m256 v, int count, float *out, int64_t stride) {
    const __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    #pragma GCC unroll 8
    for (int t = 0; t < count; t++)
        _mm_store_ss(out + t * stride, _mm_permutevar_ps(t < 4 ? lo : hi, _mm_set1_epi32(t & 3)));
}

/* The halves at x, x + bytes, ... (count <= 8 of them, the rest 0) as floats. */
static inline __m256 x86_halves8(const uint8_t *x, int bytes, int count) {
    /* built in registers: halves stored to memory and read back as one vector stall that load (store forwarding
     * cannot merge eight stores), which showed as a tenth of a Q4_1 decoder's time */
    uint16_t h[8];
#define X86_HALF(k) ((k) < count ? (memcpy(&h[k], x + (k) * bytes, 2), _mm_cvtsi32_si128(h[k])) : _mm_setzero_si128())
    const __m128i v01 = _mm_unpacklo_epi16(X86_HALF(0), X86_HALF(1));
    const __m128i v23 = _mm_unpacklo_epi16(X86_HALF(2), X86_HALF(3));
    const __m128i v45 = _mm_unpacklo_epi16(X86_HALF(4), X86_HALF(5));
    const __m128i v67 = _mm_unpacklo_epi16(X86_HALF(6), X86_HALF(7));
#undef X86_HALF
    return _mm256_cvtph_ps(_mm_unpacklo_epi64(_mm_unpacklo_epi32(v01, v23), _mm_unpacklo_epi32(v45, v67)));
}

/* The halves at x and x + 2 of the 8 blocks at x, x + bytes, ... (Q4_1's and Q5_1's d and m), as floats: one 32-bit
 * load a block, split into the low and the high halves of each lane. */
static inline __attribute__((always_inline)) void x86_half_pairs8(const uint8_t *x, int bytes, __m256 *lo,
                                                                  __m256 *hi) {
    uint32_t v[8];
    for (int k = 0; k < 8; k++)
        memcpy(&v[k], x + k * bytes, 4);
    const __m128i a = _mm_insert_epi32(_mm_insert_epi32(_mm_insert_epi32(_mm_cvtsi32_si128((int)v[0]), (int)v[1], 1),
                                                        (int)v[2], 2), (int)v[3], 3);
    const __m128i b = _mm_insert_epi32(_mm_insert_epi32(_mm_insert_epi32(_mm_cvtsi32_si128((int)v[4]), (int)v[5], 1),
                                                        (int)v[6], 2), (int)v[7], 3);
    /* a, b: [d0 m0 d1 m1 ...] as words -> [d0 d1 d2 d3 m0 m1 m2 m3] */
    const __m128i order = _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    const __m128i sa = _mm_shuffle_epi8(a, order), sb = _mm_shuffle_epi8(b, order);
    *lo = _mm256_cvtph_ps(_mm_unpacklo_epi64(sa, sb));
    *hi = _mm256_cvtph_ps(_mm_unpackhi_epi64(sa, sb));
}

/* s + v[0] + v[1] + ... + v[count - 1], added one after the other, the lanes taken from the register: stored and
 * read back one float at a time, the loads wait on the store (a third of a Q4_1 product's time, measured). */
static inline float x86_add_lanes(float s, __m256 v, int count) {
    __m128 part = _mm256_castps256_ps128(v);
    for (int k = 0; k < count; k++) {
        if (k == 4)
            part = _mm256_extractf128_ps(v, 1);
        s += _mm_cvtss_f32(part);
        part = _mm_shuffle_ps(part, part, _MM_SHUFFLE(0, 3, 2, 1));
    }
    return s;
}

/* 8 floats at p, or the first count (the rest 0). */
static inline __m256 x86_floats8(const float *p, int count) {
    if (count == 8)
        return _mm256_loadu_ps(p);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(count), lane));
}

/* Activation row t of a tile: its quants, float scales, and (Q8_1) s or (Q8_K) bsums. */
#define ACT_ROW(t) (act + (t) * act_stride)
#define ACT_D(t, block_elems) ((const float *)(ACT_ROW(t) + nb * (block_elems)))

/* ---- the kernels, once per way of summing u8 x s8 products -------------------------------------------- */

/* acc + the sums of 4 adjacent u8 x s8 products -> 8 int32. maddubs' int16 pairs cannot saturate for the
 * operands given here: |w| <= 128 against activations of |a| <= 127 (2 * 128 * 127 = 32512), or Q5_0's unsigned
 * q <= 31 against a full int8; Q8_0's q + 128 (up to 255) goes to VNNI's dpbusd only (X86_FULL_BYTES). */
static inline __m256i x86_dot4_mad(__m256i acc, __m256i u, __m256i s) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}

#define X86_DOT4 x86_dot4_mad
#define X86_SCALED_DOT x86_scaled_dot_mad
#define X86_NAME(name) name##_mad
#define X86_FULL_BYTES 0
#include "quant_x86_kernels.h"
#undef X86_DOT4
#undef X86_SCALED_DOT
#undef X86_NAME
#undef X86_FULL_BYTES

/* VNNI's dpbusd: the 4 products summed straight into int32 (AVX512-VNNI with VL for the avx512 build, the
 * VEX-encoded AVX-VNNI for the avx2 build: Alder Lake and later, Zen 5). */
#if defined(VT_ISA_AVX512)
#define X86_VNNI_CPU "avx512vnni"
#define X86_VNNI_NAME "avx512+vnni"
#pragma GCC push_options
#pragma GCC target("avx512vnni,avx512vl")
static inline __m256i x86_dot4_vnni(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_epi32(acc, u, s); }
static inline __m256i x86_scaled_dot_vnni(__m256i acc, __m256i u, const int8_t *y, __m256i scales) {
    return _mm256_dpwssd_epi32(acc, _mm256_maddubs_epi16(u, x86_load(y)), scales);
}
#else
#define X86_VNNI_CPU "avxvnni"
#define X86_VNNI_NAME "avx2+vnni"
#pragma GCC push_options
#pragma GCC target("avxvnni")
static inline __m256i x86_dot4_vnni(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_avx_epi32(acc, u, s); }
static inline __m256i x86_scaled_dot_vnni(__m256i acc, __m256i u, const int8_t *y, __m256i scales) {
    return _mm256_dpwssd_avx_epi32(acc, _mm256_maddubs_epi16(u, x86_load(y)), scales);
}
#endif
#define X86_DOT4 x86_dot4_vnni
#define X86_SCALED_DOT x86_scaled_dot_vnni
#define X86_NAME(name) name##_vnni
#define X86_FULL_BYTES 1
#include "quant_x86_kernels.h"
#undef X86_DOT4
#undef X86_SCALED_DOT
#undef X86_NAME
#undef X86_FULL_BYTES
#pragma GCC pop_options

/* By dot-product instructions (maddubs, VNNI), order (vt_order) and GGML type; NULL: the vec_dot kernel. Repacked
 * Q4_0 is summed alike by llama.cpp's gemv and gemm: one kernel for both. */
#define X86_KERNELS(suffix)                                                                                        \
    {                                                                                                              \
        [VT_ORDER_VEC_DOT] = KERNEL_TABLE(X86_##suffix),                                                           \
        [VT_ORDER_REPACK] = {[VT_Q4_0] = x86_q4_0_repack_##suffix, [VT_Q4_K] = x86_q4_K_repack_##suffix},         \
        [VT_ORDER_REPACK_4] = {[VT_Q4_0] = x86_q4_0_repack_##suffix, [VT_Q4_K] = x86_q4_K_repack_4_##suffix},     \
        [VT_ORDER_TILED] = {[VT_Q3_K] = x86_q3_K_tiled_##suffix, [VT_Q4_K] = x86_q4_K_tiled_##suffix,             \
                            [VT_Q5_K] = x86_q5_K_tiled_##suffix, [VT_Q6_K] = x86_q6_K_tiled_##suffix},            \
    }
#define X86_mad(format) x86_##format##_mad
#define X86_vnni(format) x86_##format##_vnni
static const tile_fn x86_kernels[2][VT_ORDERS][N_KERNELS] = {X86_KERNELS(mad), X86_KERNELS(vnni)};

/* -1 until first asked; then whether this CPU has the VNNI instructions of this build. */
static int x86_vnni_state = -1;
static int x86_vnni_allowed = 1; /* cleared by set_dot_isa(VT_ISA_NAME), to test the maddubs kernels */

static int x86_has_vnni(void) {
    int state = __atomic_load_n(&x86_vnni_state, __ATOMIC_RELAXED);
    if (state < 0) {
        __builtin_cpu_init();
        state = __builtin_cpu_supports(X86_VNNI_CPU) != 0;
        __atomic_store_n(&x86_vnni_state, state, __ATOMIC_RELAXED);
    }
    return state;
}

static int x86_use_vnni(void) { return x86_has_vnni() && __atomic_load_n(&x86_vnni_allowed, __ATOMIC_RELAXED); }

static tile_fn kernel_for(int type, int order) {
    const tile_fn(*kernels)[N_KERNELS] = x86_kernels[x86_use_vnni()];
    return kernels[order][type] ? kernels[order][type] : kernels[VT_ORDER_VEC_DOT][type];
}

/* Q5_0 and (with VNNI) Q8_0 in vec_dot order have kernels of two weight rows (each activation block serves both),
 * and so have Q4_1 and Q5_1 for one activation row (a decoded token: SmolLM2's decode 3-5% faster; with a tile of
 * rows the pair was 13% slower than a row at a time, its min sums twice the floats to keep); NULL elsewhere */
static pair_fn pair_kernel_for(int type, int order, int64_t n) {
    const tile_fn single = kernel_for(type, order);
    const int vnni = x86_use_vnni();
    if (single == x86_q5_0_mad || single == x86_q5_0_vnni)
        return vnni ? x86_q5_0_pair_vnni : x86_q5_0_pair_mad;
    if (n == 1 && (single == x86_q4_1_mad || single == x86_q4_1_vnni))
        return vnni ? x86_q4_1_pair_vnni : x86_q4_1_pair_mad;
    if (n == 1 && (single == x86_q5_1_mad || single == x86_q5_1_vnni))
        return vnni ? x86_q5_1_pair_vnni : x86_q5_1_pair_mad;
    return single == x86_q8_0_vnni ? x86_q8_0_pair_vnni : NULL;
}

static const char *dot_isa(void) { return x86_use_vnni() ? X86_VNNI_NAME : VT_ISA_NAME; }

static int set_dot_isa(const char *name) {
    if (strcmp(name, VT_ISA_NAME) == 0)
        __atomic_store_n(&x86_vnni_allowed, 0, __ATOMIC_RELAXED);
    else if (strcmp(name, X86_VNNI_NAME) == 0 && x86_has_vnni())
        __atomic_store_n(&x86_vnni_allowed, 1, __ATOMIC_RELAXED);
    else
        return VT_EUNSUPPORTED;
    return VT_OK;
}
