// Model config parsing (inline values and .npy files) and the .npy codec.
#include "server/model_registry.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/npy.h"

namespace normserve {
namespace {

// A fresh directory of this test's own (tests run in parallel, and other
// users' files may sit in /tmp), removed when it goes out of scope.
class ScopedTempDir {
 public:
  ScopedTempDir() {
    const char* t = std::getenv("TEST_TMPDIR");
    std::string pattern =
        std::string(t != nullptr ? t : "/tmp") + "/model_registry_test.XXXXXX";
    if (mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~ScopedTempDir() {
    if (!path_.empty()) std::filesystem::remove_all(path_);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(NpyTest, RoundTripsFloat32) {
  const std::vector<int64_t> shape = {2, 3};
  const std::vector<float> values = {1, 2, 3, 4, 5, -6.5f};
  auto parsed = ParseNpy(SerializeNpy(shape, values), "x");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->shape, shape);
  EXPECT_EQ(parsed->values, values);
}

TEST(NpyTest, ReadsFloat64AsWrittenByNumpy) {
  // np.save of np.array([1.5, -2.0]) (float64), byte for byte.
  std::string header =
      "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }";
  header.append((64 - (10 + header.size() + 1) % 64) % 64, ' ');
  header.push_back('\n');
  std::string bytes("\x93NUMPY\x01\x00", 8);
  bytes.push_back(static_cast<char>(header.size()));
  bytes.push_back(0);
  bytes += header;
  const double v[2] = {1.5, -2.0};
  bytes.append(reinterpret_cast<const char*>(v), sizeof(v));
  auto parsed = ParseNpy(bytes, "x");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->values, (std::vector<float>{1.5f, -2.0f}));
}

TEST(NpyTest, RejectsTruncatedAndLyingFiles) {
  std::string good = SerializeNpy({4}, {1, 2, 3, 4});
  EXPECT_FALSE(ParseNpy(good.substr(0, good.size() - 1), "x").ok());
  EXPECT_FALSE(ParseNpy("garbage", "x").ok());
  std::string lying = good;
  lying.replace(lying.find("(4,)"), 4, "(9,)");
  auto s = ParseNpy(lying, "x");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("needs 36"), absl::string_view::npos)
      << s.status();
  std::string huge = good;
  huge.replace(huge.find("(4,)"), 4, "(99999999999,99999999999)");
  EXPECT_FALSE(ParseNpy(huge, "x").ok());
}

// Found by fuzz_npy: an empty array (shape (0, 4)) reached memcpy with a
// null destination.
TEST(NpyTest, EmptyArrayParsesWithoutCopying) {
  auto parsed = ParseNpy(SerializeNpy({0, 4}, {}), "empty.npy");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->shape, (std::vector<int64_t>{0, 4}));
  EXPECT_TRUE(parsed->values.empty());
}

TEST(ModelRegistryTest, DefaultModelAcceptsRequestParameters) {
  auto r = ModelRegistry::Create({});
  ASSERT_TRUE(r.ok());
  const Model* m = (*r)->Find("");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->name, "default");
  EXPECT_TRUE(m->allow_request_params);
  EXPECT_TRUE(m->normalized_shape.empty());
}

TEST(ModelRegistryTest, LoadsGammaFromNpyRelativeToTheConfig) {
  const ScopedTempDir temp;
  ASSERT_FALSE(temp.path().empty());
  const std::string& dir = temp.path();
  ASSERT_TRUE(WriteNpyFile(dir + "/registry_gamma.npy", {3}, {1, 2, 3}).ok());
  const std::string config = dir + "/registry_models.pbtxt";
  std::ofstream(config) << R"pb(
    models {
      name: "ln3"
      normalized_shape: 3
      epsilon: 1e-6
      gamma { npy_path: "registry_gamma.npy" }
      beta { values: [ 0.5, 0.5, 0.5 ] }
      batching { max_batch_rows: 16 max_queue_delay_us: 0 }
    }
    models { name: "rms" kind: NORM_KIND_RMS_NORM allow_request_params: true }
  )pb";
  ModelRegistry::Options o;
  o.config_path = config;
  auto r = ModelRegistry::Create(o);
  ASSERT_TRUE(r.ok()) << r.status();
  const Model* m = (*r)->Find("ln3");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->gamma, (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(m->beta, (std::vector<float>{0.5f, 0.5f, 0.5f}));
  EXPECT_EQ(m->epsilon, 1e-6f);
  EXPECT_EQ(m->batching.max_batch_rows, 16);
  EXPECT_EQ(m->batching.max_queue_delay, absl::ZeroDuration());
  EXPECT_EQ((*r)->Find("rms")->kind, NormKind::kRmsNorm);
  EXPECT_EQ((*r)->models().size(), 3u);
}

// A directory opens as a stream and reads as nothing: it was taken for a
// config with no models, and the server started without them.
TEST(ModelRegistryTest, ADirectoryAsTheConfigIsRefusedByName) {
  const ScopedTempDir temp;
  ASSERT_FALSE(temp.path().empty());
  ModelRegistry::Options o;
  o.config_path = temp.path();
  auto r = ModelRegistry::Create(o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            absl::StrCat("--model_config ", temp.path(),
                         ": a directory: expected a model config file"));
}

TEST(NpyTest, AWriteThatFailsAtTheFlushIsAnError) {
  if (!std::filesystem::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  const absl::Status s = WriteNpyFile("/dev/full", {2}, {1, 2});
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_EQ(s.message(), "/dev/full: write failed");
}

// A configured model named "default" replaces the built-in one: requests
// that name no model get its fixed parameters.
TEST(ModelRegistryTest, AConfiguredDefaultModelReplacesTheBuiltInOne) {
  auto r = ModelRegistry::CreateFromText(
      R"pb(models { name: "default" epsilon: 1e-3 })pb", "/", {});
  ASSERT_TRUE(r.ok()) << r.status();
  const Model* m = (*r)->Find("");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->name, "default");
  EXPECT_EQ(m->epsilon, 1e-3f);
  EXPECT_FALSE(m->allow_request_params);
  EXPECT_EQ((*r)->models().size(), 1u);
}

TEST(ModelRegistryTest, BadConfigsFailWithTheFieldNamed) {
  const struct {
    const char* text;
    const char* message_part;
  } cases[] = {
      {"models { name: \"\" }", "models.name = ''"},
      {"models { name: \"a b\" }", "models.name = 'a b'"},
      {"models { name: \"x\" normalized_shape: [0] }",
       "normalized_shape[0] = 0"},
      {"models { name: \"x\" epsilon: -1 }", "epsilon = -1"},
      {"models { name: \"x\" normalized_shape: 2 gamma { values: [1] } }",
       "gamma.values has 1 values"},
      {"models { name: \"x\" gamma { values: [1] } }",
       "needs normalized_shape"},
      {"models { name: \"x\" normalized_shape: 2 gamma { } }",
       "set exactly one of values and npy_path"},
      {"models { name: \"x\" normalized_shape: 2 beta { npy_path: "
       "\"/nonexistent.npy\" } }",
       "model 'x' beta.npy_path: /nonexistent.npy: cannot open"},
      {"models { name: \"x\" } models { name: \"x\" }", "appears twice"},
      {"models { name: \"x\" batching { max_batch_rows: 0 } }",
       "max_batch_rows"},
      {"models { nme: \"x\" }", "line 1"},
  };
  for (const auto& c : cases) {
    auto r = ModelRegistry::CreateFromText(c.text, "", {});
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(r.status().message().find(c.message_part),
              absl::string_view::npos)
        << c.text << " -> " << r.status();
  }
}

TEST(ModelRegistryTest, Int8OutputQuantizationIsFoldedAtLoad) {
  auto r = ModelRegistry::CreateFromText(
      R"pb(
        models {
          name: "q"
          normalized_shape: 3
          gamma { values: [ 1, -2, 0.5 ] }
          beta { values: [ 0, 0.25, -1 ] }
          output_scale: 0.05
          output_zero_point: -7
        }
        models { name: "q_any_shape" output_scale: 0.05 }
      )pb",
      "", {});
  ASSERT_TRUE(r.ok()) << r.status();
  const Model* m = (*r)->Find("q");
  ASSERT_NE(m, nullptr);
  ASSERT_TRUE(m->int8_output_scale.has_value());
  EXPECT_EQ(*m->int8_output_scale, 0.05f);
  EXPECT_EQ(m->int8_output_zero_point, -7);
  ASSERT_NE(m->int8_affine, nullptr);
  const Int8Affine want =
      FoldInt8Affine(m->gamma.data(), m->beta.data(), 3, 0.05f, -7);
  EXPECT_EQ(m->int8_affine->dim, 3);
  EXPECT_EQ(m->int8_affine->g, want.g);
  EXPECT_EQ(m->int8_affine->b, want.b);
  EXPECT_EQ(m->int8_affine->g_shift, want.g_shift);
  EXPECT_EQ(m->int8_affine->output_scale, 0.05f);
  EXPECT_EQ(m->int8_affine->output_zero_point, -7);
  // Without a row shape there is nothing to fold at load: each request
  // folds the model's scale itself.
  const Model* any = (*r)->Find("q_any_shape");
  ASSERT_NE(any, nullptr);
  EXPECT_EQ(any->int8_output_scale, 0.05f);
  EXPECT_EQ(any->int8_affine, nullptr);
}

TEST(ModelRegistryTest, BadInt8OutputQuantizationFailsWithTheFieldNamed) {
  const struct {
    const char* text;
    const char* message_part;
  } cases[] = {
      {"models { name: \"x\" output_zero_point: 128 }",
       "model 'x': output_zero_point = 128: expected -128 to 127"},
      {"models { name: \"x\" output_zero_point: -129 }",
       "model 'x': output_zero_point = -129: expected -128 to 127"},
      {"models { name: \"x\" output_scale: 0 }",
       "model 'x': output_scale = 0: expected finite and > 0"},
      {"models { name: \"x\" output_scale: -0.5 }",
       "model 'x': output_scale = -0.5: expected finite and > 0"},
      {"models { name: \"x\" output_scale: nan }",
       "model 'x': output_scale = nan: expected finite and > 0"},
      {"models { name: \"x\" output_scale: inf }",
       "model 'x': output_scale = inf: expected finite and > 0"},
      // Denormal: the float path's 1 / s_y would overflow.
      {"models { name: \"x\" output_scale: 1e-42 }",
       "model 'x': output_scale = 1.00053e-42: expected a normal float with "
       "max|gamma| / output_scale at most 65536"},
      // max|γ| / s_y = 65537: the integer path's 20 fraction bits of each
      // normalized value would show in the output.
      {"models { name: \"x\" normalized_shape: 2 "
       "gamma { values: [ 1, 65537 ] } output_scale: 1 }",
       "model 'x': output_scale = 1: expected a normal float with "
       "max|gamma| / output_scale at most 65536"},
      {"models { name: \"x\" normalized_shape: 2 "
       "beta { values: [ 1, nan ] } output_scale: 1 }",
       "model 'x': beta[1] = nan: expected a finite value"},
  };
  for (const auto& c : cases) {
    auto r = ModelRegistry::CreateFromText(c.text, "", {});
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument)
        << c.text << " -> " << r.status();
    EXPECT_NE(r.status().message().find(c.message_part),
              absl::string_view::npos)
        << c.text << " -> " << r.status();
  }
}

}  // namespace
}  // namespace normserve
