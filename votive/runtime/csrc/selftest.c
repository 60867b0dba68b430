/* selftest.c: checks every kernel of libvotive, on every ISA this CPU runs, against plain scalar loops in
 * double precision. Built beside the library by kernel_build.py (build_selftest) and linked to it, so a
 * cross-compiled library can be checked on its target or under qemu-user:
 *
 *     qemu-aarch64 -L /usr/aarch64-linux-gnu ./votive-selftest
 *
 * Prints one line per check and exits 0 when all pass, 1 otherwise.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "votive.h"

static const char *const ALL_ISAS[] = {"avx512", "avx2", "sse2", "neon", "generic"};
static int failures;

static void report(const char *isa, const char *what, double err, double limit) {
    int ok = err <= limit; /* false for NaN too */
    failures += !ok;
    printf("%-4s %-7s %-44s max error %.3g (limit %.3g)\n", ok ? "ok" : "FAIL", isa, what, err, limit);
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
    }
    vt_set_isa(best);
    printf("%s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}
