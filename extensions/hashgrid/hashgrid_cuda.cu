// Hash-grid encoding on CUDA (tiny-cuda-nn's definition): forward, and backward w.r.t. the table (float
// atomics into an fp32 gradient) and the inputs. One thread per (point, level): grid = (ceil(N/128), L).
// Table values may be fp32 or fp16; all arithmetic is fp32. Depends only on the CUDA runtime headers, so this
// file compiles standalone (`nvcc -c`); the torch glue is in hashgrid_cuda_binding.cpp.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "hashgrid_cuda.h"

namespace hashgrid {
namespace {

constexpr int kThreads = 128;

// Level table passed by value and indexed by blockIdx.y: __grid_constant__ reads it in place from the
// kernel-parameter bank instead of copying it to local memory per thread.
#if defined(__CUDACC_VER_MAJOR__) && \
    (__CUDACC_VER_MAJOR__ > 11 || (__CUDACC_VER_MAJOR__ == 11 && __CUDACC_VER_MINOR__ >= 7))
#define HG_GRID_CONST __grid_constant__
#else
#define HG_GRID_CONST
#endif

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

// F contiguous table values of one row, loaded with one vector load where the size allows it.
template <typename T, int F>
struct alignas(sizeof(T) * F <= 16 ? sizeof(T) * F : 16) Row {
  T v[F];
};

template <typename T, int F>
__device__ __forceinline__ void load_row(const T* __restrict__ table, uint32_t row, float* out) {
  const Row<T, F> r = *reinterpret_cast<const Row<T, F>*>(table + static_cast<size_t>(row) * F);
#pragma unroll
  for (int f = 0; f < F; ++f) out[f] = to_float(r.v[f]);
}

// Same as tcnn's pos_fract: pos = fmaf(scale, x, 0.5f), lower vertex, upper weight s_d and ds_d/dx_d.
template <int D, bool SMOOTH>
__device__ __forceinline__ void locate(const float* __restrict__ xp, const Level& lv, uint32_t* base, float* s,
                                       float* dsdx) {
#pragma unroll
  for (int d = 0; d < D; ++d) {
    const float pos = fmaf(lv.scale, xp[d], 0.5f);
    const float fl = floorf(pos);
    base[d] = grid_coord(fl);
    float ds;
    interp_weight<SMOOTH>(pos - fl, s[d], ds);
    dsdx[d] = ds * lv.scale;
  }
}

template <int D, int F, bool SMOOTH, typename T>
__global__ void forward_kernel(int64_t n, const float* __restrict__ x, const T* __restrict__ params,
                               const HG_GRID_CONST Levels levels, float* __restrict__ out) {
  constexpr int K = 1 << D;
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const int l = blockIdx.y;
  const Level lv = levels.lv[l];
  const T* table = params + static_cast<size_t>(lv.offset) * F;
  uint32_t base[D], rows[K];
  float s[D], dsdx[D];
  locate<D, SMOOTH>(x + i * D, lv, base, s, dsdx);
  corner_rows<D>(lv, base, rows);
  float acc[F] = {};
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const float w = corner_weight<D>(k, s);
    float v[F];
    load_row<T, F>(table, rows[k], v);
#pragma unroll
    for (int f = 0; f < F; ++f) acc[f] = fmaf(w, v[f], acc[f]);
  }
  float* o = out + i * (static_cast<int64_t>(levels.count) * F) + l * F;
#pragma unroll
  for (int f = 0; f < F; ++f) o[f] = acc[f];
}

// gout: (N, L·F); gparams: fp32 table gradient or null; gx: (N, D) fp32 (zeroed) or null.
template <int D, int F, bool SMOOTH, typename T>
__global__ void backward_kernel(int64_t n, const float* __restrict__ x, const T* __restrict__ params,
                                const HG_GRID_CONST Levels levels, const float* __restrict__ gout,
                                float* __restrict__ gparams, float* __restrict__ gx) {
  constexpr int K = 1 << D;
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const int l = blockIdx.y;
  const Level lv = levels.lv[l];
  uint32_t base[D], rows[K];
  float s[D], dsdx[D];
  locate<D, SMOOTH>(x + i * D, lv, base, s, dsdx);
  corner_rows<D>(lv, base, rows);
  float go[F];
  const float* gop = gout + i * (static_cast<int64_t>(levels.count) * F) + l * F;
#pragma unroll
  for (int f = 0; f < F; ++f) go[f] = gop[f];
  if (gparams) {
    float* g = gparams + static_cast<size_t>(lv.offset) * F;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const float w = corner_weight<D>(k, s);
#pragma unroll
      for (int f = 0; f < F; ++f) atomicAdd(g + static_cast<size_t>(rows[k]) * F + f, w * go[f]);
    }
  }
  if (gx) {
    const T* table = params + static_cast<size_t>(lv.offset) * F;
    float dot[K];  // <dL/dy, corner value>
#pragma unroll
    for (int k = 0; k < K; ++k) {
      float v[F];
      load_row<T, F>(table, rows[k], v);
      float acc = 0.0f;
#pragma unroll
      for (int f = 0; f < F; ++f) acc = fmaf(go[f], v[f], acc);
      dot[k] = acc;
    }
#pragma unroll
    for (int d = 0; d < D; ++d) {
      float acc = 0.0f;
#pragma unroll
      for (int k = 0; k < K; ++k) acc = fmaf(corner_weight_ds<D>(k, d, s), dot[k], acc);
      atomicAdd(gx + i * D + d, acc * dsdx[d]);
    }
  }
}

template <int D, int F, bool SMOOTH, typename T>
void launch(int64_t n, const float* x, const void* params, const Levels& levels, float* out, const float* gout,
            float* gparams, float* gx, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((n + kThreads - 1) / kThreads), static_cast<unsigned>(levels.count));
  const T* p = static_cast<const T*>(params);
  if (out) forward_kernel<D, F, SMOOTH, T><<<grid, kThreads, 0, stream>>>(n, x, p, levels, out);
  else backward_kernel<D, F, SMOOTH, T><<<grid, kThreads, 0, stream>>>(n, x, p, levels, gout, gparams, gx);
}

template <int D, int F>
bool dispatch_st(bool smooth, bool half, int64_t n, const float* x, const void* params, const Levels& levels,
                 float* out, const float* gout, float* gparams, float* gx, cudaStream_t stream) {
  if (half) {
    smooth ? launch<D, F, true, __half>(n, x, params, levels, out, gout, gparams, gx, stream)
           : launch<D, F, false, __half>(n, x, params, levels, out, gout, gparams, gx, stream);
  } else {
    smooth ? launch<D, F, true, float>(n, x, params, levels, out, gout, gparams, gx, stream)
           : launch<D, F, false, float>(n, x, params, levels, out, gout, gparams, gx, stream);
  }
  return true;
}

template <int D>
bool dispatch_f(int f, bool smooth, bool half, int64_t n, const float* x, const void* params,
                const Levels& levels, float* out, const float* gout, float* gparams, float* gx, cudaStream_t s) {
  switch (f) {
    case 1: return dispatch_st<D, 1>(smooth, half, n, x, params, levels, out, gout, gparams, gx, s);
    case 2: return dispatch_st<D, 2>(smooth, half, n, x, params, levels, out, gout, gparams, gx, s);
    case 4: return dispatch_st<D, 4>(smooth, half, n, x, params, levels, out, gout, gparams, gx, s);
    case 8: return dispatch_st<D, 8>(smooth, half, n, x, params, levels, out, gout, gparams, gx, s);
    default: return false;
  }
}

bool dispatch(int d, int f, bool smooth, bool half, int64_t n, const float* x, const void* params,
              const Levels& levels, float* out, const float* gout, float* gparams, float* gx, cudaStream_t s) {
  if (n == 0 || levels.count == 0) return true;
  switch (d) {
    case 2: return dispatch_f<2>(f, smooth, half, n, x, params, levels, out, gout, gparams, gx, s);
    case 3: return dispatch_f<3>(f, smooth, half, n, x, params, levels, out, gout, gparams, gx, s);
    case 4: return dispatch_f<4>(f, smooth, half, n, x, params, levels, out, gout, gparams, gx, s);
    default: return false;
  }
}

}  // namespace

bool launch_forward(int d, int f, bool smooth, bool half_params, int64_t n, const float* x, const void* params,
                    const Levels& levels, float* out, cudaStream_t stream) {
  return dispatch(d, f, smooth, half_params, n, x, params, levels, out, nullptr, nullptr, nullptr, stream);
}

bool launch_backward(int d, int f, bool smooth, bool half_params, int64_t n, const float* x, const void* params,
                     const Levels& levels, const float* gout, float* gparams, float* gx, cudaStream_t stream) {
  return dispatch(d, f, smooth, half_params, n, x, params, levels, nullptr, gout, gparams, gx, stream);
}

}  // namespace hashgrid
