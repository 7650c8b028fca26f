// The NCCL process group (make_nccl_group in native/dist/process_group.h): collectives and
// point-to-point ops on CUDA tensors of one device over one NCCL communicator, enqueued on the
// group's own stream. Compiled only when the build found NCCL (KILN_NCCL); process_group.cc holds
// the fallbacks otherwise.
//
// Ordering. Each op makes the group's stream wait for the work enqueued so far on the caller's
// current stream (an event in between), enqueues the NCCL call there and records a done event after
// it. record_stream marks each tensor as used on the group's stream, so the caching allocator reuses
// its memory only after the NCCL call is done, even when the tensor is freed before: that is what
// keeps the memory alive, and the Work holds no tensor. The op's Work is finished at once (the host
// never waits) and Work::wait_stream makes the caller's current stream wait for the done event.
// barrier is the exception: its Work is finished by the watchdog once the done event has completed,
// since what a barrier promises is that every rank got there.
//
// Failures. The communicator is nonblocking (config.blocking = 0), so init and every call return
// instead of hanging inside NCCL, and ncclCommAbort can end them; a call answering ncclInProgress is
// polled until it settles (at most timeout_ms), as NCCL requires before any other call. An error
// from a call or from ncclCommGetAsyncError, or a done event not completed timeout_ms after its op
// was enqueued (the watchdog thread, as torch's NCCL watchdog), aborts the communicator and breaks
// the group: the ops still pending fail (wait_stream throws; a barrier's Work ends with the error),
// and later ops throw at once with the first error.
//
// Point to point. NCCL has no tags: the tag is ignored, and the sends and recvs between a pair of
// ranks match in the order they are posted. Every op runs in order on the one group stream, where a
// send holds up later ops until its recv is posted: two ranks exchanging tensors must post them in
// opposite orders (one sends first, the other receives first), as with torch's NCCL backend.
#ifdef KILN_NCCL
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../dist/process_group.h"
#include "runtime.h"

namespace kiln::dist {

bool nccl_available() { return true; }

namespace {

using Clock = std::chrono::steady_clock;

std::string device_str(Device d) { return d.is_cpu() ? std::string("cpu") : str_cat("cuda:", d.index); }

// NCCL's error name, with the communicator's last error message when it has one.
std::string nccl_error(ncclComm_t comm, ncclResult_t r) {
  std::string s = ncclGetErrorString(r);
  const char* last = ncclGetLastError(comm);
  if (last && *last) s += str_cat(" (", last, ")");
  return s;
}

// The communicator's state after a call that answered r. A nonblocking communicator answers
// ncclInProgress while it works in the background (joining ranks, connecting peers on first use),
// and NCCL forbids other calls on it or work on its stream until that ends: this polls until it
// does, returning ncclInProgress when timeout_ms passes first. Errors of earlier ops surface here.
ncclResult_t settle(ncclComm_t comm, ncclResult_t r, int64_t timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (r == ncclSuccess || r == ncclInProgress) {
    ncclResult_t state = ncclSuccess;
    if (ncclResult_t q = ncclCommGetAsyncError(comm, &state); q != ncclSuccess) return q;
    if (state != ncclInProgress) return state;
    if (Clock::now() >= deadline) return ncclInProgress;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return r;
}

ncclRedOp_t nccl_op(ReduceOp op, const std::string& where) {
  switch (op) {
    case ReduceOp::Sum: return ncclSum;
    case ReduceOp::Avg: return ncclAvg;
    case ReduceOp::Max: return ncclMax;
    case ReduceOp::Min: return ncclMin;
  }
  throw Error(ErrorCode::Value, where, str_cat("unknown reduction ", int32_t(op)));
}

// NCCL's type for dt. bool moves as bytes (broadcast, allGather, send, recv) but has no reduction.
ncclDataType_t nccl_dtype(DType dt, bool reduces, const std::string& where) {
  switch (dt) {
    case DType::Float32: return ncclFloat32;
    case DType::Float64: return ncclFloat64;
    case DType::BFloat16: return ncclBfloat16;
    case DType::Float16: return ncclFloat16;
    case DType::Int32: return ncclInt32;
    case DType::Int64: return ncclInt64;
    case DType::Bool:
      if (!reduces) return ncclUint8;
      break;
  }
  throw Error(ErrorCode::DType, where,
              str_cat("dtype ", dtype_name(dt), " is not supported", reduces ? " by reductions" : ""));
}

// One op enqueued on the group's stream: the caller's Work, and the group's entry for it until the
// watchdog sees its done event complete.
class NcclWork final : public Work {
 public:
  NcclWork(const char* op, std::string who, Device d, bool wait_on_host)
      : Work(op), where(std::move(who)), device(d), host_wait(wait_on_host), done(cuda::create_event(false)) {}
  ~NcclWork() override { cuda::destroy_event(done); }
  NcclWork(const NcclWork&) = delete;
  NcclWork& operator=(const NcclWork&) = delete;

  void wait_stream() override {
    if (failed()) throw Error(ErrorCode::Dist, op(), str_cat(where, ": ", error_));
    cuda::wait(cuda::current_stream(device), done);
  }

  // Sets the error wait_stream throws; once, under the group's lock.
  void fail(std::string detail) {
    error_ = std::move(detail);
    failed_.store(true, std::memory_order_release);
  }
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  // The error message without the op's name ("" when the op has not failed): what finish() takes.
  std::string message() const { return failed() ? str_cat(where, ": ", error_) : std::string(); }

  const std::string where;          // ProcessGroup::who() of its group
  const Device device;
  const bool host_wait;            // barrier: finished by the watchdog when done completes
  cuda::Event* const done;         // recorded on the group's stream after the NCCL call
  const Clock::time_point start = Clock::now();

 private:
  std::string error_;
  std::atomic<bool> failed_{false};
};

using NcclWorkPtr = std::shared_ptr<NcclWork>;

// Finishes host-waited Works (with their errors, if any); with no lock held, as Work::finish asks.
void finish_all(const std::vector<NcclWorkPtr>& works) {
  for (const NcclWorkPtr& w : works) w->finish(w->message());
}

// Whether op's done event has completed; a CUDA error answers no (the op then fails).
bool completed(NcclWork& op) noexcept {
  try {
    return cuda::query(op.done);
  } catch (...) {
    return false;
  }
}

class NcclGroup final : public ProcessGroup {
 public:
  // Takes over comm, an initialized communicator on device.
  NcclGroup(int rank, int size, Device device, ncclComm_t comm, int64_t timeout_ms)
      : ProcessGroup(rank, size, "nccl"),
        device_(device),
        timeout_ms_(timeout_ms),
        comm_(comm),
        barrier_(Tensor::empty({1}, DType::Int32, device)),
        stream_(cuda::create_stream(device, 0), cuda::release_stream),
        watchdog_([this] { watch(); }) {}
  ~NcclGroup() override { shutdown(); }

  WorkPtr all_reduce(Tensor t, ReduceOp op) override {
    const char* w = "allReduce";
    check_on_device(w, t, "tensor");
    check_reduce(w, t, op);
    const ncclDataType_t type = nccl_dtype(t.dtype, true, w);
    const ncclRedOp_t red = nccl_op(op, w);
    return launch(w, {&t}, false, [&](ncclComm_t c, cudaStream_t s) {
      return ncclAllReduce(t.data_ptr(), t.data_ptr(), size_t(t.numel()), type, red, c, s);
    });
  }

  WorkPtr broadcast(Tensor t, int root) override {
    const char* w = "broadcast";
    check_peer(w, root, "src");
    check_on_device(w, t, "tensor");
    const ncclDataType_t type = nccl_dtype(t.dtype, false, w);
    return launch(w, {&t}, false, [&](ncclComm_t c, cudaStream_t s) {
      return ncclBroadcast(t.data_ptr(), t.data_ptr(), size_t(t.numel()), type, root, c, s);
    });
  }

  WorkPtr all_gather(Tensor out, Tensor in) override {
    const char* w = "allGather";
    check_on_device(w, out, "output");
    check_on_device(w, in, "input");
    check_chunks(w, out, in, "output", "input");
    const ncclDataType_t type = nccl_dtype(in.dtype, false, w);
    return launch(w, {&out, &in}, false, [&](ncclComm_t c, cudaStream_t s) {
      return ncclAllGather(in.data_ptr(), out.data_ptr(), size_t(in.numel()), type, c, s);
    });
  }

  WorkPtr reduce_scatter(Tensor out, Tensor in, ReduceOp op) override {
    const char* w = "reduceScatter";
    check_on_device(w, out, "output");
    check_on_device(w, in, "input");
    check_chunks(w, in, out, "input", "output");
    check_reduce(w, in, op);
    const ncclDataType_t type = nccl_dtype(in.dtype, true, w);
    const ncclRedOp_t red = nccl_op(op, w);
    return launch(w, {&out, &in}, false, [&](ncclComm_t c, cudaStream_t s) {
      return ncclReduceScatter(in.data_ptr(), out.data_ptr(), size_t(out.numel()), type, red, c, s);
    });
  }

  // An all-reduce of the group's one-element buffer, whose value nobody reads.
  WorkPtr barrier() override {
    return launch("barrier", {&barrier_}, true, [&](ncclComm_t c, cudaStream_t s) {
      return ncclAllReduce(barrier_.data_ptr(), barrier_.data_ptr(), 1, ncclInt32, ncclSum, c, s);
    });
  }

  // NCCL has no tags: tag is ignored (see the top of this file).
  WorkPtr send(Tensor t, int dst, uint32_t tag) override { return point_to_point("send", t, dst, true); }
  WorkPtr recv(Tensor t, int src, uint32_t tag) override { return point_to_point("recv", t, src, false); }

  // Stops the watchdog, then ends the communicator: ncclCommFinalize flushes the ops enqueued so
  // far (at most timeout_ms) and ncclCommDestroy frees it; a broken group was aborted already, and
  // one whose finalize fails or times out is aborted, failing its pending ops.
  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return;
      closed_ = true;
    }
    cv_.notify_all();
    watchdog_.join();
    std::vector<NcclWorkPtr> ended;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (comm_) {
        const ncclResult_t r = settle(comm_, ncclCommFinalize(comm_), timeout_ms_);
        if (r == ncclSuccess) {
          ncclCommDestroy(comm_);
          comm_ = nullptr;
        } else {
          fail_locked(str_cat("shutdown: ", who(), ": ",
                              r == ncclInProgress ? str_cat("pending ops did not finish within ", timeout_ms_, " ms")
                                                  : nccl_error(comm_, r)),
                      ended);
        }
      }
      for (const NcclWorkPtr& op : ops_)  // finalized: every pending op is done
        if (op->host_wait) ended.push_back(op);
      ops_.clear();
      stream_.reset();
    }
    finish_all(ended);
  }

 private:
  // The shared checks (contiguous, sizes, ranks) and this group's device.
  void check_on_device(const char* w, const Tensor& t, const char* name) const {
    check_tensor(w, t, name);
    KILN_CHECK(t.device() == device_, Device, w, who(), ": ", name, " is on ", device_str(t.device()),
               " but the group's device is ", device_str(device_));
  }

  WorkPtr point_to_point(const char* op, const Tensor& t, int peer, bool sending) {
    const char* w = op;
    check_peer(w, peer, sending ? "dst" : "src");
    // A send or recv with this rank itself would wait forever: its match could only be enqueued after it.
    KILN_CHECK(peer != rank_, Value, w, who(), ": cannot ", op, " to or from its own rank");
    check_on_device(w, t, "tensor");
    const ncclDataType_t type = nccl_dtype(t.dtype, false, w);
    return launch(w, {&t}, false, [&](ncclComm_t c, cudaStream_t s) {
      const size_t n = size_t(t.numel());
      return sending ? ncclSend(t.data_ptr(), n, type, peer, c, s) : ncclRecv(t.data_ptr(), n, type, peer, c, s);
    });
  }

  // Enqueues call(comm, stream) on the group's stream after the work enqueued so far on the
  // caller's current stream, ts being the tensors it touches, and returns its Work (finished at
  // once unless host_wait). A failed call breaks the group and throws.
  template <typename Call>
  WorkPtr launch(const char* w, std::initializer_list<const Tensor*> ts, bool host_wait, Call call) {
    NcclWorkPtr work;
    std::string error;
    std::vector<NcclWorkPtr> ended;
    {
      std::lock_guard<std::mutex> lock(mu_);
      KILN_CHECK(!closed_, Dist, w, who(), ": the group was shut down");
      KILN_CHECK(broken_.empty(), Dist, w, who(), ": the group failed earlier: ", broken_);
      cuda::Stream* s = stream_.get();
      for (const Tensor* t : ts) cuda::record_stream(*t->storage, s);
      cuda::wait_stream(s, cuda::current_stream(device_));
      work = std::make_shared<NcclWork>(w, who(), device_, host_wait);
      const ncclResult_t r = settle(comm_, call(comm_, cuda::raw_stream(s)), timeout_ms_);
      if (r == ncclSuccess) {
        cuda::record(work->done, s);
        ops_.push_back(work);
      } else {
        error = r == ncclInProgress ? str_cat("NCCL did not finish enqueueing the op within ", timeout_ms_, " ms")
                                    : nccl_error(comm_, r);
        fail_locked(str_cat(w, ": ", who(), ": ", error), ended);
      }
    }
    finish_all(ended);
    if (!error.empty()) throw Error(ErrorCode::Dist, w, str_cat(who(), ": ", error));
    if (host_wait)
      cv_.notify_all();  // the watchdog polls faster while a barrier waits
    else
      work->finish("");
    return work;
  }

  // Breaks the group with its first error: every pending op whose done event has not completed
  // and that has no error yet fails with "the group failed: message", and the communicator is
  // aborted. mu_ held; the pending barriers go to `ended`, to be finished outside the lock.
  void fail_locked(const std::string& message, std::vector<NcclWorkPtr>& ended) {
    broken_ = message;
    for (const NcclWorkPtr& op : ops_) {
      if (!op->failed() && !completed(*op)) op->fail(str_cat("the group failed: ", message));
      if (op->host_wait) ended.push_back(op);
    }
    ops_.clear();
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
  }

  // The watchdog thread: every poll (1 ms while a barrier waits, else 100 ms or timeout_ms if
  // shorter) it drops the completed ops, finishing barriers, and breaks the group when the oldest
  // pending op has run past timeout_ms or the communicator reports an error.
  void watch() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!closed_) {
      const bool barrier = std::any_of(ops_.begin(), ops_.end(), [](const NcclWorkPtr& op) { return op->host_wait; });
      cv_.wait_for(lock, std::chrono::milliseconds(barrier ? 1 : std::min<int64_t>(100, timeout_ms_)));
      if (closed_ || !broken_.empty()) continue;
      std::vector<NcclWorkPtr> ended;
      sweep_locked(ended);
      lock.unlock();
      finish_all(ended);
      lock.lock();
    }
  }

  void sweep_locked(std::vector<NcclWorkPtr>& ended) {
    try {
      // Ops on one stream complete in order: the completed ones are a prefix of ops_.
      while (!ops_.empty() && cuda::query(ops_.front()->done)) {
        if (ops_.front()->host_wait) ended.push_back(ops_.front());
        ops_.pop_front();
      }
    } catch (const std::exception& e) {
      fail_locked(str_cat(ops_.front()->op(), ": ", ops_.front()->where, ": ", e.what()), ended);
      return;
    }
    if (!ops_.empty() && Clock::now() - ops_.front()->start > std::chrono::milliseconds(timeout_ms_)) {
      NcclWork& op = *ops_.front();
      op.fail(str_cat("timed out after ", timeout_ms_, " ms"));
      fail_locked(str_cat(op.op(), ": ", op.message()), ended);
      return;
    }
    ncclResult_t state = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(comm_, &state);
    if (r == ncclSuccess) r = state;
    if (r != ncclSuccess && r != ncclInProgress)
      fail_locked(str_cat(ops_.empty() ? who() : str_cat(ops_.front()->op(), ": ", ops_.front()->where), ": ", nccl_error(comm_, r)), ended);
  }

  const Device device_;
  const int64_t timeout_ms_;
  // mu_ guards the fields below it and is held across every NCCL call, so the watchdog's abort
  // never races a call on the communicator it frees.
  std::mutex mu_;
  std::condition_variable cv_;  // wakes the watchdog: shutdown, or a barrier to poll for
  ncclComm_t comm_;             // null once destroyed or aborted
  std::deque<NcclWorkPtr> ops_;  // enqueued, done event not yet seen complete; in stream order
  std::string broken_;          // the first error; later ops fail with it
  bool closed_ = false;
  Tensor barrier_;              // barrier()'s all-reduce buffer
  std::unique_ptr<cuda::Stream, void (*)(cuda::Stream*)> stream_;
  std::thread watchdog_;        // last: starts once everything above is set
};

}  // namespace

GroupPtr make_nccl_group(std::shared_ptr<StoreClient> store, const std::string& prefix, int rank, int size,
                         int64_t timeout_ms, int device) {
  const char* op = "initProcessGroup";
  KILN_CHECK(size >= 1 && rank >= 0 && rank < size, Value, op, "rank ", rank, " is outside a group of ", size);
  KILN_CHECK(timeout_ms > 0, Value, op, "timeout ", timeout_ms, " ms is not positive");
  const std::string who = str_cat("rank ", rank, " of ", size, " (nccl): ");  // as ProcessGroup::who()
  const Device d{device};
  cuda::set_device(d);  // NCCL binds the communicator to the current device; DeviceError if none
  const auto start = Clock::now();

  // Rank 0 makes the unique id; the others wait for it in the store.
  ncclUniqueId id;
  const std::string key = prefix + "nccl_unique_id";
  if (rank == 0) {
    const ncclResult_t r = ncclGetUniqueId(&id);
    KILN_CHECK(r == ncclSuccess, Dist, op, who, "ncclGetUniqueId failed: ", nccl_error(nullptr, r));
    store->set(key, std::string(id.internal, sizeof id.internal));
  } else {
    const std::string v = store->get(key, timeout_ms);
    KILN_CHECK(v.size() == sizeof id.internal, Dist, op, who, "the NCCL unique id under ", key, " has ", v.size(),
               " bytes, not ", sizeof id.internal);
    std::memcpy(id.internal, v.data(), v.size());
  }

  // Nonblocking, so that waiting for the other ranks has a deadline (and later calls can be aborted).
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  const ncclResult_t init = ncclCommInitRankConfig(&comm, size, id, rank, &config);  // sets comm first
  const int64_t spent = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
  const ncclResult_t r = settle(comm, init, std::max<int64_t>(1, timeout_ms - spent));
  if (r != ncclSuccess) {
    const std::string why = r == ncclInProgress
                                ? str_cat("timed out after ", timeout_ms, " ms waiting for every rank to join")
                                : nccl_error(comm, r);
    if (comm) ncclCommAbort(comm);
    throw Error(ErrorCode::Dist, op, who + why);
  }
  try {
    return std::make_shared<NcclGroup>(rank, size, d, comm, timeout_ms);
  } catch (...) {
    ncclCommAbort(comm);
    throw;
  }
}

}  // namespace kiln::dist

#endif  // KILN_NCCL
