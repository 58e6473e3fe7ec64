// Maps the little HIP-specific spelling the kernels use to CUDA, for checking them with nvcc:
//   nvcc -include kernels/cuda_compat.h -x cu kernels/gemm.hip ...
#pragma once
#if !defined(__HIPCC__)
#include <cuda_runtime.h>
#endif
