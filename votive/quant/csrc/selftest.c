/* selftest.c: checks every kernel of libvotive, on every ISA this CPU runs, against plain scalar loops in
 * double precision; the quantized kernels against this file's own reading of ggml's block formats. Built beside the library by kernel_build.py (build_selftest) and linked to it, so a
 * cross-compiled library can be checked on its target or under qemu-user:
 *
 *     qemu-aarch64 -L /usr/aarch64-linux-gnu ./votive-selftest
 *
 * Prints one line per check and exits 0 when all pass, 1 otherwise.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "votive.h"

static const char *const ALL_ISAS[] = {"avx512", "avx2", "sse2", "neon", "generic"};
static int failures;

static void report(const char *isa, const char *what, double err, double limit) {
    int ok = err <= limit; /* false for NaN too */
    failures += !ok;
    printf("%-4s %-18s %-50s max error %.3g (limit %.3g)\n", ok ? "ok" : "FAIL", isa, what, err, limit);
}

/* xorshift64*: the same numbers on every platform */
static unsigned long long rng_state = 0x9e3779b97f4a7c15ULL;
static float uniform(float lo, float hi) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    double u = (double)((rng_state * 0x2545f4914f6cdd1dULL) >> 11) / 9007199254740992.0;
    return (float)(lo + (hi - lo) * u);
}

static float *random_array(size_t n, float lo, float hi) {
    float *a = malloc(n * sizeof *a);
    for (size_t i = 0; i < n; i++)
        a[i] = uniform(lo, hi);
    return a;
}

/* ---- scalar references ------------------------------------------------------------------------ */

static double gelu_ref(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }

static void layer_norm_ref(double *out, const float *x, const float *res, const float *w, const float *b,
                           int rows, int cols, double eps) {
    for (int r = 0; r < rows; r++) {
        double mean = 0, var = 0;
        for (int c = 0; c < cols; c++)
            mean += x[r * cols + c] + (res ? res[r * cols + c] : 0.0);
        mean /= cols;
        for (int c = 0; c < cols; c++) {
            double d = x[r * cols + c] + (res ? res[r * cols + c] : 0.0) - mean;
            var += d * d;
        }
        double rstd = 1.0 / sqrt(var / cols + eps);
        for (int c = 0; c < cols; c++) {
            double h = x[r * cols + c] + (res ? res[r * cols + c] : 0.0);
            out[r * cols + c] = (h - mean) * rstd * (w ? w[c] : 1.0) + (b ? b[c] : 0.0);
        }
    }
}

static void softmax_ref(double *out, const float *x, const float *mask, int mask_div, int mask_mod,
                        double scale, int rows, int cols) {
    for (int r = 0; r < rows; r++) {
        const float *m = mask ? mask + (r / mask_div % mask_mod) * cols : NULL;
        double mx = -INFINITY, sum = 0;
        for (int c = 0; c < cols; c++) {
            out[r * cols + c] = x[r * cols + c] * scale + (m ? m[c] : 0.0);
            mx = out[r * cols + c] > mx ? out[r * cols + c] : mx;
        }
        for (int c = 0; c < cols; c++)
            sum += out[r * cols + c] = exp(out[r * cols + c] - mx);
        for (int c = 0; c < cols; c++)
            out[r * cols + c] /= sum;
    }
}

/* ---- checks --------------------------------------------------------------------------------------- */

static void check_gelu(const char *isa) {
    /* a dense grid over [-10, 10]: the accuracy claim */
    enum { N = 200001 };
    float *x = malloc(N * sizeof *x);
    for (int i = 0; i < N; i++)
        x[i] = -10.0f + 20.0f * (float)i / (N - 1);
    float *y = malloc(N * sizeof *y);
    memcpy(y, x, N * sizeof *y);
    vt_gelu(y, NULL, 1, N);
    double err = 0;
    for (int i = 0; i < N; i++)
        err = fmax(err, fabs(y[i] - gelu_ref(x[i])));
    report(isa, "gelu on [-10, 10] vs erf", err, 1e-6);

    /* bias, odd row lengths (every tail length), several rows */
    double err_bias = 0;
    for (int cols = 1; cols <= 37; cols++) {
        float *a = random_array(3 * cols, -6, 6), *b = random_array(cols, -1, 1);
        float *c = malloc(3 * cols * sizeof *c);
        memcpy(c, a, 3 * cols * sizeof *c);
        vt_gelu(c, b, 3, cols);
        for (int i = 0; i < 3 * cols; i++)
            err_bias = fmax(err_bias, fabs(c[i] - gelu_ref((double)(float)(a[i] + b[i % cols]))));
        free(a), free(b), free(c);
    }
    report(isa, "gelu with bias, 3 rows of 1..37 columns", err_bias, 1e-6);

    /* extremes: huge and tiny values stay finite, infinities and NaN as documented */
    float ext[] = {FLT_MAX, -FLT_MAX, 1e30f, -1e30f, 1e-40f, -1e-40f, 0.0f, -0.0f, 40.0f, -40.0f,
                   INFINITY, -INFINITY, NAN};
    float want[] = {FLT_MAX, -0.0f, 1e30f, -0.0f, 0.5f * 1e-40f, -0.5f * 1e-40f, 0.0f, -0.0f, 40.0f, -0.0f,
                    INFINITY, NAN, NAN};
    int n = sizeof ext / sizeof ext[0];
    vt_gelu(ext, NULL, 1, n);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        if (isnan(want[i]))
            bad += !isnan(ext[i]);
        else /* subnormal results carry few digits: allow a few units of the smallest subnormal */
            bad += !(ext[i] == want[i] || fabsf(ext[i] - want[i]) <= 1e-6f * fabsf(want[i]) + 5 * FLT_TRUE_MIN);
    }
    report(isa, "gelu of +-FLT_MAX, +-1e30, +-1e-40, +-inf, NaN", bad, 0); /* count of wrong values */
    free(x), free(y);
}

static void check_layer_norm(const char *isa) {
    int shapes[][2] = {{1, 1}, {1, 7}, {5, 33}, {16, 384}, {3, 1000}};
    double err = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int rows = shapes[s][0], cols = shapes[s][1];
        for (int variant = 0; variant < 4; variant++) { /* residual or not, weight/bias or not */
            int use_res = variant & 1, use_wb = variant & 2;
            float *x = random_array(rows * cols, -3, 5), *res = random_array(rows * cols, -2, 2);
            float *w = random_array(cols, 0.5f, 1.5f), *b = random_array(cols, -1, 1);
            float *out = malloc(rows * cols * sizeof *out);
            double *ref = malloc(rows * cols * sizeof *ref);
            layer_norm_ref(ref, x, use_res ? res : NULL, use_wb ? w : NULL, use_wb ? b : NULL, rows, cols, 1e-5);
            vt_layer_norm(out, x, use_res ? res : NULL, use_wb ? w : NULL, use_wb ? b : NULL, rows, cols, 1e-5f);
            for (int i = 0; i < rows * cols; i++)
                err = fmax(err, fabs(out[i] - ref[i]));
            /* in place over the residual: out aliases an input */
            vt_layer_norm(res, x, use_res ? res : NULL, use_wb ? w : NULL, use_wb ? b : NULL, rows, cols, 1e-5f);
            for (int i = 0; i < rows * cols; i++)
                err = fmax(err, fabs(res[i] - ref[i]));
            free(x), free(res), free(w), free(b), free(out), free(ref);
        }
    }
    report(isa, "layer_norm (+residual, in place), 5 shapes", err, 1e-5);
}

static void check_softmax(const char *isa) {
    /* scores (batch 3, heads 2, queries 5, keys k) with a (batch, 1, 1, keys) mask */
    double err = 0;
    for (int keys = 1; keys <= 37; keys += 4) {
        int rows = 3 * 2 * 5;
        float *x = random_array(rows * keys, -8, 8), *mask = random_array(3 * keys, -1, 0);
        for (int i = 0; i < 3 * keys; i++)
            mask[i] = mask[i] < -0.7f ? -10000.0f : 0.0f;
        double *ref = malloc(rows * keys * sizeof *ref);
        softmax_ref(ref, x, mask, 10, 3, 0.125, rows, keys);
        vt_softmax(x, mask, 10, 3, 0.125f, rows, keys);
        for (int i = 0; i < rows * keys; i++)
            err = fmax(err, fabs(x[i] - ref[i]));
        free(x), free(mask), free(ref);
    }
    float big[4] = {1e30f, 1e30f, -1e30f, 88.0f};
    vt_softmax(big, NULL, 1, 1, 1.0f, 1, 4);
    err = fmax(err, fabs(big[0] - 0.5) + fabs(big[1] - 0.5) + fabs(big[2]) + fabs(big[3]));
    report(isa, "softmax with mask and scale, 1..37 keys", err, 1e-6);
}

static void check_threads(const char *isa) {
    /* the same bits with one thread and with three, on jobs large enough to be split */
    enum { ROWS = 300, COLS = 1000 };
    float *a = random_array(ROWS * COLS, -5, 5), *b = malloc(ROWS * COLS * sizeof *b);
    float *w = random_array(COLS, 0.5f, 1.5f);
    float *out1 = malloc(ROWS * COLS * sizeof *out1), *out3 = malloc(ROWS * COLS * sizeof *out3);
    int same = 1;
    for (int threads = 1; threads <= 3; threads += 2) {
        vt_set_num_threads(threads);
        float *out = threads == 1 ? out1 : out3;
        memcpy(out, a, ROWS * COLS * sizeof *out);
        vt_gelu(out, NULL, ROWS, COLS);
        vt_gelu(out, w, ROWS, COLS);
        vt_softmax(out, w, 1, 1, 0.5f, ROWS, COLS);
        memcpy(b, a, ROWS * COLS * sizeof *b);
        vt_layer_norm(b, b, out, w, w, ROWS, COLS, 1e-6f);
        memcpy(out, b, ROWS * COLS * sizeof *out);
    }
    vt_set_num_threads(0);
    same = memcmp(out1, out3, ROWS * COLS * sizeof *out1) == 0;
    report(isa, "1 and 3 threads give identical bits", !same, 0);
    free(a), free(b), free(w), free(out1), free(out3);
}

static void check_linear(const char *isa) {
    /* each output one chain over k in order, acc = fmaf(x, w, acc) (x * w + acc rounded apart on SSE2 and the
     * generic build), then + b: exactly, for W as stored (rows read in place for few rows of x, panels packed per
     * call for more) and W packed once (vt_pack_panels) */
    static const int shapes[][3] = {{1, 1, 1}, {3, 17, 17}, {7, 130, 100}, {30, 64, 33}, {40, 70, 384}};
    const int fused = strcmp(isa, "sse2") && strcmp(isa, "generic");
    double err = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2], padded = (n + 63) / 64 * 64;
        float *x = random_array((size_t)m * k, -1, 1), *w = random_array((size_t)n * k, -1, 1);
        float *b = random_array(n, -1, 1), *y = malloc((size_t)m * n * sizeof *y), *yp = malloc((size_t)m * n * sizeof *yp);
        float *panels = malloc((size_t)padded * k * sizeof *panels);
        vt_linear(y, x, w, b, m, n, k);
        vt_pack_panels(panels, w, n, k);
        vt_linear_panels(yp, x, panels, b, m, n, k);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                float acc = 0.0f;
                for (int q = 0; q < k; q++) {
                    volatile float p = x[i * k + q] * w[j * k + q]; /* rounded: never contracted */
                    acc = fused ? fmaf(x[i * k + q], w[j * k + q], acc) : p + acc;
                }
                acc += b[j];
                err = fmax(err, fabs((double)y[i * n + j] - acc) + fabs((double)yp[i * n + j] - acc));
            }
        free(x), free(w), free(b), free(y), free(yp), free(panels);
    }
    report(isa, "linear and linear_panels: the chain, exactly", err, 0);
}

/* ---- quantized formats: an independent reading of ggml-common.h's blocks ------------------------------- */

static double half_value(const uint8_t *p) {
    int h = p[0] | (p[1] << 8), e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return h & 0x8000 ? -v : v;
}

/* A random half in [2^-12, 2^-4) (a sane scale), optionally of either sign, stored at p. */
static void random_half(uint8_t *p, int signed_) {
    int bits = (int)uniform(3, 11) << 10 | (int)uniform(0, 1023);
    if (signed_ && uniform(0, 1) < 0.5f)
        bits |= 0x8000;
    p[0] = (uint8_t)bits;
    p[1] = (uint8_t)(bits >> 8);
}

struct qformat {
    int type, elems, bytes;
    const char *name;
    int d_at, min_at; /* byte offsets of the half scale and of the half min (-1: none) */
};

static const struct qformat QFORMATS[] = {
    {2, 32, 18, "Q4_0", 0, -1},    {3, 32, 20, "Q4_1", 0, 2},     {6, 32, 22, "Q5_0", 0, -1},
    {7, 32, 24, "Q5_1", 0, 2},     {8, 32, 34, "Q8_0", 0, -1},    {10, 256, 84, "Q2_K", 80, 82},
    {11, 256, 110, "Q3_K", 108, -1}, {12, 256, 144, "Q4_K", 0, 2}, {13, 256, 176, "Q5_K", 0, 2},
    {14, 256, 210, "Q6_K", 208, -1},
};
#define N_QFORMATS (int)(sizeof QFORMATS / sizeof QFORMATS[0])

/* One block -> per element: x = d * sc * q - dmin * mn (+ m for Q4_1 and Q5_1, returned in *m). */
static void decode_block(int type, const uint8_t *b, double *d, double *dmin, double *m, int *q, int *sc, int *mn) {
    *dmin = *m = 0;
    for (int e = 0; e < 256; e++)
        sc[e] = 1, mn[e] = 0;
    if (type <= 8) {
        *d = half_value(b);
        int off = type == 2 ? 8 : type == 6 ? 16 : 0, at = type == 2 ? 2 : type == 3 ? 4 : type == 6 ? 6 : 8;
        uint32_t qh = 0;
        if (type == 6 || type == 7)
            qh = (uint32_t)b[at - 4] | (uint32_t)b[at - 3] << 8 | (uint32_t)b[at - 2] << 16 | (uint32_t)b[at - 1] << 24;
        if (type == 3 || type == 7)
            *m = half_value(b + 2);
        for (int j = 0; j < 32; j++) {
            if (type == 8)
                q[j] = (int8_t)b[2 + j];
            else
                q[j] = ((b[at + j % 16] >> (j < 16 ? 0 : 4)) & 15) + (int)((qh >> j) & 1) * 16 - off;
        }
        return;
    }
    for (int e = 0; e < 256; e++) {
        int g = e / 16, h = e / 128, l = e % 32, j = (e % 128) / 32;
        switch (type) {
        case 10: /* Q2_K */
            *d = half_value(b + 80), *dmin = half_value(b + 82);
            sc[e] = b[g] & 15, mn[e] = b[g] >> 4;
            q[e] = (b[16 + 32 * h + l] >> (2 * j)) & 3;
            break;
        case 11: { /* Q3_K */
            *d = half_value(b + 108);
            int low4 = g < 8 ? b[96 + g] & 15 : b[96 + g - 8] >> 4, high2 = (b[104 + g % 4] >> (2 * (g / 4))) & 3;
            sc[e] = (low4 | high2 << 4) - 32;
            q[e] = ((b[32 + 32 * h + l] >> (2 * j)) & 3) - ((b[l] >> (4 * h + j)) & 1 ? 0 : 4);
            break;
        }
        case 12:
        case 13: { /* Q4_K, Q5_K */
            *d = half_value(b), *dmin = half_value(b + 2);
            int s = e / 32, c = e / 64, hi = (e % 64) >= 32;
            const uint8_t *k = b + 4;
            sc[e] = s < 4 ? k[s] & 63 : (k[s + 4] & 15) | (k[s - 4] >> 6) << 4;
            mn[e] = s < 4 ? k[s + 4] & 63 : (k[s + 4] >> 4) | (k[s] >> 6) << 4;
            int byte = b[(type == 12 ? 16 : 48) + 32 * c + l];
            q[e] = hi ? byte >> 4 : byte & 15;
            if (type == 13)
                q[e] += ((b[16 + l] >> (2 * c + hi)) & 1) * 16;
            break;
        }
        default: { /* Q6_K */
            *d = half_value(b + 208);
            int ql = b[64 * h + l + (j & 1) * 32];
            q[e] = ((j < 2 ? ql & 15 : ql >> 4) | ((b[128 + 32 * h + l] >> (2 * j)) & 3) << 4) - 32;
            sc[e] = (int8_t)b[192 + g];
        }
        }
    }
}

/* Rows of random blocks: random bytes, then sane scales (random bits there would give inf and NaN). */
static uint8_t *random_blocks(const struct qformat *f, int rows, int cols) {
    size_t size = (size_t)rows * cols / f->elems * f->bytes;
    uint8_t *w = malloc(size);
    for (size_t i = 0; i < size; i++)
        w[i] = (uint8_t)uniform(0, 256);
    for (size_t at = 0; at < size; at += f->bytes) {
        random_half(w + at + f->d_at, 0);
        if (f->min_at >= 0)
            random_half(w + at + f->min_at, f->type == 3 || f->type == 7);
    }
    return w;
}

/* The activation row (ggml layout) of format act_type, block b: d, s (Q8_1), quants. */
static void decode_act(int act_type, const uint8_t *a, int b, double *d, double *s, const int8_t **q) {
    if (act_type == 15) {
        float f;
        memcpy(&f, a + 292 * b, 4);
        *d = f, *s = 0, *q = (const int8_t *)(a + 292 * b + 4);
    } else {
        int bytes = act_type == 9 ? 36 : 34;
        *d = half_value(a + bytes * b);
        *s = act_type == 9 ? half_value(a + bytes * b + 2) : 0;
        *q = (const int8_t *)(a + bytes * b + bytes - 32);
    }
}

/* Weight row . activation row as ggml's vec_dot defines it, in double; *mag gets the sum of the magnitudes
 * of its parts (quants taken as unsigned with any offset, mins), which bounds float32 rounding. */
static double dot_ref(const struct qformat *f, const uint8_t *w, const uint8_t *a, int cols, double *mag) {
    int act_type = f->type == 3 || f->type == 7 ? 9 : f->elems == 256 ? 15 : 8;
    int q[256], sc[256], mn[256];
    double sum = 0;
    *mag = 0;
    for (int b = 0; b < cols / f->elems; b++) {
        double d, dmin, m, dy, sy;
        const int8_t *qy;
        decode_block(f->type, w + b * f->bytes, &d, &dmin, &m, q, sc, mn);
        decode_act(act_type, a, b, &dy, &sy, &qy);
        double isum = 0, msum = 0, imag = 0, mmag = 0;
        for (int e = 0; e < f->elems; e++) {
            isum += (double)sc[e] * q[e] * qy[e];
            msum += (double)mn[e] * qy[e];
            imag += fabs((double)sc[e]) * (abs(q[e]) + 32) * abs(qy[e]);
            mmag += (double)mn[e] * abs(qy[e]);
        }
        sum += d * dy * isum - dmin * dy * msum + m * sy;
        *mag += fabs(d * dy) * imag + fabs(dmin * dy) * mmag + fabs(m * sy);
    }
    return sum;
}

static void check_qmatmul(const char *isa) {
    enum { ROWS = 37, N = 5 };
    for (int i = 0; i < N_QFORMATS; i++) {
        const struct qformat *f = &QFORMATS[i];
        int cols = 3 * f->elems, nb = 3, act_type = f->type == 3 || f->type == 7 ? 9 : f->elems == 256 ? 15 : 8;
        int act_bytes = nb * (act_type == 15 ? 292 : act_type == 9 ? 36 : 34);
        uint8_t *w = random_blocks(f, ROWS, cols);
        float *x = random_array((size_t)N * cols, -2, 2), *out = malloc(sizeof(float) * N * ROWS);
        float *one = malloc(sizeof(float) * ROWS);
        uint8_t *act = malloc((size_t)N * act_bytes);
        vt_quantize_rows(act, act_type, x, N, cols);
        int status = vt_qmatmul(out, w, f->type, (int64_t)cols / f->elems * f->bytes, x, N, ROWS, cols);
        double err = status == 0 ? 0 : INFINITY;
        int same = 1;
        for (int r = 0; r < N; r++) {
            vt_qmatmul(one, w, f->type, (int64_t)cols / f->elems * f->bytes, x + (size_t)r * cols, 1, ROWS, cols);
            same &= memcmp(one, out + (size_t)r * ROWS, sizeof(float) * ROWS) == 0;
            for (int o = 0; o < ROWS; o++) {
                double mag, want = dot_ref(f, w + (size_t)o * nb * f->bytes, act + (size_t)r * act_bytes, cols, &mag);
                /* float32 sums of a term per block: (nb + 4) roundings of at most 2^-24 of mag each, twice over */
                err = fmax(err, fabs(out[(size_t)r * ROWS + o] - want) / (2 * (nb + 4) * ldexp(mag, -24)));
            }
        }
        char what[64];
        snprintf(what, sizeof what, "qmatmul %s, %d x %d times 5 rows", f->name, ROWS, cols);
        report(isa, what, err, 1.0); /* in units of the rounding bound */
        snprintf(what, sizeof what, "qmatmul %s rows equal matrix-vector bits", f->name);
        report(isa, what, !same, 0);
        free(w), free(x), free(out), free(one), free(act);
    }
}

static void check_get_rows(const char *isa) {
    enum { ROWS = 9, NIDS = 6 };
    const int64_t ids[NIDS] = {8, 0, 3, 3, 7, 1};
    int bad = 0;
    for (int i = 0; i < N_QFORMATS; i++) {
        const struct qformat *f = &QFORMATS[i];
        int cols = 2 * f->elems, nb = 2, q[256], sc[256], mn[256];
        uint8_t *w = random_blocks(f, ROWS, cols);
        float *out = malloc(sizeof(float) * NIDS * cols);
        bad += vt_get_rows(out, w, f->type, (int64_t)nb * f->bytes, ROWS, ids, NIDS, cols) != 0;
        for (int k = 0; k < NIDS; k++)
            for (int b = 0; b < nb; b++) {
                double d, dmin, m;
                decode_block(f->type, w + (ids[k] * nb + b) * f->bytes, &d, &dmin, &m, q, sc, mn);
                for (int e = 0; e < f->elems; e++) { /* ggml's float32 order: (d * sc) * q - dmin * mn, or q * d + m */
                    float want = f->elems == 32 ? (float)q[e] * (float)d : ((float)d * (float)sc[e]) * (float)q[e];
                    if (f->min_at >= 0) /* only then: 0 * -d is -0, and -0 + 0 would be +0 */
                        want = f->elems == 32 ? want + (float)m : want - (float)dmin * (float)mn[e];
                    bad += memcmp(&want, &out[k * cols + b * f->elems + e], sizeof want) != 0;
                }
            }
        int64_t outside = ROWS;
        bad += vt_get_rows(out, w, f->type, (int64_t)nb * f->bytes, ROWS, &outside, 1, cols) != VT_ERANGE;
        free(w), free(out);
    }
    /* plain floats: F32 copies, F16 widens exactly, BF16 is the top half of a float32 */
    uint16_t halves[4] = {0x3c00, 0x0001, 0xfbff, 0x7c00};
    double want16[4] = {1.0, ldexp(1, -24), -65504.0, INFINITY};
    float got[4];
    int64_t all[4] = {0, 1, 2, 3};
    vt_get_rows(got, halves, 1, 2, 4, all, 4, 1);
    for (int k = 0; k < 4; k++)
        bad += got[k] != (float)want16[k];
    uint16_t bf[2] = {0x3f80, 0xc049};
    vt_get_rows(got, bf, 30, 4, 1, all, 1, 2);
    bad += got[0] != 1.0f || got[1] != -3.140625f;
    report(isa, "get_rows of every format, bit for bit", bad, 0); /* count of wrong values */
}

static void check_quantize_rows(const char *isa) {
    /* ties: with max |x| = 127 the scale is 1, so x = k + 0.5 rounds to even for Q8_0 (as ggml's x86
     * quantize_row_q8_0) and for Q8_K (ggml's nearest_int), where -127 is the value of largest magnitude */
    float x[256];
    for (int i = 0; i < 256; i++)
        x[i] = (float)(i % 64) - 31.5f;
    x[0] = 127.0f;
    uint8_t q8_0[34], q8_k[292];
    int bad = vt_quantize_rows(q8_0, 8, x, 1, 32) != 0;
    for (int i = 1; i < 32; i++)
        bad += (int8_t)q8_0[2 + i] != (int)nearbyint(x[i]);
    bad += q8_0[0] != 0x00 || q8_0[1] != 0x3c; /* d = 1.0 */
    x[0] = -127.0f;
    bad += vt_quantize_rows(q8_k, 15, x, 1, 256) != 0;
    for (int i = 1; i < 256; i++) {
        double r = nearbyint(x[i]); /* the default rounding mode: to even */
        bad += (int8_t)q8_k[4 + i] != (int)r;
    }
    report(isa, "quantize_rows rounding of ties (to even)", bad, 0);
}

static void check_quant_threads(const char *isa) {
    const struct qformat *f = &QFORMATS[7]; /* Q4_K */
    enum { ROWS = 600, COLS = 1024, N = 6 };
    uint8_t *w = random_blocks(f, ROWS, COLS);
    float *x = random_array((size_t)N * COLS, -1, 1), *a = malloc(sizeof(float) * N * ROWS);
    float *b = malloc(sizeof(float) * N * ROWS);
    vt_set_num_threads(1);
    vt_qmatmul(a, w, f->type, COLS / 256 * 144, x, N, ROWS, COLS);
    vt_set_num_threads(3);
    vt_qmatmul(b, w, f->type, COLS / 256 * 144, x, N, ROWS, COLS);
    vt_set_num_threads(0);
    report(isa, "qmatmul with 1 and 3 threads gives identical bits", memcmp(a, b, sizeof(float) * N * ROWS) != 0, 0);
    free(w), free(x), free(a), free(b);
}

/* FNV-1a over the output bits of one product per format on fixed inputs. Kernels that follow the reference
 * float order (plain C, NEON) print the same digest on every architecture; tests compare them across builds. */
static void print_digest(const char *label) {
    unsigned long long saved = rng_state, hash = 0xcbf29ce484222325ULL;
    rng_state = 0x853c49e6748fea9bULL;
    for (int i = 0; i < N_QFORMATS; i++) {
        const struct qformat *f = &QFORMATS[i];
        int rows = 13, cols = 3 * f->elems, n = 5;
        uint8_t *w = random_blocks(f, rows, cols);
        float *x = random_array((size_t)n * cols, -3, 3), *out = malloc(sizeof(float) * n * rows);
        vt_qmatmul(out, w, f->type, (int64_t)cols / f->elems * f->bytes, x, n, rows, cols);
        const unsigned char *bytes = (const unsigned char *)out;
        for (size_t k = 0; k < sizeof(float) * n * rows; k++)
            hash = (hash ^ bytes[k]) * 0x100000001b3ULL;
        free(w), free(x), free(out);
    }
    rng_state = saved;
    printf("digest %s %016llx\n", label, hash);
}

static void check_quant(const char *isa) {
    /* each int8 dot-product variant of this ISA that the CPU runs */
    char names[3][32];
    snprintf(names[0], sizeof names[0], "%s", isa);
    snprintf(names[1], sizeof names[1], "%s+%s", isa, strcmp(isa, "neon") == 0 ? "dotprod" : "vnni");
    snprintf(names[2], sizeof names[2], "scalar");
    const char *start = vt_quant_isa();
    char first[32];
    snprintf(first, sizeof first, "%s", start);
    for (int i = 0; i < 3; i++) {
        if (vt_set_quant_isa(names[i]) != 0)
            continue;
        char label[48];
        snprintf(label, sizeof label, "%s/%s", isa, vt_quant_isa());
        check_qmatmul(label);
        check_quant_threads(label);
        print_digest(label);
    }
    vt_set_quant_isa(first);
    check_get_rows(isa);
    check_quantize_rows(isa);
}

int main(void) {
    if (vt_abi_version() != VT_ABI_VERSION) {
        printf("FAIL library ABI version %d, selftest built for %d\n", vt_abi_version(), VT_ABI_VERSION);
        return 1;
    }
    const char *best = vt_isa();
    printf("libvotive: best ISA here %s, %d threads\n", best, vt_num_threads());
    for (size_t i = 0; i < sizeof ALL_ISAS / sizeof ALL_ISAS[0]; i++) {
        if (!vt_isa_supported(ALL_ISAS[i]))
            continue;
        vt_set_isa(ALL_ISAS[i]);
        check_gelu(ALL_ISAS[i]);
        check_layer_norm(ALL_ISAS[i]);
        check_softmax(ALL_ISAS[i]);
        check_threads(ALL_ISAS[i]);
        check_linear(ALL_ISAS[i]);
        check_quant(ALL_ISAS[i]);
    }
    vt_set_isa(best);
    printf("%s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}
