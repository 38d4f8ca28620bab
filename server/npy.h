// Reading and writing NumPy .npy files (format versions 1.0-3.0).
//
// Reads little-endian float32 and float64 arrays in C order (float64 is
// converted to float32) and writes float32. Used by the model registry for
// gamma/beta files and by the client CLI for tensors.
//
// Errors: absl::Status with a message naming the file and what was wrong
// (NOT_FOUND for a missing file, INVALID_ARGUMENT for a bad header, a
// Fortran-order or non-float array, or a size that does not match the
// header). The parser never trusts the header: it checks every size against
// the bytes actually present before allocating. Thread-safe (no state).
#ifndef NORMSERVE_SERVER_NPY_H_
#define NORMSERVE_SERVER_NPY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace normserve {

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> values;  // Row-major, product(shape) elements.
};

// Parses the bytes of a .npy file. `name` only labels error messages.
absl::StatusOr<NpyArray> ParseNpy(absl::string_view bytes,
                                  absl::string_view name);

// Reads and parses the .npy file at `path`.
absl::StatusOr<NpyArray> ReadNpyFile(const std::string& path);

// Serializes a float32 array in .npy format version 1.0.
std::string SerializeNpy(absl::Span<const int64_t> shape,
                         absl::Span<const float> values);

// Writes a float32 array to `path`.
absl::Status WriteNpyFile(const std::string& path,
                          absl::Span<const int64_t> shape,
                          absl::Span<const float> values);

}  // namespace normserve

#endif  // NORMSERVE_SERVER_NPY_H_
