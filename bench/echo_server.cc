// BASELINE, not a product: normserve with the math taken out.
//
// The same binary as server/normserve (same flags, gRPC server, decoding,
// validation, batcher, metrics and drain), except that each batch copies
// every request's input bytes into its output buffer instead of
// normalizing. Load runs against it measure the ceiling that gRPC and the
// serving path put on throughput, so that normserve's own cost shows as a
// ratio (see bench/run_load_study.py and bench/results/).
#include <algorithm>
#include <cstring>

#include "kernels/dtype.h"
#include "server/server_main.h"

namespace {

absl::Status Echo(absl::Span<normserve::Job* const> batch) {
  for (const normserve::Job* job : batch) {
    const normserve::RowSegment& s = job->segment;
    const int64_t dim = s.params->dim;  // set for every dtype, INT8 too
    const size_t in = normserve::DTypeSize(s.input_dtype);
    const size_t out = normserve::DTypeSize(s.output_dtype);
    const size_t elements = static_cast<size_t>(s.rows * dim);
    std::memcpy(s.output, s.input, elements * std::min(in, out));
    if (s.sum_output != nullptr) {
      std::memcpy(s.sum_output, s.input, elements * in);
    }
    if (s.mean != nullptr) std::fill_n(s.mean, s.rows, 0.0f);
    if (s.rstd != nullptr) std::fill_n(s.rstd, s.rows, 1.0f);
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  normserve::MainOptions options;
  options.name = "normserve-echo";
  options.usage =
      "BASELINE: normserve with each batch's math replaced by a copy of the "
      "input, to measure the serving path's ceiling.\n"
      "Usage: echo_server [normserve's flags]";
  options.batch_runner = Echo;
  return normserve::ServerMain(argc, argv, options);
}
