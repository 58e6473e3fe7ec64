// Mean pooling over the attention mask. One block per sequence, threads over the hidden columns.
#include "common.h"

HIPINFER_KERNEL void hipinfer_mean_pool(const float* __restrict__ input, const float* __restrict__ mask,
                                        float* __restrict__ out, int batch, int seq, int hidden) {
    const int b = blockIdx.x;
    if (b >= batch) return;
    float count = 0.0f;
    for (int t = 0; t < seq; ++t) count += mask[(size_t)b * seq + t];
    const float inverse = count > 0.0f ? 1.0f / count : 0.0f;
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
        float acc = 0.0f;
        for (int t = 0; t < seq; ++t) {
            const float w = mask[(size_t)b * seq + t];
            if (w != 0.0f) acc += w * input[((size_t)b * seq + t) * hidden + c];
        }
        out[(size_t)b * hidden + c] = acc * inverse;
    }
}
