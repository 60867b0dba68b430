// Row-wise and elementwise kernels of the encoder and decoder blocks: RMSNorm, LayerNorm (+ residual), softmax
// (+ additive mask), GELU (exact, with bias), and the gated products of decoders: GeGLU (tanh GELU) and SwiGLU.
//
// Twins: votive/backends/numpy_backend.py (rms_norm, geglu, swiglu) and votive/quant/kernels_ref.py
// (layer_norm_ref, softmax_ref, gelu_ref); the arithmetic follows theirs, in float32.
//
// Row kernels take one block per row (blockDim a multiple of 32, chosen by the host for the row length) and
// may write in place (y == x): each element is read and written by the same thread after the reductions.
#include "common.cuh"

// y = x / sqrt(mean(x^2) + eps) * w over rows of `cols`. Gemma's 1 + w is in the weight already (converter).
extern "C" __global__ void rms_norm(const float* x, const float* w, float* y, int rows, int cols, float eps) {
    __shared__ float scratch[32];
    const i64 base = (i64)blockIdx.x * cols;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) ss += x[base + i] * x[base + i];
    ss = block_sum(ss, scratch);
    const float scale = 1.0f / sqrtf(ss / (float)cols + eps);
    for (int i = threadIdx.x; i < cols; i += blockDim.x) y[base + i] = x[base + i] * scale * w[i];
}

// y = LayerNorm(x + residual) * w + b (torch.nn.functional.layer_norm); residual, w, b may be null.
extern "C" __global__ void layer_norm(const float* x, const float* residual, const float* w, const float* b,
                                      float* y, int rows, int cols, float eps) {
    __shared__ float scratch[32];
    const i64 base = (i64)blockIdx.x * cols;
    float s = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) s += x[base + i] + (residual ? residual[base + i] : 0.0f);
    const float mean = block_sum(s, scratch) / (float)cols;
    float var = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        const float c = x[base + i] + (residual ? residual[base + i] : 0.0f) - mean;
        var += c * c;
    }
    const float denom = sqrtf(block_sum(var, scratch) / (float)cols + eps);
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        float h = (x[base + i] + (residual ? residual[base + i] : 0.0f) - mean) / denom;
        if (w) h *= w[i];
        if (b) h += b[i];
        y[base + i] = h;
    }
}

// In place: x = softmax(x * scale + mask) over rows of `cols`. Row r adds mask row (r / mask_div) % mask_mod
// (mask null: no mask), which covers BERT's (batch, 1, 1, keys) padding mask over (batch, heads, q, keys).
extern "C" __global__ void softmax_rows(float* x, const float* mask, int rows, int cols, int mask_div, int mask_mod,
                                        float scale) {
    __shared__ float scratch[32];
    const i64 base = (i64)blockIdx.x * cols;
    const float* m = mask ? mask + (i64)((blockIdx.x / mask_div) % mask_mod) * cols : 0;
    float mx = NEG_INF;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        const float v = x[base + i] * scale + (m ? m[i] : 0.0f);
        x[base + i] = v;
        mx = fmaxf(mx, v);
    }
    mx = block_max(mx, scratch);
    float sum = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        const float e = expf(x[base + i] - mx);
        x[base + i] = e;
        sum += e;
    }
    const float inv = 1.0f / block_sum(sum, scratch);
    for (int i = threadIdx.x; i < cols; i += blockDim.x) x[base + i] *= inv;
}

// In place: x = GELU(x + bias) with the exact erf form BERT uses; bias (cols,) may be null.
extern "C" __global__ void gelu_erf(float* x, const float* bias, i64 n, int cols) {
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        const float v = x[i] + (bias ? bias[i % cols] : 0.0f);
        x[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    }
}

// In place: x = gelu(x) * up (GeGLU; GELU with the tanh approximation, as Gemma uses; ggml_vec_geglu_f32 without
// its half-precision table, so within a half's rounding of the CPU backend).
extern "C" __global__ void geglu(float* x, const float* up, i64 n) {
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        const float v = x[i];
        const float inner = 0.7978845608028654f * v * (1.0f + 0.044715f * v * v);
        x[i] = v <= -10.0f ? 0.0f : (v >= 10.0f ? v : 0.5f * v * (1.0f + tanhf(inner))) * up[i];
    }
}

// In place: x = silu(x) * up (SwiGLU's product, one pass).
extern "C" __global__ void swiglu(float* x, const float* up, i64 n) {
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        x[i] = x[i] / (1.0f + expf(-x[i])) * up[i];
    }
}
