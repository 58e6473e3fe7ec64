// Element-wise kernels: the embedding sum, GELU and addition. One thread per value.
#include "common.h"

// out[t, h] = word[ids[t], h] + position[t % seq, h] + token_type[types[t], h]
HIPINFER_KERNEL void hipinfer_embed(const unsigned* __restrict__ ids, const unsigned* __restrict__ types,
                                    const float* __restrict__ word, const float* __restrict__ position,
                                    const float* __restrict__ token_type, float* __restrict__ out, int tokens,
                                    int seq, int hidden) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)tokens * hidden) return;
    const size_t t = i / hidden;
    const size_t h = i % hidden;
    out[i] = word[(size_t)ids[t] * hidden + h] + position[(t % seq) * hidden + h] +
             token_type[(size_t)types[t] * hidden + h];
}

HIPINFER_KERNEL void hipinfer_gelu(float* __restrict__ x, int len) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (size_t)len) x[i] = hipinfer_gelu_value(x[i]);
}

HIPINFER_KERNEL void hipinfer_add(float* __restrict__ x, const float* __restrict__ y, int len) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (size_t)len) x[i] += y[i];
}
