/* encoder_pass.c: a packed batch of texts through every layer of a BERT-style encoder in one call.
 *
 * A layer is seven kernel calls (three products and the fused q|k|v one, attention, GELU, two add & norms); from
 * Python each crossing costs microseconds of argument checks and ctypes, and a one-query batch spends a tenth of
 * its time there. This runs the same entry points (vt_linear or vt_i8_matmul, vt_encoder_attention, vt_gelu,
 * vt_layer_norm) with the same arguments, in the same order, as votive/models/bert.py's EncoderLayer.packed, so
 * its results are that method's bit for bit: its slow twin is that method, which tests/test_encoder_pass.py
 * compares it with. One difference of means, not of bits: the method multiplies a float q | k | v stacked in one
 * matrix; here the three stored matrices are multiplied as that one (vt_linear_parts), so a load makes no copy. */
#include <stddef.h>
#include <stdint.h>

#include "votive.h"
#include "vt_internal.h" /* VT_CHECK */

/* y (rows, n) = x (rows, k) M^T + M's bias: float M by vt_linear, an int8 one by vt_i8_matmul (bias added after
 * the product there too, as numpy's y += b after the linear's call) */
static int product(float *y, const float *x, const struct vt_encoder_matrix *m, int64_t rows, int64_t n,
                   int64_t k) {
    if (m->panels)
        return vt_linear_panels(y, x, m->panels, m->bias, rows, n, k);
    if (m->w)
        return vt_linear(y, x, m->w, m->bias, rows, n, k);
    if (!m->packed)
        return VT_EINVAL;
    return vt_i8_matmul(m->packed, m->scales, m->sums, n, k, x, rows, m->bias, y);
}

/* qkv (rows, 3 dim) = q | k | v: the three float matrices, packed or as stored, as one product (vt_linear_panels_parts
 * or vt_linear_parts: vt_linear's bits for the stacked matrix), or the int8 one stacked at load */
static int qkv_product(float *qkv, const float *x, const struct vt_encoder_layer *L, int64_t rows, int64_t dim) {
    const float *b[3] = {L->q.bias, L->k.bias, L->v.bias};
    if (L->q.panels && L->k.panels && L->v.panels) {
        const float *p[3] = {L->q.panels, L->k.panels, L->v.panels};
        return vt_linear_panels_parts(qkv, x, p, b, 3, rows, dim, dim);
    }
    if (!L->q.w)
        return L->k.w || L->v.w || L->k.panels || L->v.panels || L->k.packed || L->v.packed
                   ? VT_EINVAL
                   : product(qkv, x, &L->q, rows, 3 * dim, dim);
    if (!L->k.w || !L->v.w)
        return VT_EINVAL;
    const float *w[3] = {L->q.w, L->k.w, L->v.w};
    return vt_linear_parts(qkv, x, w, b, 3, rows, dim, dim);
}

VT_API int vt_encoder_pass(float *x, float *scratch, const int64_t *offsets, int64_t n_seqs,
                           const struct vt_encoder_layer *layers, const struct vt_encoder_dims *d) {
    if (!x || !scratch || !offsets || !layers || !d || n_seqs < 1 || d->n_layers < 1 || d->dim < 1 ||
        d->heads < 1 || d->dim % d->heads || d->ffn < 1 || offsets[0] != 0)
        return VT_EINVAL;
    const int64_t rows = offsets[n_seqs], dim = d->dim, ffn = d->ffn;
    for (int64_t s = 0; s < n_seqs; s++)
        if (offsets[s + 1] < offsets[s])
            return VT_EINVAL;
    float *qkv = scratch;             /* (rows, 3 dim) q | k | v */
    float *ctx = qkv + rows * 3 * dim; /* (rows, dim) attention's output; later the feed-forward's */
    float *h = ctx + rows * dim;       /* (rows, dim) the state after the attention block */
    float *up = h + rows * dim;        /* (rows, ffn) */
    for (int64_t i = 0; i < d->n_layers; i++) {
        const struct vt_encoder_layer *L = &layers[i];
        VT_CHECK(qkv_product(qkv, x, L, rows, dim));
        VT_CHECK(vt_encoder_attention(ctx, qkv, offsets, n_seqs, d->heads, dim / d->heads, d->scale));
        VT_CHECK(product(h, ctx, &L->wo, rows, dim, dim));
        VT_CHECK(vt_layer_norm(h, h, x, L->attn_norm_w, L->attn_norm_b, rows, dim, d->eps));
        VT_CHECK(product(up, h, &L->up, rows, ffn, dim));
        VT_CHECK(vt_gelu(up, L->up_bias, rows, ffn));
        VT_CHECK(product(ctx, up, &L->down, rows, dim, ffn));
        VT_CHECK(vt_layer_norm(x, ctx, h, L->ffn_norm_w, L->ffn_norm_b, rows, dim, d->eps));
    }
    return VT_OK;
}
