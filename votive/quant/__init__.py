"""Quantized formats and the kernels that compute with them.

    ggml_types      the one table of GGML block layouts (id, name, elements and bytes per block, fields)
    codecs/         each format's (de)quantizer and dot product in numpy, with per-block slow twins
    kernels         libvotive.so (C) bound with ctypes: one table row per op (C entry, twin, checks, in place),
                    numpy twins as the fallback; kernel_args: one check per argument class; kernel_settings:
                    instruction sets, threads, spin; quant_matrices: weights bound once for a decoder
    kernels_ref     the numpy twins of the C kernels; llama_orders: llama.cpp's x86 summation orders
    kernel_build    compiles libvotive.so (csrc/; build time: the layer ships the library, not the sources)
    cuda_kernels    the CUDA kernels (cusrc/): ahead-of-time builds and loading; nvrtc: the CUDA compiler
    cpus            the cores this process may use, and the kernel and BLAS thread counts
"""
