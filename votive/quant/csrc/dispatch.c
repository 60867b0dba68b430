/* dispatch.c: the exported API. Picks the kernel build for this CPU at run time (so one x86_64 library
 * serves every x86_64 CPU), checks arguments, and splits rows over the thread pool. */
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "ggml_block_structs.h"
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

/* The quantized kernels of each build, in the order of builds[]. */
static const struct vt_quant_kernels *const quant_builds[] = {
#if defined(VT_X86_64)
    &vt_quant_avx512,
    &vt_quant_avx2,
    &vt_quant_sse2,
#elif defined(__aarch64__)
    &vt_quant_neon,
#else
    &vt_quant_generic,
#endif
};
_Static_assert(sizeof quant_builds / sizeof quant_builds[0] == N_BUILDS, "one quant table per build");

/* The decoder kernels of each build, in the order of builds[]. */
static const struct vt_decoder_kernels *const decoder_builds[] = {
#if defined(VT_X86_64)
    &vt_decoder_avx512,
    &vt_decoder_avx2,
    &vt_decoder_sse2,
#elif defined(__aarch64__)
    &vt_decoder_neon,
#else
    &vt_decoder_generic,
#endif
};
_Static_assert(sizeof decoder_builds / sizeof decoder_builds[0] == N_BUILDS, "one decoder table per build");

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

static size_t active_index(void) {
    const struct vt_nn_kernels *nn = vt_nn();
    for (size_t i = 0; i < N_BUILDS; i++)
        if (builds[i] == nn)
            return i;
    return N_BUILDS - 1; /* not reached: vt_nn() returns one of builds[] */
}

const struct vt_quant_kernels *vt_quant(void) { return quant_builds[active_index()]; }

const struct vt_decoder_kernels *vt_decoder(void) { return decoder_builds[active_index()]; }

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

VT_API void vt_set_spin_us(int64_t us) { vt_pool_set_spin_us(us); }

VT_API int64_t vt_spin_us(void) { return vt_pool_spin_us(); }

/* ---- kernels ----------------------------------------------------------------------------------------- */

/* The smallest chunk worth handing to another thread, about 4 microseconds of work on one AVX2 core;
 * jobs of up to 4 of these stay on the calling thread (see vt_parallel_for). */
#define GELU_BLOCK 1024 /* elements; a multiple of every vector width */
#define GELU_GRAIN 4096 /* elements */
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

/* A thread's attention buffers, kept between calls up to ATTENTION_KEPT bytes: a fresh allocation per call
 * (hundreds of KB at a few hundred positions) costs page faults and cold stores on every decoded token, more than
 * the attention itself. Larger ones (long contexts) are allocated per call and freed. Each thread keeps two: one
 * for a prompt's part (or, on the calling thread, a decoded token's rounded queries and scores) and one row. */
#define ATTENTION_KEPT ((size_t)8 << 20)
struct kept_buffer {
    float *p;
    size_t bytes;
};
/* and one for vt_linear's panel of W, packed as the product goes */
static __thread struct kept_buffer attention_kept, row_kept, panel_kept;

static float *kept_buffer(struct kept_buffer *kept, size_t bytes) {
    if (bytes > ATTENTION_KEPT)
        return malloc(bytes);
    if (bytes > kept->bytes) {
        free(kept->p);
        kept->p = malloc(bytes);
        kept->bytes = kept->p ? bytes : 0;
    }
    return kept->p;
}

static void kept_buffer_done(struct kept_buffer *kept, float *buf) {
    if (buf != kept->p)
        free(buf);
}

/* ---- dense products (dense_kernels.c) --------------------------------------------------------------------- */

/* multiply-adds per grain: a few microseconds on one core (the pool's granularity) */
#define DENSE_GRAIN_MACS 131072
/* units a product is cut into, at least, per thread: each unit is a panel of W by a run of rows of x, and a panel
 * is cut into runs of rows only as far as this asks (vt_linear packs a panel once per run) */
#define DENSE_UNITS_PER_THREAD 2
/* packing a panel costs about as much as multiplying this many rows of x by it (the units' work, for the pool) */
#define PACK_ROWS 16
/* vt_linear of at most this many rows of x reads W in place (dense_rows, where the ISA has it), not packing
 * panels: 24 products of MiniLM's at 10 rows, 1.47 ms against 2.40 (packing), at 20 rows 2.63 against 3.02; at
 * 32 rows packing wins, 3.73 against 4.04 (this Xeon, 2 threads) */
#define IN_PLACE_ROWS 24

struct dense_job {
    const struct vt_nn_kernels *k;
    float *y;
    const float *x;
    const float *const *w, *const *b; /* the parts' rows of W and biases (NULL: none) */
    const float *const *panels;      /* the parts packed (vt_pack_panels), or NULL: W's panels packed per unit */
    int64_t m, n, cols, parts, per_part, runs, run_rows; /* n rows of W a part; per_part panels a part */
    int failed;                                          /* a unit could not allocate its panel */
    int small;                                           /* W read in place (dense_rows), no panels */
};

/* units: (a part, a panel of VT_PANEL of its rows of W, a run of rows of x); a part's outputs are the n columns
 * after the previous part's, so parts stored apart multiply as one matrix would, bit for bit. */
static void dense_part(void *arg, int64_t begin, int64_t end) {
    struct dense_job *j = arg;
    for (int64_t u = begin; u < end; u++) {
        const int64_t q = u / j->runs, p = q / j->per_part, n0 = q % j->per_part * VT_PANEL;
        const int64_t r0 = u % j->runs * j->run_rows, r1 = r0 + j->run_rows < j->m ? r0 + j->run_rows : j->m;
        const int64_t cols = j->n - n0 < VT_PANEL ? j->n - n0 : VT_PANEL;
        const float *panel = j->panels ? j->panels[p] + q % j->per_part * VT_PANEL * j->cols : NULL;
        if (!panel && j->small) { /* a few rows: W read in place, no panel packed */
            if (r1 > r0)
                j->k->dense_rows(j->y + p * j->n + n0, j->parts * j->n, j->x, j->w[p] + n0 * j->cols,
                                 j->b[p] ? j->b[p] + n0 : NULL, j->cols, r0, r1, cols, j->n - n0);
            continue;
        }
        float *own = NULL;
        if (!panel) {
            own = kept_buffer(&panel_kept, sizeof(float) * VT_PANEL * (size_t)j->cols);
            if (!own) {
                __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
                return;
            }
            j->k->dense_pack(own, j->w[p] + n0 * j->cols, j->cols, cols, 0); /* kept in cache for the rows */
            panel = own;
        }
        if (r1 > r0)
            j->k->dense_panel(j->y + p * j->n + n0, j->parts * j->n, j->x, panel, j->b[p] ? j->b[p] + n0 : NULL,
                              j->cols, r0, r1, cols);
        if (own)
            kept_buffer_done(&panel_kept, own);
    }
}

/* y = x times the `parts` matrices mats[p] (n rows of k each) stacked, transposed: mats as stored (W's rows), or
 * packed (`packed`: vt_pack_panels' panels) */
static int dense_product(float *y, const float *x, const float *const *mats, const float *const *b, int packed,
                         int64_t parts, int64_t m, int64_t n, int64_t k) {
    if (parts < 1 || m < 0 || n < 0 || k < 0 || !mats || !b || (m * n > 0 && !y) || (m * k > 0 && !x))
        return VT_EINVAL;
    for (int64_t p = 0; p < parts; p++)
        if (n * k > 0 && !mats[p])
            return VT_EINVAL;
    if (m == 0 || n == 0)
        return VT_OK;
    const float *const *w = packed ? NULL : mats, *const *panels = packed ? mats : NULL;
    const int64_t per_part = (n + VT_PANEL - 1) / VT_PANEL, units = parts * per_part;
    const int64_t want = (int64_t)vt_pool_threads() * DENSE_UNITS_PER_THREAD;
    int64_t runs = units >= want ? 1 : (want + units - 1) / units;
    if (runs > (m + 5) / 6)
        runs = (m + 5) / 6; /* a run at least a tile of rows */
    const int64_t run_rows = (m + runs - 1) / runs;
    runs = (m + run_rows - 1) / run_rows;
    struct dense_job job = {vt_nn(), y, x, w, b, panels, m, n, k, parts, per_part, runs, run_rows, 0, 0};
    job.small = !panels && job.k->dense_rows && m <= IN_PLACE_ROWS;
    /* a unit is a panel's rows of x, whole: shared out whole, even a few of them */
    const int64_t rows_worth = run_rows + (panels || job.small ? 0 : PACK_ROWS);
    vt_parallel_for_units(units * runs, 1 + rows_worth * VT_PANEL * (k > 0 ? k : 1) / DENSE_GRAIN_MACS, dense_part,
                          &job);
    return job.failed ? VT_ENOMEM : VT_OK;
}

int vt_linear_parts(float *y, const float *x, const float *const *w, const float *const *b, int64_t parts, int64_t m,
                    int64_t n, int64_t k) {
    return dense_product(y, x, w, b, 0, parts, m, n, k);
}

VT_API int vt_linear(float *y, const float *x, const float *w, const float *b, int64_t m, int64_t n, int64_t k) {
    return vt_linear_parts(y, x, &w, &b, 1, m, n, k);
}

int vt_linear_panels_parts(float *y, const float *x, const float *const *panels, const float *const *b,
                           int64_t parts, int64_t m, int64_t n, int64_t k) {
    return dense_product(y, x, panels, b, 1, parts, m, n, k);
}

VT_API int vt_linear_panels(float *y, const float *x, const float *panels, const float *b, int64_t m, int64_t n,
                            int64_t k) {
    return vt_linear_panels_parts(y, x, &panels, &b, 1, m, n, k);
}

/* On the calling thread alone: the copy is bound by memory, not by cores (MiniLM's 43 MB: 7.6 ms on one thread,
 * 8.7 on two, here). */
VT_API int vt_pack_panels(float *panels, const float *w, int64_t n, int64_t k) {
    if (n < 0 || k < 0 || (n * k > 0 && (!panels || !w)))
        return VT_EINVAL;
    const struct vt_nn_kernels *kern = vt_nn();
    for (int64_t n0 = 0; n0 < n; n0 += VT_PANEL)
        kern->dense_pack(panels + n0 * k, w + n0 * k, k, n - n0 < VT_PANEL ? n - n0 : VT_PANEL, 1);
    return VT_OK;
}

struct encoder_attention_job {
    const struct vt_nn_kernels *k;
    float *out;
    const float *qkv;
    const int64_t *offsets;
    int64_t heads, dh, scratch;
    float scale;
    atomic_int failed; /* a part could not have its scratch */
};

static void encoder_attention_part(void *arg, int64_t begin, int64_t end) {
    struct encoder_attention_job *j = arg;
    float *scratch = malloc((size_t)j->scratch * sizeof(float));
    if (!scratch) {
        atomic_store(&j->failed, 1);
        return;
    }
    const int64_t dim = j->heads * j->dh;
    for (int64_t u = begin; u < end; u++) {
        const int64_t s = u / j->heads, h = u % j->heads;
        j->k->encoder_attend(j->out, j->qkv, j->qkv + dim, j->qkv + 2 * dim, 3 * dim, j->heads, j->dh,
                             j->offsets[s], j->offsets[s + 1] - j->offsets[s], h, j->scale, scratch);
    }
    free(scratch);
}

VT_API int vt_encoder_attention(float *out, const float *qkv, const int64_t *offsets, int64_t n_seqs, int64_t heads,
                                int64_t dh, float scale) {
    if (n_seqs < 0 || heads < 1 || dh < 1 || !offsets || !(scale == scale) || offsets[0] != 0)
        return VT_EINVAL;
    int64_t longest = 0;
    for (int64_t s = 0; s < n_seqs; s++) {
        const int64_t len = offsets[s + 1] - offsets[s];
        if (len < 0)
            return VT_EINVAL;
        longest = len > longest ? len : longest;
    }
    if (offsets[n_seqs] > 0 && (!out || !qkv))
        return VT_EINVAL;
    const int64_t len_p = longest + 16; /* rounded up to a vector of any ISA (16 floats at most) */
    struct encoder_attention_job job = {vt_nn(), out, qkv, offsets, heads, dh,
                                        (dh + VT_ATTEND_QUERIES) * len_p, scale, 0};
    const int64_t mean = n_seqs ? offsets[n_seqs] / n_seqs : 0, cost = mean * mean * dh + 1;
    vt_parallel_for(n_seqs * heads, 1 + 16384 / cost, encoder_attention_part, &job);
    return atomic_load(&job.failed) ? VT_ENOMEM : VT_OK;
}

/* ---- decoder kernels (decoder_kernels.c) ---------------------------------------------------------------- */

#define DECODER_GRAIN 8192 /* elements */

struct decoder_rows_job {
    float *out;
    const float *x, *y, *weight;
    int64_t cols, heads;
    float eps;
    int neox;
};

static void rms_norm_part(void *arg, int64_t begin, int64_t end) {
    struct decoder_rows_job *j = arg;
    vt_decoder()->rms_norm_rows(j->out + begin * j->cols, j->x + begin * j->cols, j->weight, end - begin, j->cols,
                                j->eps);
}

VT_API int vt_rms_norm(float *out, const float *x, const float *weight, int64_t rows, int64_t cols, float eps) {
    if (rows < 0 || cols < 1 || (rows > 0 && (!out || !x)))
        return VT_EINVAL;
    struct decoder_rows_job job = {out, x, NULL, weight, cols, 0, eps, 0};
    vt_parallel_for(rows, rows_per_chunk(DECODER_GRAIN, cols), rms_norm_part, &job);
    return VT_OK;
}

static void swiglu_part(void *arg, int64_t begin, int64_t end) {
    struct decoder_rows_job *j = arg;
    vt_decoder()->swiglu_rows(j->out + begin * j->cols, j->x + begin * j->cols, j->y + begin * j->cols,
                              end - begin, j->cols);
}

VT_API int vt_swiglu(float *out, const float *gate, const float *up, int64_t rows, int64_t cols) {
    if (rows < 0 || cols < 0 || (rows * cols > 0 && (!out || !gate || !up)))
        return VT_EINVAL;
    struct decoder_rows_job job = {out, gate, up, NULL, cols, 0, 0.0f, 0};
    if (cols > 0)
        vt_parallel_for(rows, rows_per_chunk(DECODER_GRAIN, cols), swiglu_part, &job);
    return VT_OK;
}

VT_API int vt_rope_cache(float *cache, int64_t first, int64_t n_pos, int64_t dims, float base, float freq_scale,
                         const float *freq_factors, float ext_factor, float attn_factor, float corr_low,
                         float corr_high) {
    if (first < 0 || n_pos < 0 || dims < 2 || dims % 2 || !(base > 0.0f) || !(freq_scale > 0.0f) ||
        !__builtin_isfinite(ext_factor) || !__builtin_isfinite(attn_factor) || !__builtin_isfinite(corr_low) ||
        !__builtin_isfinite(corr_high) || (n_pos > 0 && !cache))
        return VT_EINVAL;
    vt_decoder()->rope_cache_rows(cache, first, n_pos, dims, base, freq_scale, freq_factors, ext_factor, attn_factor,
                                  corr_low, corr_high);
    return VT_OK;
}

static void rope_part(void *arg, int64_t begin, int64_t end) {
    struct decoder_rows_job *j = arg;
    vt_decoder()->rope_rows(j->out + begin * j->heads * j->cols, j->x + begin * j->cols, end - begin, j->heads,
                            j->cols, j->neox);
}

VT_API int vt_rope(float *x, const float *cache, int64_t rows, int64_t heads, int64_t dims, int neox) {
    if (rows < 0 || heads < 1 || dims < 2 || dims % 2 || (rows > 0 && (!x || !cache)))
        return VT_EINVAL;
    struct decoder_rows_job job = {x, cache, NULL, NULL, dims, heads, 0.0f, neox != 0};
    vt_parallel_for(rows, rows_per_chunk(DECODER_GRAIN, heads * dims), rope_part, &job);
    return VT_OK;
}

/* `filled` keys rounded up to whole groups of 64, the attention kernel's unit (decoder_kernels.c). */
static int64_t attention_span(int64_t filled) { return (filled + 63) / 64 * 64; }

/* attention_part's buffer for queries over `filled` keys: its scratch, and the keys and values as floats. */
static size_t attention_buffer_bytes(int64_t dims, int64_t filled) {
    const int64_t span = attention_span(filled);
    return sizeof(float) * (size_t)(VT_DECODER_QUERIES * (dims + span) + filled * dims + dims * span);
}

static float *attention_buffer(size_t bytes) { return kept_buffer(&attention_kept, bytes); }

static void attention_buffer_done(float *buf) { kept_buffer_done(&attention_kept, buf); }

void vt_free_thread_buffers(void) {
    struct kept_buffer *kept[] = {&attention_kept, &row_kept, &panel_kept};
    for (size_t i = 0; i < sizeof kept / sizeof *kept; i++) {
        free(kept[i]->p);
        kept[i]->p = NULL;
        kept[i]->bytes = 0;
    }
}

struct attention_job {
    float *out;
    const float *q;
    const uint16_t *k, *v;
    int64_t heads, kv_heads, dims, q_start, capacity, window, n;
    float scale;
    atomic_int out_of_memory; /* set by a part that could not allocate its buffer: its queries are not written */
};

/* A prompt's queries. Units u = (head h, query i), head-major, so that consecutive units share a KV head: its filled
 * keys and values are widened to floats once per chunk and head, not once per query. */
static void attention_part(void *arg, int64_t begin, int64_t end) {
    struct attention_job *j = arg;
    const struct vt_decoder_kernels *dk = vt_decoder();
    const int64_t n = j->n, filled = j->q_start + n, span = attention_span(filled);
    float *buf = attention_buffer(attention_buffer_bytes(j->dims, filled));
    if (!buf) {
        atomic_store(&j->out_of_memory, 1); /* vt_attention_f16 returns VT_ENOMEM */
        return;
    }
    /* scratch, keys (filled, dims), values (dims, span): V's rows padded with zeros to whole 64-key groups */
    float *scratch = buf, *kf = buf + VT_DECODER_QUERIES * (j->dims + span), *vf = kf + filled * j->dims;
    const int together = dk->attend_queries && j->dims % 16 == 0; /* a prompt's queries, tiled */
    int64_t loaded = -1;
    for (int64_t u = begin, step; u < end; u += step) {
        const int64_t h = u / n, i = u % n, g = h / (j->heads / j->kv_heads);
        if (g != loaded) {
            dk->halves_to_floats(kf, j->k + g * j->capacity * j->dims, filled * j->dims);
            for (int64_t d = 0; d < j->dims; d++) {
                dk->halves_to_floats(vf + d * span, j->v + (g * j->dims + d) * j->capacity, filled);
                memset(vf + d * span + filled, 0, sizeof(float) * (size_t)(span - filled));
            }
            loaded = g;
        }
        /* up to VT_DECODER_QUERIES consecutive queries of head h in this part */
        step = together ? (end - u < n - i ? end - u : n - i) : 1;
        step = step < VT_DECODER_QUERIES ? step : VT_DECODER_QUERIES;
        int64_t lo[VT_DECODER_QUERIES], hi[VT_DECODER_QUERIES];
        for (int64_t r = 0; r < step; r++) {
            const int64_t pos = j->q_start + i + r;
            lo[r] = j->window > 0 && pos + 1 > j->window ? pos + 1 - j->window : 0;
            hi[r] = pos + 1;
        }
        float *out = j->out + (i * j->heads + h) * j->dims;
        const float *q = j->q + (i * j->heads + h) * j->dims;
        if (together)
            dk->attend_queries(out, j->heads * j->dims, q, j->heads * j->dims, kf, vf, span, j->dims, lo, hi,
                               (int)step, j->scale, scratch);
        else
            dk->attend(out, q, kf, vf, span, j->dims, lo[0], hi[0], j->scale, scratch);
    }
    attention_buffer_done(buf);
}

static void attention_heads(void *arg, int64_t begin, int64_t end) {
    const struct attention_job *j = arg;
    attention_part(arg, begin * j->n, end * j->n);
}

/* A decoded token (one query per head) in the three steps of decoder_kernels.c, each split over threads: the scores
 * by keys, the softmax by heads, the outputs by value dimensions. Every score and output is one unbatched dot
 * product whichever thread makes it: the same bits for any split. rows: heads x span scores, then probabilities. */
struct decode_attention_job {
    const struct vt_decoder_kernels *dk;
    float *out, *qh, *rows;
    const uint16_t *k, *v;
    int64_t per_group, dims, capacity, lo, hi, first, span;
    float scale;
    atomic_int out_of_memory;
};

/* Multiply-adds per grain of the three steps, a few microseconds of work: a cache of a few dozen positions stays
 * on the calling thread, a long one goes to every thread (grains of 4096 to 65536 measured within noise of each
 * other on Gemma 3 270M's decode at 100, 500 and 2000 positions). */
#define DECODE_ATTENTION_GRAIN_MACS 16384

static void decode_scores_part(void *arg, int64_t begin, int64_t end) {
    struct decode_attention_job *j = arg;
    const int64_t keys = j->hi - j->lo;
    float *wide = kept_buffer(&row_kept, sizeof(float) * (size_t)j->dims);
    if (!wide) {
        atomic_store(&j->out_of_memory, 1);
        return;
    }
    for (int64_t u = begin, stop; u < end; u = stop) { /* unit u: key lo + u % keys of KV head u / keys */
        const int64_t g = u / keys;
        stop = (g + 1) * keys < end ? (g + 1) * keys : end;
        j->dk->group_scores(j->rows + g * j->per_group * j->span, j->span, j->qh + g * j->per_group * j->dims,
                            j->per_group, j->k + g * j->capacity * j->dims, j->dims, j->lo + u - g * keys,
                            j->lo + stop - g * keys, wide);
    }
    kept_buffer_done(&row_kept, wide);
}

static void decode_softmax_part(void *arg, int64_t begin, int64_t end) {
    struct decode_attention_job *j = arg;
    for (int64_t h = begin; h < end; h++) {
        float *row = j->rows + h * j->span;
        /* the products with V read [first, span): zero outside the window, as attend's row */
        memset(row + j->first, 0, sizeof(float) * (size_t)(j->lo - j->first));
        memset(row + j->hi, 0, sizeof(float) * (size_t)(j->span - j->hi));
        j->dk->softmax_window(row, j->lo, j->hi, j->scale);
    }
}

static void decode_values_part(void *arg, int64_t begin, int64_t end) {
    struct decode_attention_job *j = arg;
    float *wide = kept_buffer(&row_kept, sizeof(float) * (size_t)(j->span - j->first));
    if (!wide) {
        atomic_store(&j->out_of_memory, 1);
        return;
    }
    for (int64_t u = begin, stop; u < end; u = stop) { /* unit u: dimension u % dims of KV head u / dims */
        const int64_t g = u / j->dims;
        stop = (g + 1) * j->dims < end ? (g + 1) * j->dims : end;
        j->dk->group_values(j->out + g * j->per_group * j->dims, j->rows + g * j->per_group * j->span, j->span,
                            j->per_group, j->v + g * j->dims * j->capacity, j->capacity, j->dims, j->first, j->hi,
                            j->span, u - g * j->dims, stop - g * j->dims, wide);
    }
    kept_buffer_done(&row_kept, wide);
}

static int decode_attention(float *out, const float *q, const uint16_t *k, const uint16_t *v, int64_t heads,
                            int64_t kv_heads, int64_t dims, int64_t pos, int64_t capacity, int64_t window,
                            float scale) {
    const int64_t lo = window > 0 && pos + 1 > window ? pos + 1 - window : 0, hi = pos + 1;
    const int64_t span = attention_span(hi), first = lo / 64 * 64, per_group = heads / kv_heads;
    float *buf = attention_buffer(sizeof(float) * (size_t)(heads * (dims + span)));
    if (!buf)
        return VT_ENOMEM;
    struct decode_attention_job job = {vt_decoder(), out, buf, buf + heads * dims, k, v, per_group, dims, capacity,
                                       lo, hi, first, span, scale, 0};
    job.dk->round_to_halves(job.qh, q, heads * dims);
    const int64_t per_key = per_group * dims, per_dim = per_group * (span - first);
    vt_parallel_for(kv_heads * (hi - lo), 1 + DECODE_ATTENTION_GRAIN_MACS / per_key, decode_scores_part, &job);
    if (!atomic_load(&job.out_of_memory)) {
        vt_parallel_for(heads, 1 + DECODE_ATTENTION_GRAIN_MACS / (8 * (hi - lo)), decode_softmax_part, &job);
        vt_parallel_for(kv_heads * dims, 1 + DECODE_ATTENTION_GRAIN_MACS / per_dim, decode_values_part, &job);
    }
    attention_buffer_done(buf);
    return atomic_load(&job.out_of_memory) ? VT_ENOMEM : VT_OK;
}

VT_API int vt_attention_f16(float *out, const float *q, const uint16_t *k, const uint16_t *v, int64_t n,
                            int64_t heads, int64_t kv_heads, int64_t dims, int64_t q_start, int64_t capacity,
                            int64_t window, float scale) {
    if (n < 0 || heads < 1 || kv_heads < 1 || heads % kv_heads || dims < 1 || q_start < 0 || window < 0 ||
        q_start + n > capacity || (n > 0 && (!out || !q || !k || !v)))
        return VT_EINVAL;
    if (n == 1)
        return decode_attention(out, q, k, v, heads, kv_heads, dims, q_start, capacity, window, scale);
    struct attention_job job = {out, q, k, v, heads, kv_heads, dims, q_start, capacity, window, n, scale, 0};
    /* whole heads to a thread (a few heads were one serial job of 4 grains or less: Gemma 3 270M's 4 heads on one
     * core, at every cache length); a head's grains, as vt_parallel_for's, are its queries against its keys */
    vt_parallel_for_units(heads, 1 + n * (q_start + n) * dims / 4096, attention_heads, &job);
    return atomic_load(&job.out_of_memory) ? VT_ENOMEM : VT_OK;
}

/* ---- quantized matrices ------------------------------------------------------------------------------ */

/* The formats of ggml-common.h that the kernels read: elements and bytes per block, activation format. */
#define BLOCKS_OF(format, act_type) {QK_##format, sizeof(block_##format), act_type}
static const struct vt_format formats[] = {
    [VT_F32] = {1, sizeof(float), 0},
    [VT_F16] = {1, sizeof(ggml_half), 0},
    [VT_BF16] = {1, sizeof(uint16_t), 0},
    [VT_Q4_0] = BLOCKS_OF(q4_0, VT_Q8_0),
    [VT_Q4_1] = BLOCKS_OF(q4_1, VT_Q8_1),
    [VT_Q5_0] = BLOCKS_OF(q5_0, VT_Q8_0),
    [VT_Q5_1] = BLOCKS_OF(q5_1, VT_Q8_1),
    [VT_Q8_0] = BLOCKS_OF(q8_0, VT_Q8_0),
    [VT_Q2_K] = BLOCKS_OF(q2_K, VT_Q8_K),
    [VT_Q3_K] = BLOCKS_OF(q3_K, VT_Q8_K),
    [VT_Q4_K] = BLOCKS_OF(q4_K, VT_Q8_K),
    [VT_Q5_K] = BLOCKS_OF(q5_K, VT_Q8_K),
    [VT_Q6_K] = BLOCKS_OF(q6_K, VT_Q8_K),
};
static const struct vt_format unknown_format = {0, 0, 0};

const struct vt_format *vt_format(int type) {
    if (type < 0 || (size_t)type >= sizeof formats / sizeof formats[0] || formats[type].block_elems == 0)
        return &unknown_format;
    return &formats[type];
}

VT_API int vt_qmatmul_supports(int type) { return vt_format(type)->act_type != 0; }

VT_API int vt_get_rows_supports(int type) { return vt_format(type)->block_elems != 0; }

VT_API const char *vt_quant_isa(void) { return vt_quant()->dot_isa(); }

VT_API int vt_set_quant_isa(const char *name) { return name ? vt_quant()->set_dot_isa(name) : VT_EUNSUPPORTED; }

/* Grains of about half a microsecond of work. vt_parallel_for hands out at most 8 chunks per thread whatever
 * the grain, so small grains cost nothing per chunk; they set its thresholds: jobs of 5 grains and more are
 * split over workers that are awake, and jobs of 32 and more (a decoder's matrix-vector products of 16 us and
 * more) wake sleeping ones, which then stay awake for the products that follow. Measured on a decoder's
 * steps: 500 ns grains a few percent faster than 1000, and no slower than 250. */
#define QUANT_GRAIN_NS 500

static int64_t grain_for(double ns_per_unit) {
    double g = QUANT_GRAIN_NS / (ns_per_unit > 0.001 ? ns_per_unit : 0.001);
    return g < 1 ? 1 : g > 1e9 ? 1000000000 : (int64_t)g;
}

struct quantize_job {
    const struct vt_quant_kernels *k;
    int act_type;
    const float *x;
    int64_t cols;
    uint8_t *act;
    int64_t act_stride;
};

static void quantize_part(void *arg, int64_t begin, int64_t end) {
    struct quantize_job *j = arg;
    j->k->quantize_rows(j->act_type, j->x + begin * j->cols, end - begin, j->cols, j->act + begin * j->act_stride,
                        j->act_stride);
}

/* A stored matrix of `rows` rows of `cols` elements of format f cannot be read: a negative size, rows that are
 * not whole blocks, or rows closer than their bytes. */
static int bad_matrix(const struct vt_format *f, int64_t rows, int64_t cols, int64_t w_stride) {
    return rows < 0 || cols < 0 || cols % f->block_elems != 0 || w_stride < cols / f->block_elems * f->block_bytes;
}

/* The products of a group, as one job over the rows of all its matrices one after another. */
struct group_job {
    const struct vt_quant_kernels *k;
    const struct vt_qmatrix *m;
    int count;
    int64_t first_row[VT_MAX_GROUP + 1]; /* matrix i has rows first_row[i] .. first_row[i + 1] - 1 of the job */
    const uint8_t *act[VT_MAX_GROUP];     /* x quantized for matrix i */
    int64_t act_stride[VT_MAX_GROUP];
    int64_t n, cols;
    float *out;
};

/* The order llama.cpp's x86 CPU backend sums this product in (vt_internal.h): it repacks Q4_0 and Q4_K matrices of
 * 8k rows at load (ggml_repack_get_optimal_repack_type, ggml-cpu/repack.cpp, on any AVX2 CPU), and hands the other
 * K-quants (Q2_K aside, which AVX-512 machines repack) to its tiled matmul from batches of 8 rows of x. */
static int ggml_order(int type, int64_t rows, int64_t n) {
    if ((type == VT_Q4_0 || type == VT_Q4_K) && rows % 8 == 0)
        return VT_ORDER_REPACK;
    if ((type == VT_Q3_K || type == VT_Q4_K || type == VT_Q5_K || type == VT_Q6_K) && n >= 8)
        return VT_ORDER_TILED;
    return VT_ORDER_VEC_DOT;
}

static void group_part(void *arg, int64_t begin, int64_t end) {
    struct group_job *j = arg;
    for (int i = 0; i < j->count; i++) {
        int64_t first = j->first_row[i], last = j->first_row[i + 1];
        if (end <= first || begin >= last)
            continue;
        int64_t lo = begin > first ? begin : first, hi = end < last ? end : last;
        const struct vt_qmatrix *m = &j->m[i];
        j->k->matmul_rows(m->type, ggml_order(m->type, m->rows, j->n), m->w, m->w_stride, lo - first, hi - first,
                          j->act[i], j->act_stride[i], j->n, j->cols, j->out + j->n * first, m->rows);
    }
}

/* Activations of decode steps (a row of up to several thousand floats per format) are quantized on the stack:
 * a Q8_0 row takes about 68 bytes per 32 floats (quants, d, the Q5_0 offsets), some 15000 floats in 32 KB. */
#define SMALL_ACT_BYTES 32768

VT_API int vt_qmatmul_group(float *out, const struct vt_qmatrix *matrices, int count, const float *x, int64_t n,
                            int64_t cols) {
    if (!matrices || count < 1 || count > VT_MAX_GROUP || n < 0)
        return VT_EINVAL;
    const struct vt_quant_kernels *k = vt_quant();
    struct group_job job = {k, matrices, count, {0}, {NULL}, {0}, n, cols, out};
    int act_types[3] = {VT_Q8_0, VT_Q8_1, VT_Q8_K};
    int64_t act_offset[3] = {0, 0, 0}, act_bytes = 0, row_bytes[3] = {0, 0, 0};
    double work_ns = 0;
    for (int i = 0; i < count; i++) {
        const struct vt_qmatrix *m = &matrices[i];
        const struct vt_format *f = vt_format(m->type);
        if (!f->act_type)
            return VT_EUNSUPPORTED;
        if (bad_matrix(f, m->rows, cols, m->w_stride) || (m->rows > 0 && cols > 0 && !m->w))
            return VT_EINVAL;
        job.first_row[i + 1] = job.first_row[i] + m->rows;
        for (int a = 0; a < 3; a++)
            if (act_types[a] == f->act_type)
                row_bytes[a] = vt_act_row_bytes(f->act_type, cols);
        /* per weight row, one core: its bytes from memory (~16 per ns) or its n * cols multiply-adds (~24 per ns) */
        double read_ns = (double)m->w_stride / 16, compute_ns = (double)n * (double)cols / 24;
        work_ns += (double)m->rows * (read_ns > compute_ns ? read_ns : compute_ns);
    }
    int64_t total_rows = job.first_row[count];
    if (n == 0 || total_rows == 0)
        return VT_OK;
    if (!out || !x)
        return VT_EINVAL;
    if (cols == 0) {
        memset(out, 0, (size_t)(n * total_rows) * sizeof *out);
        return VT_OK;
    }

    /* x quantized once per activation format the group needs, all in one buffer */
    for (int a = 0; a < 3; a++) {
        act_offset[a] = act_bytes;
        act_bytes += n * row_bytes[a];
    }
    _Alignas(VT_ACT_ALIGN) uint8_t small[SMALL_ACT_BYTES];
    uint8_t *acts = small;
    if (act_bytes > SMALL_ACT_BYTES) {
        void *p = NULL;
        if (posix_memalign(&p, VT_ACT_ALIGN, (size_t)act_bytes) != 0)
            return VT_ENOMEM;
        acts = p;
    }
    for (int a = 0; a < 3; a++) {
        if (!row_bytes[a])
            continue;
        struct quantize_job qj = {k, act_types[a], x, cols, acts + act_offset[a], row_bytes[a]};
        vt_parallel_for(n, grain_for((double)cols / 2), quantize_part, &qj); /* ~2 floats per ns */
    }
    for (int i = 0; i < count; i++)
        for (int a = 0; a < 3; a++)
            if (act_types[a] == vt_format(matrices[i].type)->act_type) {
                job.act[i] = acts + act_offset[a];
                job.act_stride[i] = row_bytes[a];
            }

    vt_parallel_for(total_rows, grain_for(work_ns / (double)total_rows), group_part, &job);
    if (acts != small)
        free(acts);
    return VT_OK;
}

VT_API int vt_qmatmul(float *out, const void *w, int type, int64_t w_stride, const float *x, int64_t n,
                      int64_t out_features, int64_t cols) {
    struct vt_qmatrix m = {w, w_stride, out_features, type, 0};
    return vt_qmatmul_group(out, &m, 1, x, n, cols);
}

struct get_rows_job {
    const struct vt_quant_kernels *k;
    int type;
    const uint8_t *w;
    int64_t w_stride;
    const int64_t *ids;
    int64_t cols;
    float *out;
};

static void get_rows_part(void *arg, int64_t begin, int64_t end) {
    struct get_rows_job *j = arg;
    for (int64_t i = begin; i < end; i++)
        j->k->dequantize_row(j->type, j->w + j->ids[i] * j->w_stride, j->out + i * j->cols, j->cols);
}

VT_API int vt_get_rows(float *out, const void *w, int type, int64_t w_stride, int64_t n_rows, const int64_t *ids,
                       int64_t n_ids, int64_t cols) {
    const struct vt_format *f = vt_format(type);
    if (!f->block_elems)
        return VT_EUNSUPPORTED;
    if (n_ids < 0 || bad_matrix(f, n_rows, cols, w_stride))
        return VT_EINVAL;
    if (n_ids == 0 || cols == 0)
        return VT_OK;
    if (!out || !ids || !w)
        return VT_EINVAL;
    for (int64_t i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= n_rows)
            return VT_ERANGE;
    struct get_rows_job job = {vt_quant(), type, w, w_stride, ids, cols, out};
    vt_parallel_for(n_ids, grain_for((double)cols / 2), get_rows_part, &job);
    return VT_OK;
}

/* ---- activations in ggml's layout (vt_quantize_rows) ---- */

static uint16_t half_bits(float f) {
    /* the floats given here are already rounded to half (or NaN): the conversion is exact */
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000, ax = x & 0x7fffffff;
    if (ax > 0x7f800000)
        return (uint16_t)(sign | 0x7e00);
    if (ax >= 0x47800000) /* 65536 and up: only inf is left after rounding */
        return (uint16_t)(sign | 0x7c00);
    if (ax < 0x38800000) { /* below 2^-14: a multiple of 2^-24 */
        float a;
        memcpy(&a, &ax, sizeof a);
        return (uint16_t)(sign | (uint32_t)(a * 16777216.0f));
    }
    return (uint16_t)(sign | ((ax - 0x38000000) >> 13));
}

VT_API int vt_quantize_rows(void *out, int act_type, const float *x, int64_t rows, int64_t cols) {
    int block = act_type == VT_Q8_K ? QK_q8_K : act_type == VT_Q8_1 ? QK_q8_1 : QK_q8_0;
    if (act_type != VT_Q8_0 && act_type != VT_Q8_1 && act_type != VT_Q8_K)
        return VT_EUNSUPPORTED;
    if (rows < 0 || cols < 0 || cols % block != 0)
        return VT_EINVAL;
    if (rows == 0 || cols == 0)
        return VT_OK;
    if (!out || !x)
        return VT_EINVAL;
    int64_t stride = vt_act_row_bytes(act_type, cols), nb = cols / block;
    uint8_t *act = malloc((size_t)stride);
    if (!act)
        return VT_ENOMEM;
    /* Each block is filled in as its struct, then copied out whole: `out` need not be aligned for the struct. */
    uint8_t *dst = out;
    for (int64_t r = 0; r < rows; r++) {
        vt_quant()->quantize_rows(act_type, x + r * cols, 1, cols, act, stride);
        const int8_t *q = (const int8_t *)act;
        const float *d = (const float *)(act + nb * block);
        for (int64_t b = 0; b < nb; b++) {
            if (act_type == VT_Q8_K) { /* our layout has ggml's 16 sums per block after the scales */
                block_q8_K blk = {.d = d[b]};
                memcpy(blk.qs, q + b * QK_q8_K, sizeof blk.qs);
                memcpy(blk.bsums, (const int16_t *)(d + nb) + b * 16, sizeof blk.bsums);
                dst = (uint8_t *)memcpy(dst, &blk, sizeof blk) + sizeof blk;
            } else if (act_type == VT_Q8_1) {
                block_q8_1 blk = {.d = half_bits(d[b]), .s = half_bits(d[nb + b])};
                memcpy(blk.qs, q + b * QK_q8_1, sizeof blk.qs);
                dst = (uint8_t *)memcpy(dst, &blk, sizeof blk) + sizeof blk;
            } else {
                block_q8_0 blk = {.d = half_bits(d[b])};
                memcpy(blk.qs, q + b * QK_q8_0, sizeof blk.qs);
                dst = (uint8_t *)memcpy(dst, &blk, sizeof blk) + sizeof blk;
            }
        }
    }
    free(act);
    return VT_OK;
}
