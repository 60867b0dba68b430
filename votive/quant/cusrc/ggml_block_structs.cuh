// ggml_block_structs.cuh: the block struct of every GGML quantized format, as ggml-common.h (ggml-org/llama.cpp)
// declares it, with its size asserted.
//
// GENERATED from votive/quant/ggml_types.py by votive/quant/csrc/gen_block_structs.py: do not edit; change the table
// and run the script (tests/test_block_layout.py checks that this file is what it writes). The fields add up to the
// asserted size, so there is no padding and every field is at the byte its comment gives. Weights are read in place
// at any alignment: take a field's bytes at its offset, never through a pointer to the struct.
#pragma once
#include "common.cuh"

typedef u16 ggml_half;  // the bits of an IEEE half float

// Q4_0, GGML type 2: 32 elements in 18 bytes
#define QK_q4_0 32
struct block_q4_0 {
    ggml_half d;  // bytes 0..1
    u8 qs[16];    // bytes 2..17
};
static_assert(sizeof(block_q4_0) == 18, "block_q4_0 is not the 18 bytes of Q4_0 in ggml_types.py");

// Q4_1, GGML type 3: 32 elements in 20 bytes
#define QK_q4_1 32
struct block_q4_1 {
    ggml_half d;  // bytes 0..1
    ggml_half m;  // bytes 2..3
    u8 qs[16];    // bytes 4..19
};
static_assert(sizeof(block_q4_1) == 20, "block_q4_1 is not the 20 bytes of Q4_1 in ggml_types.py");

// Q5_0, GGML type 6: 32 elements in 22 bytes
#define QK_q5_0 32
struct block_q5_0 {
    ggml_half d;  // bytes 0..1
    u8 qh[4];     // bytes 2..5
    u8 qs[16];    // bytes 6..21
};
static_assert(sizeof(block_q5_0) == 22, "block_q5_0 is not the 22 bytes of Q5_0 in ggml_types.py");

// Q5_1, GGML type 7: 32 elements in 24 bytes
#define QK_q5_1 32
struct block_q5_1 {
    ggml_half d;  // bytes 0..1
    ggml_half m;  // bytes 2..3
    u8 qh[4];     // bytes 4..7
    u8 qs[16];    // bytes 8..23
};
static_assert(sizeof(block_q5_1) == 24, "block_q5_1 is not the 24 bytes of Q5_1 in ggml_types.py");

// Q8_0, GGML type 8: 32 elements in 34 bytes
#define QK_q8_0 32
struct block_q8_0 {
    ggml_half d;  // bytes 0..1
    i8 qs[32];    // bytes 2..33
};
static_assert(sizeof(block_q8_0) == 34, "block_q8_0 is not the 34 bytes of Q8_0 in ggml_types.py");

// Q8_1, GGML type 9: 32 elements in 36 bytes
#define QK_q8_1 32
struct block_q8_1 {
    ggml_half d;  // bytes 0..1
    ggml_half s;  // bytes 2..3
    i8 qs[32];    // bytes 4..35
};
static_assert(sizeof(block_q8_1) == 36, "block_q8_1 is not the 36 bytes of Q8_1 in ggml_types.py");

// Q2_K, GGML type 10: 256 elements in 84 bytes
#define QK_q2_K 256
struct block_q2_K {
    u8 scales[16];   // bytes 0..15
    u8 qs[64];       // bytes 16..79
    ggml_half d;     // bytes 80..81
    ggml_half dmin;  // bytes 82..83
};
static_assert(sizeof(block_q2_K) == 84, "block_q2_K is not the 84 bytes of Q2_K in ggml_types.py");

// Q3_K, GGML type 11: 256 elements in 110 bytes
#define QK_q3_K 256
struct block_q3_K {
    u8 hmask[32];   // bytes 0..31
    u8 qs[64];      // bytes 32..95
    u8 scales[12];  // bytes 96..107
    ggml_half d;    // bytes 108..109
};
static_assert(sizeof(block_q3_K) == 110, "block_q3_K is not the 110 bytes of Q3_K in ggml_types.py");

// Q4_K, GGML type 12: 256 elements in 144 bytes
#define QK_q4_K 256
struct block_q4_K {
    ggml_half d;     // bytes 0..1
    ggml_half dmin;  // bytes 2..3
    u8 scales[12];   // bytes 4..15
    u8 qs[128];      // bytes 16..143
};
static_assert(sizeof(block_q4_K) == 144, "block_q4_K is not the 144 bytes of Q4_K in ggml_types.py");

// Q5_K, GGML type 13: 256 elements in 176 bytes
#define QK_q5_K 256
struct block_q5_K {
    ggml_half d;     // bytes 0..1
    ggml_half dmin;  // bytes 2..3
    u8 scales[12];   // bytes 4..15
    u8 qh[32];       // bytes 16..47
    u8 qs[128];      // bytes 48..175
};
static_assert(sizeof(block_q5_K) == 176, "block_q5_K is not the 176 bytes of Q5_K in ggml_types.py");

// Q6_K, GGML type 14: 256 elements in 210 bytes
#define QK_q6_K 256
struct block_q6_K {
    u8 ql[128];     // bytes 0..127
    u8 qh[64];      // bytes 128..191
    i8 scales[16];  // bytes 192..207
    ggml_half d;    // bytes 208..209
};
static_assert(sizeof(block_q6_K) == 210, "block_q6_K is not the 210 bytes of Q6_K in ggml_types.py");

// Q8_K, GGML type 15: 256 elements in 292 bytes
#define QK_q8_K 256
struct block_q8_K {
    float d;        // bytes 0..3
    i8 qs[256];     // bytes 4..259
    i16 bsums[16];  // bytes 260..291
};
static_assert(sizeof(block_q8_K) == 292, "block_q8_K is not the 292 bytes of Q8_K in ggml_types.py");

// IQ2_XXS, GGML type 16: 256 elements in 66 bytes
#define QK_iq2_xxs 256
struct block_iq2_xxs {
    ggml_half d;  // bytes 0..1
    u16 qs[32];   // bytes 2..65
};
static_assert(sizeof(block_iq2_xxs) == 66, "block_iq2_xxs is not the 66 bytes of IQ2_XXS in ggml_types.py");

// IQ2_XS, GGML type 17: 256 elements in 74 bytes
#define QK_iq2_xs 256
struct block_iq2_xs {
    ggml_half d;   // bytes 0..1
    u16 qs[32];    // bytes 2..65
    u8 scales[8];  // bytes 66..73
};
static_assert(sizeof(block_iq2_xs) == 74, "block_iq2_xs is not the 74 bytes of IQ2_XS in ggml_types.py");

// IQ3_XXS, GGML type 18: 256 elements in 98 bytes
#define QK_iq3_xxs 256
struct block_iq3_xxs {
    ggml_half d;  // bytes 0..1
    u8 qs[96];    // bytes 2..97
};
static_assert(sizeof(block_iq3_xxs) == 98, "block_iq3_xxs is not the 98 bytes of IQ3_XXS in ggml_types.py");

// IQ1_S, GGML type 19: 256 elements in 50 bytes
#define QK_iq1_s 256
struct block_iq1_s {
    ggml_half d;  // bytes 0..1
    u8 qs[32];    // bytes 2..33
    u16 qh[8];    // bytes 34..49
};
static_assert(sizeof(block_iq1_s) == 50, "block_iq1_s is not the 50 bytes of IQ1_S in ggml_types.py");

// IQ4_NL, GGML type 20: 32 elements in 18 bytes
#define QK_iq4_nl 32
struct block_iq4_nl {
    ggml_half d;  // bytes 0..1
    u8 qs[16];    // bytes 2..17
};
static_assert(sizeof(block_iq4_nl) == 18, "block_iq4_nl is not the 18 bytes of IQ4_NL in ggml_types.py");

// IQ3_S, GGML type 21: 256 elements in 110 bytes
#define QK_iq3_s 256
struct block_iq3_s {
    ggml_half d;   // bytes 0..1
    u8 qs[64];     // bytes 2..65
    u8 qh[8];      // bytes 66..73
    u8 signs[32];  // bytes 74..105
    u8 scales[4];  // bytes 106..109
};
static_assert(sizeof(block_iq3_s) == 110, "block_iq3_s is not the 110 bytes of IQ3_S in ggml_types.py");

// IQ2_S, GGML type 22: 256 elements in 82 bytes
#define QK_iq2_s 256
struct block_iq2_s {
    ggml_half d;   // bytes 0..1
    u8 qs[64];     // bytes 2..65
    u8 qh[8];      // bytes 66..73
    u8 scales[8];  // bytes 74..81
};
static_assert(sizeof(block_iq2_s) == 82, "block_iq2_s is not the 82 bytes of IQ2_S in ggml_types.py");

// IQ4_XS, GGML type 23: 256 elements in 136 bytes
#define QK_iq4_xs 256
struct block_iq4_xs {
    ggml_half d;     // bytes 0..1
    u16 scales_h;    // bytes 2..3
    u8 scales_l[4];  // bytes 4..7
    u8 qs[128];      // bytes 8..135
};
static_assert(sizeof(block_iq4_xs) == 136, "block_iq4_xs is not the 136 bytes of IQ4_XS in ggml_types.py");

// IQ1_M, GGML type 29: 256 elements in 56 bytes
#define QK_iq1_m 256
struct block_iq1_m {
    u8 qs[32];     // bytes 0..31
    u8 qh[16];     // bytes 32..47
    u8 scales[8];  // bytes 48..55
};
static_assert(sizeof(block_iq1_m) == 56, "block_iq1_m is not the 56 bytes of IQ1_M in ggml_types.py");

// TQ1_0, GGML type 34: 256 elements in 54 bytes
#define QK_tq1_0 256
struct block_tq1_0 {
    u8 qs[48];    // bytes 0..47
    u8 qh[4];     // bytes 48..51
    ggml_half d;  // bytes 52..53
};
static_assert(sizeof(block_tq1_0) == 54, "block_tq1_0 is not the 54 bytes of TQ1_0 in ggml_types.py");

// TQ2_0, GGML type 35: 256 elements in 66 bytes
#define QK_tq2_0 256
struct block_tq2_0 {
    u8 qs[64];    // bytes 0..63
    ggml_half d;  // bytes 64..65
};
static_assert(sizeof(block_tq2_0) == 66, "block_tq2_0 is not the 66 bytes of TQ2_0 in ggml_types.py");

// MXFP4, GGML type 39: 32 elements in 17 bytes
#define QK_mxfp4 32
struct block_mxfp4 {
    u8 e;       // byte 0
    u8 qs[16];  // bytes 1..16
};
static_assert(sizeof(block_mxfp4) == 17, "block_mxfp4 is not the 17 bytes of MXFP4 in ggml_types.py");

// NVFP4, GGML type 40: 64 elements in 36 bytes
#define QK_nvfp4 64
struct block_nvfp4 {
    u8 d[4];    // bytes 0..3
    u8 qs[32];  // bytes 4..35
};
static_assert(sizeof(block_nvfp4) == 36, "block_nvfp4 is not the 36 bytes of NVFP4 in ggml_types.py");

// Q1_0, GGML type 41: 128 elements in 18 bytes
#define QK_q1_0 128
struct block_q1_0 {
    ggml_half d;  // bytes 0..1
    u8 qs[16];    // bytes 2..17
};
static_assert(sizeof(block_q1_0) == 18, "block_q1_0 is not the 18 bytes of Q1_0 in ggml_types.py");
