// What every votive CUDA kernel shares: integer types, half and bfloat16 widening, warp and block reductions.
//
// NVRTC compiles these files without the CUDA toolkit's headers (none ship in a runtime image), so nothing here
// includes a system header: the types are spelled out and the few CUDA intrinsics used are builtins. The same
// files also compile as plain C++ against tests/cuda_emu/cuda_emu.h, which runs each thread of a block as a
// fiber on the CPU, so that the kernels can be checked on a machine without a GPU; code under
// `#ifdef __CUDACC__` is the one place the two differ.
#pragma once

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef short i16;
typedef unsigned int u32;
typedef int i32;
typedef long long i64;

#define WARP 32
#define FULL_MASK 0xffffffffu
#define NEG_INF (__uint_as_float(0xff800000u))

// IEEE half bits -> float, exactly (GGML_FP16_TO_FP32).
__device__ __forceinline__ float half_bits_to_float(u16 h) {
#ifdef __CUDACC__
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#else
    // Rebuild the float32 bits: rebias the exponent, renormalize subnormals, keep inf and NaN.
    u32 sign = (u32)(h & 0x8000u) << 16;
    u32 exp = (h >> 10) & 0x1fu;
    u32 mant = h & 0x3ffu;
    if (exp == 0x1fu) return __uint_as_float(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) {
        if (mant == 0) return __uint_as_float(sign);
        int shift = 0;
        while (!(mant & 0x400u)) { mant <<= 1; ++shift; }
        mant &= 0x3ffu;
        return __uint_as_float(sign | ((u32)(113 - shift) << 23) | (mant << 13));
    }
    return __uint_as_float(sign | ((exp + 112u) << 23) | (mant << 13));
#endif
}

// bfloat16 bits are the top half of a float32.
__device__ __forceinline__ float bf16_bits_to_float(u16 h) { return __uint_as_float((u32)h << 16); }

// Little-endian loads from byte addresses of any alignment (GGML blocks are packed: an 18-byte Q4_0 block
// leaves most of its fields unaligned).
__device__ __forceinline__ u16 load_u16(const u8* p) { return (u16)(p[0] | (p[1] << 8)); }
__device__ __forceinline__ u32 load_u32(const u8* p) {
    return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
}
__device__ __forceinline__ float load_half(const u8* p) { return half_bits_to_float(load_u16(p)); }

// Sum and max over the 32 lanes of a warp; every lane gets the result. All 32 lanes must call it.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = WARP / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(FULL_MASK, v, offset);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int offset = WARP / 2; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, offset));
    return v;
}

// Sum and max over a whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `scratch` is a __shared__ float[32] of the caller's; the trailing barrier lets the caller reuse it at once.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, warps = blockDim.x / WARP;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    v = warp_sum(v);
    __syncthreads();
    return v;
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, warps = blockDim.x / WARP;
    v = warp_max(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : NEG_INF;
    v = warp_max(v);
    __syncthreads();
    return v;
}
