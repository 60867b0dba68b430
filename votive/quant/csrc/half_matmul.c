/* half_matmul.c: vt_half_matmul, the exported product with an F16 or BF16 matrix (votive.h): its argument checks,
 * the order llama.cpp would use for the shape, x rounded once to the weight's type, and the split of the weight's
 * rows over threads. The arithmetic is half_kernels.c's, in the build of the active ISA (vt_isa()).
 *
 * Compiled once, for the baseline (kernel_build.py COMMON_SOURCES).
 */
#include <stdlib.h>
#include <string.h>

#include "half_kernels.h"

/* The builds of half_kernels.c, in the order of dispatch.c's builds[]. */
static const struct vt_half_kernels *const half_builds[] = {
#if defined(VT_X86_64)
    &vt_half_avx512,
    &vt_half_avx2,
    &vt_half_sse2,
#elif defined(__aarch64__)
    &vt_half_neon,
#else
    &vt_half_generic,
#endif
};
#define N_HALF_BUILDS (sizeof half_builds / sizeof half_builds[0])

/* The build of the ISA in use (vt_isa, which vt_set_isa switches), else the baseline. */
static const struct vt_half_kernels *vt_half(void) {
    const char *isa = vt_isa();
    for (size_t i = 0; i < N_HALF_BUILDS; i++)
        if (strcmp(half_builds[i]->isa, isa) == 0)
            return half_builds[i];
    return half_builds[N_HALF_BUILDS - 1];
}

/* ggml_compute_forward_mul_mat offers the product to llamafile_sgemm (src1 rounded to vec_dot_type first), whose
 * tinyBLAS takes it when x has 2 rows and more (n < 2 is left to ggml for decoding), the weight's row count is a
 * multiple of 4 (tinyBLAS::matmul's tiles of 16, 8 and 4 rows on a 32-register ISA) and its rows are whole steps
 * of KN elements (16 for F16's __m512, 32 for BF16's __m512bh); anything else goes to ggml_vec_dot_*. */
static int half_order(int type, int64_t rows, int64_t n, int64_t cols) {
    const int64_t step = type == VT_BF16 ? 32 : 16;
    return n >= 2 && rows % 4 == 0 && cols % step == 0 ? VT_HALF_TILED : VT_HALF_VEC_DOT;
}

struct half_job {
    const struct vt_half_kernels *k;
    int type, order;
    const uint8_t *w;
    int64_t w_stride, rows, n, cols;
    const void *act;
    float *out;
    const float *x; /* for the rounding job */
    void *act_out;
};

#define ROW_QUAD 4 /* units of the product's job: weight rows in fours, so the tiles of 4 rows stay whole */

static void half_part(void *arg, int64_t begin, int64_t end) {
    struct half_job *j = arg;
    const int64_t r_end = end * ROW_QUAD < j->rows ? end * ROW_QUAD : j->rows;
    j->k->matmul_rows(j->type, j->order, j->w, j->w_stride, begin * ROW_QUAD, r_end, j->act, j->n, j->cols, j->out,
                      j->rows);
}

static void round_part(void *arg, int64_t begin, int64_t end) {
    struct half_job *j = arg;
    const size_t size = j->type == VT_F16 ? sizeof(float) : sizeof(uint16_t);
    j->k->round_rows(j->type, j->x + begin * j->cols, (end - begin) * j->cols,
                     (char *)j->act_out + (size_t)(begin * j->cols) * size);
}

/* Rounded activations of decode steps (a row of up to 4096 floats) stay on the stack. */
#define SMALL_ACT_BYTES 16384

VT_API int vt_half_matmul(float *out, const void *w, int type, int64_t w_stride, const float *x, int64_t n,
                          int64_t out_features, int64_t cols) {
    if (type != VT_F16 && type != VT_BF16)
        return VT_EUNSUPPORTED;
    if (n < 0 || out_features < 0 || cols < 0 || w_stride < cols * 2)
        return VT_EINVAL;
    if (n == 0 || out_features == 0)
        return VT_OK;
    if (!out || !x || (cols > 0 && !w))
        return VT_EINVAL;
    if (cols == 0) {
        memset(out, 0, (size_t)(n * out_features) * sizeof *out);
        return VT_OK;
    }
    const size_t act_bytes = (size_t)(n * cols) * (type == VT_F16 ? sizeof(float) : sizeof(uint16_t));
    _Alignas(64) unsigned char small[SMALL_ACT_BYTES];
    void *act = act_bytes <= sizeof small ? (void *)small : malloc(act_bytes);
    if (!act)
        return VT_ENOMEM;
    struct half_job job = {vt_half(), type, half_order(type, out_features, n, cols), w, w_stride, out_features, n,
                           cols, act, out, x, act};
    /* grains of about half a microsecond: ~4 floats rounded per ns; per row quad, its bytes from memory (~16 per
     * ns) or its n * cols multiply-adds (~32 per ns on AVX-512), whichever takes longer */
    vt_parallel_for(n, 2000 / cols + 1, round_part, &job);
    const double read_ns = 4.0 * (double)w_stride / 16, compute_ns = 4.0 * (double)n * (double)cols / 32;
    const double quad_ns = read_ns > compute_ns ? read_ns : compute_ns;
    const int64_t grain = quad_ns >= 500 ? 1 : (int64_t)(500 / quad_ns);
    vt_parallel_for((out_features + ROW_QUAD - 1) / ROW_QUAD, grain, half_part, &job);
    if (act != (void *)small)
        free(act);
    return VT_OK;
}
