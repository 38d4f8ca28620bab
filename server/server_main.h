// The server binaries' main(): flags (they live in server_main.cc and only
// there) become a ServerOptions; the server starts, prints its listening
// line, and drains on SIGTERM/SIGINT before exiting 0.
//
// server/normserve_main.cc is the product. bench/echo_server.cc runs the
// same main with a batch runner that copies inputs to outputs, as the
// ceiling for benchmarks.
#ifndef NORMSERVE_SERVER_SERVER_MAIN_H_
#define NORMSERVE_SERVER_SERVER_MAIN_H_

#include "server/batcher.h"

namespace normserve {

struct MainOptions {
  // First word of the listening line (tests and scripts parse the rest).
  const char* name = "normserve";
  const char* usage =
      "a gRPC service that normalizes tensors (LayerNorm, RMSNorm) with "
      "dynamic batching and Prometheus metrics.\nUsage: normserve [--flags]";
  // Benchmarks only: replaces the device backends (see ServerOptions).
  BatchRunner batch_runner;
};

// Parses flags, runs the server until a stop signal, returns the exit code
// (or exits the process once drained).
int ServerMain(int argc, char** argv, const MainOptions& options);

}  // namespace normserve

#endif  // NORMSERVE_SERVER_SERVER_MAIN_H_
