// Row normalisations: LayerNorm (with a fused residual add) and L2 normalisation. One block of
// HIPINFER_BLOCK threads per row.
#include "common.h"

// out = LayerNorm(input + residual) · gamma + beta; residual may be null. Two-pass variance.
HIPINFER_KERNEL void hipinfer_layer_norm(const float* __restrict__ input, const float* __restrict__ residual,
                                         const float* __restrict__ gamma, const float* __restrict__ beta,
                                         float* __restrict__ out, int rows, int cols, float eps) {
    __shared__ float scratch[HIPINFER_BLOCK];
    const int row = blockIdx.x;
    if (row >= rows) return;
    const float* x = input + (size_t)row * cols;
    const float* r = residual != nullptr ? residual + (size_t)row * cols : nullptr;
    float* y = out + (size_t)row * cols;
    float sum = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float v = x[c] + (r != nullptr ? r[c] : 0.0f);
        y[c] = v;
        sum += v;
    }
    const float mean = hipinfer_block_sum(sum, scratch) / cols;
    float squares = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float d = y[c] - mean;
        squares += d * d;
    }
    const float inverse = rsqrtf(hipinfer_block_sum(squares, scratch) / cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) y[c] = (y[c] - mean) * inverse * gamma[c] + beta[c];
}

// Each row divided by max(‖row‖₂, 1e-12).
HIPINFER_KERNEL void hipinfer_l2_normalize(float* __restrict__ x, int rows, int cols) {
    __shared__ float scratch[HIPINFER_BLOCK];
    const int row = blockIdx.x;
    if (row >= rows) return;
    float* v = x + (size_t)row * cols;
    float squares = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) squares += v[c] * v[c];
    const float inverse = 1.0f / fmaxf(sqrtf(hipinfer_block_sum(squares, scratch)), 1e-12f);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) v[c] *= inverse;
}
