// Work's completion state, shared argument checks, and the backends' fallbacks for builds without
// Gloo (KILN_GLOO) or NCCL (KILN_NCCL).
#include "process_group.h"

#include "../core/error.h"

namespace kiln::dist {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Avg: return "avg";
    case ReduceOp::Max: return "max";
    case ReduceOp::Min: return "min";
  }
  return "?";
}

bool Work::completed() {
  std::lock_guard<std::mutex> g(mu_);
  return done_;
}

std::string Work::error() {
  std::lock_guard<std::mutex> g(mu_);
  return error_;
}

void Work::on_complete(Callback cb) {
  {
    std::lock_guard<std::mutex> g(mu_);
    if (!done_) {
      callbacks_.push_back(std::move(cb));
      return;
    }
  }
  cb();
}

void Work::wait_host() {
  std::unique_lock<std::mutex> g(mu_);
  cv_.wait(g, [&] { return done_; });
  if (!error_.empty()) throw Error(ErrorCode::Dist, op_, error_);
}

void Work::finish(std::string error) {
  std::vector<Callback> cbs;
  {
    std::lock_guard<std::mutex> g(mu_);
    if (done_) return;
    done_ = true;
    error_ = std::move(error);
    cbs.swap(callbacks_);
  }
  cv_.notify_all();
  for (auto& cb : cbs) cb();
}

std::string ProcessGroup::who() const {
  return str_cat("rank ", rank_, " of ", size_, " (", backend_, ")");
}

void ProcessGroup::check_tensor(const char* op, const Tensor& t, const char* name) const {
  KILN_CHECK(t.is_contiguous(), Value, op, who(), ": ", name, " must be contiguous (shape ", shape_str(t.shape), ")");
}

void ProcessGroup::check_reduce(const char* op, const Tensor& t, ReduceOp r) const {
  KILN_CHECK(t.dtype != DType::Bool, DType, op, who(), ": bool tensors cannot be reduced (", reduce_op_name(r), ")");
  KILN_CHECK(r != ReduceOp::Avg || is_floating(t.dtype), DType, op, who(), ": avg needs a floating point tensor, got ",
             dtype_name(t.dtype));
}

void ProcessGroup::check_peer(const char* op, int peer, const char* name) const {
  KILN_CHECK(peer >= 0 && peer < size_, Value, op, who(), ": ", name, " ", peer, " is not a rank of this group");
}

void ProcessGroup::check_chunks(const char* op, const Tensor& whole, const Tensor& part, const char* whole_name,
                                const char* part_name) const {
  KILN_CHECK(whole.dtype == part.dtype, DType, op, who(), ": ", whole_name, " is ", dtype_name(whole.dtype), " but ",
             part_name, " is ", dtype_name(part.dtype));
  KILN_CHECK(whole.numel() == part.numel() * size_, Shape, op, who(), ": ", whole_name, " has ", whole.numel(),
             " elements, expected ", size_, " x ", part.numel(), " (", part_name, " ", shape_str(part.shape), ")");
}

#ifndef KILN_GLOO
bool gloo_available() { return false; }
GroupPtr make_gloo_group(std::shared_ptr<StoreClient>, const std::string&, int, int, int64_t, const std::string&,
                         const std::string&) {
  throw Error(ErrorCode::Dist, "initProcessGroup",
              "kiln was built without Gloo (install libgloo-dev and rebuild with `npm run build:native`)");
}
#endif

#ifndef KILN_NCCL
bool nccl_available() { return false; }
GroupPtr make_nccl_group(std::shared_ptr<StoreClient>, const std::string&, int, int, int64_t, int) {
  throw Error(ErrorCode::Dist, "initProcessGroup",
              "kiln was built without NCCL (a CUDA build finds it through CMAKE_LIBRARY_PATH/CMAKE_INCLUDE_PATH)");
}
#endif

}  // namespace kiln::dist
