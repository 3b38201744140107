// Hash-grid encoding on the CPU (tiny-cuda-nn's definition): forward, and backward w.r.t. the table and the
// inputs. Forward: OpenMP over points, levels one after another (one level's table stays in cache). Backward:
// OpenMP over levels, points in order within a level. Level-major scratch layouts (L, N, F) so every level
// reads/writes contiguous memory. No atomics: every output value is written by one thread in a fixed order, so
// results are bitwise the same for any thread count (see "Order of the sums").
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "hashgrid_common.h"

namespace {

using hashgrid::Level;

// Points per scheduling chunk: dynamic scheduling keeps all threads busy when cores are shared.
constexpr int64_t kChunk = 2048;

// Lower vertex, upper-vertex weights s_d and ds_d/dx_d of point `xp` in level `lv`.
// pos = scale·x + 0.5 is formed exactly in double from the float operands and rounded once to float,
// the same value as tcnn's fmaf(scale, x, 0.5f) (and as the torch reference).
template <int D, bool SMOOTH>
inline void locate(const float* xp, const Level& lv, uint32_t* base, float* s, float* dsdx) {
  for (int d = 0; d < D; ++d) {
    const float pos = static_cast<float>(static_cast<double>(lv.scale) * static_cast<double>(xp[d]) + 0.5);
    const float fl = std::floor(pos);
    base[d] = hashgrid::grid_coord(fl);
    float ds;
    hashgrid::interp_weight<SMOOTH>(pos - fl, s[d], ds);
    dsdx[d] = ds * lv.scale;
  }
}

// Points are handled in blocks of kBlock: a first pass locates every point of the block and prefetches its
// 2^D table rows, a second pass reads them, so the random memory accesses overlap.
constexpr int kBlock = 16;

// Per-block scratch: lower-corner rows, upper weights and ds/dx of kBlock points.
template <int D>
struct Block {
  uint32_t rows[kBlock][1 << D];
  float s[kBlock][D];
  float dsdx[kBlock][D];
  int count;
};

template <int D, int F, bool SMOOTH>
inline void locate_block(const float* x, int64_t i0, int64_t n, const Level& lv, const float* prefetch_base,
                         bool prefetch_write, Block<D>& blk) {
  blk.count = static_cast<int>(std::min<int64_t>(kBlock, n - i0));
  for (int b = 0; b < blk.count; ++b) {
    uint32_t base[D];
    locate<D, SMOOTH>(x + (i0 + b) * D, lv, base, blk.s[b], blk.dsdx[b]);
    hashgrid::corner_rows<D>(lv, base, blk.rows[b]);
    for (int k = 0; k < (1 << D); ++k) {
      const float* p = prefetch_base + static_cast<int64_t>(blk.rows[b][k]) * F;
      if (prefetch_write) __builtin_prefetch(p, 1);
      else __builtin_prefetch(p, 0);
    }
  }
}

// One level's forward, work-shared over the threads of the enclosing parallel region (no barrier after it:
// levels write disjoint outputs). out_l: (N, F) slice of the level-major output.
template <int D, int F, bool SMOOTH>
void forward_level(const float* x, int64_t n, const float* params, const Level& lv, float* out_l) {
  constexpr int K = 1 << D;
  const float* table = params + static_cast<int64_t>(lv.offset) * F;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp for schedule(dynamic, kChunk / kBlock) nowait
  for (int64_t bi = 0; bi < blocks; ++bi) {
    Block<D> blk;
    locate_block<D, F, SMOOTH>(x, bi * kBlock, n, lv, table, false, blk);
    for (int b = 0; b < blk.count; ++b) {
      float acc[F] = {};
      for (int k = 0; k < K; ++k) {
        const float w = hashgrid::corner_weight<D>(k, blk.s[b]);
        const float* v = table + static_cast<int64_t>(blk.rows[b][k]) * F;
        for (int f = 0; f < F; ++f) acc[f] += w * v[f];
      }
      float* o = out_l + (bi * kBlock + b) * F;
      for (int f = 0; f < F; ++f) o[f] = acc[f];
    }
  }
}

std::vector<Level> make_levels(const std::vector<double>& scales, const std::vector<int64_t>& res,
                               const std::vector<int64_t>& entries, const std::vector<int64_t>& offsets,
                               const c10::List<bool>& dense) {
  const size_t L = scales.size();
  TORCH_CHECK(res.size() == L && entries.size() == L && offsets.size() == L && dense.size() == L,
              "hashgrid: level lists differ in length");
  std::vector<Level> levels(L);
  for (size_t l = 0; l < L; ++l) {
    TORCH_CHECK(entries[l] > 0 && entries[l] <= (int64_t(1) << 31) && res[l] > 0, "hashgrid: bad level");
    levels[l] = Level{static_cast<float>(scales[l]), static_cast<uint32_t>(res[l]),
                      static_cast<uint32_t>(entries[l]), static_cast<uint32_t>(offsets[l]),
                      dense[l] ? 1u : 0u};
  }
  return levels;
}

// Runs FUNC<D, F, SMOOTH>(args...) for the runtime (d, f, smooth); errors on an unsupported combination.
#define HG_CASE_F(DD, FF, FUNC, ...)                                                      \
  if (d == DD && f == FF) {                                                               \
    smooth ? FUNC<DD, FF, true>(__VA_ARGS__) : FUNC<DD, FF, false>(__VA_ARGS__);         \
    return;                                                                               \
  }
#define HG_CASE_D(DD, FUNC, ...)                                                          \
  HG_CASE_F(DD, 1, FUNC, __VA_ARGS__) HG_CASE_F(DD, 2, FUNC, __VA_ARGS__)               \
  HG_CASE_F(DD, 4, FUNC, __VA_ARGS__) HG_CASE_F(DD, 8, FUNC, __VA_ARGS__)
#define HG_DISPATCH(FUNC, ...)                                                            \
  HG_CASE_D(2, FUNC, __VA_ARGS__) HG_CASE_D(3, FUNC, __VA_ARGS__) HG_CASE_D(4, FUNC, __VA_ARGS__) \
  TORCH_CHECK(false, "hashgrid cpu: unsupported n_input_dims=", d, " / n_features_per_level=", f);

template <int D, int F, bool SMOOTH>
void forward_all(const std::vector<Level>& levels, const float* x, int64_t n, const float* params, float* out,
                 int threads) {
#pragma omp parallel num_threads(threads)
  for (size_t l = 0; l < levels.size(); ++l)
    forward_level<D, F, SMOOTH>(x, n, params, levels[l], out + int64_t(l) * n * F);
}

// Order of the sums. A table entry of level l receives its terms w_k(x_i)·dL/dy_i in the order of a serial
// loop over points i and corners k, and a point's input gradient its levels' parts in level order, whatever
// the number of threads: levels have disjoint table rows, so each level's loop runs on one thread
// (backward_level) and only the levels are shared out; input-gradient parts are kept per level and added in
// level order afterwards. Results are therefore bitwise the same for any thread count (at most one thread
// per level is busy).

// Input gradient of one located point of one level, stored in gxi (D floats):
// Σ_d dsdx_d Σ_k ∂w_k/∂s_d <dL/dy, v_k>.
template <int D, int F>
inline void input_grad(const float* table, const uint32_t* rows, const float* s, const float* dsdx,
                       const float* go, float* gxi) {
  constexpr int K = 1 << D;
  float dot[K];  // <dL/dy, corner value>
  for (int k = 0; k < K; ++k) {
    const float* v = table + static_cast<int64_t>(rows[k]) * F;
    float acc = 0.0f;
    for (int f = 0; f < F; ++f) acc += go[f] * v[f];
    dot[k] = acc;
  }
  for (int d = 0; d < D; ++d) {
    float acc = 0.0f;
    for (int k = 0; k < K; ++k) acc += hashgrid::corner_weight_ds<D>(k, d, s) * dot[k];
    gxi[d] = acc * dsdx[d];
  }
}

// Backward of points [p0, p0 + m) of one level, on the calling thread, points in order. g: the level's table
// gradient (its rows zeroed first when `zero`) or null; gx: (m, D), the level's input-gradient part of these
// points (stored), or null.
template <int D, int F, bool SMOOTH>
void backward_level(const float* x, int64_t p0, int64_t m, const float* table, const Level& lv,
                    const float* gout_l, float* g, bool zero, float* gx) {
  constexpr int K = 1 << D;
  if (g && zero) std::memset(g, 0, sizeof(float) * lv.entries * F);
  for (int64_t i0 = 0; i0 < m; i0 += kBlock) {
    Block<D> blk;
    locate_block<D, F, SMOOTH>(x + p0 * D, i0, m, lv, g ? g : table, g != nullptr, blk);
    for (int b = 0; b < blk.count; ++b) {
      const int64_t i = i0 + b;
      const float* go = gout_l + (p0 + i) * F;
      if (g) {
        for (int k = 0; k < K; ++k) {
          const float w = hashgrid::corner_weight<D>(k, blk.s[b]);
          float* gp = g + static_cast<int64_t>(blk.rows[b][k]) * F;
          for (int f = 0; f < F; ++f) gp[f] += w * go[f];
        }
      }
      if (gx) input_grad<D, F>(table, blk.rows[b], blk.s[b], blk.dsdx[b], go, gx + i * D);
    }
  }
}

// Cap on the input-gradient parts kept per level for a segment of points, in floats (default 2^24 = 64 MiB).
std::atomic<int64_t> g_scratch_floats{int64_t(1) << 24};

void set_scratch_floats(int64_t floats) { g_scratch_floats = std::max<int64_t>(1, floats); }

// gparams: full table gradient (written entirely) or null; gx: (N, D) zeroed, or null.
template <int D, int F, bool SMOOTH>
void backward_all(const std::vector<Level>& levels, const float* x, int64_t n, const float* params,
                  const float* gout, float* gparams, float* gx, int threads) {
  const int64_t L = static_cast<int64_t>(levels.size());
  threads = static_cast<int>(std::clamp<int64_t>(threads, 1, L));
  // input gradients: each level's part of a segment of points, then added level after level
  const int64_t seg = gx ? std::clamp<int64_t>(g_scratch_floats.load() / (L * D), 1, n) : n;
  thread_local std::vector<float> parts;  // (L, seg, D), kept per calling thread between calls
  if (gx && parts.size() < static_cast<size_t>(L * seg * D)) parts.resize(L * seg * D);
  float* const parts_base = parts.data();
#pragma omp parallel num_threads(threads)
  for (int64_t p0 = 0; p0 < n; p0 += seg) {
    const int64_t m = std::min(seg, n - p0);
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < L; ++u) {  // finest (slowest) levels first
      const int64_t l = L - 1 - u;
      const Level& lv = levels[l];
      backward_level<D, F, SMOOTH>(x, p0, m, params + int64_t(lv.offset) * F, lv, gout + l * n * F,
                                   gparams ? gparams + int64_t(lv.offset) * F : nullptr, p0 == 0,
                                   gx ? parts_base + l * seg * D : nullptr);
    }
    if (gx) {
#pragma omp for schedule(static)
      for (int64_t i = 0; i < m * D; ++i) {
        float acc = gx[p0 * D + i];
        for (int64_t l = 0; l < L; ++l) acc += parts_base[l * seg * D + i];
        gx[p0 * D + i] = acc;
      }
    }
  }
}

void forward_dispatch(int64_t d, int64_t f, bool smooth, const std::vector<Level>& levels, const float* x,
                      int64_t n, const float* params, float* out, int threads) {
  HG_DISPATCH(forward_all, levels, x, n, params, out, threads)
}

void backward_dispatch(int64_t d, int64_t f, bool smooth, const std::vector<Level>& levels, const float* x,
                       int64_t n, const float* params, const float* gout, float* gparams, float* gx, int threads) {
  HG_DISPATCH(backward_all, levels, x, n, params, gout, gparams, gx, threads)
}

int64_t total_rows(const std::vector<Level>& levels) {
  return levels.empty() ? 0 : int64_t(levels.back().offset) + levels.back().entries;
}

void check_inputs(const at::Tensor& x, const at::Tensor& params, int64_t F, int64_t total_rows) {
  TORCH_CHECK(x.device().is_cpu() && params.device().is_cpu(), "hashgrid cpu: tensors must be on the CPU");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(),
              "hashgrid cpu: x must be a contiguous (N, D) float32 tensor");
  TORCH_CHECK(params.scalar_type() == at::kFloat && params.is_contiguous() && params.dim() == 1,
              "hashgrid cpu: params must be a contiguous 1-D float32 tensor");
  TORCH_CHECK(params.numel() == total_rows * F, "hashgrid cpu: params has ", params.numel(), " values, expected ",
              total_rows * F);
}

at::Tensor forward(at::Tensor x, at::Tensor params, std::vector<double> scales, std::vector<int64_t> res,
                   std::vector<int64_t> entries, std::vector<int64_t> offsets, const c10::List<bool>& dense,
                   int64_t F, bool smoothstep) {
  const auto levels = make_levels(scales, res, entries, offsets, dense);
  check_inputs(x, params, F, total_rows(levels));
  const int64_t n = x.size(0), D = x.size(1), L = static_cast<int64_t>(levels.size());
  auto out = at::empty({L, n, F}, x.options());  // level-major scratch, transposed at the end
  const int threads = at::get_num_threads();
  const float* xp = x.data_ptr<float>();
  const float* pp = params.data_ptr<float>();
  float* op = out.data_ptr<float>();
  forward_dispatch(D, F, smoothstep, levels, xp, n, pp, op, threads);
  return out.permute({1, 0, 2}).reshape({n, L * F});
}

std::vector<at::Tensor> backward(at::Tensor grad_out, at::Tensor x, at::Tensor params,
                                 std::vector<double> scales, std::vector<int64_t> res,
                                 std::vector<int64_t> entries, std::vector<int64_t> offsets,
                                 const c10::List<bool>& dense, int64_t F, bool smoothstep, bool need_params,
                                 bool need_x) {
  const auto levels = make_levels(scales, res, entries, offsets, dense);
  check_inputs(x, params, F, total_rows(levels));
  const int64_t n = x.size(0), D = x.size(1), L = static_cast<int64_t>(levels.size());
  TORCH_CHECK(grad_out.scalar_type() == at::kFloat && grad_out.dim() == 2 && grad_out.size(0) == n &&
                  grad_out.size(1) == L * F,
              "hashgrid cpu: grad_out must be (N, L*F) float32");
  // (L, N, F) contiguous so each level reads its gradients sequentially
  const auto gout = grad_out.reshape({n, L, F}).permute({1, 0, 2}).contiguous();
  auto gparams = need_params ? at::empty_like(params) : at::empty({0}, params.options());
  auto gx = need_x ? at::zeros_like(x) : at::empty({0}, x.options());
  if (n == 0 || L == 0) {
    if (need_params) gparams.zero_();
    return {gparams, gx};
  }
  const int threads = std::max(1, at::get_num_threads());
  const float* xp = x.data_ptr<float>();
  const float* pp = params.data_ptr<float>();
  const float* gp = gout.data_ptr<float>();
  float* gpp = need_params ? gparams.data_ptr<float>() : nullptr;
  float* gxp = need_x ? gx.data_ptr<float>() : nullptr;
  backward_dispatch(D, F, smoothstep, levels, xp, n, pp, gp, gpp, gxp, threads);
  return {gparams, gx};
}

}  // namespace

// Registered as torch operators (torch.ops.<TORCH_EXTENSION_NAME>.*), not as a pybind11 module: without
// pybind11's and torch's Python headers the kernel compiles in 15 s instead of 35 s; calls release the GIL.
TORCH_LIBRARY(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward);       // -> (N, L*F)
  m.def("backward", &backward);     // -> [grad_params, grad_x]
  m.def("set_scratch_floats", &set_scratch_floats);  // cap on the backward's per-level input-gradient parts
}
