// Gaussian splatting compositor on the CPU: tile binning, per-tile depth order, front-to-back alpha compositing
// with early termination, and its exact backward (back to front, as 3D Gaussian Splatting's backward pass).
//
// Inputs are screen-space splats (the projection is done in torch): centres means2d (C,N,2) in pixels, conics
// (C,N,3) = the inverse 2D covariance (a, b, c), opacities (N,), features (C,N,K) and depths (C,N) (sort key),
// and the tile rectangle of each splat rects (C,N,4) = (x0, y0, x1, y1), empty for culled splats.
// Binning: per camera, the visible splats sorted by (depth, index), then bucketed by tile in that order, so each
// tile's list is depth-sorted (the order of a sort on (tile, depth) keys). Each tile is cut into 4x4-pixel blocks
// whose pixels go only through the splats that can reach alpha_min in the block. OpenMP over (camera, tile) pairs; in
// the backward pass each tile writes the gradients of its own list entries, summed per splat afterwards, so no
// two threads write the same memory and the result does not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

namespace {

struct Rules {
  double alpha_min, alpha_max, t_min;
  int64_t tile, width, height, tiles_x, tiles_y;
  int threads;  // torch's intra-op thread count (torch may ship its own OpenMP runtime, so it is passed on)
};

// Per camera: the splat ids of every tile's list, concatenated; offsets (C * tiles + 1) index into ids.
struct Bins {
  std::vector<int64_t> offsets;
  std::vector<int32_t> ids;
};

template <typename scalar_t>
Bins bin_splats(const scalar_t* depths, const int32_t* rects, int64_t n_cams, int64_t n, const Rules& r) {
  const int64_t n_tiles = r.tiles_x * r.tiles_y;
  std::vector<std::vector<int32_t>> per_cam(n_cams);
  std::vector<std::vector<int64_t>> counts(n_cams, std::vector<int64_t>(n_tiles + 1, 0));
#pragma omp parallel for schedule(dynamic, 1) num_threads(r.threads)
  for (int64_t c = 0; c < n_cams; ++c) {
    const scalar_t* dep = depths + c * n;
    const int32_t* rc = rects + c * n * 4;
    std::vector<int32_t> order;
    for (int32_t i = 0; i < n; ++i)
      if (rc[4 * i + 2] > rc[4 * i] && rc[4 * i + 3] > rc[4 * i + 1]) order.push_back(i);
    std::stable_sort(order.begin(), order.end(), [dep](int32_t a, int32_t b) { return dep[a] < dep[b]; });
    std::vector<int64_t>& cnt = counts[c];
    for (int32_t i : order)
      for (int32_t ty = rc[4 * i + 1]; ty < rc[4 * i + 3]; ++ty)
        for (int32_t tx = rc[4 * i]; tx < rc[4 * i + 2]; ++tx) ++cnt[ty * r.tiles_x + tx + 1];
    std::partial_sum(cnt.begin(), cnt.end(), cnt.begin());
    std::vector<int32_t>& ids = per_cam[c];
    ids.resize(cnt[n_tiles]);
    std::vector<int64_t> fill(cnt.begin(), cnt.end() - 1);
    for (int32_t i : order)
      for (int32_t ty = rc[4 * i + 1]; ty < rc[4 * i + 3]; ++ty)
        for (int32_t tx = rc[4 * i]; tx < rc[4 * i + 2]; ++tx) ids[fill[ty * r.tiles_x + tx]++] = i;
  }
  Bins bins;
  bins.offsets.push_back(0);
  for (int64_t c = 0; c < n_cams; ++c) {
    const int64_t base = static_cast<int64_t>(bins.ids.size());
    for (int64_t t = 1; t <= n_tiles; ++t) bins.offsets.push_back(base + counts[c][t]);
    bins.ids.insert(bins.ids.end(), per_cam[c].begin(), per_cam[c].end());
  }
  return bins;
}

// One tile's splats gathered into contiguous arrays (centre, conic, opacity, K features).
template <typename scalar_t>
struct TileSplats {
  std::vector<scalar_t> mx, my, ca, cb, cc, op, feat;
  // A bound on the exponent beyond which alpha is surely below alpha_min: log(opacity / alpha_min) plus a margin
  // far above rounding, so skipping those pixels without calling exp changes nothing.
  std::vector<scalar_t> sigma_max;
  void gather(const int32_t* ids, int64_t count, const scalar_t* m2d, const scalar_t* con, const scalar_t* opac,
              const scalar_t* features, int64_t k, double alpha_min) {
    mx.resize(count), my.resize(count), ca.resize(count), cb.resize(count), cc.resize(count), op.resize(count);
    sigma_max.resize(count), feat.resize(count * k);
    for (int64_t j = 0; j < count; ++j) {
      const int64_t g = ids[j];
      mx[j] = m2d[2 * g], my[j] = m2d[2 * g + 1];
      ca[j] = con[3 * g], cb[j] = con[3 * g + 1], cc[j] = con[3 * g + 2];
      op[j] = opac[g];
      sigma_max[j] = op[j] > 0 ? static_cast<scalar_t>(std::log(static_cast<double>(op[j]) / alpha_min) + 1e-3)
                               : scalar_t(-1);
      for (int64_t d = 0; d < k; ++d) feat[j * k + d] = features[g * k + d];
    }
  }
};

// A lower bound of sigma(d) = 0.5 (a dx^2 + c dy^2) + b dx dy over the pixel centres of a block (the rectangle
// [x0, x1] x [y0, y1] of centres minus the splat's centre): 0 when the centre is inside; else, sigma being convex,
// its least value on the rectangle's edges. -1 (keep the splat) when rounding made the conic not positive definite.
inline double min_sigma_over_block(double a, double b, double c, double x0, double x1, double y0, double y1) {
  if (!(a > 0 && c > 0 && a * c - b * b > 0)) return -1;
  if (x0 <= 0 && x1 >= 0 && y0 <= 0 && y1 >= 0) return 0;
  auto sigma = [&](double dx, double dy) { return 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy; };
  auto at_x = [&](double dx) { return sigma(dx, std::clamp(-b * dx / c, y0, y1)); };
  auto at_y = [&](double dy) { return sigma(std::clamp(-b * dy / a, x0, x1), dy); };
  return std::min(std::min(at_x(x0), at_x(x1)), std::min(at_y(y0), at_y(y1)));
}

constexpr int64_t kBlock = 4;  // pixels per side of the blocks a tile is cut into

// Runs `pixel(c, pix, px, py, ts, sel, entry_start)` for every pixel, where `sel` lists (front to back) the
// entries of the pixel's tile that can reach alpha_min somewhere in its 4x4 block; the others could only be
// skipped at each of its pixels, so leaving them out changes nothing but the time. Tiles of all cameras in
// parallel; each pixel is visited by one thread.
template <typename scalar_t, typename PixelFn>
void for_each_pixel(const scalar_t* m2d, const scalar_t* con, const scalar_t* opac, const scalar_t* features,
                    const Bins& bins, int64_t n_cams, int64_t n, int64_t k, const Rules& r, PixelFn pixel) {
  const int64_t n_tiles = r.tiles_x * r.tiles_y;
#pragma omp parallel num_threads(r.threads)
  {
    TileSplats<scalar_t> ts;
    std::vector<int32_t> sel;
#pragma omp for schedule(dynamic, 1)
    for (int64_t ct = 0; ct < n_cams * n_tiles; ++ct) {
      const int64_t c = ct / n_tiles, t = ct % n_tiles;
      const int64_t start = bins.offsets[ct], count = bins.offsets[ct + 1] - start;
      ts.gather(bins.ids.data() + start, count, m2d + c * n * 2, con + c * n * 3, opac, features + c * n * k, k,
                r.alpha_min);
      const int64_t tx0 = (t % r.tiles_x) * r.tile, ty0 = (t / r.tiles_x) * r.tile;
      const int64_t tx1 = std::min(tx0 + r.tile, r.width), ty1 = std::min(ty0 + r.tile, r.height);
      for (int64_t by = ty0; by < ty1; by += kBlock) {
        for (int64_t bx = tx0; bx < tx1; bx += kBlock) {
          const int64_t bx1 = std::min(bx + kBlock, tx1), by1 = std::min(by + kBlock, ty1);
          sel.clear();
          for (int64_t j = 0; j < count; ++j) {
            const double mx = ts.mx[j], my = ts.my[j];
            const double bound = min_sigma_over_block(ts.ca[j], ts.cb[j], ts.cc[j], bx + 0.5 - mx, bx1 - 0.5 - mx,
                                                      by + 0.5 - my, by1 - 0.5 - my);
            if (bound <= static_cast<double>(ts.sigma_max[j])) sel.push_back(static_cast<int32_t>(j));
          }
          for (int64_t py = by; py < by1; ++py)
            for (int64_t px = bx; px < bx1; ++px)
              pixel(c, (c * r.height + py) * r.width + px, px, py, ts, sel, start);
        }
      }
    }
  }
}

template <typename scalar_t>
void forward_impl(const scalar_t* m2d, const scalar_t* con, const scalar_t* opac, const scalar_t* features,
                  const Bins& bins, int64_t n_cams, int64_t n, int64_t k, const Rules& r, scalar_t* image,
                  scalar_t* alpha_out, scalar_t* final_t, int32_t* last) {
  const scalar_t amin = r.alpha_min, amax = r.alpha_max, tmin = r.t_min;
  for_each_pixel<scalar_t>(m2d, con, opac, features, bins, n_cams, n, k, r,
      [&](int64_t, int64_t pix, int64_t px, int64_t py, const TileSplats<scalar_t>& ts,
          const std::vector<int32_t>& sel, int64_t) {
        const scalar_t fx = static_cast<scalar_t>(px) + scalar_t(0.5), fy = static_cast<scalar_t>(py) + scalar_t(0.5);
        scalar_t* acc = image + pix * k;
        std::fill(acc, acc + k, scalar_t(0));
        scalar_t T = 1;
        int32_t n_used = 0;
        for (size_t q = 0; q < sel.size(); ++q) {
          const int64_t j = sel[q];
          const scalar_t dx = fx - ts.mx[j], dy = fy - ts.my[j];
          const scalar_t sigma = scalar_t(0.5) * (ts.ca[j] * dx * dx + ts.cc[j] * dy * dy) + ts.cb[j] * dx * dy;
          if (sigma < 0 || sigma > ts.sigma_max[j]) continue;
          const scalar_t alpha = std::min(amax, ts.op[j] * std::exp(-sigma));
          if (alpha < amin) continue;
          const scalar_t next_t = T * (scalar_t(1) - alpha);
          if (next_t < tmin) break;
          const scalar_t w = alpha * T;
          const scalar_t* f = ts.feat.data() + j * k;
          for (int64_t d = 0; d < k; ++d) acc[d] += w * f[d];
          T = next_t;
          n_used = static_cast<int32_t>(q + 1);
        }
        alpha_out[pix] = scalar_t(1) - T;
        final_t[pix] = T;
        last[pix] = n_used;
      });
}

template <typename scalar_t>
void backward_impl(const scalar_t* m2d, const scalar_t* con, const scalar_t* opac, const scalar_t* features,
                   const Bins& bins, int64_t n_cams, int64_t n, int64_t k, const Rules& r, const scalar_t* final_t,
                   const int32_t* last, const scalar_t* grad_image, const scalar_t* grad_alpha, scalar_t* g_m2d,
                   scalar_t* g_con, scalar_t* g_opac, scalar_t* g_feat) {
  const int64_t n_tiles = r.tiles_x * r.tiles_y;
  const int64_t n_entries = static_cast<int64_t>(bins.ids.size());
  const int64_t stride = 6 + k;  // per list entry: d means2d (2), d conic (3), d opacity, d features (k)
  std::vector<scalar_t> entry_grads(n_entries * stride, scalar_t(0));
  const scalar_t amin = r.alpha_min, amax = r.alpha_max;
  // what lies behind splat j at a pixel, per thread: sum over the splats after it of their weight / T_{j+1} x f
  std::vector<std::vector<scalar_t>> behind_of(std::max(1, r.threads), std::vector<scalar_t>(k));
  for_each_pixel<scalar_t>(m2d, con, opac, features, bins, n_cams, n, k, r,
      [&](int64_t, int64_t pix, int64_t px, int64_t py, const TileSplats<scalar_t>& ts,
          const std::vector<int32_t>& sel, int64_t start) {
        const scalar_t fx = static_cast<scalar_t>(px) + scalar_t(0.5), fy = static_cast<scalar_t>(py) + scalar_t(0.5);
        const scalar_t t_final = final_t[pix], ga = grad_alpha[pix];
        const scalar_t* gi = grad_image + pix * k;
        std::vector<scalar_t>& behind = behind_of[omp_get_thread_num()];
        std::fill(behind.begin(), behind.end(), scalar_t(0));
        scalar_t T = t_final;
        for (int64_t q = static_cast<int64_t>(last[pix]) - 1; q >= 0; --q) {
          const int64_t j = sel[q];
          const scalar_t dx = fx - ts.mx[j], dy = fy - ts.my[j];
          const scalar_t sigma = scalar_t(0.5) * (ts.ca[j] * dx * dx + ts.cc[j] * dy * dy) + ts.cb[j] * dx * dy;
          if (sigma < 0 || sigma > ts.sigma_max[j]) continue;
          const scalar_t gauss = std::exp(-sigma);
          const scalar_t raw = ts.op[j] * gauss;
          const scalar_t alpha = std::min(amax, raw);
          if (alpha < amin) continue;
          const scalar_t one_minus = scalar_t(1) - alpha;
          T = T / one_minus;  // the transmittance in front of splat j
          const scalar_t w = alpha * T;
          const scalar_t* f = ts.feat.data() + j * k;
          scalar_t* e = entry_grads.data() + (start + j) * stride;
          scalar_t d_alpha = ga * t_final / one_minus;
          for (int64_t d = 0; d < k; ++d) {
            e[6 + d] += w * gi[d];
            d_alpha += T * gi[d] * (f[d] - behind[d]);
            behind[d] = alpha * f[d] + one_minus * behind[d];
          }
          if (raw > amax) continue;  // clamped: alpha does not depend on opacity or position
          e[5] += gauss * d_alpha;
          const scalar_t d_sigma = -alpha * d_alpha;
          e[0] += -d_sigma * (ts.ca[j] * dx + ts.cb[j] * dy);
          e[1] += -d_sigma * (ts.cb[j] * dx + ts.cc[j] * dy);
          e[2] += scalar_t(0.5) * dx * dx * d_sigma;
          e[3] += dx * dy * d_sigma;
          e[4] += scalar_t(0.5) * dy * dy * d_sigma;
        }
      });
  // Sum the entries of each splat (a camera's entries only touch that camera's slots).
#pragma omp parallel for schedule(dynamic, 1) num_threads(r.threads)
  for (int64_t c = 0; c < n_cams; ++c) {
    for (int64_t q = bins.offsets[c * n_tiles]; q < bins.offsets[(c + 1) * n_tiles]; ++q) {
      const int64_t g = bins.ids[q];
      const scalar_t* e = entry_grads.data() + q * stride;
      scalar_t* gm = g_m2d + (c * n + g) * 2;
      scalar_t* gc = g_con + (c * n + g) * 3;
      gm[0] += e[0], gm[1] += e[1];
      gc[0] += e[2], gc[1] += e[3], gc[2] += e[4];
      g_opac[c * n + g] += e[5];
      scalar_t* gf = g_feat + (c * n + g) * k;
      for (int64_t d = 0; d < k; ++d) gf[d] += e[6 + d];
    }
  }
}

Rules make_rules(int64_t width, int64_t height, int64_t tile, double alpha_min, double alpha_max, double t_min) {
  return Rules{alpha_min, alpha_max, t_min, tile, width, height, (width + tile - 1) / tile,
               (height + tile - 1) / tile, std::max(1, at::get_num_threads())};
}

void check_inputs(const at::Tensor& m2d, const at::Tensor& con, const at::Tensor& opac,
                  const at::Tensor& feat, const at::Tensor& depths, const at::Tensor& rects) {
  for (const at::Tensor* t : {&m2d, &con, &opac, &feat, &depths, &rects}) {
    TORCH_CHECK(t->device().is_cpu(), "splat_cpu: tensors must be on the CPU");
    TORCH_CHECK(t->is_contiguous(), "splat_cpu: tensors must be contiguous");
  }
  TORCH_CHECK(rects.scalar_type() == at::kInt, "splat_cpu: rects must be int32");
  for (const at::Tensor* t : {&con, &opac, &feat, &depths})
    TORCH_CHECK(t->scalar_type() == m2d.scalar_type(), "splat_cpu: float tensors must share one dtype");
}

}  // namespace

// Returns image (C,H,W,K), alpha (C,H,W,1), final transmittance (C,H,W), the count of list entries each pixel
// went through up to its last contributing splat (C,H,W) int32, tile offsets (C*tiles+1) int64 and ids (M) int32.
std::vector<at::Tensor> forward(at::Tensor means2d, at::Tensor conics, at::Tensor opacities,
                                at::Tensor features, at::Tensor depths, at::Tensor rects, int64_t width,
                                int64_t height, int64_t tile, double alpha_min, double alpha_max, double t_min) {
  check_inputs(means2d, conics, opacities, features, depths, rects);
  const int64_t n_cams = features.size(0), n = features.size(1), k = features.size(2);
  const Rules r = make_rules(width, height, tile, alpha_min, alpha_max, t_min);
  auto opts = features.options();
  at::Tensor image = at::empty({n_cams, height, width, k}, opts);
  at::Tensor alpha = at::empty({n_cams, height, width, 1}, opts);
  at::Tensor final_t = at::empty({n_cams, height, width}, opts);
  at::Tensor last = at::empty({n_cams, height, width}, opts.dtype(at::kInt));
  at::Tensor offsets, ids;
  AT_DISPATCH_FLOATING_TYPES(features.scalar_type(), "splat_forward", [&] {
    Bins bins = bin_splats<scalar_t>(depths.data_ptr<scalar_t>(), rects.data_ptr<int32_t>(), n_cams, n, r);
    forward_impl<scalar_t>(means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(),
                           opacities.data_ptr<scalar_t>(), features.data_ptr<scalar_t>(), bins, n_cams, n, k, r,
                           image.data_ptr<scalar_t>(), alpha.data_ptr<scalar_t>(), final_t.data_ptr<scalar_t>(),
                           last.data_ptr<int32_t>());
    offsets = at::from_blob(bins.offsets.data(), {static_cast<int64_t>(bins.offsets.size())}, at::kLong)
                  .clone();
    ids = at::from_blob(bins.ids.data(), {static_cast<int64_t>(bins.ids.size())}, at::kInt).clone();
  });
  return {image, alpha, final_t, last, offsets, ids};
}

// Returns the gradients w.r.t. means2d (C,N,2), conics (C,N,3), opacities per camera (C,N) and features (C,N,K).
std::vector<at::Tensor> backward(at::Tensor means2d, at::Tensor conics, at::Tensor opacities,
                                 at::Tensor features, at::Tensor offsets, at::Tensor ids,
                                 at::Tensor final_t, at::Tensor last, at::Tensor grad_image,
                                 at::Tensor grad_alpha, int64_t width, int64_t height, int64_t tile,
                                 double alpha_min, double alpha_max, double t_min) {
  const int64_t n_cams = features.size(0), n = features.size(1), k = features.size(2);
  const Rules r = make_rules(width, height, tile, alpha_min, alpha_max, t_min);
  grad_image = grad_image.contiguous();
  grad_alpha = grad_alpha.contiguous();
  Bins bins;
  bins.offsets.assign(offsets.data_ptr<int64_t>(), offsets.data_ptr<int64_t>() + offsets.numel());
  bins.ids.assign(ids.data_ptr<int32_t>(), ids.data_ptr<int32_t>() + ids.numel());
  at::Tensor g_m2d = at::zeros_like(means2d), g_con = at::zeros_like(conics);
  at::Tensor g_opac = at::zeros({n_cams, n}, features.options()), g_feat = at::zeros_like(features);
  AT_DISPATCH_FLOATING_TYPES(features.scalar_type(), "splat_backward", [&] {
    backward_impl<scalar_t>(means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(),
                            opacities.data_ptr<scalar_t>(), features.data_ptr<scalar_t>(), bins, n_cams, n, k, r,
                            final_t.data_ptr<scalar_t>(), last.data_ptr<int32_t>(), grad_image.data_ptr<scalar_t>(),
                            grad_alpha.data_ptr<scalar_t>(), g_m2d.data_ptr<scalar_t>(), g_con.data_ptr<scalar_t>(),
                            g_opac.data_ptr<scalar_t>(), g_feat.data_ptr<scalar_t>());
  });
  return {g_m2d, g_con, g_opac, g_feat};
}

// Registered as torch operators (torch.ops.<TORCH_EXTENSION_NAME>.forward/backward), not as a pybind11 module:
// without pybind11's and torch's Python headers the kernel compiles in 10 s instead of 25 s.
TORCH_LIBRARY(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward);
  m.def("backward", &backward);
}
