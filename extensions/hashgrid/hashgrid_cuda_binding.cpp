// torch glue for the CUDA hash-grid kernels: checks, allocation, stream, and the Python binding. Same
// signature as the CPU extension (see dream3d/encoding/kernels.py).
#include <torch/extension.h>

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "hashgrid_cuda.h"

namespace {

hashgrid::Levels make_levels(const std::vector<double>& scales, const std::vector<int64_t>& res,
                             const std::vector<int64_t>& entries, const std::vector<int64_t>& offsets,
                             const std::vector<bool>& dense, int64_t* total_rows) {
  const size_t L = scales.size();
  TORCH_CHECK(res.size() == L && entries.size() == L && offsets.size() == L && dense.size() == L,
              "hashgrid: level lists differ in length");
  TORCH_CHECK(L <= static_cast<size_t>(hashgrid::kMaxLevels), "hashgrid cuda: at most ", hashgrid::kMaxLevels,
              " levels");
  hashgrid::Levels levels{};
  levels.count = static_cast<int>(L);
  *total_rows = 0;
  for (size_t l = 0; l < L; ++l) {
    TORCH_CHECK(entries[l] > 0 && entries[l] <= (int64_t(1) << 31) && res[l] > 0, "hashgrid: bad level");
    levels.lv[l] = hashgrid::Level{static_cast<float>(scales[l]), static_cast<uint32_t>(res[l]),
                                   static_cast<uint32_t>(entries[l]), static_cast<uint32_t>(offsets[l]),
                                   dense[l] ? 1u : 0u};
    *total_rows = offsets[l] + entries[l];
  }
  return levels;
}

void check_inputs(const torch::Tensor& x, const torch::Tensor& params, int64_t F, int64_t total_rows) {
  TORCH_CHECK(x.is_cuda() && params.is_cuda() && x.device() == params.device(),
              "hashgrid cuda: x and params must be on the same CUDA device");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32 && x.is_contiguous(),
              "hashgrid cuda: x must be a contiguous (N, D) float32 tensor");
  TORCH_CHECK((params.scalar_type() == torch::kFloat32 || params.scalar_type() == torch::kFloat16) &&
                  params.is_contiguous() && params.dim() == 1,
              "hashgrid cuda: params must be a contiguous 1-D float32 or float16 tensor");
  TORCH_CHECK(params.numel() == total_rows * F, "hashgrid cuda: params has ", params.numel(),
              " values, expected ", total_rows * F);
}

torch::Tensor forward(torch::Tensor x, torch::Tensor params, std::vector<double> scales, std::vector<int64_t> res,
                      std::vector<int64_t> entries, std::vector<int64_t> offsets, std::vector<bool> dense,
                      int64_t F, bool smoothstep) {
  int64_t rows = 0;
  const auto levels = make_levels(scales, res, entries, offsets, dense, &rows);
  check_inputs(x, params, F, rows);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = x.size(0);
  auto out = torch::empty({n, levels.count * F}, x.options());
  const bool ok = hashgrid::launch_forward(static_cast<int>(x.size(1)), static_cast<int>(F), smoothstep,
                                           params.scalar_type() == torch::kFloat16, n, x.data_ptr<float>(),
                                           params.data_ptr(), levels, out.data_ptr<float>(),
                                           c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(ok, "hashgrid cuda: unsupported n_input_dims=", x.size(1), " / n_features_per_level=", F);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::vector<torch::Tensor> backward(torch::Tensor grad_out, torch::Tensor x, torch::Tensor params,
                                    std::vector<double> scales, std::vector<int64_t> res,
                                    std::vector<int64_t> entries, std::vector<int64_t> offsets,
                                    std::vector<bool> dense, int64_t F, bool smoothstep, bool need_params,
                                    bool need_x) {
  int64_t rows = 0;
  const auto levels = make_levels(scales, res, entries, offsets, dense, &rows);
  check_inputs(x, params, F, rows);
  const int64_t n = x.size(0);
  TORCH_CHECK(grad_out.is_cuda() && grad_out.scalar_type() == torch::kFloat32 && grad_out.is_contiguous() &&
                  grad_out.dim() == 2 && grad_out.size(0) == n && grad_out.size(1) == levels.count * F,
              "hashgrid cuda: grad_out must be a contiguous (N, L*F) float32 tensor");
  const c10::cuda::CUDAGuard guard(x.device());
  const auto f32 = x.options();
  auto gparams = need_params ? torch::zeros({params.numel()}, f32) : torch::empty({0}, f32);
  auto gx = need_x ? torch::zeros_like(x) : torch::empty({0}, f32);
  if (!need_params && !need_x) return {gparams, gx};
  const bool ok = hashgrid::launch_backward(
      static_cast<int>(x.size(1)), static_cast<int>(F), smoothstep, params.scalar_type() == torch::kFloat16, n,
      x.data_ptr<float>(), params.data_ptr(), levels, grad_out.data_ptr<float>(),
      need_params ? gparams.data_ptr<float>() : nullptr, need_x ? gx.data_ptr<float>() : nullptr,
      c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(ok, "hashgrid cuda: unsupported n_input_dims=", x.size(1), " / n_features_per_level=", F);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {gparams, gx};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "dream3d hash-grid encoding, CUDA kernels";
  m.def("forward", &forward, "hash-grid forward -> (N, L*F)");
  m.def("backward", &backward, "hash-grid backward -> [grad_params (fp32), grad_x]");
}
