/* votive.h: the C API of libvotive, the compute kernels behind votive's CPU backend.
 *
 * Python binds these through ctypes (votive/quant/kernels.py); selftest.c links them directly. Every
 * function taking arrays expects float32, C-contiguous rows (row r starts at base + r * cols) and returns
 * VT_OK, or VT_EINVAL without touching memory when a size is negative or a required pointer is NULL. The
 * callers check shapes and dtypes; the C side trusts the pointers it is given.
 *
 * Layout of the library (votive/quant/csrc/):
 *   votive.h        this API; bump VT_ABI_VERSION whenever a signature or meaning changes.
 *   vt_internal.h   what the .c files share: the thread pool, the ISA tables, the export macro.
 *   threadpool.c    the persistent worker pool and vt_parallel_for.
 *   dispatch.c      CPU feature detection, the active ISA, and the exported kernels (argument checks and
 *                   the split of rows over threads; the arithmetic lives in the per-ISA files).
 *   simd.h          one vector type and the vector math (exp, normal tail) on GCC vector extensions.
 *   nn_kernels.c    elementwise and row kernels (GELU, LayerNorm, softmax), compiled once per ISA.
 *   dense_kernels.c float matrix products x W^T (the encoders' linears), compiled once per ISA.
 *   quant_kernels.c products of GGML-quantized matrices with float activations and row gathers, compiled
 *                   once per ISA; its SIMD dot products live in quant_x86.h and quant_neon.h.
 *   half_kernels.c  products with F16 / BF16 matrices in llama.cpp's order, compiled once per ISA; their
 *                   export, vt_half_matmul, is in half_matmul.c (half_kernels.h says the orders).
 *   decode_step.c   one decoded token through a LLaMA-style decoder's layers, calling the entries below.
 *   encoder_pass.c  a packed batch through a BERT-style encoder's layers, calling the entries below.
 *   selftest.c      a standalone program checking every kernel on every ISA against scalar loops.
 *
 * Adding a kernel: write its single-threaded body over a range of rows in an ISA-compiled file, add a
 * pointer for it to that file's table type in vt_internal.h, and export a wrapper in dispatch.c that
 * checks arguments and calls vt_parallel_for. The quantized kernels have their own table
 * (struct vt_quant_kernels), one per ISA build as for nn_kernels.c.
 */
#ifndef VOTIVE_H
#define VOTIVE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VT_ABI_VERSION 11

#define VT_OK 0
#define VT_EINVAL (-1) /* a negative size or a required pointer is NULL */
#define VT_EUNSUPPORTED (-2) /* an ISA this build or this CPU does not have, or a GGML type a kernel does not take */
#define VT_ENOMEM (-3)       /* a scratch buffer could not be allocated */
#define VT_ERANGE (-4)       /* a row id outside the matrix */

#if defined(__GNUC__)
#define VT_API __attribute__((visibility("default")))
#else
#define VT_API
#endif

/* VT_ABI_VERSION of the compiled library; the Python loader refuses a library whose version differs. */
VT_API int vt_abi_version(void);

/* ---- instruction sets ---------------------------------------------------------------------------- */

/* Name of the kernel set in use: "avx512", "avx2" or "sse2" on x86_64, "neon" on arm64, "generic"
 * elsewhere. The best one the CPU supports is picked at first use. */
VT_API const char *vt_isa(void);

/* 1 when this build has the named kernel set and this CPU can run it, else 0. */
VT_API int vt_isa_supported(const char *name);

/* Switch to the named kernel set (tests and benchmarks compare them). VT_EUNSUPPORTED if unavailable. */
VT_API int vt_set_isa(const char *name);

/* ---- threads --------------------------------------------------------------------------------------- */

/* Threads a kernel may use, the caller included. n < 1 means the cores this process may run on. The pool
 * is rebuilt lazily at the next parallel kernel; a call waits for any kernel running in another thread. */
VT_API void vt_set_num_threads(int n);
VT_API int vt_num_threads(void);

/* How long (microseconds, capped at 100000) an idle worker spins, with a pause instruction, waiting for the next
 * kernel before it sleeps; us < 0 restores the default, 100. Longer saves back-to-back kernels a wake-up of
 * tens of microseconds but holds a core that other work of the process (numpy, BLAS) may need; 0 has workers
 * sleep as soon as a job ends. A worker that was descheduled while spinning sleeps at once. */
VT_API void vt_set_spin_us(int64_t us);
VT_API int64_t vt_spin_us(void);

/* ---- kernels ----------------------------------------------------------------------------------------- */

/* x[r, c] = gelu(x[r, c] + bias[c]) in place, with exact (erf) GELU as torch.nn.functional.gelu's default.
 * bias may be NULL. gelu(+inf) = +inf, gelu(-inf) = NaN as in PyTorch, NaN stays NaN. */
VT_API int vt_gelu(float *x, const float *bias, int64_t rows, int64_t cols);

/* out[r] = (h - mean(h)) / sqrt(var(h) + eps) * weight + bias, h = x[r] + residual[r] (residual may be
 * NULL; weight and bias may be NULL, meaning 1 and 0). out may be x or residual (in place). */
VT_API int vt_layer_norm(float *out, const float *x, const float *residual, const float *weight,
                         const float *bias, int64_t rows, int64_t cols, float eps);

/* Softmax of each row of x, in place, of x * scale + mask. Row r adds mask row (r / mask_div) % mask_mod,
 * which covers masks broadcast over leading axes, e.g. an attention mask (batch, 1, 1, keys) against
 * scores (batch, heads, queries, keys): mask_div = heads * queries, mask_mod = batch. mask may be NULL.
 * A row whose every entry is -inf comes out NaN, as numpy and PyTorch give. */
VT_API int vt_softmax(float *x, const float *mask, int64_t mask_div, int64_t mask_mod, float scale,
                      int64_t rows, int64_t cols);

/* y (m, n) = x (m, k) W^T + b, for W (n, k) as nn.Linear stores it and b (n,) or NULL; all float32, C order.
 * Each output is a dot product summed in a fixed order per ISA (not BLAS's order: within float rounding of it). */
VT_API int vt_linear(float *y, const float *x, const float *w, const float *b, int64_t m, int64_t n, int64_t k);

/* W (n, k) packed for vt_linear_panels: ceil(n / 64) panels of k rows of 64 floats, panel[i * 64 + j] = W[64 p + j,
 * i] (zero past n); panels holds ceil(n / 64) * 64 * k floats. The product is vt_linear's, bit for bit, without
 * packing W on every call (dense_kernels.c). */
VT_API int vt_pack_panels(float *panels, const float *w, int64_t n, int64_t k);
VT_API int vt_linear_panels(float *y, const float *x, const float *panels, const float *b, int64_t m, int64_t n,
                            int64_t k);

/* Bidirectional attention of packed sequences (an encoder's batch without its padding): qkv (rows, 3 * heads * dh)
 * holds each row's q | k | v; sequence s is rows offsets[s] .. offsets[s + 1] - 1 (offsets: n_seqs + 1 entries,
 * non-decreasing from 0). out (rows, heads * dh) = softmax(q k^T * scale) v per sequence and head. */
VT_API int vt_encoder_attention(float *out, const float *qkv, const int64_t *offsets, int64_t n_seqs, int64_t heads,
                                int64_t dh, float scale);

/* ---- decoder row kernels, in ggml's float order (decoder_kernels.c says why) ------------------------- */

/* out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight (weight may be NULL), the mean summed in double. out may
 * be x. */
VT_API int vt_rms_norm(float *out, const float *x, const float *weight, int64_t rows, int64_t cols, float eps);

/* out = silu(gate) * up elementwise over rows of cols (SwiGLU), with ggml's exp. out may be gate or up. */
VT_API int vt_swiglu(float *out, const float *gate, const float *up, int64_t rows, int64_t cols);
/* gate = gelu(gate) * up over (rows, cols), GELU looked up in `table` (65536 floats, by the gate's half bits) as
 * ggml_vec_geglu_f32: the gate itself from 10 up, 0 from -10 down (decode_step.c) */
VT_API int vt_geglu(float *gate, const float *up, const float *table, int64_t rows, int64_t cols);

/* cache[p * dims + 2i], [.. + 2i + 1] = cos, sin of position first + p for p < n_pos, as ggml_rope_cache_init
 * makes them: angle (first + p) * base^(-2i / dims) / freq_factors[i] (NULL: 1), times freq_scale, mixed with
 * the unscaled angle by YaRN's ramp between corr_low and corr_high when ext_factor != 0; cos and sin times
 * attn_factor (and YaRN's magnitude correction). freq_scale 1, ext_factor 0, attn_factor 1: plain RoPE. */
VT_API int vt_rope_cache(float *cache, int64_t first, int64_t n_pos, int64_t dims, float base, float freq_scale,
                         const float *freq_factors, float ext_factor, float attn_factor, float corr_low,
                         float corr_high);

/* Rotate x (rows, heads, dims) in place, row r by cache row r; neox pairs i with i + dims/2, else i with i + 1. */
VT_API int vt_rope(float *x, const float *cache, int64_t rows, int64_t heads, int64_t dims, int neox);

/* Causal attention of n queries at positions q_start.. (q: (n, heads, dims) float32) over a half-precision
 * cache: k (kv_heads, capacity, dims), v transposed (kv_heads, dims, capacity), positions 0 .. q_start + n - 1
 * filled. Query i sees keys max(0, pos + 1 - window) .. pos (window 0: all). Scores are (q . k) * scale; out
 * (n, heads, dims). Query head h reads kv head h / (heads / kv_heads). A batch (n > 1) sums products in the
 * order of ggml's tiled GEMM, a single query in that of ggml_vec_dot_f16, as llama.cpp does. VT_ENOMEM when a
 * thread's scratch buffer (about 8 * (q_start + n) * dims bytes) cannot be allocated: out is then partly written. */
VT_API int vt_attention_f16(float *out, const float *q, const uint16_t *k, const uint16_t *v, int64_t n,
                            int64_t heads, int64_t kv_heads, int64_t dims, int64_t q_start, int64_t capacity,
                            int64_t window, float scale);

/* ---- GGML-quantized matrices ----------------------------------------------------------------------- *
 *
 * Weights stay in the blocks a GGUF file stores (ggml-common.h's block_q4_0 ... block_q6_K), read in place at
 * any alignment; `type` is the GGML type id (ggml.h). Rows are `w_stride` bytes apart and hold `cols` elements,
 * a whole number of blocks (32 elements for Q4_0..Q8_0, 256 for the K-quants). */

/* 1 when vt_qmatmul takes weights of this type: Q4_0 (2), Q4_1 (3), Q5_0 (6), Q5_1 (7), Q8_0 (8), Q2_K (10),
 * Q3_K (11), Q4_K (12), Q5_K (13), Q6_K (14). */
VT_API int vt_qmatmul_supports(int type);

/* out[i * out_features + o] = sum_k W[o, k] x[i, k] for i < n, o < out_features; x and out are contiguous
 * float32 rows. As ggml does, x is first quantized, once per call, to the format ggml pairs with `type`
 * (Q8_0 for Q4_0, Q5_0, Q8_0; Q8_1 for Q4_1, Q5_1; Q8_K for the K-quants), then each output is an integer
 * dot product per block, scaled and summed in float32. Each output depends only on its weight row and its row
 * of x: the bits are the same for any n, thread count or chunking. A NaN or inf in a block of x makes that
 * row's outputs NaN. VT_EUNSUPPORTED for a type not taken, VT_EINVAL for sizes that are negative or not whole
 * blocks or w_stride < the row's bytes, VT_ENOMEM when the quantized copy of x cannot be allocated. */
VT_API int vt_qmatmul(float *out, const void *w, int type, int64_t w_stride, const float *x, int64_t n,
                      int64_t out_features, int64_t cols);

/* One weight matrix of a grouped product. */
struct vt_qmatrix {
    const void *w;    /* rows of GGML blocks, as vt_qmatmul reads them */
    int64_t w_stride; /* bytes from one row to the next */
    int64_t rows;     /* out_features */
    int32_t type;     /* GGML type id */
    int32_t unused;   /* 0; keeps the struct 32 bytes with no padding the ABI could place differently */
};

#define VT_MAX_GROUP 16

/* Several products with the same x (a layer's q, k and v, or gate and up): matrix m's result is the (n, rows)
 * block of out starting at out + n * (the rows of the matrices before m), each exactly as vt_qmatmul computes
 * it. x is quantized once per activation format the group needs, and the rows of all the matrices are split
 * over the threads as one job. count is 1 to VT_MAX_GROUP. */
VT_API int vt_qmatmul_group(float *out, const struct vt_qmatrix *matrices, int count, const float *x, int64_t n,
                            int64_t cols);

/* 1 when vt_get_rows takes this type: those of vt_qmatmul_supports, and F32 (0), F16 (1), BF16 (30). */
VT_API int vt_get_rows_supports(int type);

/* out[i * cols + k] = W[ids[i], k] as float32, bit for bit what ggml's dequantize_row_* gives (an embedding
 * lookup). VT_ERANGE, before anything is written, when an id is outside [0, n_rows). */
VT_API int vt_get_rows(float *out, const void *w, int type, int64_t w_stride, int64_t n_rows, const int64_t *ids,
                       int64_t n_ids, int64_t cols);

/* out[i * out_features + o] = sum_k W[o, k] x[i, k] for W stored as F16 (type 1) or BF16 (30), rows w_stride bytes
 * apart, read in place: llama.cpp's CPU arithmetic for such a matrix (half_kernels.h): x rounded to the weight's
 * type, then per output llamafile's tinyBLAS order (n >= 2, out_features a multiple of 4, cols of whole 16 (F16)
 * or 32 (BF16)) or ggml_vec_dot_f16's / _bf16's (the rest), the same bits on every ISA and thread count
 * (half_matmul.c, half_kernels.c). VT_EUNSUPPORTED for another type, VT_ENOMEM when x's rounded copy cannot be
 * allocated. */
VT_API int vt_half_matmul(float *out, const void *w, int type, int64_t w_stride, const float *x, int64_t n,
                          int64_t out_features, int64_t cols);

/* Quantize rows of x (contiguous float32) to an activation format, Q8_0 (8), Q8_1 (9) or Q8_K (15), written in
 * ggml's block layout: the bytes ggml's CPU code writes (Q8_0 and Q8_1 as its x86 quantize_row_q8_0/_q8_1:
 * q = round-half-even(x * 127 / max|x|); Q8_K as quantize_row_q8_K_ref). vt_qmatmul quantizes x the same way. */
VT_API int vt_quantize_rows(void *out, int act_type, const float *x, int64_t rows, int64_t cols);

/* One layer of a LLaMA-style decoder as vt_decode_step reads it. The products are vt_qmatmul_group tables. */
struct vt_decoder_layer {
    const float *attn_norm, *ffn_norm;     /* (dim) RMSNorm weights */
    const float *q_bias, *k_bias, *v_bias; /* (heads * head_dim), (kv_heads * head_dim) x2: Qwen2's; each may be NULL */
    const float *q_norm, *k_norm;          /* (head_dim) per-head RMSNorm weights (Qwen3, Gemma 3); each may be NULL */
    const float *post_attn_norm;           /* (dim) RMSNorm of the attention block's output (Gemma 3), or NULL */
    const float *post_ffn_norm;            /* (dim) the same for the feed-forward block, or NULL */
    const float *rope_table;               /* (capacity, head_dim) from vt_rope_cache; NULL: this layer has no RoPE */
    const float *gelu_table;               /* NULL: SwiGLU; else GeGLU, tanh-GELU looked up at the gate rounded to
                                              half in these 65536 floats, as ggml_vec_geglu_f32 (Gemma 3) */
    const struct vt_qmatrix *qkv;          /* 3 matrices: q, k, v */
    const struct vt_qmatrix *wo;           /* 1 */
    const struct vt_qmatrix *gate_up;      /* 2 matrices: gate, up */
    const struct vt_qmatrix *down;         /* 1 */
    int64_t window;                        /* sliding window, 0: none */
    float q_scale;                         /* q times this after RoPE (Gemma 3), 1: nothing */
    float scale;                           /* attention scores times this */
};

struct vt_decoder_dims {
    int64_t n_layers, dim, heads, kv_heads, head_dim, ffn;
    int64_t capacity; /* positions the KV cache and the RoPE tables hold */
    int64_t neox;     /* RoPE layout: 1 NEOX, 0 normal (adjacent pairs) */
    float eps;        /* RMSNorm's */
    float unused;     /* 0 */
};

/* Decode one token at position pos through every layer: x (dim) is the token's embedding in, the residual
 * stream after the last layer out (before the final norm). k_cache and v_cache are the whole (n_layers, kv_heads, capacity, head_dim) keys and
 * (n_layers, kv_heads, head_dim, capacity) values in half, position pos written here. scratch holds
 * 2 dim + 3 heads * head_dim + 3 kv_heads * head_dim + 2 ffn floats. Bit for bit the sequence of the entries
 * above that votive/models/llama.py's forward calls for one position. */
VT_API int vt_decode_step(float *x, float *scratch, const struct vt_decoder_layer *layers,
                          const struct vt_decoder_dims *dims, uint16_t *k_cache, uint16_t *v_cache, int64_t pos);

/* One product of an encoder layer (vt_encoder_pass): a float32 weight (n, k) as nn.Linear stores it, or, with w
 * NULL, vt_i8_matmul's int8 weight (packed quants, row scales, row sums of quants); bias (n) or NULL. */
struct vt_encoder_matrix {
    const float *w;      /* float W as stored, or NULL */
    const float *panels; /* float W packed (vt_pack_panels), or NULL */
    const int8_t *packed;
    const float *scales;
    const int32_t *sums;
    const float *bias;
};

/* One post-norm BERT layer: x = LN(x + attention(x) W_o^T + b_o); x = LN(x + GELU(x W_up^T + up_bias) W_down^T +
 * b_down). q, k, v: three float (dim, dim) matrices as stored, multiplied as one into q | k | v; or an int8 q | k | v
 * stacked in q (3 dim rows, its bias with it), k and v all NULL. */
struct vt_encoder_layer {
    struct vt_encoder_matrix q, k, v, wo, up, down; /* up.bias NULL: up_bias goes in with the GELU */
    const float *up_bias;                       /* (ffn) */
    const float *attn_norm_w, *attn_norm_b;     /* (dim) LayerNorm after the attention block; NULL: 1 and 0 */
    const float *ffn_norm_w, *ffn_norm_b;       /* (dim) after the feed-forward block */
};

struct vt_encoder_dims {
    int64_t n_layers, dim, heads, ffn;
    float eps;   /* LayerNorm's */
    float scale; /* attention scores times this (1 / sqrt(head_dim)) */
};

/* The packed rows x (offsets[n_seqs], dim) of n_seqs texts (text s at rows offsets[s] .. offsets[s + 1] - 1)
 * through every layer, in place. scratch: rows * (5 dim + ffn) floats. Bit for bit the entries above in the order
 * votive/models/bert.py's EncoderLayer.packed calls them. */
VT_API int vt_encoder_pass(float *x, float *scratch, const int64_t *offsets, int64_t n_seqs,
                           const struct vt_encoder_layer *layers, const struct vt_encoder_dims *dims);

/* Q8_0 weights times float activations for the encoders, tiled on AVX512-VNNI (encoder_q8.c): y (n_rows, n) =
 * x (n_rows, k) @ W.T for W's quants wq (n, k) int8, its block scales wd (n, k / 32) and offsets we (n, k / 32,
 * 128 * d * the block's quant sum), x quantized to Q8_0 as ggml does; the float order differs from vt_qmatmul's.
 * vt_eq8_supported: 1 when this CPU and build run it. */
VT_API int vt_eq8_supported(void);
VT_API int vt_eq8_matmul(const int8_t *wq, const float *wd, const float *we, int64_t n, int64_t k, const float *x,
                         int64_t n_rows, float *y);

/* y (m, n) = x (m, k) times an int8 weight with one scale per row transposed, + b (n,) or NULL: wp its quants
 * packed a lane per column (wp[n / 16][k / 4][16][4], k and n padded with zeros to multiples of 4 and 16; see
 * csrc/encoder_q8.c), ws (n,) its scales, wsum (n,) the sums of each row's quants; x quantized per row to int8
 * (scale max|x| / 127) on the way, every output's integer sum exact. VT_EUNSUPPORTED where vt_eq8_supported() is 0. */
VT_API int vt_i8_matmul(const int8_t *wp, const float *ws, const int32_t *wsum, int64_t n, int64_t k, const float *x,
                        int64_t m, const float *b, float *y);
/* w (n, k) float32 quantized per row (scale max|row| / 127, round to nearest even) and packed as vt_i8_matmul takes
 * it: wp zeroed beforehand (n and k rounded up to 16 and 4: n16 / 16 * k4 / 4 * 64 bytes), ws (n,) the scales (NaN
 * for a row holding inf or NaN), wsum (n,) the sums of each row's quants. */
VT_API int vt_i8_pack(const float *w, int64_t n, int64_t k, int8_t *wp, float *ws, int32_t *wsum);

/* The int8 dot-product instructions the active quantized kernels use: "avx2", "avx2+vnni", "avx512+vnni",
 * "neon", "neon+dotprod" or "scalar". */
VT_API const char *vt_quant_isa(void);

/* Use the named int8 dot-product instructions of the active ISA (tests compare them): the ISA's own name for
 * its base instructions, or one vt_quant_isa() can return. VT_EUNSUPPORTED if this CPU lacks them. */
VT_API int vt_set_quant_isa(const char *name);

#ifdef __cplusplus
}
#endif

#endif /* VOTIVE_H */
