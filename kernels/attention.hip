// Multi-head self-attention from a fused QKV matrix. One block per (query token, head, sequence):
// scores against every key in dynamic shared memory (seq floats), masked softmax, then P·V.
// Padding query rows are written as zeros, as the CPU backend does.
#include "common.h"

HIPINFER_KERNEL void hipinfer_attention(const float* __restrict__ qkv, const float* __restrict__ mask,
                                        float* __restrict__ out, int batch, int seq, int heads, int head_dim) {
    extern __shared__ float scores[];  // seq floats
    __shared__ float scratch[HIPINFER_BLOCK];
    const int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    if (i >= seq || h >= heads || b >= batch) return;
    const int hidden = heads * head_dim;
    const size_t stride = 3 * (size_t)hidden;
    const float* q = qkv + ((size_t)b * seq + i) * stride + (size_t)h * head_dim;
    const float* keys = qkv + (size_t)b * seq * stride + hidden + (size_t)h * head_dim;
    const float* values = qkv + (size_t)b * seq * stride + 2 * hidden + (size_t)h * head_dim;
    const float* m = mask + (size_t)b * seq;
    float* o = out + ((size_t)b * seq + i) * hidden + (size_t)h * head_dim;
    if (m[i] == 0.0f) {
        for (int d = threadIdx.x; d < head_dim; d += blockDim.x) o[d] = 0.0f;
        return;
    }
    const float scale = rsqrtf((float)head_dim);
    float local_max = -INFINITY;
    for (int j = threadIdx.x; j < seq; j += blockDim.x) {
        float s = -INFINITY;
        if (m[j] != 0.0f) {
            s = 0.0f;
            for (int d = 0; d < head_dim; ++d) s += q[d] * keys[(size_t)j * stride + d];
            s *= scale;
        }
        scores[j] = s;
        local_max = fmaxf(local_max, s);
    }
    const float max = hipinfer_block_max(local_max, scratch);
    float local_sum = 0.0f;
    for (int j = threadIdx.x; j < seq; j += blockDim.x) {
        const float e = scores[j] == -INFINITY ? 0.0f : expf(scores[j] - max);
        scores[j] = e;
        local_sum += e;
    }
    const float sum = hipinfer_block_sum(local_sum, scratch);
    const float inverse = sum > 0.0f ? 1.0f / sum : 0.0f;
    __syncthreads();
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < seq; ++j) acc += scores[j] * values[(size_t)j * stride + d];
        o[d] = acc * inverse;
    }
}
