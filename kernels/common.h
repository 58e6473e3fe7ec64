// Shared by every kernel file. Written in the subset of HIP that is also CUDA: compiled with
// hipcc for AMD GPUs, and with nvcc (plus kernels/cuda_compat.h) to check results on NVIDIA.
#pragma once

#if defined(__HIPCC__)
#include <hip/hip_runtime.h>
#endif

#define HIPINFER_KERNEL extern "C" __global__

// Threads per block for row-wise kernels (a multiple of every warp/wavefront size: 32 and 64).
#define HIPINFER_BLOCK 256

// GELU, erf form, as the CPU backend and PyTorch's nn.GELU().
__device__ __forceinline__ float hipinfer_gelu_value(float x) {
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

// Sum of `value` over the block (blockDim.x threads, a power of two ≤ HIPINFER_BLOCK) through
// shared memory; every thread gets the result. `scratch` holds blockDim.x floats.
__device__ __forceinline__ float hipinfer_block_sum(float value, float* scratch) {
    scratch[threadIdx.x] = value;
    __syncthreads();
    for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) scratch[threadIdx.x] += scratch[threadIdx.x + stride];
        __syncthreads();
    }
    float total = scratch[0];
    __syncthreads();
    return total;
}

// Maximum of `value` over the block, as hipinfer_block_sum.
__device__ __forceinline__ float hipinfer_block_max(float value, float* scratch) {
    scratch[threadIdx.x] = value;
    __syncthreads();
    for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) scratch[threadIdx.x] = fmaxf(scratch[threadIdx.x], scratch[threadIdx.x + stride]);
        __syncthreads();
    }
    float total = scratch[0];
    __syncthreads();
    return total;
}
