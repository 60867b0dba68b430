/* vt_internal.h: what libvotive's .c files share and do not export. */
#ifndef VT_INTERNAL_H
#define VT_INTERNAL_H

#include <stdint.h>

#include "votive.h"

/* ---- thread pool (threadpool.c) ------------------------------------------------------------------- */

/* Work on units [begin, end) of a job; ctx is the caller's argument block. */
typedef void (*vt_range_fn)(void *ctx, int64_t begin, int64_t end);

/* Run fn over [0, n) in chunks of at least `grain` units on the pool, the calling thread included, and
 * return when every unit is done. Size `grain` to a few microseconds of work. Small jobs (up to 4 grains),
 * a pool of one thread, and calls made while the pool is busy (another Python thread, or a kernel calling
 * a kernel) run on the calling thread alone. */
void vt_parallel_for(int64_t n, int64_t grain, vt_range_fn fn, void *ctx);

/* Run fn over [0, n) where each unit is `unit_grains` grains of work and cannot be split: the units are shared out
 * whole, even a few (an attention head over a long cache is tens of microseconds), in one contiguous chunk per
 * thread. Serial and waking as vt_parallel_for is for a job of n * unit_grains grains. */
void vt_parallel_for_units(int64_t n, int64_t unit_grains, vt_range_fn fn, void *ctx);

/* Free the calling thread's kept kernel buffers (dispatch.c): a pool worker calls it as it exits (a pool rebuilt
 * for another thread count would otherwise leave each old worker's buffers behind, up to 16 MB apiece). */
void vt_free_thread_buffers(void);

void vt_pool_set_threads(int n);
int vt_pool_threads(void);
/* How long an idle worker spins before it sleeps, in microseconds (vt_set_spin_us). */
void vt_pool_set_spin_us(int64_t us);
int64_t vt_pool_spin_us(void);

/* Return a call's status from the calling function unless it is VT_OK (the whole-model passes: decode_step.c,
 * encoder_pass.c). */
#define VT_CHECK(call)                                                                                             \
    do {                                                                                                           \
        const int status_ = (call);                                                                                \
        if (status_ != VT_OK)                                                                                      \
            return status_;                                                                                        \
    } while (0)

/* ---- per-ISA kernel tables ------------------------------------------------------------------------ */

#define VT_ATTEND_QUERIES 4 /* queries encoder_attend takes at once, at most (its scratch holds their scores) */
#define VT_PANEL 64 /* rows of W in a packed panel of a float matrix (dense_kernels.c), on every ISA */
#define VT_DECODER_QUERIES 4 /* queries attend_queries takes at once, at most */

/* nn_kernels.c is compiled once per instruction set; each build fills one of these. The functions are
 * single-threaded and work on the rows (or, for gelu_span, the elements) they are given. */
struct vt_nn_kernels {
    const char *isa;
    void (*gelu_span)(float *x, int64_t n);
    void (*bias_gelu_rows)(float *x, const float *bias, int64_t rows, int64_t cols);
    void (*layer_norm_rows)(float *out, const float *x, const float *residual, const float *weight,
                            const float *bias, int64_t rows, int64_t cols, float eps);
    /* first_row is the index of row 0 of x in the whole job, for picking its mask row */
    void (*softmax_rows)(float *x, const float *mask, int64_t mask_div, int64_t mask_mod, float scale,
                         int64_t first_row, int64_t rows, int64_t cols);
    /* rows [r0, r1) of y = x (m, k) W^T + b for one panel of W (VT_PANEL rows transposed; `cols` of them real)
     * into y's columns from its pointer, row stride ldy (b: the panel's biases, or NULL); and the packing of
     * `cols` rows of W (row stride k) into a panel: dense_kernels.c */
    void (*dense_panel)(float *y, int64_t ldy, const float *x, const float *panel, const float *b, int64_t k,
                        int64_t r0, int64_t r1, int64_t cols);
    void (*dense_pack)(float *panel, const float *w, int64_t k, int64_t cols, int stream);
    /* rows [r0, r1) of x against `cols` rows of W read in place, the panels' bits without a panel (few rows of x);
     * NULL where the ISA has none */
    void (*dense_rows)(float *y, int64_t ldy, const float *x, const float *w, const float *b, int64_t k, int64_t r0,
                       int64_t r1, int64_t cols, int64_t ahead);
    /* one head of one packed sequence's bidirectional attention: dense_kernels.c; scratch: dh * len_p +
     * VT_ATTEND_QUERIES * len_p floats, len_p = len rounded up to a vector */
    void (*encoder_attend)(float *out, const float *q, const float *k, const float *v, int64_t stride, int64_t heads,
                           int64_t dh, int64_t row0, int64_t len, int64_t h, float scale, float *scratch);
};

#if defined(__x86_64__) || defined(_M_X64)
#define VT_X86_64 1
extern const struct vt_nn_kernels vt_nn_sse2, vt_nn_avx2, vt_nn_avx512;
#elif defined(__aarch64__)
extern const struct vt_nn_kernels vt_nn_neon;
#else
extern const struct vt_nn_kernels vt_nn_generic;
#endif

/* y (m, parts * n) = x (m, k) times the rows of `parts` matrices (w[p]: n rows of k; b[p]: n biases or NULL) one
 * after another, transposed: vt_linear (dispatch.c) of the stacked matrix, bit for bit, without stacking it. */
int vt_linear_parts(float *y, const float *x, const float *const *w, const float *const *b, int64_t parts, int64_t m,
                    int64_t n, int64_t k);

/* The same for `parts` matrices packed by vt_pack_panels (panels[p]: part p's). */
int vt_linear_panels_parts(float *y, const float *x, const float *const *panels, const float *const *b,
                           int64_t parts, int64_t m, int64_t n, int64_t k);

/* The table for the active ISA (dispatch.c). */
const struct vt_nn_kernels *vt_nn(void);

/* decoder_kernels.c, compiled once per instruction set like nn_kernels.c; the same arithmetic in every build. */
struct vt_decoder_kernels {
    void (*rms_norm_rows)(float *out, const float *x, const float *weight, int64_t rows, int64_t cols, float eps);
    void (*rope_cache_rows)(float *cache, int64_t first, int64_t n_pos, int64_t dims, float base, float freq_scale,
                            const float *freq_factors, float ext_factor, float attn_factor, float corr_low,
                            float corr_high);
    void (*rope_rows)(float *x, const float *cache, int64_t rows, int64_t heads, int64_t dims, int neox);
    void (*swiglu_rows)(float *out, const float *gate, const float *up, int64_t rows, int64_t cols);
    void (*geglu)(float *gate, const float *up, const float *table, int64_t n);
    void (*halves_to_floats)(float *out, const uint16_t *h, int64_t n);
    void (*attend)(float *out, const float *q, const float *k, const float *v, int64_t v_stride, int64_t dims,
                   int64_t lo, int64_t hi, float scale, float *scratch);
    /* a decoded token's attention, not batched, in steps (decoder_kernels.c): queries rounded to half, the scores
     * of keys [j0, j1) for the nq heads sharing a KV head, a head's softmax over the keys [lo, hi), the outputs of
     * value dimensions [d0, d1) */
    void (*round_to_halves)(float *out, const float *x, int64_t n);
    void (*group_scores)(float *rows, int64_t stride, const float *qh, int64_t nq, const uint16_t *k, int64_t dims,
                         int64_t j0, int64_t j1, float *wide);
    void (*softmax_window)(float *row, int64_t lo, int64_t hi, float scale);
    void (*group_values)(float *out, const float *rows, int64_t stride, int64_t nq, const uint16_t *v,
                         int64_t v_stride, int64_t dims, int64_t first, int64_t hi, int64_t span, int64_t d0,
                         int64_t d1, float *wide);
    /* up to VT_DECODER_QUERIES queries of one head, batched, attend's bits; NULL where the ISA lacks it. scratch:
     * VT_DECODER_QUERIES * (dims + v_stride) floats */
    void (*attend_queries)(float *out, int64_t out_stride, const float *q, int64_t q_stride, const float *k,
                           const float *v, int64_t v_stride, int64_t dims, const int64_t *lo, const int64_t *hi,
                           int nq, float scale, float *scratch);
};

#if defined(VT_X86_64)
extern const struct vt_decoder_kernels vt_decoder_sse2, vt_decoder_avx2, vt_decoder_avx512;
#elif defined(__aarch64__)
extern const struct vt_decoder_kernels vt_decoder_neon;
#else
extern const struct vt_decoder_kernels vt_decoder_generic;
#endif

/* The same for `parts` matrices packed by vt_pack_panels (panels[p]: part p's). */
int vt_linear_panels_parts(float *y, const float *x, const float *const *panels, const float *const *b,
                           int64_t parts, int64_t m, int64_t n, int64_t k);

/* The table for the active ISA (dispatch.c). */
const struct vt_decoder_kernels *vt_decoder(void);

/* ---- quantized formats (quant_kernels.c) ----------------------------------------------------------- */

/* GGML type ids (ggml.h's enum ggml_type) of the formats the quantized kernels read. */
enum {
    VT_F32 = 0, VT_F16 = 1, VT_Q4_0 = 2, VT_Q4_1 = 3, VT_Q5_0 = 6, VT_Q5_1 = 7, VT_Q8_0 = 8, VT_Q8_1 = 9,
    VT_Q2_K = 10, VT_Q3_K = 11, VT_Q4_K = 12, VT_Q5_K = 13, VT_Q6_K = 14, VT_Q8_K = 15, VT_BF16 = 30,
};

/* A format's block: elements, bytes, and the activation format ggml pairs it with in dot products (0 when
 * vt_qmatmul does not take it). dispatch.c holds the table; block_elems == 0 means an unknown type. */
struct vt_format {
    int block_elems, block_bytes, act_type;
};
const struct vt_format *vt_format(int type);

/* Quantized activation rows, in a layout of our own rather than ggml's (vt_quantize_rows converts): a row of
 * nb blocks holds the int8 quants of every block (32 or 256 per block), then one float scale d per block (for
 * Q8_0 and Q8_1 the half-rounded d that ggml stores), then per block: Q8_1's float s = d * sum(q), rounded to half
 * as ggml stores it; Q8_K's sixteen int16 sums of 16 consecutive quants; Q8_0's eight int32 (at
 * vt_q5_0_offsets_at), -16 times the sum of each 4 consecutive quants, which a Q5_0 weight's quants q - 16 need
 * when they are multiplied as the unsigned q (sum (q - 16) a = sum q a - 16 sum a, per 4 lanes, exactly; Q8_0's
 * q + 128 takes 8 times them). Quants first keeps them 32-byte aligned for vector loads; rows are VT_ACT_ALIGN
 * bytes apart. A block with a NaN or an infinity gets d (and s) = NaN, so its dot products come out NaN as a float
 * product would. */
#define VT_ACT_ALIGN 64
/* Where a Q8_0 activation row of nb blocks keeps its Q5_0 offsets: after its quants and d, at a multiple of 32
 * bytes, so that the kernels' 32-byte loads of them never straddle a cache line (2-3% of a Q5_0 product). */
static inline int64_t vt_q5_0_offsets_at(int64_t nb) { return nb * 32 + (nb * 4 + 31) / 32 * 32; }
static inline int64_t vt_act_row_bytes(int act_type, int64_t cols) {
    int64_t bytes = act_type == VT_Q8_K   ? cols / 256 * (256 + 4 + 32)
                    : act_type == VT_Q8_0 ? vt_q5_0_offsets_at(cols / 32) + cols / 32 * 32
                                          : cols / 32 * (32 + 4 + 4);
    return (bytes + VT_ACT_ALIGN - 1) / VT_ACT_ALIGN * VT_ACT_ALIGN;
}

/* The orders in which llama.cpp's CPU backend (x86) sums a quantized product, which the x86 kernels follow so that a
 * decoder gives llama.cpp's logits bit for bit. The integer part of every block is exact in all of them; they
 * differ in how the blocks' float terms are added up:
 * - VT_ORDER_VEC_DOT: ggml_vec_dot_*: the terms into 8 float lanes, summed across at the end (Q5_K: its min
 *   terms into one float beside them, added last);
 * - VT_ORDER_REPACK: Q4_0 and Q4_K repacked at load (q4_0_8x8 and q4_K_8x8 gemv, matrices of 8k rows): per
 *   output, the blocks' sums (and Q4_K's min sums) multiply-added into one float (two), block after block, the
 *   second taken off the first at the end; VT_ORDER_REPACK_4 the same per 64 elements for Q4_K, as its gemm does
 *   for the activation rows it takes in fours (all but the last n % 4 of a product of n > 3; quant_kernels.c's
 *   matmul_rows splits them); Q4_0's gemm sums as its gemv;
 * - VT_ORDER_TILED: the tiled K-quant matmul of batches of 8 and more (ggml-cpu/tiled): per block the sum times
 *   the weight's d (less dmin times the min sum), then times the activation's d added to the output.
 * dispatch.c picks one per product; builds other than x86 have one order and ignore it. */
enum vt_order { VT_ORDER_VEC_DOT, VT_ORDER_REPACK, VT_ORDER_REPACK_4, VT_ORDER_TILED, VT_ORDERS };

/* quant_kernels.c is compiled once per ISA, like nn_kernels.c; each build fills one of these. Types are
 * checked by dispatch.c before any call; the functions are single-threaded. */
struct vt_quant_kernels {
    const char *isa;
    /* rows of x (cols floats each, contiguous, cols a multiple of the block) -> activation rows, act_stride
     * bytes apart, of act_type (VT_Q8_0, VT_Q8_1 or VT_Q8_K) */
    void (*quantize_rows)(int act_type, const float *x, int64_t rows, int64_t cols, uint8_t *act, int64_t act_stride);
    /* out[c * out_stride + r] = weight row r . activation row c, for r in [r_begin, r_end) and c in [0, n);
     * weight row r starts at w + r * w_stride and holds cols elements of `type`; act holds rows of
     * vt_format(type)->act_type; order is a vt_order. */
    void (*matmul_rows)(int type, int order, const uint8_t *w, int64_t w_stride, int64_t r_begin, int64_t r_end,
                        const uint8_t *act, int64_t act_stride, int64_t n, int64_t cols, float *out,
                        int64_t out_stride);
    /* one row of cols elements of `type` (any type with a vt_format entry) -> floats, exactly as ggml's
     * dequantize_row_* computes them */
    void (*dequantize_row)(int type, const uint8_t *row, float *out, int64_t cols);
    /* the int8 dot-product instructions in use, e.g. "avx2", "avx2+vnni", "neon+dotprod", "scalar" */
    const char *(*dot_isa)(void);
    /* use the named dot-product instructions (one dot_isa can return); VT_EUNSUPPORTED if unavailable */
    int (*set_dot_isa)(const char *name);
};

#if defined(VT_X86_64)
extern const struct vt_quant_kernels vt_quant_sse2, vt_quant_avx2, vt_quant_avx512;
#elif defined(__aarch64__)
extern const struct vt_quant_kernels vt_quant_neon;
#else
extern const struct vt_quant_kernels vt_quant_generic;
#endif

/* The quantized kernels of the active ISA (dispatch.c): the build with vt_nn()'s name. */
const struct vt_quant_kernels *vt_quant(void);

#endif /* VT_INTERNAL_H */
