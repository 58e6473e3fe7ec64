// out[m×n] = act(input[m×k] · weight[n×k]ᵀ + bias[n]): a tiled shared-memory GEMM (a PyTorch
// Linear). Block: TILE×TILE threads, one output each; grid: ⌈n/TILE⌉ × ⌈m/TILE⌉.
#include "common.h"

#define TILE 16

HIPINFER_KERNEL void hipinfer_gemm_bias(const float* __restrict__ input, const float* __restrict__ weight,
                                        const float* __restrict__ bias, float* __restrict__ out, int m, int n,
                                        int k, int activation) {
    __shared__ float input_tile[TILE][TILE + 1];
    __shared__ float weight_tile[TILE][TILE + 1];
    const int row = blockIdx.y * TILE + threadIdx.y;
    const int col = blockIdx.x * TILE + threadIdx.x;
    const int weight_row = blockIdx.x * TILE + threadIdx.y;
    float acc = 0.0f;
    for (int base = 0; base < k; base += TILE) {
        const int kk = base + threadIdx.x;
        input_tile[threadIdx.y][threadIdx.x] = (row < m && kk < k) ? input[(size_t)row * k + kk] : 0.0f;
        weight_tile[threadIdx.y][threadIdx.x] = (weight_row < n && kk < k) ? weight[(size_t)weight_row * k + kk] : 0.0f;
        __syncthreads();
#pragma unroll
        for (int i = 0; i < TILE; ++i) acc += input_tile[threadIdx.y][i] * weight_tile[threadIdx.x][i];
        __syncthreads();
    }
    if (row < m && col < n) {
        if (bias != nullptr) acc += bias[col];
        if (activation == 1) acc = hipinfer_gelu_value(acc);
        out[(size_t)row * n + col] = acc;
    }
}
