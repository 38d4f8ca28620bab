#include "server/npy.h"

#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace normserve {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;
// Arrays past this many elements are refused: no parameter or client
// tensor needs them, and it bounds what a hostile header can ask for.
constexpr int64_t kMaxElements = int64_t{1} << 32;

absl::Status Bad(absl::string_view name, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(name, ": ", what));
}

// Finds `'key': value` in the header dict and returns the raw value text
// (up to the next top-level comma or closing brace).
absl::StatusOr<absl::string_view> DictValue(absl::string_view dict,
                                            absl::string_view key,
                                            absl::string_view name) {
  const std::string quoted1 = absl::StrCat("'", key, "'");
  const std::string quoted2 = absl::StrCat("\"", key, "\"");
  size_t pos = dict.find(quoted1);
  size_t len = quoted1.size();
  if (pos == absl::string_view::npos) {
    pos = dict.find(quoted2);
    len = quoted2.size();
  }
  if (pos == absl::string_view::npos) {
    return Bad(name, absl::StrCat("header has no '", key, "' entry"));
  }
  absl::string_view rest = dict.substr(pos + len);
  rest = absl::StripLeadingAsciiWhitespace(rest);
  if (!absl::ConsumePrefix(&rest, ":")) {
    return Bad(name, absl::StrCat("header entry '", key, "' has no ':'"));
  }
  rest = absl::StripLeadingAsciiWhitespace(rest);
  int depth = 0;
  size_t end = 0;
  for (; end < rest.size(); ++end) {
    const char c = rest[end];
    if (c == '(') {
      ++depth;
    } else if (c == ')') {
      if (--depth < 0) break;
    } else if (depth == 0 && (c == ',' || c == '}')) {
      break;
    }
  }
  return absl::StripTrailingAsciiWhitespace(rest.substr(0, end));
}

absl::StatusOr<std::vector<int64_t>> ParseShape(absl::string_view text,
                                                absl::string_view name) {
  if (!absl::ConsumePrefix(&text, "(") || !absl::ConsumeSuffix(&text, ")")) {
    return Bad(name, absl::StrCat("shape '", text, "' is not a tuple"));
  }
  std::vector<int64_t> shape;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    part = absl::StripAsciiWhitespace(part);
    if (part.empty()) continue;
    int64_t dim = 0;
    if (!absl::SimpleAtoi(part, &dim) || dim < 0) {
      return Bad(name, absl::StrCat("shape entry '", part,
                                    "' is not a non-negative integer"));
    }
    shape.push_back(dim);
  }
  if (shape.size() > 32) return Bad(name, "shape has more than 32 dimensions");
  return shape;
}

}  // namespace

absl::StatusOr<NpyArray> ParseNpy(absl::string_view bytes,
                                  absl::string_view name) {
  if (bytes.size() < kMagicLen + 4 ||
      std::memcmp(bytes.data(), kMagic, kMagicLen) != 0) {
    return Bad(name, "not a .npy file (bad magic)");
  }
  const uint8_t major = static_cast<uint8_t>(bytes[6]);
  size_t header_len = 0;
  size_t offset = 0;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) |
                 (static_cast<size_t>(static_cast<uint8_t>(bytes[9])) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return Bad(name, "truncated header");
    header_len = 0;
    for (int i = 0; i < 4; ++i) {
      header_len |= static_cast<size_t>(static_cast<uint8_t>(bytes[8 + i]))
                    << (8 * i);
    }
    offset = 12;
  } else {
    return Bad(name, absl::StrCat("unsupported .npy version ", major));
  }
  if (header_len > bytes.size() - offset) {
    return Bad(name, "header length runs past the end of the file");
  }
  const absl::string_view dict = bytes.substr(offset, header_len);
  const absl::string_view payload = bytes.substr(offset + header_len);

  auto descr = DictValue(dict, "descr", name);
  if (!descr.ok()) return descr.status();
  auto fortran = DictValue(dict, "fortran_order", name);
  if (!fortran.ok()) return fortran.status();
  auto shape_text = DictValue(dict, "shape", name);
  if (!shape_text.ok()) return shape_text.status();

  if (*fortran != "False") {
    return Bad(name, "fortran_order arrays are not supported; save in C order");
  }
  size_t elem_size = 0;
  if (*descr == "'<f4'" || *descr == "\"<f4\"") {
    elem_size = 4;
  } else if (*descr == "'<f8'" || *descr == "\"<f8\"") {
    elem_size = 8;
  } else {
    return Bad(name,
               absl::StrCat("dtype ", *descr,
                            " is not supported; expected '<f4' or '<f8'"));
  }
  auto shape = ParseShape(*shape_text, name);
  if (!shape.ok()) return shape.status();

  int64_t count = 1;
  for (int64_t d : *shape) {
    if (d != 0 && count > kMaxElements / d) {
      return Bad(name, "array has too many elements");
    }
    count *= d;
  }
  if (count > kMaxElements) return Bad(name, "array has too many elements");
  const size_t want = static_cast<size_t>(count) * elem_size;
  if (payload.size() != want) {
    return Bad(name, absl::StrCat("data is ", payload.size(),
                                  " bytes; the header's shape needs ", want));
  }
  NpyArray out;
  out.shape = *std::move(shape);
  out.values.resize(static_cast<size_t>(count));
  if (want == 0) {
    // An empty array: nothing to copy (and memcpy from null is undefined).
  } else if (elem_size == 4) {
    std::memcpy(out.values.data(), payload.data(), want);
  } else {
    for (int64_t i = 0; i < count; ++i) {
      double v;
      std::memcpy(&v, payload.data() + i * 8, 8);
      out.values[static_cast<size_t>(i)] = static_cast<float>(v);
    }
  }
  return out;
}

absl::StatusOr<NpyArray> ReadNpyFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ParseNpy(ss.str(), path);
}

std::string SerializeNpy(absl::Span<const int64_t> shape,
                         absl::Span<const float> values) {
  std::string shape_text = absl::StrJoin(shape, ", ");
  if (shape.size() == 1) shape_text += ",";
  std::string dict = absl::StrCat("{'descr': '<f4', 'fortran_order': False, ",
                                  "'shape': (", shape_text, "), }");
  // Pad with spaces so that magic + length + dict + '\n' is a multiple of 64.
  const size_t unpadded = kMagicLen + 4 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict.push_back('\n');
  std::string out(kMagic, kMagicLen);
  out.push_back(1);
  out.push_back(0);
  out.push_back(static_cast<char>(dict.size() & 0xff));
  out.push_back(static_cast<char>((dict.size() >> 8) & 0xff));
  out += dict;
  out.append(reinterpret_cast<const char*>(values.data()),
             values.size() * sizeof(float));
  return out;
}

absl::Status WriteNpyFile(const std::string& path,
                          absl::Span<const int64_t> shape,
                          absl::Span<const float> values) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::UnavailableError(absl::StrCat(path, ": cannot write"));
  const std::string bytes = SerializeNpy(shape, values);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  // Closed before the check: a full disk may fail only the final flush.
  out.close();
  if (!out) return absl::UnavailableError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

}  // namespace normserve
