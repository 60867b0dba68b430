/* decode_step.c: one decoded token through every layer of a LLaMA-style decoder in one call.
 *
 * A decoded token is ~12 kernel calls per layer (two norms, three grouped products, RoPE, the cache write,
 * attention, SwiGLU, two residual adds); from Python each crossing costs microseconds of argument checks and
 * ctypes, a third of a small model's token. This runs the same sequence of the same entry points (vt_rms_norm,
 * vt_qmatmul_group, vt_rope, vt_attention_f16, vt_swiglu) with the same arguments as votive/models/llama.py's
 * forward makes for one position, so its results are that forward's bit for bit: its slow twin is that forward,
 * which tests/test_decode_step.py compares it with for every family it takes. The adds and the float32 -> half
 * cache write are the elementwise operations numpy does, in the same float arithmetic.
 *
 * The families' differences are fields of the layer: Qwen2's q/k/v biases, Qwen3's per-head q/k RMSNorm,
 * SmolLM3's layers without RoPE, Mistral's window, Gemma 3's norms after each block, scaled queries, local and
 * global RoPE tables and windows and GeGLU (votive/models/decode_step.py says which classes qualify). */
#include <stddef.h>
#include <stdint.h>

#include "half.h"
#include "votive.h"
#include "vt_internal.h" /* vt_parallel_for, VT_CHECK */

/* vt_geglu over rows: the prompt's GeGLU, rows split over threads (each element alone, so any split gives the same) */
struct geglu_job {
    float *gate;
    const float *up, *table;
    int64_t cols;
};

static void geglu_part(void *arg, int64_t begin, int64_t end) {
    const struct geglu_job *j = arg;
    vt_decoder()->geglu(j->gate + begin * j->cols, j->up + begin * j->cols, j->table, (end - begin) * j->cols);
}

VT_API int vt_geglu(float *gate, const float *up, const float *table, int64_t rows, int64_t cols) {
    if (rows < 0 || cols < 0 || (rows * cols > 0 && (!gate || !up || !table)))
        return VT_EINVAL;
    struct geglu_job job = {gate, up, table, cols};
    if (rows * cols > 0) /* rows of at least 4096 elements per chunk: below that a thread's wake-up costs more */
        vt_parallel_for(rows, cols >= 4096 ? 1 : (4096 + cols - 1) / cols, geglu_part, &job);
    return VT_OK;
}

static void scale_into(float *x, float s, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        x[i] = x[i] * s;
}

static void add_into(float *x, const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        x[i] = x[i] + y[i];
}

/* x (heads * dims) -> this position's row of a (kv_heads, capacity, dims) key cache */
static void store_keys(uint16_t *k, const float *x, int64_t kv_heads, int64_t capacity, int64_t dims, int64_t pos) {
    for (int64_t g = 0; g < kv_heads; g++)
        for (int64_t e = 0; e < dims; e++)
            k[(g * capacity + pos) * dims + e] = f32_to_f16(x[g * dims + e]);
}

/* x (heads * dims) -> this position's column of a (kv_heads, dims, capacity) value cache */
static void store_values(uint16_t *v, const float *x, int64_t kv_heads, int64_t capacity, int64_t dims,
                         int64_t pos) {
    for (int64_t g = 0; g < kv_heads; g++)
        for (int64_t e = 0; e < dims; e++)
            v[(g * dims + e) * capacity + pos] = f32_to_f16(x[g * dims + e]);
}

/* x += rms_norm(o, weight), or x += o when weight is NULL: a block's output into the residual stream */
static int add_block(float *x, float *o, float *normed, const float *weight, int64_t dim, float eps) {
    if (weight) {
        VT_CHECK(vt_rms_norm(normed, o, weight, 1, dim, eps));
        o = normed;
    }
    add_into(x, o, dim);
    return VT_OK;
}

VT_API int vt_decode_step(float *x, float *scratch, const struct vt_decoder_layer *layers,
                          const struct vt_decoder_dims *d, uint16_t *k_cache, uint16_t *v_cache, int64_t pos) {
    if (!x || !scratch || !layers || !d || !k_cache || !v_cache || d->n_layers < 1 || d->dim < 1 || d->heads < 1 ||
        d->kv_heads < 1 || d->heads % d->kv_heads || d->head_dim < 2 || d->ffn < 1 || pos < 0 || pos >= d->capacity)
        return VT_EINVAL;
    const int64_t dim = d->dim, H = d->heads, Hkv = d->kv_heads, Dh = d->head_dim, ffn = d->ffn;
    const int64_t q_size = H * Dh, kv_size = Hkv * Dh, layer_cache = Hkv * d->capacity * Dh;
    float *h = scratch;                         /* (dim) the normed input of a block */
    float *qkv = h + dim;                       /* (q_size + 2 kv_size) q, k, v one after another */
    float *normed = qkv + q_size + 2 * kv_size; /* (q_size + kv_size) normed q and k */
    float *att = normed + q_size + kv_size;     /* (q_size) attention output */
    float *gate_up = att + q_size;              /* (2 ffn) gate, then up */
    float *o = gate_up + 2 * ffn;               /* (dim) a block's output */

    for (int64_t i = 0; i < d->n_layers; i++) {
        const struct vt_decoder_layer *L = &layers[i];
        uint16_t *keys = k_cache + i * layer_cache, *values = v_cache + i * layer_cache;
        if (L->window < 0)
            return VT_EINVAL;
        /* attention block */
        VT_CHECK(vt_rms_norm(h, x, L->attn_norm, 1, dim, d->eps));
        VT_CHECK(vt_qmatmul_group(qkv, L->qkv, 3, h, 1, dim));
        float *q = qkv, *k = qkv + q_size, *v = k + kv_size;
        if (L->q_bias)
            add_into(q, L->q_bias, q_size);
        if (L->k_bias)
            add_into(k, L->k_bias, kv_size);
        if (L->v_bias)
            add_into(v, L->v_bias, kv_size);
        if (L->q_norm) {
            VT_CHECK(vt_rms_norm(normed, q, L->q_norm, H, Dh, d->eps));
            q = normed;
        }
        if (L->k_norm) {
            VT_CHECK(vt_rms_norm(normed + q_size, k, L->k_norm, Hkv, Dh, d->eps));
            k = normed + q_size;
        }
        if (L->rope_table) {
            VT_CHECK(vt_rope(q, L->rope_table + pos * Dh, 1, H, Dh, (int)d->neox));
            VT_CHECK(vt_rope(k, L->rope_table + pos * Dh, 1, Hkv, Dh, (int)d->neox));
        }
        if (L->q_scale != 1.0f)
            scale_into(q, L->q_scale, q_size);
        store_keys(keys, k, Hkv, d->capacity, Dh, pos);
        store_values(values, v, Hkv, d->capacity, Dh, pos);
        VT_CHECK(vt_attention_f16(att, q, keys, values, 1, H, Hkv, Dh, pos, d->capacity, L->window, L->scale));
        VT_CHECK(vt_qmatmul_group(o, L->wo, 1, att, 1, q_size));
        VT_CHECK(add_block(x, o, h, L->post_attn_norm, dim, d->eps));
        /* feed-forward block */
        VT_CHECK(vt_rms_norm(h, x, L->ffn_norm, 1, dim, d->eps));
        VT_CHECK(vt_qmatmul_group(gate_up, L->gate_up, 2, h, 1, dim));
        if (L->gelu_table)
            vt_decoder()->geglu(gate_up, gate_up + ffn, L->gelu_table, ffn);
        else
            VT_CHECK(vt_swiglu(gate_up, gate_up, gate_up + ffn, 1, ffn));
        VT_CHECK(vt_qmatmul_group(o, L->down, 1, gate_up, 1, ffn));
        VT_CHECK(add_block(x, o, h, L->post_ffn_norm, dim, d->eps));
    }
    return VT_OK;
}
