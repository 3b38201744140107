// Shared, dependency-free pieces of the hash-grid kernels (host C++ and CUDA): tiny-cuda-nn's definition of
// grid indexing and of the per-dimension interpolation weights. See shared/reference/hashgrid.md.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define HG_HD __host__ __device__ __forceinline__
#define HG_UNROLL _Pragma("unroll")
#else
#define HG_HD inline
#define HG_UNROLL _Pragma("GCC unroll 16")
#endif

namespace hashgrid {

constexpr int kMaxLevels = 32;

// One level's constants, computed once on the host by dream3d.encoding.levels (float32 arithmetic).
struct Level {
  float scale;       // exp2f(l·log2f(b))·N_min − 1
  uint32_t res;      // ceil(scale) + 1
  uint32_t entries;  // rows in this level's table
  uint32_t offset;   // first row of the level in the flat table
  uint32_t dense;    // 1: direct indexing, 0: hashed
};

struct Levels {
  Level lv[kMaxLevels];
  int count;
};

HG_HD uint32_t hash_prime(int d) {
  // tcnn's coherent_prime_hash factors
  return d == 0 ? 1u : d == 1 ? 2654435761u : d == 2 ? 805459861u : 3674653429u;
}

// floorf result -> uint32 grid coordinate like CUDA's (uint32_t)(int)t: saturating, NaN -> 0.
HG_HD uint32_t grid_coord(float t) {
  if (!(t == t)) return 0u;
  if (t <= -2147483648.0f) return 0x80000000u;
  if (t >= 2147483647.0f) return 0x7fffffffu;
  return static_cast<uint32_t>(static_cast<int32_t>(t));
}

// Interpolation weight s(f) of the upper vertex and ds/df.
template <bool SMOOTH>
HG_HD void interp_weight(float f, float& s, float& ds) {
  if (SMOOTH) {
    s = f * f * (3.0f - 2.0f * f);
    ds = 6.0f * f * (1.0f - f);
  } else {
    s = f;
    ds = 1.0f;
  }
}

// Rows of the 2^D corners of the cell with lower vertex `base`; corner k takes base_d + bit_d(k).
// Dense: Σ_d c_d·res^d (uint32, wrapping) mod entries; hashed: XOR_d c_d·π_d mod entries.
template <int D>
HG_HD void corner_rows(const Level& lv, const uint32_t* base, uint32_t* rows) {
  uint32_t lo[D], hi[D];
  if (lv.dense) {
    uint32_t stride = 1;
HG_UNROLL
    for (int d = 0; d < D; ++d) {
      lo[d] = base[d] * stride;
      hi[d] = (base[d] + 1u) * stride;
      stride *= lv.res;
    }
HG_UNROLL
    for (int k = 0; k < (1 << D); ++k) {
      uint32_t i = 0;
HG_UNROLL
      for (int d = 0; d < D; ++d) i += ((k >> d) & 1) ? hi[d] : lo[d];
      rows[k] = i < lv.entries ? i : i % lv.entries;  // wraps only for corners past the last vertex
    }
  } else {
HG_UNROLL
    for (int d = 0; d < D; ++d) {
      lo[d] = base[d] * hash_prime(d);
      hi[d] = (base[d] + 1u) * hash_prime(d);
    }
    const uint32_t mask = lv.entries - 1u;
    const bool pow2 = (lv.entries & mask) == 0u;
HG_UNROLL
    for (int k = 0; k < (1 << D); ++k) {
      uint32_t h = 0;
HG_UNROLL
      for (int d = 0; d < D; ++d) h ^= ((k >> d) & 1) ? hi[d] : lo[d];
      rows[k] = pow2 ? (h & mask) : h % lv.entries;
    }
  }
}

// Weight of corner k: Π_d (bit_d ? s_d : 1 − s_d).
template <int D>
HG_HD float corner_weight(int k, const float* s) {
  float w = 1.0f;
HG_UNROLL
  for (int d = 0; d < D; ++d) w *= ((k >> d) & 1) ? s[d] : 1.0f - s[d];
  return w;
}

// ∂(corner weight)/∂s_d = ±Π_{e≠d} (bit_e ? s_e : 1 − s_e), + for the upper vertex along d.
template <int D>
HG_HD float corner_weight_ds(int k, int d, const float* s) {
  float w = ((k >> d) & 1) ? 1.0f : -1.0f;
HG_UNROLL
  for (int e = 0; e < D; ++e) {
    if (e != d) w *= ((k >> e) & 1) ? s[e] : 1.0f - s[e];
  }
  return w;
}

}  // namespace hashgrid
