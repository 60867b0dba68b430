/* dense_kernels.c: y = x W^T + b for float32 x (m, k) and W (n, k) as nn.Linear stores it, the encoders' matrix
 * products. Compiled once per ISA (see simd.h); dispatch.c's vt_linear and vt_linear_panels split the work over
 * threads.
 *
 * W is read as panels (BLAS's layout): VT_PANEL of its rows transposed, k rows of VT_PANEL floats, the columns
 * past n zero. A tile of TILE_ROWS rows of x by TILE_VECS vectors of a panel's row keeps one accumulator per
 * output; each step of k loads TILE_VECS vectors of the panel and broadcasts one element of each row of x, for
 * TILE_ROWS * TILE_VECS multiply-adds, and no lane is ever summed with another. So every output is one chain of
 * multiply-adds over k in order, from 0, then its bias added: the same whatever the rows beside it, the tile, the
 * threads' split or the batch (a text's outputs are the same alone or in any batch), and the same on every ISA
 * with a fused multiply-add (AVX-512, AVX2, NEON; SSE2 and the generic build round the product and the sum apart).
 * The exact twins: tests/test_kernels.py's chain_linear and selftest.c's check_linear; numpy's x @ W.T + b
 * (kernels_ref.linear_ref) within rounding.
 *
 * A model's matrices are packed once, at load or by `votive convert --type panels` (vt_pack_panels;
 * numpy_linears.DensePanels). vt_linear of a plain W packs one panel at a time into a thread's buffer as it goes,
 * as BLAS does, or, for a few rows of x on AVX-512, transposes W's 16 x 16 blocks in registers as it reads them
 * (dense_rows): the same chains, the same bits.
 */
#include "simd.h"
#include "vt_internal.h"

#if VT_VEC_BYTES == 64 || defined(__aarch64__)
#define TILE_ROWS 6 /* 24 accumulators + 4 vectors of the panel + 1 broadcast: 29 of 32 vector registers */
#else
#define TILE_ROWS 3 /* 16 registers (AVX2, SSE2): 12 accumulators + 4 */
#endif
#define TILE_VECS 4
#define STRIP (TILE_VECS * VT_LANES) /* a tile's columns: the whole panel on AVX-512, a half or a quarter else */
_Static_assert(VT_PANEL % STRIP == 0, "a panel is whole strips");

/* s in every lane (simd.h's v_splat adds 0, which a compiler may not drop: -0 + 0 is +0) */
static inline vf broadcast(float s) {
    vf v;
    for (int l = 0; l < VT_LANES; l++)
        v[l] = s;
    return v;
}

/* acc + a * b: one rounding on the ISAs with a fused multiply-add, two on SSE2 (whose fmaf is a library call) */
static inline vf mul_add(vf a, vf b, vf acc) {
#if defined(VT_ISA_AVX512) || defined(VT_ISA_AVX2) || defined(__aarch64__)
    return v_fma(a, b, acc);
#else
    return acc + a * b;
#endif
}

/* R rows of x (row stride ldx) by the strip of the panel at p (its rows VT_PANEL floats apart), the whole k, into
 * y (row stride ldy): its first `cols` columns (1 .. STRIP), plus b's (NULL: none). R is a constant where it is
 * inlined, so the accumulators live in registers. */
static inline __attribute__((always_inline)) void tile(const float *x, int64_t ldx, const float *p, int64_t k,
                                                       const float *b, float *y, int64_t ldy, int64_t cols,
                                                       const int R) {
    vf acc[TILE_ROWS][TILE_VECS];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < TILE_VECS; v++)
            acc[r][v] = v_splat(0.0f);
    for (int64_t i = 0; i < k; i++, p += VT_PANEL) {
        vf wv[TILE_VECS];
#pragma GCC unroll 4
        for (int v = 0; v < TILE_VECS; v++)
            wv[v] = v_load(p + v * VT_LANES);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const vf xr = broadcast(x[r * ldx + i]);
#pragma GCC unroll 4
            for (int v = 0; v < TILE_VECS; v++)
                acc[r][v] = mul_add(xr, wv[v], acc[r][v]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < TILE_VECS; v++) {
            const int64_t c = v * VT_LANES, n = cols - c < VT_LANES ? cols - c : VT_LANES;
            if (n <= 0)
                break;
            const vf out = b ? acc[r][v] + v_load_n(b + c, n, 0.0f) : acc[r][v];
            if (n == VT_LANES)
                v_store(y + r * ldy + c, out);
            else
                v_store_n(y + r * ldy + c, out, n);
        }
}

typedef void (*tile_fn)(const float *x, int64_t ldx, const float *p, int64_t k, const float *b, float *y,
                        int64_t ldy, int64_t cols);
#define TILE_FN(R)                                                                                                 \
    static void tile_##R(const float *x, int64_t ldx, const float *p, int64_t k, const float *b, float *y,        \
                         int64_t ldy, int64_t cols) {                                                              \
        tile(x, ldx, p, k, b, y, ldy, cols, (R) <= TILE_ROWS ? (R) : 1);                                           \
    }
TILE_FN(1)
TILE_FN(2)
TILE_FN(3)
TILE_FN(4)
TILE_FN(5)
TILE_FN(6)
static const tile_fn tile_fns[6] = {tile_1, tile_2, tile_3, tile_4, tile_5, tile_6};

/* Rows [r0, r1) of x (row stride k) against one panel (`cols` of its columns real, 1 .. VT_PANEL) into y's
 * columns from its pointer (row stride ldy); b: the panel's biases or NULL. The rows go in tiles of as even a
 * height as TILE_ROWS allows (20 rows: 5 + 5 + 5 + 5, not 6 + 6 + 6 + 2, whose last tile loads almost as much as
 * it multiplies); each tile takes the panel's strips in turn, its rows of x kept in L1. */
void VT_SUFFIX(vt_dense_panel)(float *y, int64_t ldy, const float *x, const float *panel, const float *b, int64_t k,
                               int64_t r0, int64_t r1, int64_t cols) {
    const int64_t rows = r1 - r0, tiles = (rows + TILE_ROWS - 1) / TILE_ROWS;
    for (int64_t t = 0, r = r0, h; t < tiles; t++, r += h) {
        h = rows / tiles + (t < rows % tiles);
        for (int64_t s = 0; s < cols; s += STRIP)
            tile_fns[h - 1](x + r * k, k, panel + s, k, b ? b + s : NULL, y + r * ldy + s, ldy,
                            cols - s < STRIP ? cols - s : STRIP);
    }
}

#if defined(VT_ISA_AVX512)
/* A 16 x 16 block transposed in registers: r[j] holds row j on entry and column j on return (four rounds of
 * shuffles; moving the elements one at a time costs ~4x). */
static inline __attribute__((always_inline)) void transpose16_regs(__m512 r[16]) {
    __m512 t[16];
#pragma GCC unroll 8
    for (int j = 0; j < 16; j += 2) { /* pairs of rows interleaved */
        t[j] = _mm512_unpacklo_ps(r[j], r[j + 1]);
        t[j + 1] = _mm512_unpackhi_ps(r[j], r[j + 1]);
    }
#pragma GCC unroll 4
    for (int j = 0; j < 16; j += 4) { /* then pairs of pairs: each 128-bit lane holds a column's four rows */
        r[j] = _mm512_shuffle_ps(t[j], t[j + 2], 0x44);
        r[j + 1] = _mm512_shuffle_ps(t[j], t[j + 2], 0xee);
        r[j + 2] = _mm512_shuffle_ps(t[j + 1], t[j + 3], 0x44);
        r[j + 3] = _mm512_shuffle_ps(t[j + 1], t[j + 3], 0xee);
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) { /* lanes of rows 0-3 with 4-7, 8-11 with 12-15 */
        t[j] = _mm512_shuffle_f32x4(r[j], r[j + 4], 0x88);
        t[j + 4] = _mm512_shuffle_f32x4(r[j], r[j + 4], 0xdd);
        t[j + 8] = _mm512_shuffle_f32x4(r[j + 8], r[j + 12], 0x88);
        t[j + 12] = _mm512_shuffle_f32x4(r[j + 8], r[j + 12], 0xdd);
    }
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) { /* and rows 0-7 with 8-15 */
        r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
        r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
    }
}

/* dst[i * VT_PANEL + j] = src[j * k + i] for a block of 16 x 16; stream: stores that bypass the caches (whole
 * aligned lines) */
static inline __attribute__((always_inline)) void transpose16(float *dst, const float *src, int64_t k, int stream) {
    __m512 r[16];
#pragma GCC unroll 16
    for (int j = 0; j < 16; j++)
        r[j] = _mm512_loadu_ps(src + j * k);
    transpose16_regs(r);
#pragma GCC unroll 16
    for (int j = 0; j < 16; j++) {
        if (stream)
            _mm512_stream_ps(dst + j * VT_PANEL, r[j]);
        else
            _mm512_storeu_ps(dst + j * VT_PANEL, r[j]);
    }
}

/* A few rows of x against W read in place, for the short texts whose products are too small to pay for packing a
 * panel: each block of 16 rows of W by 16 of k is transposed in registers (transpose16_regs), then each of
 * its 16 columns meets each row's element: the same chain of multiply-adds over k, in the same order, as the
 * panels' tile, so the same bits. SMALL_ROWS rows of x at most: 16 registers for the block, one sum per row. */
#define SMALL_ROWS 12
#define SMALL_PF 2 /* prefetcht1: the next group's rows into L2 (t0 and t2 measured the same) */

static inline __attribute__((always_inline)) void small_rows(const float *x, const float *w, const float *b,
                                                             float *y, int64_t k, int64_t ldy, int64_t cols,
                                                             int64_t next, const int R) {
    __m512 acc[SMALL_ROWS];
#pragma GCC unroll 12
    for (int r = 0; r < R; r++)
        acc[r] = _mm512_setzero_ps();
    for (int64_t i0 = 0; i0 < k; i0 += 16) {
        const int64_t n = k - i0 < 16 ? k - i0 : 16;
        const __mmask16 in_k = (__mmask16)((1u << n) - 1);
        __m512 r[16];
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++) { /* rows past cols are zeros (their outputs are not stored) */
            r[j] = j < cols ? _mm512_maskz_loadu_ps(in_k, w + j * k + i0) : _mm512_setzero_ps();
            if (j < next) /* the next group's rows, a line of each a block: short rows are streams too short */
                __builtin_prefetch(w + (16 + j) * k + i0, 0, SMALL_PF);
        }
        transpose16_regs(r); /* r[i]: W[0 .. 15][i0 + i] */
        for (int64_t i = 0; i < n; i++)
#pragma GCC unroll 12
            for (int q = 0; q < R; q++)
                acc[q] = _mm512_fmadd_ps(_mm512_set1_ps(x[q * k + i0 + i]), r[i], acc[q]);
    }
    const __mmask16 out = (__mmask16)((1u << cols) - 1);
    const __m512 bias = b ? _mm512_maskz_loadu_ps(out, b) : _mm512_setzero_ps();
#pragma GCC unroll 12
    for (int q = 0; q < R; q++) {
        const __m512 v = b ? _mm512_add_ps(acc[q], bias) : acc[q];
        if (cols == 16)
            _mm512_storeu_ps(y + q * ldy, v);
        else
            v_store_tail(y + q * ldy, (vf)v, cols);
    }
}

typedef void (*small_fn)(const float *x, const float *w, const float *b, float *y, int64_t k, int64_t ldy,
                         int64_t cols, int64_t next);
#define SMALL_FN(R)                                                                                                \
    static void small_##R(const float *x, const float *w, const float *b, float *y, int64_t k, int64_t ldy,       \
                          int64_t cols, int64_t next) {                                                            \
        small_rows(x, w, b, y, k, ldy, cols, next, R);                                                             \
    }
SMALL_FN(1)
SMALL_FN(2)
SMALL_FN(3)
SMALL_FN(4)
SMALL_FN(5)
SMALL_FN(6)
SMALL_FN(7)
SMALL_FN(8)
SMALL_FN(9)
SMALL_FN(10)
SMALL_FN(11)
SMALL_FN(12)
static const small_fn small_fns[SMALL_ROWS] = {small_1, small_2, small_3, small_4,  small_5,  small_6,
                                               small_7, small_8, small_9, small_10, small_11, small_12};

/* Rows [r0, r1) of x against `cols` rows of W (row stride k) from w, in place, into y's columns from its pointer:
 * groups of 16 rows of W, tiles of up to SMALL_ROWS rows of x of as even a height as that allows. */
void VT_SUFFIX(vt_dense_rows)(float *y, int64_t ldy, const float *x, const float *w, const float *b, int64_t k,
                              int64_t r0, int64_t r1, int64_t cols, int64_t ahead) {
    const int64_t rows = r1 - r0, tiles = (rows + SMALL_ROWS - 1) / SMALL_ROWS;
    for (int64_t n0 = 0; n0 < cols; n0 += 16) {
        const int64_t left = ahead - n0 - 16, next = left < 0 ? 0 : left < 16 ? left : 16;
        for (int64_t t = 0, r = r0, h; t < tiles; t++, r += h) {
            h = rows / tiles + (t < rows % tiles);
            small_fns[h - 1](x + r * k, w + n0 * k, b ? b + n0 : NULL, y + r * ldy + n0, k, ldy,
                             cols - n0 < 16 ? cols - n0 : 16, t == 0 ? next : 0);
        }
    }
}
#endif

/* One panel from `cols` rows of W (row stride k) at w: panel[i * VT_PANEL + j] = w[j * k + i], zero for j >= cols.
 * In blocks of 16 of k: each row's 16 elements are one line read, and the block's 16 rows of the panel (4 KB) stay
 * in L1 while the rows of W pass (AVX-512: whole 16 x 16 blocks transposed in registers). */
void VT_SUFFIX(vt_dense_pack)(float *panel, const float *w, int64_t k, int64_t cols, int stream) {
    for (int64_t i0 = 0; i0 < k; i0 += 16) {
        const int64_t n = k - i0 < 16 ? k - i0 : 16;
        int64_t j = 0;
#if defined(VT_ISA_AVX512)
        if (n == 16)
            for (; j + 16 <= cols; j += 16)
                transpose16(panel + i0 * VT_PANEL + j, w + j * k + i0, k, stream && !((uintptr_t)panel % 64));
#endif
        for (; j < cols; j++)
            for (int64_t i = 0; i < n; i++)
                panel[(i0 + i) * VT_PANEL + j] = w[j * k + i0 + i];
        for (int64_t i = 0; i < n; i++)
            for (j = cols; j < VT_PANEL; j++)
                panel[(i0 + i) * VT_PANEL + j] = 0.0f;
    }
#if defined(VT_ISA_AVX512)
    _mm_sfence(); /* the streamed stores visible before the product reads the panel (on another thread) */
#endif
}

/* ---- bidirectional attention of packed sequences (the encoders') --------------------------------------------
 * One head of one sequence: rows row0 .. row0 + len - 1 of q, k and v (each row `stride` floats apart, the head's
 * dh values at column h * dh), no padding anywhere, so no mask: softmax(q k^T * scale) v into out (row stride
 * heads * dh). The keys are first laid out transposed in scratch (dh rows of len_p = len rounded up to a
 * vector), so each query's scores come several vectors of keys at a time; the lanes past len are -inf, which
 * exp sends to 0. ATT_QUERIES queries go together: each vector of keys or row of values is loaded once for all of
 * them, and their sums are independent chains (one query's sums alone wait on each multiply-add's latency). Each
 * query's sums are the same operations in the same order whatever its group. scratch: dh * len_p +
 * VT_ATTEND_QUERIES * len_p floats. The slow twin: kernels_ref.encoder_attention_ref. */
#define ATT_BLOCKS 4 /* vectors of keys whose scores are held in registers at once */
#define ATT_CHAINS 4 /* partial sums of the output over keys: independent multiply-adds in flight */
#if VT_VEC_BYTES == 64 || defined(__aarch64__)
#define ATT_QUERIES 4 /* 32 registers: 16 sums + 4 vectors of keys + a query's element */
#else
#define ATT_QUERIES 2 /* 16 registers (AVX2, SSE2) */
#endif
_Static_assert(ATT_QUERIES <= VT_ATTEND_QUERIES, "scratch holds VT_ATTEND_QUERIES rows of scores");

/* Scores of Q queries (q[i]: query i's dh values) against keys j0 .. j0 + B vectors (B, Q constant where inlined:
 * the sums stay in registers), scaled, -inf past len, into row i of p (rows len_p apart); their running maxima
 * into mx. */
static inline __attribute__((always_inline)) void score_keys(const float *const *q, const float *kt, int64_t len_p,
                                                             int64_t j0, int64_t dh, float scale, int64_t len,
                                                             float *p, vf *mx, const int B, const int Q) {
    vf s[ATT_QUERIES][ATT_BLOCKS];
#pragma GCC unroll 4
    for (int i = 0; i < Q; i++)
#pragma GCC unroll 4
        for (int b = 0; b < B; b++)
            s[i][b] = v_splat(0.0f);
    for (int64_t d = 0; d < dh; d++) {
        const float *row = kt + d * len_p + j0;
        vf keys[ATT_BLOCKS];
#pragma GCC unroll 4
        for (int b = 0; b < B; b++)
            keys[b] = v_load(row + b * VT_LANES);
#pragma GCC unroll 4
        for (int i = 0; i < Q; i++) {
            const vf qd = broadcast(q[i][d]);
#pragma GCC unroll 4
            for (int b = 0; b < B; b++)
                s[i][b] += qd * keys[b];
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < Q; i++)
#pragma GCC unroll 4
        for (int b = 0; b < B; b++) {
            const int64_t left = len - j0 - b * VT_LANES;
            const vf sb = left >= VT_LANES ? s[i][b] * scale : v_keep_first(s[i][b] * scale, left, -INFINITY);
            v_store(p + i * len_p + j0 + b * VT_LANES, sb);
            mx[i] = v_max(mx[i], sb);
        }
}

/* Queries i0 .. i0 + Q - 1 of the sequence (Q constant where inlined): scores, softmax, weighted sum of values. */
static inline __attribute__((always_inline)) void attend_queries(float *out, const float *q, const float *v,
                                                                 const float *kt, float *p, int64_t stride,
                                                                 int64_t heads, int64_t dh, int64_t row0,
                                                                 int64_t len, int64_t len_p, int64_t h, int64_t i0,
                                                                 float scale, const int Q) {
    const int64_t step = ATT_BLOCKS * VT_LANES;
    const float *qi[ATT_QUERIES];
    vf mx[ATT_QUERIES];
    float inv[ATT_QUERIES];
#pragma GCC unroll 4
    for (int i = 0; i < Q; i++) {
        qi[i] = q + (row0 + i0 + i) * stride + h * dh;
        mx[i] = v_splat(-INFINITY);
    }
    /* scores, up to ATT_BLOCKS vectors of keys at a time: each q[d] broadcast once for all of them */
    for (int64_t j0 = 0; j0 < len_p; j0 += step) {
        switch (len_p - j0 >= step ? ATT_BLOCKS : (len_p - j0) / VT_LANES) {
        case 4: score_keys(qi, kt, len_p, j0, dh, scale, len, p, mx, 4, Q); break;
        case 3: score_keys(qi, kt, len_p, j0, dh, scale, len, p, mx, 3, Q); break;
        case 2: score_keys(qi, kt, len_p, j0, dh, scale, len, p, mx, 2, Q); break;
        default: score_keys(qi, kt, len_p, j0, dh, scale, len, p, mx, 1, Q); break;
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < Q; i++) {
        float *pi = p + i * len_p;
        const float top = v_hmax(mx[i]);
        vf total = v_splat(0.0f);
        for (int64_t j = 0; j < len_p; j += VT_LANES) {
            vf e = v_exp(v_load(pi + j) - top);
            v_store(pi + j, e);
            total += e;
        }
        inv[i] = 1.0f / v_hsum(total);
    }
    for (int64_t d = 0; d < dh; d += VT_LANES) {
        const int64_t n = v_left(d, dh);
        const float *vd = v + row0 * stride + h * dh + d;
        vf acc[ATT_QUERIES][ATT_CHAINS];
#pragma GCC unroll 4
        for (int i = 0; i < Q; i++)
#pragma GCC unroll 4
            for (int c = 0; c < ATT_CHAINS; c++)
                acc[i][c] = v_splat(0.0f);
        int64_t j = 0;
        for (; j + ATT_CHAINS <= len; j += ATT_CHAINS)
#pragma GCC unroll 4
            for (int c = 0; c < ATT_CHAINS; c++) {
                const vf vj = v_load_n(vd + (j + c) * stride, n, 0.0f);
#pragma GCC unroll 4
                for (int i = 0; i < Q; i++)
                    acc[i][c] += broadcast(p[i * len_p + j + c]) * vj;
            }
        for (; j < len; j++) {
            const vf vj = v_load_n(vd + j * stride, n, 0.0f);
#pragma GCC unroll 4
            for (int i = 0; i < Q; i++)
                acc[i][0] += broadcast(p[i * len_p + j]) * vj;
        }
#pragma GCC unroll 4
        for (int i = 0; i < Q; i++)
            v_store_n(out + (row0 + i0 + i) * heads * dh + h * dh + d,
                      ((acc[i][0] + acc[i][1]) + (acc[i][2] + acc[i][3])) * inv[i], n);
    }
}

void VT_SUFFIX(vt_encoder_attend)(float *out, const float *q, const float *k, const float *v, int64_t stride,
                                  int64_t heads, int64_t dh, int64_t row0, int64_t len, int64_t h, float scale,
                                  float *scratch) {
    const int64_t len_p = (len + VT_LANES - 1) / VT_LANES * VT_LANES;
    float *kt = scratch, *p = scratch + dh * len_p;
    for (int64_t j = 0; j < len; j++) { /* each key's row read once, whole */
        const float *kj = k + (row0 + j) * stride + h * dh;
        for (int64_t d = 0; d < dh; d++)
            kt[d * len_p + j] = kj[d];
    }
    for (int64_t d = 0; d < dh; d++)
        for (int64_t j = len; j < len_p; j++)
            kt[d * len_p + j] = 0.0f;
    int64_t i0 = 0;
    for (; i0 + ATT_QUERIES <= len; i0 += ATT_QUERIES)
        attend_queries(out, q, v, kt, p, stride, heads, dh, row0, len, len_p, h, i0, scale, ATT_QUERIES);
    for (; i0 < len; i0++)
        attend_queries(out, q, v, kt, p, stride, heads, dh, row0, len, len_p, h, i0, scale, 1);
}
