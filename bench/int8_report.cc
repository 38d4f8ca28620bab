// Accuracy and speed of the two INT8 LayerNorm paths.
//
// Accuracy: transformer-like activations (N(0,1) rows with a few outlier
// channels 20–60× larger, quantized per tensor) normalized by the integer
// path and the float path, compared with the float64 reference quantized to
// the same output scale: the distribution of |error| in output LSBs.
// Speed: rows per second of both paths and of the float32 kernel on the same
// rows, single thread, on a 64 MiB int8 tensor.
//
//   build/bench/int8_report [--d=768]   prints a Markdown report
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include "kernels/int8_layer_norm.h"
#include "kernels/normalize.h"
#include "kernels/reference.h"

namespace normserve {
namespace {

struct Data {
  std::vector<int8_t> q;
  std::vector<float> x;  // dequantized
  float scale;
  int32_t zero_point;
};

Data Activations(int64_t rows, int64_t d, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> channel(static_cast<size_t>(d), 1.0f);
  for (int k = 0; k < 4; ++k) channel[rng() % d] = 20.0f + 13.0f * k;
  std::vector<float> raw(static_cast<size_t>(rows * d));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < d; ++i)
      raw[r * d + i] = normal(rng) * channel[i] + 0.3f;
  }
  const auto [lo, hi] = std::minmax_element(raw.begin(), raw.end());
  Data out;
  out.scale = (*hi - *lo) / 255.0f;
  out.zero_point = static_cast<int32_t>(std::lround(-128 - *lo / out.scale));
  out.q.resize(raw.size());
  out.x.resize(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    const long q = std::max(
        -128L,
        std::min(127L, std::lround(raw[i] / out.scale) + out.zero_point));
    out.q[i] = static_cast<int8_t>(q);
    out.x[i] = out.scale * static_cast<float>(q - out.zero_point);
  }
  return out;
}

template <typename F>
double BestSeconds(F&& f, int reps) {
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(
                              std::chrono::steady_clock::now() - t0)
                              .count());
  }
  return best;
}

int Main(int64_t d) {
  // Accuracy.
  const int64_t rows = std::max<int64_t>(16, (int64_t{1} << 21) / d);
  const Data data = Activations(rows, d, 1);
  std::vector<float> gamma(static_cast<size_t>(d)),
      beta(static_cast<size_t>(d));
  std::mt19937 rng(2);
  std::normal_distribution<float> nd(1.0f, 0.2f);
  for (auto& g : gamma) g = nd(rng);
  for (auto& b : beta) b = nd(rng) - 1.0f;
  const float out_scale = DefaultInt8OutputScale(gamma.data(), beta.data(), d);
  const Int8Affine folded =
      FoldInt8Affine(gamma.data(), beta.data(), d, out_scale, 0);
  Int8Params p;
  p.dim = d;
  p.input_scale = data.scale;
  p.input_zero_point = data.zero_point;
  p.affine = &folded;
  p.gamma = gamma.data();
  p.beta = beta.data();
  NormParams np;
  np.dim = d;
  np.gamma = gamma.data();
  np.beta = beta.data();
  const std::vector<double> ref = ReferenceNormalize(np, data.x.data(), rows);
  std::vector<int8_t> yi(data.q.size()), yf(data.q.size());
  Int8LayerNormInteger(p, data.q.data(), yi.data(), rows);
  Int8LayerNormFloat(p, data.q.data(), yf.data(), rows);
  int64_t hist_i[3] = {0, 0, 0}, hist_f[3] = {0, 0, 0};
  double mean_abs_real = 0;  // |ref/s_y − q| before rounding, integer path
  for (size_t i = 0; i < ref.size(); ++i) {
    const double exact = std::max(-128.0, std::min(127.0, ref[i] / out_scale));
    const long want = std::lround(exact);
    hist_i[std::min<long>(2, std::labs(yi[i] - want))]++;
    hist_f[std::min<long>(2, std::labs(yf[i] - want))]++;
    mean_abs_real += std::abs(yi[i] - exact);
  }
  const double n = static_cast<double>(ref.size());

  // Speed: 64 MiB of int8, single thread.
  const int64_t speed_rows = (int64_t{64} << 20) / d;
  const Data big = Activations(speed_rows, d, 3);
  std::vector<int8_t> out8(big.q.size());
  std::vector<float> out32(big.q.size());
  const double t_int = BestSeconds(
      [&] { Int8LayerNormInteger(p, big.q.data(), out8.data(), speed_rows); },
      3);
  const double t_flt = BestSeconds(
      [&] { Int8LayerNormFloat(p, big.q.data(), out8.data(), speed_rows); }, 3);
  RowSegment seg;
  seg.params = &np;
  seg.input = big.x.data();
  seg.output = out32.data();
  seg.rows = speed_rows;
  const double t_f32 =
      BestSeconds([&] { NormalizeRows(seg, 0, speed_rows); }, 3);

  std::printf(
      "## D = %lld (%lld rows; input scale %.4g, output scale %.4g)\n\n",
      static_cast<long long>(d), static_cast<long long>(rows), data.scale,
      out_scale);
  std::printf(
      "| path | exact (0 LSB) | 1 LSB | ≥ 2 LSB | mean |error| before rounding "
      "|\n");
  std::printf("|---|---|---|---|---|\n");
  std::printf("| integer | %.4f%% | %.4f%% | %lld | %.3f LSB |\n",
              100 * hist_i[0] / n, 100 * hist_i[1] / n,
              static_cast<long long>(hist_i[2]), mean_abs_real / n);
  std::printf("| float | %.4f%% | %.4f%% | %lld | |\n\n", 100 * hist_f[0] / n,
              100 * hist_f[1] / n, static_cast<long long>(hist_f[2]));
  std::printf(
      "| kernel (1 thread, 64 MiB int8) | M rows/s | G elements/s | vs float32 "
      "kernel |\n");
  std::printf("|---|---|---|---|\n");
  const double e = static_cast<double>(speed_rows * d);
  std::printf("| INT8 integer path | %.3f | %.2f | %.2f× |\n",
              speed_rows / t_int / 1e6, e / t_int / 1e9, t_f32 / t_int);
  std::printf("| INT8 float path | %.3f | %.2f | %.2f× |\n",
              speed_rows / t_flt / 1e6, e / t_flt / 1e9, t_f32 / t_flt);
  std::printf("| float32 kernel | %.3f | %.2f | 1.00× |\n\n",
              speed_rows / t_f32 / 1e6, e / t_f32 / 1e9);
  return 0;
}

}  // namespace
}  // namespace normserve

int main(int argc, char** argv) {
  std::vector<long> dims;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--d=", 4) == 0)
      dims.push_back(std::atol(argv[i] + 4));
  }
  if (dims.empty()) dims = {768, 4096};
  std::printf("# INT8 LayerNorm: accuracy and speed\n\n");
  std::string cpu = "unknown CPU";
  if (FILE* f = std::fopen("/proc/cpuinfo", "r")) {
    char line[512];
    while (std::fgets(line, sizeof(line), f) != nullptr) {
      if (std::strncmp(line, "model name", 10) == 0) {
        cpu = std::string(std::strchr(line, ':') + 2);
        cpu.pop_back();
        break;
      }
    }
    std::fclose(f);
  }
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof(date), "%Y-%m-%d", std::gmtime(&now));
  std::printf("Machine: %s; float32 kernel target %s; %s.\n\n", cpu.c_str(),
              normserve::KernelTargetName(), date);
  std::printf(
      "Errors are against the float64 reference on the dequantized input, "
      "quantized\n"
      "to the same output scale (round half away from zero). Command: "
      "`build/bench/int8_report`.\n\n");
  for (long d : dims) normserve::Main(d);
  return 0;
}
