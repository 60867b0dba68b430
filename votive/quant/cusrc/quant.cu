// Products with weights kept as GGML blocks on the GPU: y = x @ W.T, embedding rows, whole dequantization.
//
// Every kernel reads the blocks in place through a format's `deq8` (ggml_blocks.cuh), widening eight weights
// at a time to float32 and multiplying them with float32 activations: the weight never exists expanded in
// GPU memory. Names are <kernel>_<format>, e.g. qmatvec_q4_k; votive/quant/cuda_kernels.py lists them.
//
//   qmatvec    x (n, cols), n <= MATVEC_MAX_TOKENS: one warp per weight row, lanes stride over groups of 8,
//              so a warp reads a run of consecutive blocks; decoding is this kernel. Block: 128 threads.
//   qmatmul    x (n, cols), any n: 64 rows x 64 tokens per block, 32 columns at a time staged in shared
//              memory, 4 x 4 outputs per thread. Prompts are this kernel. Block: 256 threads.
//   qget_rows  rows `ids` of W as float32 (embedding lookup); one thread per group of 8.
//   qdequant   all of W as float32 (tests, and any caller that wants cuBLAS on the widened weight).
//
// Shapes: W (rows, cols) stored as rows of cols / QK blocks; y (n, rows) float32, row-major; cols a multiple
// of the format's QK (and of 8), which the host checks.
#include "ggml_blocks.cuh"

#define MATVEC_MAX_TOKENS 8
#define MM_ROWS 64
#define MM_TOKENS 64
#define MM_DEPTH 32

__device__ __forceinline__ float dot8(const float* v, const float* x) {
    const float4 a = ((const float4*)x)[0], b = ((const float4*)x)[1];
    return v[0] * a.x + v[1] * a.y + v[2] * a.z + v[3] * a.w + v[4] * b.x + v[5] * b.y + v[6] * b.z + v[7] * b.w;
}

template <class F>
__device__ __forceinline__ const u8* block_of(const u8* w, i64 row, int cols, int col) {
    return w + row * (i64)(cols / F::QK) * F::BYTES + (i64)(col / F::QK) * F::BYTES;
}

template <class F>
__device__ void qmatvec(const u8* __restrict__ w, const float* __restrict__ x, float* __restrict__ y, int rows,
                        int cols, int n_tok) {
    const int lane = threadIdx.x % WARP;
    const int row = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    if (row >= rows) return;  // the whole warp leaves together
    const int per_block = F::QK / 8, groups = cols / 8;
    const u8* wrow = block_of<F>(w, row, cols, 0);
    float acc[MATVEC_MAX_TOKENS];
#pragma unroll
    for (int t = 0; t < MATVEC_MAX_TOKENS; ++t) acc[t] = 0.0f;
    for (int g = lane; g < groups; g += WARP) {
        float v[8];
        F::deq8(wrow + (i64)(g / per_block) * F::BYTES, g % per_block, v);
#pragma unroll
        for (int t = 0; t < MATVEC_MAX_TOKENS; ++t)
            if (t < n_tok) acc[t] += dot8(v, x + (i64)t * cols + 8 * g);
    }
#pragma unroll
    for (int t = 0; t < MATVEC_MAX_TOKENS; ++t) {
        if (t < n_tok) {
            const float s = warp_sum(acc[t]);
            if (lane == 0) y[(i64)t * rows + row] = s;
        }
    }
}

template <class F>
__device__ void qmatmul(const u8* __restrict__ w, const float* __restrict__ x, float* __restrict__ y, int rows,
                        int cols, int n_tok) {
    // Transposed tiles, [depth][row or token], padded against shared-memory bank conflicts.
    __shared__ float ws[MM_DEPTH][MM_ROWS + 4];
    __shared__ float xs[MM_DEPTH][MM_TOKENS + 4];
    const int tid = threadIdx.x;
    const int row0 = blockIdx.x * MM_ROWS, tok0 = blockIdx.y * MM_TOKENS;
    const int load_line = tid / 4, load_group = tid % 4;  // staging: a row (and a token) in 4 groups of 8
    const int my_row = tid % 16, my_tok = tid / 16;  // outputs: rows my_row + 16i, tokens my_tok + 16j
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < cols; k0 += MM_DEPTH) {
        const int col = k0 + 8 * load_group;
        float v[8];
        const int r = row0 + load_line;
        if (r < rows && col < cols) {
            F::deq8(block_of<F>(w, r, cols, col), (col % F::QK) / 8, v);
        } else {
#pragma unroll
            for (int i = 0; i < 8; ++i) v[i] = 0.0f;
        }
#pragma unroll
        for (int i = 0; i < 8; ++i) ws[8 * load_group + i][load_line] = v[i];
        const int t = tok0 + load_line;
        const float* xt = x + (i64)t * cols + col;
#pragma unroll
        for (int i = 0; i < 8; ++i) xs[8 * load_group + i][load_line] = (t < n_tok && col < cols) ? xt[i] : 0.0f;
        __syncthreads();
#pragma unroll 8
        for (int k = 0; k < MM_DEPTH; ++k) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = ws[k][my_row + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = xs[k][my_tok + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int t = tok0 + my_tok + 16 * j;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int r = row0 + my_row + 16 * i;
            if (r < rows && t < n_tok) y[(i64)t * rows + r] = acc[i][j];
        }
    }
}

template <class F>
__device__ void qget_rows(const u8* __restrict__ w, const i64* __restrict__ ids, float* __restrict__ y, int n_ids,
                          int rows, int cols) {
    const int groups = cols / 8;
    const i64 total = (i64)n_ids * groups;
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x) {
        const i64 id = ids[i / groups];
        const int col = 8 * (int)(i % groups);
        float v[8];
        if (id >= 0 && id < rows) {
            F::deq8(block_of<F>(w, id, cols, col), (col % F::QK) / 8, v);
        } else {  // the host refuses such ids; this only keeps a bad one from reading outside W
#pragma unroll
            for (int k = 0; k < 8; ++k) v[k] = 0.0f;
        }
        float* out = y + (i / groups) * cols + col;
#pragma unroll
        for (int k = 0; k < 8; ++k) out[k] = v[k];
    }
}

template <class F>
__device__ void qdequant(const u8* __restrict__ w, float* __restrict__ y, int rows, int cols) {
    const int groups = cols / 8;
    const i64 total = (i64)rows * groups;
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x) {
        const int col = 8 * (int)(i % groups);
        float v[8];
        F::deq8(block_of<F>(w, i / groups, cols, col), (col % F::QK) / 8, v);
        float* out = y + (i / groups) * cols + col;
#pragma unroll
        for (int k = 0; k < 8; ++k) out[k] = v[k];
    }
}

#define QUANT_KERNELS(FMT, NAME)                                                                                  \
    extern "C" __global__ void __launch_bounds__(128)                                                            \
        qmatvec_##NAME(const u8* w, const float* x, float* y, int rows, int cols, int n_tok) {                   \
        qmatvec<FMT>(w, x, y, rows, cols, n_tok);                                                                \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(256)                                                            \
        qmatmul_##NAME(const u8* w, const float* x, float* y, int rows, int cols, int n_tok) {                   \
        qmatmul<FMT>(w, x, y, rows, cols, n_tok);                                                                \
    }                                                                                                            \
    extern "C" __global__ void qget_rows_##NAME(const u8* w, const i64* ids, float* y, int n_ids, int rows,      \
                                                int cols) {                                                      \
        qget_rows<FMT>(w, ids, y, n_ids, rows, cols);                                                            \
    }                                                                                                            \
    extern "C" __global__ void qdequant_##NAME(const u8* w, float* y, int rows, int cols) {                      \
        qdequant<FMT>(w, y, rows, cols);                                                                         \
    }

QUANT_KERNELS(FmtF32, f32)
QUANT_KERNELS(FmtF16, f16)
QUANT_KERNELS(FmtBF16, bf16)
QUANT_KERNELS(FmtQ4_0, q4_0)
QUANT_KERNELS(FmtQ4_1, q4_1)
QUANT_KERNELS(FmtQ5_0, q5_0)
QUANT_KERNELS(FmtQ5_1, q5_1)
QUANT_KERNELS(FmtQ8_0, q8_0)
QUANT_KERNELS(FmtQ4_K, q4_k)
QUANT_KERNELS(FmtQ5_K, q5_k)
QUANT_KERNELS(FmtQ6_K, q6_k)
