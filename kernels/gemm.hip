// out[m×n] = act(input[m×k] · weight[n×k]ᵀ + bias[n]): a register-blocked shared-memory GEMM (a
// PyTorch Linear). A block of GEMM_THREADS_SIDE² threads computes a GEMM_BLOCK_TILE² tile of
// outputs, each thread a (GEMM_BLOCK_TILE / GEMM_THREADS_SIDE)² sub-tile held in registers;
// the block stages GEMM_K_STEP columns of k of both operands in shared memory per step, read
// from global memory with consecutive threads on consecutive k. fp32 accumulation (fmaf, in k
// order per output), no fast-math. Grid: ⌈n / GEMM_BLOCK_TILE⌉ × ⌈m / GEMM_BLOCK_TILE⌉.
#include "common.h"

#define GEMM_BLOCK_TILE 64
#define GEMM_THREADS_SIDE 16
#define GEMM_K_STEP 16
#define GEMM_PER_THREAD (GEMM_BLOCK_TILE / GEMM_THREADS_SIDE)

HIPINFER_KERNEL void hipinfer_gemm_bias(const float* __restrict__ input, const float* __restrict__ weight,
                                        const float* __restrict__ bias, float* __restrict__ out, int m, int n,
                                        int k, int activation) {
    // [kk][row or column], padded against bank conflicts.
    __shared__ float input_tile[GEMM_K_STEP][GEMM_BLOCK_TILE + 1];
    __shared__ float weight_tile[GEMM_K_STEP][GEMM_BLOCK_TILE + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int thread = ty * GEMM_THREADS_SIDE + tx;
    const int threads = GEMM_THREADS_SIDE * GEMM_THREADS_SIDE;
    const int row0 = blockIdx.y * GEMM_BLOCK_TILE;
    const int col0 = blockIdx.x * GEMM_BLOCK_TILE;
    float acc[GEMM_PER_THREAD][GEMM_PER_THREAD];
#pragma unroll
    for (int i = 0; i < GEMM_PER_THREAD; ++i)
#pragma unroll
        for (int j = 0; j < GEMM_PER_THREAD; ++j) acc[i][j] = 0.0f;
    for (int base = 0; base < k; base += GEMM_K_STEP) {
        for (int e = thread; e < GEMM_BLOCK_TILE * GEMM_K_STEP; e += threads) {
            const int r = e / GEMM_K_STEP, kk = e % GEMM_K_STEP;
            const int gk = base + kk;
            const int gr = row0 + r, gc = col0 + r;
            input_tile[kk][r] = (gr < m && gk < k) ? input[(size_t)gr * k + gk] : 0.0f;
            weight_tile[kk][r] = (gc < n && gk < k) ? weight[(size_t)gc * k + gk] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < GEMM_K_STEP; ++kk) {
            float a[GEMM_PER_THREAD], b[GEMM_PER_THREAD];
#pragma unroll
            for (int i = 0; i < GEMM_PER_THREAD; ++i) a[i] = input_tile[kk][ty + i * GEMM_THREADS_SIDE];
#pragma unroll
            for (int j = 0; j < GEMM_PER_THREAD; ++j) b[j] = weight_tile[kk][tx + j * GEMM_THREADS_SIDE];
#pragma unroll
            for (int i = 0; i < GEMM_PER_THREAD; ++i)
#pragma unroll
                for (int j = 0; j < GEMM_PER_THREAD; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < GEMM_PER_THREAD; ++i) {
        const int row = row0 + ty + i * GEMM_THREADS_SIDE;
        if (row >= m) continue;
#pragma unroll
        for (int j = 0; j < GEMM_PER_THREAD; ++j) {
            const int col = col0 + tx + j * GEMM_THREADS_SIDE;
            if (col >= n) continue;
            float v = acc[i][j];
            if (bias != nullptr) v += bias[col];
            if (activation == 1) v = hipinfer_gelu_value(v);
            out[(size_t)row * n + col] = v;
        }
    }
}
