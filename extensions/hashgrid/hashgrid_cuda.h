// Host-callable launchers of the CUDA hash-grid kernels (implemented in hashgrid_cuda.cu).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "hashgrid_common.h"

namespace hashgrid {

// x: (N, D) fp32; params: flat table, fp32 or fp16 (half_params); out: (N, L·F) fp32.
// Returns false for an unsupported (D, F) combination; launch errors are left to cudaGetLastError.
bool launch_forward(int d, int f, bool smooth, bool half_params, int64_t n, const float* x, const void* params,
                    const Levels& levels, float* out, cudaStream_t stream);

// gout: (N, L·F) fp32; gparams: fp32 table gradient (zeroed) or null; gx: (N, D) fp32 (zeroed) or null.
bool launch_backward(int d, int f, bool smooth, bool half_params, int64_t n, const float* x, const void* params,
                     const Levels& levels, const float* gout, float* gparams, float* gx, cudaStream_t stream);

}  // namespace hashgrid
