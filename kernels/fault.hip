// A deliberate GPU memory fault: one thread writes `offset` floats past `p`, far outside any
// allocation. Reached only from fault campaigns (`hipinfer chaos --real-fault-rate`) and tests,
// to prove the recovery ladder against the real thing: on ROCm >= 6 and CUDA it poisons the
// process (700 from every later call), on ROCm <= 5 the runtime aborts.
#include "common.h"

HIPINFER_KERNEL void hipinfer_out_of_bounds_write(float* p, long long offset) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        volatile float* target = p + offset;
        *target = 1.0f;
    }
}
