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

void vt_pool_set_threads(int n);
int vt_pool_threads(void);

/* ---- per-ISA kernel tables ------------------------------------------------------------------------ */

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
};

#if defined(__x86_64__) || defined(_M_X64)
#define VT_X86_64 1
extern const struct vt_nn_kernels vt_nn_sse2, vt_nn_avx2, vt_nn_avx512;
#elif defined(__aarch64__)
extern const struct vt_nn_kernels vt_nn_neon;
#else
extern const struct vt_nn_kernels vt_nn_generic;
#endif

/* The table for the active ISA (dispatch.c). */
const struct vt_nn_kernels *vt_nn(void);

#endif /* VT_INTERNAL_H */
