// Decoder attention on the GPU: rotary position embedding, and grouped-query causal attention over the KV cache.
//
// Twins: rope and causal_attention in votive/backends/numpy_backend.py (same arguments, same masking rules),
// computed here in float32 rather than in ggml's half-float order.
#include "common.cuh"

#define ATTN_WARPS 4
#define ATTN_MAX_DIM 256  // head_dim limit: each lane keeps head_dim / 32 accumulators in registers

// x = RoPE(x) in place, for x (n, heads, head_dim) at the positions whose rows of the RoPE table (n, head_dim:
// cos and sin of each pair's angle, interleaved, as numpy_backend.rope_table makes it) are given. neox != 0
// pairs (i, i + head_dim / 2) (Gemma); else adjacent (2i, 2i + 1) (LLaMA in GGUF).
extern "C" __global__ void rope(float* x, const float* table, int n, int heads, int head_dim, int neox) {
    const int half = head_dim / 2;
    const i64 pairs = (i64)n * heads * half;
    for (i64 p = blockIdx.x * (i64)blockDim.x + threadIdx.x; p < pairs; p += (i64)gridDim.x * blockDim.x) {
        const int i = (int)(p % half);
        const i64 row = p / half;  // token * heads + head
        const i64 t = row / heads;
        const i64 base = row * head_dim;
        const i64 a = base + (neox ? i : 2 * i), b = base + (neox ? i + half : 2 * i + 1);
        const float c = table[t * head_dim + 2 * i], s = table[t * head_dim + 2 * i + 1];
        const float x0 = x[a], x1 = x[b];
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
    }
}

// out (n, heads, head_dim) = softmax(scale q k^T) v for each query, over the cached keys it may see.
//
// q (n, heads, head_dim) float32 for positions q_start + t. k and v: one layer's half-float cache, k
// (kv_heads, capacity, head_dim) and v (kv_heads, head_dim, capacity) as the model indexes them, with element
// strides given (head, position[, dim]): the backend stores v position-major, so that lanes reading one
// position's head_dim values read consecutive memory. Positions 0 .. q_start + n - 1 are filled. Query head h
// reads KV head h / (heads / kv_heads); a query sees keys at positions <= its own and, when window > 0,
// > its own - window.
//
// One block per (head, query), ATTN_WARPS warps; each warp walks every ATTN_WARPS-th visible key with an online
// softmax (running max, running sum, running weighted sum of values, lanes holding head_dim / 32 elements),
// and the warps merge at the end. No score matrix is stored, so any number of keys fits.
extern "C" __global__ void __launch_bounds__(ATTN_WARPS * WARP)
    attention(const float* q, const u16* k, const u16* v, float* out, int n, int heads, int kv_heads, int head_dim,
              i64 k_head_stride, i64 k_pos_stride, i64 v_head_stride, i64 v_pos_stride, i64 v_dim_stride,
              int q_start, int capacity, int window, float scale) {
    __shared__ float part_max[ATTN_WARPS], part_sum[ATTN_WARPS];
    __shared__ float part_acc[ATTN_WARPS][ATTN_MAX_DIM];
    const int h = blockIdx.x, t = blockIdx.y;
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int kvh = h / (heads / kv_heads);
    const int per_lane = (head_dim + WARP - 1) / WARP;
    const float* qrow = q + ((i64)t * heads + h) * head_dim;
    const u16* kh = k + kvh * k_head_stride;
    const u16* vh = v + kvh * v_head_stride;

    float qv[ATTN_MAX_DIM / WARP], acc[ATTN_MAX_DIM / WARP];
#pragma unroll
    for (int i = 0; i < ATTN_MAX_DIM / WARP; ++i) {
        const int d = lane + WARP * i;
        qv[i] = (i < per_lane && d < head_dim) ? qrow[d] * scale : 0.0f;
        acc[i] = 0.0f;
    }
    // Visible keys: positions first .. last.
    const int qpos = q_start + t;
    const int last = qpos < capacity - 1 ? qpos : capacity - 1;
    const int first = (window > 0 && qpos - window + 1 > 0) ? qpos - window + 1 : 0;

    float run_max = NEG_INF, run_sum = 0.0f;
    for (int j = first + warp; j <= last; j += ATTN_WARPS) {
        const u16* kj = kh + (i64)j * k_pos_stride;
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < ATTN_MAX_DIM / WARP; ++i) {
            const int d = lane + WARP * i;
            if (i < per_lane && d < head_dim) s += qv[i] * half_bits_to_float(kj[d]);
        }
        s = warp_sum(s);
        const float new_max = fmaxf(run_max, s);
        const float carry = expf(run_max - new_max), p = expf(s - new_max);
        run_sum = run_sum * carry + p;
        const u16* vj = vh + (i64)j * v_pos_stride;
#pragma unroll
        for (int i = 0; i < ATTN_MAX_DIM / WARP; ++i) {
            const int d = lane + WARP * i;
            if (i < per_lane && d < head_dim) acc[i] = acc[i] * carry + p * half_bits_to_float(vj[d * v_dim_stride]);
        }
        run_max = new_max;
    }
    if (lane == 0) {
        part_max[warp] = run_max;
        part_sum[warp] = run_sum;
    }
#pragma unroll
    for (int i = 0; i < ATTN_MAX_DIM / WARP; ++i) {
        const int d = lane + WARP * i;
        if (i < per_lane && d < head_dim) part_acc[warp][d] = acc[i];
    }
    __syncthreads();
    // Merge the warps: rescale each to the overall max (a warp that saw no key has max -inf and weight 0).
    float all_max = NEG_INF;
    for (int w = 0; w < ATTN_WARPS; ++w) all_max = fmaxf(all_max, part_max[w]);
    float total = 0.0f, weight[ATTN_WARPS];
    for (int w = 0; w < ATTN_WARPS; ++w) {
        weight[w] = part_max[w] == NEG_INF ? 0.0f : expf(part_max[w] - all_max);
        total += part_sum[w] * weight[w];
    }
    float* orow = out + ((i64)t * heads + h) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < ATTN_WARPS; ++w) o += part_acc[w][d] * weight[w];
        orow[d] = o / total;
    }
}
