// RETURN_IF_ERROR / ASSIGN_OR_RETURN: Debian's Abseil (20220623) has no
// status macros, so here are the two everyone writes.
#ifndef NORMSERVE_SERVER_INTERNAL_STATUS_MACROS_H_
#define NORMSERVE_SERVER_INTERNAL_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define NORMSERVE_CONCAT_INNER_(a, b) a##b
#define NORMSERVE_CONCAT_(a, b) NORMSERVE_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)              \
  do {                                     \
    const ::absl::Status _status = (expr); \
    if (!_status.ok()) return _status;     \
  } while (0)

#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(NORMSERVE_CONCAT_(_statusor_, __LINE__), lhs, expr)

#define ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                           \
  if (!statusor.ok()) return statusor.status();     \
  lhs = std::move(statusor).value()

#endif  // NORMSERVE_SERVER_INTERNAL_STATUS_MACROS_H_
