// Baseline for bench/compare_cpu.py: oneDNN's layer normalization primitive
// (Debian's libdnnl-dev) over a rows × D tensor, forward inference, with
// scale and shift, timed the same way as the other rows of the comparison.
//
//   onednn_layer_norm --dtype=f32|bf16 --d=768 --rows=N --iters=5
// prints {"seconds": median seconds per call}. Threads: OMP_NUM_THREADS.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"

namespace {

long Arg(int argc, char** argv, const char* name, long fallback) {
  const std::string prefix = std::string("--") + name + "=";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], prefix.c_str(), prefix.size()) == 0) {
      return std::atol(argv[i] + prefix.size());
    }
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  using dnnl::memory;
  bool bf16 = false;
  for (int i = 1; i < argc; ++i)
    bf16 = bf16 || std::strcmp(argv[i], "--dtype=bf16") == 0;
  const long d = Arg(argc, argv, "d", 768);
  const long rows = Arg(argc, argv, "rows", 1024);
  const long iters = Arg(argc, argv, "iters", 5);

  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  const memory::data_type dt =
      bf16 ? memory::data_type::bf16 : memory::data_type::f32;
  const memory::desc data_md({rows, d}, dt, memory::format_tag::ab);
  const auto flags = dnnl::normalization_flags::use_scale |
                     dnnl::normalization_flags::use_shift;
  const dnnl::layer_normalization_forward::primitive_desc pd(
      dnnl::layer_normalization_forward::desc(
          dnnl::prop_kind::forward_inference, data_md, 1e-5f, flags),
      engine);
  memory src(data_md, engine), dst(data_md, engine);
  memory scale(pd.weights_desc(), engine), shift(pd.weights_desc(), engine);
  memory mean(pd.mean_desc(), engine), variance(pd.variance_desc(), engine);
  // Random-ish input; touch every page of the output before timing.
  const size_t bytes = static_cast<size_t>(rows * d) * (bf16 ? 2 : 4);
  auto* s = static_cast<uint8_t*>(src.get_data_handle());
  for (size_t i = 0; i < bytes; ++i)
    s[i] = static_cast<uint8_t>((i * 2654435761u) >> 24) & 0x3f;
  std::memset(dst.get_data_handle(), 0, bytes);
  std::fill_n(static_cast<float*>(scale.get_data_handle()), d, 1.5f);
  std::fill_n(static_cast<float*>(shift.get_data_handle()), d, 0.25f);

  dnnl::layer_normalization_forward prim(pd);
  const std::unordered_map<int, memory> args = {
      {DNNL_ARG_SRC, src},     {DNNL_ARG_DST, dst},
      {DNNL_ARG_SCALE, scale}, {DNNL_ARG_SHIFT, shift},
      {DNNL_ARG_MEAN, mean},   {DNNL_ARG_VARIANCE, variance}};
  std::vector<double> times;
  for (long i = 0; i < iters + 1; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    prim.execute(stream, args);
    stream.wait();
    const auto t1 = std::chrono::steady_clock::now();
    if (i > 0) times.push_back(std::chrono::duration<double>(t1 - t0).count());
  }
  std::sort(times.begin(), times.end());
  std::printf("{\"seconds\": %.9f}\n", times[times.size() / 2]);
  return 0;
}
