/* nn_kernels.c: the elementwise and row kernels of transformer encoders, single-threaded over the rows
 * they are handed. Compiled once per ISA (see simd.h); dispatch.c splits the rows over threads and
 * picks the build that matches the CPU. Each kernel has a numpy twin in votive/quant/kernels_ref.py
 * and a scalar twin in selftest.c.
 *
 * Loops step one vector at a time; the last, partial vector goes through the same arithmetic padded with
 * neutral values, so an element's result does not depend on the row length modulo the vector width, nor
 * on how the rows are split over threads.
 */
#include "simd.h"
#include "vt_internal.h"

static void gelu_span(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i += VT_LANES) {
        int64_t k = v_left(i, n);
        v_store_n(x + i, v_gelu(v_load_n(x + i, k, 0.0f)), k);
    }
}

static void bias_gelu_rows(float *x, const float *bias, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; r++) {
        float *row = x + r * cols;
        for (int64_t i = 0; i < cols; i += VT_LANES) {
            int64_t k = v_left(i, cols);
            vf v = v_load_n(row + i, k, 0.0f) + v_load_n(bias + i, k, 0.0f);
            v_store_n(row + i, v_gelu(v), k);
        }
    }
}

static void layer_norm_rows(float *out, const float *x, const float *residual, const float *weight,
                            const float *bias, int64_t rows, int64_t cols, float eps) {
    for (int64_t r = 0; r < rows; r++) {
        float *o = out + r * cols;
        const float *h = x + r * cols;

        /* mean of h = x + residual; with a residual, h is written to out first and read back from there */
        vf acc = v_splat(0.0f);
        if (residual) {
            const float *res = residual + r * cols;
            for (int64_t i = 0; i < cols; i += VT_LANES) {
                int64_t k = v_left(i, cols);
                vf v = v_load_n(h + i, k, 0.0f) + v_load_n(res + i, k, 0.0f);
                v_store_n(o + i, v, k);
                acc += v;
            }
            h = o;
        } else {
            for (int64_t i = 0; i < cols; i += VT_LANES)
                acc += v_load_n(h + i, v_left(i, cols), 0.0f);
        }
        float mean = v_hsum(acc) / (float)cols;

        /* variance from the centred values (two passes), not E[h^2] - mean^2, which cancels badly */
        acc = v_splat(0.0f);
        for (int64_t i = 0; i < cols; i += VT_LANES) {
            vf d = v_load_n(h + i, v_left(i, cols), mean) - mean; /* padded lanes give 0 */
            acc += d * d;
        }
        float rstd = 1.0f / sqrtf(v_hsum(acc) / (float)cols + eps);

        for (int64_t i = 0; i < cols; i += VT_LANES) {
            int64_t k = v_left(i, cols);
            vf y = (v_load_n(h + i, k, 0.0f) - mean) * rstd;
            if (weight)
                y *= v_load_n(weight + i, k, 1.0f);
            if (bias)
                y += v_load_n(bias + i, k, 0.0f);
            v_store_n(o + i, y, k);
        }
    }
}

/* Rows up to this many floats are kept in a local array between the passes: reading back values just
 * written with a masked store (a short row's tail) stalls, whole-vector stack traffic does not. */
#define SOFTMAX_LOCAL 256

/* softmax of h = x * scale + mask for a row of at most SOFTMAX_LOCAL floats, written to x once. */
static void softmax_short_row(float *row, const float *m, float scale, int64_t cols) {
    vf h[SOFTMAX_LOCAL / VT_LANES];
    vf vmax = v_splat(-INFINITY);
    for (int64_t i = 0, j = 0; i < cols; i += VT_LANES, j++) {
        int64_t k = v_left(i, cols);
        h[j] = v_load_n(row + i, k, 0.0f) * scale;
        if (m)
            h[j] += v_load_n(m + i, k, 0.0f);
        h[j] = v_keep_first(h[j], k, -INFINITY); /* padded lanes: e^-inf = 0 below */
        vmax = v_max(h[j], vmax);
    }
    float mx = v_hmax(vmax);
    vf acc = v_splat(0.0f);
    for (int64_t i = 0, j = 0; i < cols; i += VT_LANES, j++) {
        h[j] = v_exp(h[j] - mx);
        acc += h[j];
    }
    float inv_sum = 1.0f / v_hsum(acc);
    for (int64_t i = 0, j = 0; i < cols; i += VT_LANES, j++)
        v_store_n(row + i, h[j] * inv_sum, v_left(i, cols));
}

/* The same for any length, in three passes over x. */
static void softmax_long_row(float *row, const float *m, float scale, int64_t cols) {
    vf vmax = v_splat(-INFINITY);
    for (int64_t i = 0; i < cols; i += VT_LANES) { /* h = x * scale + mask, kept in x, and its maximum */
        int64_t k = v_left(i, cols);
        vf h = v_load_n(row + i, k, 0.0f) * scale;
        if (m)
            h += v_load_n(m + i, k, 0.0f);
        v_store_n(row + i, h, k);
        vmax = v_max(v_keep_first(h, k, -INFINITY), vmax);
    }
    float mx = v_hmax(vmax);
    vf acc = v_splat(0.0f);
    for (int64_t i = 0; i < cols; i += VT_LANES) {
        int64_t k = v_left(i, cols);
        vf e = v_exp(v_load_n(row + i, k, -INFINITY) - mx); /* padded lanes give 0 */
        v_store_n(row + i, e, k);
        acc += e;
    }
    float inv_sum = 1.0f / v_hsum(acc);
    for (int64_t i = 0; i < cols; i += VT_LANES) {
        int64_t k = v_left(i, cols);
        v_store_n(row + i, v_load_n(row + i, k, 0.0f) * inv_sum, k);
    }
}

static void softmax_rows(float *x, const float *mask, int64_t mask_div, int64_t mask_mod, float scale,
                         int64_t first_row, int64_t rows, int64_t cols) {
    /* row first_row + r takes mask row (first_row + r) / mask_div % mask_mod: step it without dividing */
    int64_t mask_row = first_row / mask_div % mask_mod, within = first_row % mask_div;
    for (int64_t r = 0; r < rows; r++) {
        const float *m = mask ? mask + mask_row * cols : NULL;
        if (++within == mask_div) {
            within = 0;
            if (++mask_row == mask_mod)
                mask_row = 0;
        }
        if (cols <= SOFTMAX_LOCAL)
            softmax_short_row(x + r * cols, m, scale, cols);
        else
            softmax_long_row(x + r * cols, m, scale, cols);
    }
}

/* dense_kernels.c, this ISA's */
void VT_SUFFIX(vt_dense_panel)(float *y, int64_t ldy, const float *x, const float *panel, const float *b, int64_t k,
                               int64_t r0, int64_t r1, int64_t cols);
void VT_SUFFIX(vt_dense_pack)(float *panel, const float *w, int64_t k, int64_t cols, int stream);
#if defined(VT_ISA_AVX512)
void VT_SUFFIX(vt_dense_rows)(float *y, int64_t ldy, const float *x, const float *w, const float *b, int64_t k,
                              int64_t r0, int64_t r1, int64_t cols, int64_t ahead);
#endif
void VT_SUFFIX(vt_encoder_attend)(float *out, const float *q, const float *k, const float *v, int64_t stride,
                                  int64_t heads, int64_t dh, int64_t row0, int64_t len, int64_t h, float scale,
                                  float *scratch);

const struct vt_nn_kernels VT_SUFFIX(vt_nn) = {
    .isa = VT_ISA_NAME,
    .gelu_span = gelu_span,
    .bias_gelu_rows = bias_gelu_rows,
    .layer_norm_rows = layer_norm_rows,
    .softmax_rows = softmax_rows,
    .dense_panel = VT_SUFFIX(vt_dense_panel),
    .dense_pack = VT_SUFFIX(vt_dense_pack),
#if defined(VT_ISA_AVX512)
    .dense_rows = VT_SUFFIX(vt_dense_rows),
#endif
    .encoder_attend = VT_SUFFIX(vt_encoder_attend),
};
