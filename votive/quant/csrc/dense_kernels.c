/* dense_kernels.c: y = x W^T + b for float32 x (m, k) and W (n, k) as nn.Linear stores it, the encoders' matrix
 * products. Compiled once per ISA (see simd.h); dispatch.c's vt_linear splits the work over threads.
 *
 * Every output is the dot product of two contiguous rows, so W is read in place (a memory-mapped checkpoint is
 * never packed or copied). A tile of TILE_ROWS rows of x by TILE_COLS rows of W keeps one accumulator vector per
 * output: each step loads TILE_ROWS + TILE_COLS vectors for TILE_ROWS * TILE_COLS multiply-adds, and each tile's
 * lane sums are taken once, at the end of k. The slow twin: x @ W.T + b in numpy (kernels_ref.linear_ref).
 *
 * Work is cut into blocks of M_BLOCK rows of x by N_PANEL rows of W. A block's rows of x stay in L2 while the
 * panels pass; within a panel, a short block's tiles pass each group of TILE_COLS rows of W (kept in L1), and a
 * long block's tiles take the groups one after another (each tile's rows kept in L1: TILES_FIRST_ROWS).
 * Float sums are in a fixed order per ISA (lanes, then lanes summed), independent of the threads' split, the
 * block and the tile: a text's outputs are the same alone or in any batch.
 */
#include "simd.h"
#include "vt_internal.h"

#if VT_VEC_BYTES == 64 || defined(__aarch64__)
#define TILE_ROWS 6 /* 24 accumulators + 6 rows of x + 1 of W: 31 of 32 vector registers */
#else
#define TILE_ROWS 3 /* 16 registers (AVX2, SSE2): 12 accumulators + 3 + 1 */
#endif
#define TILE_COLS 4
/* __builtin_prefetch's locality for the next rows of W: 2 (prefetcht1) brings them to L2 without taking L1 from
 * the tile's operands; measured on Zen 4 at 20 rows of x, 15% less time per text than 3 (into L1) issued by the
 * first tile alone. */
#define PF_LOCALITY 2

/* The lane sums of four accumulators. */
static inline void sum4(const vf acc[TILE_COLS], float out[TILE_COLS]) {
#if defined(VT_ISA_AVX512)
    const __m512 a0 = (__m512)acc[0], a1 = (__m512)acc[1], a2 = (__m512)acc[2], a3 = (__m512)acc[3];
    __m512 a01 = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1));
    __m512 a23 = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
    /* per 128-bit quarter: a01 = [x0, x1, x0, x1], a23 = [x2, x3, x2, x3] (partial sums) */
    __m512 q = _mm512_add_ps(_mm512_shuffle_ps(a01, a23, 0x44), _mm512_shuffle_ps(a01, a23, 0xee));
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(q), _mm512_extractf32x8_ps(q, 1));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
#elif defined(VT_ISA_AVX2)
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps((__m256)acc[0], (__m256)acc[1]),
                              _mm256_hadd_ps((__m256)acc[2], (__m256)acc[3]));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
#else
    for (int c = 0; c < TILE_COLS; c++)
        out[c] = v_hsum(acc[c]);
#endif
}

/* R rows of x (from x) by C rows of W (from w), the whole k, into y (row stride ldy); b: C biases or NULL.
 * pf: npf rows of W to fetch into cache alongside, a line per step (npf 0: none). R and C are constants where it
 * is inlined, so the accumulators live in registers. */
static inline __attribute__((always_inline)) void tile(const float *x, const float *w, const float *b, float *y,
                                                       const float *pf, int npf, int64_t k, int64_t ldy, const int R,
                                                       const int C) {
    vf acc[TILE_ROWS][TILE_COLS];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int c = 0; c < TILE_COLS; c++) /* all four: sum4 reads four */
            acc[r][c] = v_splat(0.0f);
    int64_t i = 0;
    for (; i + VT_LANES <= k; i += VT_LANES) {
        vf xv[TILE_ROWS];
        for (int c = 0; c < npf; c++)
            __builtin_prefetch(pf + c * k + i, 0, PF_LOCALITY);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
            xv[r] = v_load(x + r * k + i);
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            const vf wv = v_load(w + c * k + i);
#pragma GCC unroll 8
            for (int r = 0; r < R; r++)
                acc[r][c] += xv[r] * wv; /* contracted to a multiply-add where the ISA has one */
        }
    }
    if (i < k) { /* the tail, zero-padded: zeros add nothing */
        vf xv[TILE_ROWS];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
            xv[r] = v_load_tail(x + r * k + i, k - i, 0.0f);
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            const vf wv = v_load_tail(w + c * k + i, k - i, 0.0f);
#pragma GCC unroll 8
            for (int r = 0; r < R; r++)
                acc[r][c] += xv[r] * wv; /* contracted to a multiply-add where the ISA has one */
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        float s[TILE_COLS];
        sum4(acc[r], s);
#pragma GCC unroll 4
        for (int c = 0; c < C; c++)
            y[r * ldy + c] = b ? s[c] + b[c] : s[c];
    }
}

/* The tile of R rows of x by C rows of W, R and C constants: one function per shape, tile_fns[R - 1][C - 1] (R <=
 * TILE_ROWS). npf 0 takes the tile without the prefetch loop in its steps. */
typedef void (*tile_fn)(const float *x, const float *w, const float *b, float *y, const float *pf, int npf,
                        int64_t k, int64_t ldy);
#define TILE_FN(R, C)                                                                                              \
    static void tile_##R##_##C(const float *x, const float *w, const float *b, float *y, const float *pf, int npf,   \
                               int64_t k, int64_t ldy) {                                                           \
        if (npf)                                                                                                   \
            tile(x, w, b, y, pf, npf, k, ldy, (R) <= TILE_ROWS ? (R) : 1, C);                                      \
        else                                                                                                       \
            tile(x, w, b, y, NULL, 0, k, ldy, (R) <= TILE_ROWS ? (R) : 1, C);                                      \
    }
#define TILE_FNS(R) TILE_FN(R, 1) TILE_FN(R, 2) TILE_FN(R, 3) TILE_FN(R, 4)
TILE_FNS(1)
TILE_FNS(2)
TILE_FNS(3)
TILE_FNS(4)
TILE_FNS(5)
TILE_FNS(6)
static const tile_fn tile_fns[6][TILE_COLS] = {
    {tile_1_1, tile_1_2, tile_1_3, tile_1_4}, {tile_2_1, tile_2_2, tile_2_3, tile_2_4},
    {tile_3_1, tile_3_2, tile_3_3, tile_3_4}, {tile_4_1, tile_4_2, tile_4_3, tile_4_4},
    {tile_5_1, tile_5_2, tile_5_3, tile_5_4}, {tile_6_1, tile_6_2, tile_6_3, tile_6_4},
};

/* A block of at least this many rows of x goes tile by tile, each tile of rows against every group of the panel's
 * rows of W: the tile's rows stay in L1 while the groups pass (the panel, 16 rows of W, stays in cache for the
 * block's next tiles); a shorter block (a short text) passes its tiles by each group of W's rows in turn, the
 * group kept in L1. Each output is the same tile sum either way: the order changes no bit. */
#define TILES_FIRST_ROWS 24

/* Rows [r, r + h) of x against the group of W's rows from n0, fetching the rows p0 .. p1 - 1 of the next group
 * (where it exists) along. */
static inline void group_tile(float *y, int64_t ldy, const float *x, const float *w, const float *b, int64_t k,
                              int64_t cols, int64_t ahead, int64_t r, int64_t h, int64_t n0, int64_t p0, int64_t p1) {
    const int64_t c = cols - n0 < TILE_COLS ? cols - n0 : TILE_COLS;
    const float *next = n0 + 2 * TILE_COLS <= ahead && p1 > p0 ? w + (n0 + TILE_COLS + p0) * k : NULL;
    tile_fns[h - 1][c - 1](x + r * k, w + n0 * k, b ? b + n0 : NULL, y + r * ldy + n0, next,
                           next ? (int)(p1 - p0) : 0, k, ldy);
}

/* Rows [r0, r1) of y = x W^T + b for `cols` rows of W from w (b: their biases, or NULL), into y's columns from its
 * pointer (row stride ldy). ahead: the rows of W from w on that exist (cols or more), which the tiles may fetch.
 * The rows go in tiles of as even a height as TILE_ROWS allows (20 rows: 5 + 5 + 5 + 5, not 6 + 6 + 6 + 2, whose
 * last tile loads almost as much as it multiplies). Each group's tiles fetch the next group's rows of W: tiles
 * first, the block's first tile all of them; else each tile its share (tile t of T the rows t * TILE_COLS / T ..),
 * so the requests are spread over the group's time, not issued in one burst: a short text's product streams W from
 * memory once, faster than the hardware prefetcher alone brings it. */
void VT_SUFFIX(vt_dense_block)(float *y, int64_t ldy, const float *x, const float *w, const float *b, int64_t k,
                               int64_t r0, int64_t r1, int64_t cols, int64_t ahead) {
    const int64_t rows = r1 - r0, tiles = (rows + TILE_ROWS - 1) / TILE_ROWS;
    if (rows >= TILES_FIRST_ROWS) {
        for (int64_t t = 0, r = r0, h; t < tiles; t++, r += h) {
            h = rows / tiles + (t < rows % tiles);
            for (int64_t n0 = 0; n0 < cols; n0 += TILE_COLS)
                group_tile(y, ldy, x, w, b, k, cols, ahead, r, h, n0, 0, t == 0 ? TILE_COLS : 0);
        }
        return;
    }
    for (int64_t n0 = 0; n0 < cols; n0 += TILE_COLS)
        for (int64_t t = 0, r = r0, h; t < tiles; t++, r += h) {
            h = rows / tiles + (t < rows % tiles);
            group_tile(y, ldy, x, w, b, k, cols, ahead, r, h, n0, t * TILE_COLS / tiles, (t + 1) * TILE_COLS / tiles);
        }
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

/* s in every lane (simd.h's v_splat adds 0, which a compiler may not drop: -0 + 0 is +0) */
static inline vf broadcast(float s) {
    vf v;
    for (int l = 0; l < VT_LANES; l++)
        v[l] = s;
    return v;
}

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
