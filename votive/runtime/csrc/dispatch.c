/* dispatch.c: the exported API. Picks the kernel build for this CPU at run time (so one x86_64 library
 * serves every x86_64 CPU), checks arguments, and splits rows over the thread pool. */
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include "vt_internal.h"

/* Kernel builds, best first. kernel_build.py compiles each with the matching flags (ISA_FLAGS there);
 * cpu_runs() below must test every feature those flags enable. */
static const struct vt_nn_kernels *const builds[] = {
#if defined(VT_X86_64)
    &vt_nn_avx512,
    &vt_nn_avx2,
    &vt_nn_sse2, /* the x86_64 baseline */
#elif defined(__aarch64__)
    &vt_nn_neon, /* the arm64 baseline */
#else
    &vt_nn_generic,
#endif
};
#define N_BUILDS (sizeof builds / sizeof builds[0])

static int cpu_runs(const struct vt_nn_kernels *k) {
#if defined(VT_X86_64)
    /* __builtin_cpu_supports also checks that the OS saves the wider registers (XCR0) */
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if (strcmp(k->isa, "avx512") == 0)
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    if (strcmp(k->isa, "avx2") == 0)
        return avx2;
#endif
    (void)k;
    return 1;
}

static _Atomic(const struct vt_nn_kernels *) active;
static pthread_once_t active_once = PTHREAD_ONCE_INIT;

static void pick_best(void) {
    for (size_t i = 0; i < N_BUILDS; i++) {
        if (cpu_runs(builds[i])) {
            atomic_store(&active, builds[i]);
            return;
        }
    }
}

const struct vt_nn_kernels *vt_nn(void) {
    pthread_once(&active_once, pick_best);
    return atomic_load_explicit(&active, memory_order_relaxed);
}

static const struct vt_nn_kernels *find_build(const char *name) {
    for (size_t i = 0; name && i < N_BUILDS; i++)
        if (strcmp(builds[i]->isa, name) == 0 && cpu_runs(builds[i]))
            return builds[i];
    return NULL;
}

VT_API int vt_abi_version(void) { return VT_ABI_VERSION; }

VT_API const char *vt_isa(void) { return vt_nn()->isa; }

VT_API int vt_isa_supported(const char *name) { return find_build(name) != NULL; }

VT_API int vt_set_isa(const char *name) {
    const struct vt_nn_kernels *k = find_build(name);
    if (!k)
        return VT_EUNSUPPORTED;
    vt_nn(); /* so a later first use does not overwrite the choice */
    atomic_store(&active, k);
    return VT_OK;
}

VT_API void vt_set_num_threads(int n) { vt_pool_set_threads(n); }

VT_API int vt_num_threads(void) { return vt_pool_threads(); }

/* ---- kernels ----------------------------------------------------------------------------------------- */

/* The smallest chunk worth handing to another thread, about 4 microseconds of work on one AVX2 core;
 * jobs of up to 4 of these stay on the calling thread (see vt_parallel_for). */
#define GELU_BLOCK 1024 /* elements; a multiple of every vector width */
#define GELU_GRAIN 8192 /* elements */
#define LAYER_NORM_GRAIN 8192
#define SOFTMAX_GRAIN 4096

static int64_t rows_per_chunk(int64_t elements, int64_t cols) {
    return cols >= elements ? 1 : elements / cols;
}

struct gelu_job {
    const struct vt_nn_kernels *k;
    float *x;
    const float *bias;
    int64_t n, cols;
};

static void gelu_blocks(void *arg, int64_t begin, int64_t end) {
    struct gelu_job *j = arg;
    int64_t first = begin * GELU_BLOCK;
    int64_t last = end * GELU_BLOCK < j->n ? end * GELU_BLOCK : j->n;
    j->k->gelu_span(j->x + first, last - first);
}

static void bias_gelu_part(void *arg, int64_t begin, int64_t end) {
    struct gelu_job *j = arg;
    j->k->bias_gelu_rows(j->x + begin * j->cols, j->bias, end - begin, j->cols);
}

VT_API int vt_gelu(float *x, const float *bias, int64_t rows, int64_t cols) {
    if (rows < 0 || cols < 0 || (rows * cols > 0 && !x))
        return VT_EINVAL;
    struct gelu_job job = {vt_nn(), x, bias, rows * cols, cols};
    if (bias) /* rows matter: parallel over rows */
        vt_parallel_for(rows, rows_per_chunk(GELU_GRAIN, cols), bias_gelu_part, &job);
    else /* plain elementwise: parallel over fixed blocks, so a single long row splits too */
        vt_parallel_for((job.n + GELU_BLOCK - 1) / GELU_BLOCK, GELU_GRAIN / GELU_BLOCK, gelu_blocks, &job);
    return VT_OK;
}

struct layer_norm_job {
    const struct vt_nn_kernels *k;
    float *out;
    const float *x, *residual, *weight, *bias;
    int64_t cols;
    float eps;
};

static void layer_norm_part(void *arg, int64_t begin, int64_t end) {
    struct layer_norm_job *j = arg;
    int64_t at = begin * j->cols;
    j->k->layer_norm_rows(j->out + at, j->x + at, j->residual ? j->residual + at : NULL, j->weight, j->bias,
                          end - begin, j->cols, j->eps);
}

VT_API int vt_layer_norm(float *out, const float *x, const float *residual, const float *weight,
                         const float *bias, int64_t rows, int64_t cols, float eps) {
    if (rows < 0 || cols < 0 || (rows * cols > 0 && (!x || !out)))
        return VT_EINVAL;
    if (cols == 0)
        return VT_OK;
    struct layer_norm_job job = {vt_nn(), out, x, residual, weight, bias, cols, eps};
    vt_parallel_for(rows, rows_per_chunk(LAYER_NORM_GRAIN, cols), layer_norm_part, &job);
    return VT_OK;
}

struct softmax_job {
    const struct vt_nn_kernels *k;
    float *x;
    const float *mask;
    int64_t mask_div, mask_mod, cols;
    float scale;
};

static void softmax_part(void *arg, int64_t begin, int64_t end) {
    struct softmax_job *j = arg;
    j->k->softmax_rows(j->x + begin * j->cols, j->mask, j->mask_div, j->mask_mod, j->scale, begin, end - begin,
                       j->cols);
}

VT_API int vt_softmax(float *x, const float *mask, int64_t mask_div, int64_t mask_mod, float scale,
                      int64_t rows, int64_t cols) {
    if (rows < 0 || cols < 0 || (rows * cols > 0 && !x) || (mask && (mask_div < 1 || mask_mod < 1)))
        return VT_EINVAL;
    if (cols == 0)
        return VT_OK;
    if (!mask)
        mask_div = mask_mod = 1;
    struct softmax_job job = {vt_nn(), x, mask, mask_div, mask_mod, cols, scale};
    vt_parallel_for(rows, rows_per_chunk(SOFTMAX_GRAIN, cols), softmax_part, &job);
    return VT_OK;
}
