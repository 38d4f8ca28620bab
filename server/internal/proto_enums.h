// Wire enums (normserve.v1) to the kernels' and the server's enums, in one
// place for the model config and the request decoder. UNSPECIFIED maps to
// the given fallback; values this build does not know map to nullopt.
#ifndef NORMSERVE_SERVER_INTERNAL_PROTO_ENUMS_H_
#define NORMSERVE_SERVER_INTERNAL_PROTO_ENUMS_H_

#include <optional>

#include "kernels/normalize.h"
#include "normserve/v1/normalization_service.pb.h"
#include "server/model_registry.h"

namespace normserve {

inline std::optional<NormKind> NormKindFromProto(int kind, NormKind fallback) {
  switch (kind) {
    case v1::NORM_KIND_UNSPECIFIED:
      return fallback;
    case v1::NORM_KIND_LAYER_NORM:
      return NormKind::kLayerNorm;
    case v1::NORM_KIND_RMS_NORM:
      return NormKind::kRmsNorm;
    default:
      return std::nullopt;
  }
}

inline std::optional<DeviceKind> DeviceFromProto(int device,
                                                 DeviceKind fallback) {
  switch (device) {
    case v1::DEVICE_UNSPECIFIED:
      return fallback;
    case v1::DEVICE_CPU:
      return DeviceKind::kCpu;
    case v1::DEVICE_CUDA:
      return DeviceKind::kCuda;
    default:
      return std::nullopt;
  }
}

}  // namespace normserve

#endif  // NORMSERVE_SERVER_INTERNAL_PROTO_ENUMS_H_
