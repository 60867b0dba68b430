// Just enough of CUDA to run votive's kernels (votive/quant/cusrc/*.cu) on a CPU, for tests on machines
// without a GPU. Forced in front of a .cu file (g++ -include cuda_emu.h), it turns the CUDA keywords into C++
// and declares the built-ins; runtime.cpp runs every thread of a block as a fiber (own stack), one block at a
// time, switching fibers at __syncthreads() and at every warp shuffle, so barriers and shuffles behave as on
// the GPU for code that uses them the way CUDA requires (whole warps, whole blocks).
//
// What it does not model: concurrency between blocks (they run one after another, which also makes `static`
// a faithful __shared__), the memory model, and warp-divergent shuffles (runtime.cpp reports them as errors).
#pragma once
#include <math.h>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct uint3 {
    unsigned x, y, z;
};
struct float4 {
    float x, y, z, w;
};

extern "C" {
extern uint3 threadIdx, blockIdx, blockDim, gridDim;
}

void __syncthreads();
float __shfl_xor_sync(unsigned mask, float value, int lane_mask);

inline float __uint_as_float(unsigned u) {
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    __builtin_memcpy(&u, &f, 4);
    return u;
}
inline float __int_as_float(int i) { return __uint_as_float((unsigned)i); }
