// The CPU side of cuda_emu.h: launches a kernel over a grid, each thread of a block a fiber.
//
// Launching from Python (tests/cuda_emulator.py) goes through emu_launch, which calls the kernel's extern "C"
// symbol through one generic prototype: 16 integer-class arguments, then 8 floats. Under the x86-64 System V
// calling convention integer-class arguments (pointers, ints) and float arguments are assigned to registers
// independently, each in their own order, and integer arguments past the sixth go to the stack in order; so a
// kernel with at most 16 integer and 8 float parameters, in any interleaving, reads exactly the values it
// would have been passed directly. The Python side sorts the arguments into the two lists. Test-only: x86-64.
//
// Fibers switch with emu_switch below rather than ucontext's swapcontext, which makes a system call (to save the
// signal mask) on every switch; a shuffle switches every thread twice, so that call dominated the run time.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda_emu.h"

extern "C" {
uint3 threadIdx, blockIdx, blockDim, gridDim;
}

namespace {

enum State { RUNNABLE, AT_WARP_BARRIER, AT_BLOCK_BARRIER, DONE };

typedef void (*KernelFn)(long long, long long, long long, long long, long long, long long, long long, long long,
                         long long, long long, long long, long long, long long, long long, long long, long long,
                         float, float, float, float, float, float, float, float);

const size_t kStackBytes = 64 * 1024;
const int kMaxThreads = 1024;

void* scheduler_sp;  // saved stack pointers: the scheduler's, and each fiber's while it is switched out
void* fiber_sp[kMaxThreads];
State states[kMaxThreads];
std::vector<char> stacks;
int current = 0;
float exchange[kMaxThreads];  // one value per thread for shuffles

KernelFn kernel;
long long ints[16];
float floats[8];
std::string error;

uint3 index_of(int t) {
    uint3 i;
    i.x = t % blockDim.x;
    i.y = (t / blockDim.x) % blockDim.y;
    i.z = t / (blockDim.x * blockDim.y);
    return i;
}

}  // namespace

// emu_switch(save, next): push the callee-saved registers, store the stack pointer in *save, continue on the
// stack `next` (popping what it saved and returning into it). Everything else is caller-saved in the System V
// ABI, so the call itself preserves it.
extern "C" void emu_switch(void** save, void* next);
asm(R"(
    .text
    .globl emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
)");

namespace {

void thread_main() {
    kernel(ints[0], ints[1], ints[2], ints[3], ints[4], ints[5], ints[6], ints[7], ints[8], ints[9], ints[10],
           ints[11], ints[12], ints[13], ints[14], ints[15], floats[0], floats[1], floats[2], floats[3], floats[4],
           floats[5], floats[6], floats[7]);
    states[current] = DONE;
    emu_switch(&fiber_sp[current], scheduler_sp);  // never resumed
}

// A fresh fiber's stack, as emu_switch leaves one: six saved registers (zero), then thread_main as the return
// address, then a slot standing for thread_main's own return address, so that it starts with the stack
// alignment of a function just called.
void* fresh_stack(char* base, size_t bytes) {
    uintptr_t top = ((uintptr_t)(base + bytes)) & ~(uintptr_t)15;
    void** sp = (void**)top;
    *--sp = nullptr;
    *--sp = (void*)thread_main;
    for (int i = 0; i < 6; ++i) *--sp = nullptr;
    return sp;
}

void wait_at(State barrier) {
    states[current] = barrier;
    emu_switch(&fiber_sp[current], scheduler_sp);
}

// Runs the threads of the current block until all are done; false (and `error` set) on a deadlock.
bool run_block(int n) {
    for (int t = 0; t < n; ++t) {
        fiber_sp[t] = fresh_stack(&stacks[(size_t)t * kStackBytes], kStackBytes);
        states[t] = RUNNABLE;
    }
    for (;;) {
        for (int t = 0; t < n; ++t) {
            if (states[t] != RUNNABLE) continue;
            current = t;
            threadIdx = index_of(t);
            emu_switch(&scheduler_sp, fiber_sp[t]);
        }
        // Everyone is now done or waiting. Release each warp whose 32 threads all wait at a shuffle.
        bool released = false, all_done = true, any_warp_wait = false;
        for (int w = 0; w * 32 < n; ++w) {
            int lo = w * 32, hi = lo + 32 < n ? lo + 32 : n, waiting = 0;
            for (int t = lo; t < hi; ++t) waiting += states[t] == AT_WARP_BARRIER;
            if (waiting == 0) continue;
            any_warp_wait = true;
            if (waiting == hi - lo) {
                for (int t = lo; t < hi; ++t) states[t] = RUNNABLE;
                released = true;
            }
        }
        for (int t = 0; t < n; ++t) all_done = all_done && states[t] == DONE;
        if (all_done) return true;
        if (released) continue;
        if (any_warp_wait) {
            error = "a warp shuffle that not every thread of the warp reached (divergent shuffle)";
            return false;
        }
        // Only block barriers and finished threads are left: the barrier opens.
        for (int t = 0; t < n; ++t)
            if (states[t] == AT_BLOCK_BARRIER) states[t] = RUNNABLE;
    }
}

}  // namespace

void __syncthreads() { wait_at(AT_BLOCK_BARRIER); }

float __shfl_xor_sync(unsigned, float value, int lane_mask) {
    const int lane = current % 32, base = current - lane;
    const int partner = base + (lane ^ lane_mask);
    exchange[current] = value;
    wait_at(AT_WARP_BARRIER);  // everyone has written
    const float got = exchange[partner];
    wait_at(AT_WARP_BARRIER);  // everyone has read: the slots may be reused
    return got;
}

extern "C" int emu_launch(void* fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                          const long long* int_args, int n_ints, const float* float_args, int n_floats) {
    const unsigned threads = bx * by * bz;
    if (threads == 0 || threads > (unsigned)kMaxThreads) {
        error = "block size must be 1..1024 threads";
        return 1;
    }
    if (threads > 32 && threads % 32) {
        error = "a block of more than 32 threads must be whole warps here";
        return 1;
    }
    if (n_ints > 16 || n_floats > 8) {
        error = "at most 16 integer and 8 float arguments";
        return 1;
    }
    kernel = (KernelFn)fn;
    memset(ints, 0, sizeof ints);
    memset(floats, 0, sizeof floats);
    memcpy(ints, int_args, sizeof(long long) * n_ints);
    memcpy(floats, float_args, sizeof(float) * n_floats);
    if (stacks.size() < (size_t)threads * kStackBytes) stacks.resize((size_t)threads * kStackBytes);
    gridDim = {gx, gy, gz};
    blockDim = {bx, by, bz};
    for (unsigned z = 0; z < gz; ++z)
        for (unsigned y = 0; y < gy; ++y)
            for (unsigned x = 0; x < gx; ++x) {
                blockIdx = {x, y, z};
                if (!run_block((int)threads)) {
                    char where[96];
                    snprintf(where, sizeof where, " (block %u,%u,%u)", x, y, z);
                    error += where;
                    return 2;
                }
            }
    return 0;
}

extern "C" const char* emu_error() { return error.c_str(); }
