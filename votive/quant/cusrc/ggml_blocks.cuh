// GGML's storage formats as the GPU reads them: for each, the block geometry and `deq8`, which widens eight
// consecutive elements of one block to float32.
//
// Layouts are ggml-common.h's block structs (ggml-org/llama.cpp), generated with their asserted sizes from
// votive/quant/ggml_types.py into ggml_block_structs.cuh, whose comments give each field's bytes; QK and BYTES
// below come from there. votive/quant/codecs/*.py decodes the same blocks in numpy: those numpy dequantizers are
// the twins these are tested against, and the float arithmetic below follows theirs ((d * sc) * q - dmin * m for
// the k-quants) so that the two agree to the last bit when the compiler does not fuse multiply-adds. Every
// kernel in quant.cu is written once over this interface:
//
//     QK      elements per block          BYTES   bytes per block
//     deq8(block, g, v)                    v[0..7] = elements 8g .. 8g+7 of the block, 0 <= g < QK / 8
//
// Plain float types are "blocks" of 8 elements, so they run through the same kernels. The field offsets in deq8
// are written out: NVRTC has no offsetof.
#pragma once
#include "common.cuh"
#include "ggml_block_structs.cuh"

struct FmtF32 {
    static const int QK = 8, BYTES = 32;
    static __device__ __forceinline__ void deq8(const u8* b, int g, float* v) {
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = __uint_as_float(load_u32(b + 4 * i));
    }
};

struct FmtF16 {
    static const int QK = 8, BYTES = 16;
    static __device__ __forceinline__ void deq8(const u8* b, int g, float* v) {
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = load_half(b + 2 * i);
    }
};

struct FmtBF16 {
    static const int QK = 8, BYTES = 16;
    static __device__ __forceinline__ void deq8(const u8* b, int g, float* v) {
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = bf16_bits_to_float(load_u16(b + 2 * i));
    }
};

// Q4_0 {half d; u8 qs[16]}: element j < 16 is the low nibble of qs[j], element j + 16 its high nibble; x = (q - 8) d.
struct FmtQ4_0 {
    static const int QK = QK_q4_0, BYTES = sizeof(block_q4_0);
    static __device__ __forceinline__ void deq8(const u8* b, int g, float* v) {
        const float d = load_half(b);
        const u8* qs = b + 2 + 8 * (g & 1);
        const int shift = g < 2 ? 0 : 4;
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = (float)(((qs[i] >> shift) & 0xF) - 8) * d;
    }
};

// Q4_1 {half d, m; u8 qs[16]}: nibbles as Q4_0; x = q d + m.
struct FmtQ4_1 {
    static const int QK = QK_q4_1, BYTES = sizeof(block_q4_1);
    static __device__ __forceinline__ void deq8(const u8* b, int g, float* v) {
        const float d = load_half(b), m = load_half(b + 2);
        const u8* qs = b + 4 + 8 * (g & 1);
        const int shift = g < 2 ? 0 : 4;
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = (float)((qs[i] >> shift) & 0xF) * d + m;
    }
};

// Q5_0 {half d; u32 qh; u8 qs[16]}: nibbles as Q4_0, bit j of qh is element j's fifth bit; x = (q - 16) d.
struct FmtQ5_0 {
    static const int QK = QK_q5_0, BYTES = sizeof(block_q5_0);
    static __device__ __forceinline__ void deq8(const u8* b, int g, float* v) {
        const float d = load_half(b);
        const u32 qh = load_u32(b + 2) >> (8 * g);  // bits of elements 8g .. 8g+7
        const u8* qs = b + 6 + 8 * (g & 1);
        const int shift = g < 2 ? 0 : 4;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int q = ((qs[i] >> shift) & 0xF) | (((qh >> i) & 1) << 4);
            v[i] = (float)(q - 16) * d;
        }
    }
};

// Q5_1 {half d, m; u32 qh; u8 qs[16]}: as Q5_0 with x = q d + m.
struct FmtQ5_1 {
    static const int QK = QK_q5_1, BYTES = sizeof(block_q5_1);
    static __device__ __forceinline__ void deq8(const u8* b, int g, float* v) {
        const float d = load_half(b), m = load_half(b + 2);
        const u32 qh = load_u32(b + 4) >> (8 * g);
        const u8* qs = b + 8 + 8 * (g & 1);
        const int shift = g < 2 ? 0 : 4;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int q = ((qs[i] >> shift) & 0xF) | (((qh >> i) & 1) << 4);
            v[i] = (float)q * d + m;
        }
    }
};

// Q8_0 {half d; i8 qs[32]}: x = q d.
struct FmtQ8_0 {
    static const int QK = QK_q8_0, BYTES = sizeof(block_q8_0);
    static __device__ __forceinline__ void deq8(const u8* b, int g, float* v) {
        const float d = load_half(b);
        const i8* qs = (const i8*)(b + 2 + 8 * g);
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = (float)qs[i] * d;
    }
};

// The 6-bit scale and min of sub-block j of a Q4_K / Q5_K super-block (ggml's get_scale_min_k4).
__device__ __forceinline__ void scale_min_k4(int j, const u8* s, int* sc, int* m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// Q4_K {half d, dmin; u8 scales[12]; u8 qs[128]}: 8 sub-blocks of 32. Sub-blocks 2p and 2p+1 share bytes
// qs[32p .. 32p+31], low and high nibbles. x = (d sc) q - (dmin m).
struct FmtQ4_K {
    static const int QK = QK_q4_K, BYTES = sizeof(block_q4_K);
    static __device__ __forceinline__ void deq8(const u8* b, int g, float* v) {
        const int sub = g / 4;  // 32-element sub-block
        int sc, m;
        scale_min_k4(sub, b + 4, &sc, &m);
        const float dl = load_half(b) * (float)sc, ml = load_half(b + 2) * (float)m;
        const u8* qs = b + 16 + 32 * (sub / 2) + 8 * (g % 4);
        const int shift = (sub & 1) ? 4 : 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = dl * (float)((qs[i] >> shift) & 0xF) - ml;
    }
};

// Q5_K {half d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}: Q4_K's nibbles plus a fifth bit, bit `sub` of
// qh[l] for element l of sub-block `sub`.
struct FmtQ5_K {
    static const int QK = QK_q5_K, BYTES = sizeof(block_q5_K);
    static __device__ __forceinline__ void deq8(const u8* b, int g, float* v) {
        const int sub = g / 4, l0 = 8 * (g % 4);
        int sc, m;
        scale_min_k4(sub, b + 4, &sc, &m);
        const float dl = load_half(b) * (float)sc, ml = load_half(b + 2) * (float)m;
        const u8* qh = b + 16 + l0;
        const u8* qs = b + 48 + 32 * (sub / 2) + l0;
        const int shift = (sub & 1) ? 4 : 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int q = ((qs[i] >> shift) & 0xF) | (((qh[i] >> sub) & 1) << 4);
            v[i] = dl * (float)q - ml;
        }
    }
};

// Q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; half d}: 16 sub-blocks of 16. Element 128h + 32p + l (p < 4,
// l < 32) takes 4 low bits from ql[64h + l + 32 (p & 1)] (low nibble for p < 2, high for p >= 2) and 2 high
// bits from qh[32h + l] at bit 2p; x = (d sc) (q - 32).
struct FmtQ6_K {
    static const int QK = QK_q6_K, BYTES = sizeof(block_q6_K);
    static __device__ __forceinline__ void deq8(const u8* b, int g, float* v) {
        const int e0 = 8 * g, h = e0 / 128, p = (e0 % 128) / 32, l0 = e0 % 32;
        const float dl = load_half(b + 208) * (float)((const i8*)(b + 192))[e0 / 16];
        const u8* ql = b + 64 * h + 32 * (p & 1) + l0;
        const u8* qh = b + 128 + 32 * h + l0;
        const int shift = p < 2 ? 0 : 4;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int q = ((ql[i] >> shift) & 0xF) | (((qh[i] >> (2 * p)) & 3) << 4);
            v[i] = dl * (float)(q - 32);
        }
    }
};
