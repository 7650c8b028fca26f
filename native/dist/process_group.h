// Process groups: collectives over the ranks of a group, on Gloo (CPU tensors, gloo_group.cc) or
// NCCL (CUDA tensors, native/cuda/nccl_group.cc). Nothing here knows about JavaScript; the binding
// (native/binding/dist.cc) turns a Work into a Promise.
//
// Every op takes contiguous tensors (the binding checks) and works in place; it returns at once with
// a Work. Gloo runs the group's ops one after another on the group's own thread, so the JavaScript
// thread never blocks; NCCL enqueues them on the group's CUDA stream after an event on the compute
// stream, and Work::wait_stream makes the compute stream wait for them (no host wait).
//
// Failures (timeout, a closed peer, a broken group) end the Work with an error message that names
// this rank, the group's size and backend (ProcessGroup::who()); the binding makes it a DistError
// whose op is the Work's op. After a failure the group is broken: later ops fail
// at once with the first error, as a torch group is after a timeout.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <condition_variable>
#include <string>
#include <vector>

#include "../core/error.h"
#include "../core/tensor.h"
#include "store.h"

namespace kiln::dist {

enum class ReduceOp : int32_t { Sum = 0, Avg = 1, Max = 2, Min = 3 };
const char* reduce_op_name(ReduceOp op);

// The completion of one op. Thread-safe: finished by the group's thread (or at once), observed from
// the JavaScript thread.
class Work {
 public:
  // Called once, from the thread that finishes the op, with no lock held.
  using Callback = std::function<void()>;
  explicit Work(std::string op) : op_(std::move(op)) {}
  virtual ~Work() = default;
  // The op's name as JavaScript sees it ("allReduce").
  const std::string& op() const { return op_; }
  bool completed();
  // The error the op ended with ("" when it succeeded or is still running), without the op's name:
  // "rank 1 of 4 (gloo): timed out after 30000 ms".
  std::string error();
  // Runs cb when the op has finished (at once, on this thread, when it already has).
  void on_complete(Callback cb);
  // Blocks this thread until the op has finished; throws its error.
  void wait_host();
  // For device ops: makes the calling thread's current stream wait for the op (no host wait) and
  // rethrows an error already known; for host ops the same as completed() && no error. The binding
  // calls it when the promise settles.
  virtual void wait_stream() {}

  // Called by the backend.
  void finish(std::string error);

 private:
  std::string op_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::string error_;
  std::vector<Callback> callbacks_;
};

using WorkPtr = std::shared_ptr<Work>;

class ProcessGroup {
 public:
  ProcessGroup(int rank, int size, std::string backend) : rank_(rank), size_(size), backend_(std::move(backend)) {}
  virtual ~ProcessGroup() = default;
  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& backend() const { return backend_; }

  // t holds the reduction over ranks afterwards (Avg: the sum divided by size, in t's dtype).
  virtual WorkPtr all_reduce(Tensor t, ReduceOp op) = 0;
  // t on every rank holds root's t.
  virtual WorkPtr broadcast(Tensor t, int root) = 0;
  // out (size * numel(in) elements, same dtype) holds every rank's in, in rank order.
  virtual WorkPtr all_gather(Tensor out, Tensor in) = 0;
  // out (numel(in) / size elements) holds the reduction of chunk `rank` of every rank's in.
  virtual WorkPtr reduce_scatter(Tensor out, Tensor in, ReduceOp op) = 0;
  virtual WorkPtr barrier() = 0;
  // Point to point: t's bytes go to rank dst, matched with dst's recv from this rank with the same tag.
  virtual WorkPtr send(Tensor t, int dst, uint32_t tag) = 0;
  virtual WorkPtr recv(Tensor t, int src, uint32_t tag) = 0;
  // Ends the group: its connections close (an op inside the library fails, the peers' pending ops
  // fail at once), ops not started fail, the group's threads stop. Idempotent.
  virtual void shutdown() = 0;

  // "rank 1 of 4 (gloo)": how error messages name where an op failed (after the op's name).
  std::string who() const;

  // Shared argument checks; errors name op and who(). Every tensor: contiguous.
  void check_tensor(const char* op, const Tensor& t, const char* name) const;
  // Reductions: not bool; avg needs a floating dtype.
  void check_reduce(const char* op, const Tensor& t, ReduceOp r) const;
  // peer is a rank of the group.
  void check_peer(const char* op, int peer, const char* name) const;
  // whole has size x part's elements and part's dtype (allGather's out, reduceScatter's in).
  void check_chunks(const char* op, const Tensor& whole, const Tensor& part, const char* whole_name,
                    const char* part_name) const;

 protected:
  int rank_, size_;
  std::string backend_;
};

using GroupPtr = std::shared_ptr<ProcessGroup>;

// Whether this build has each backend.
bool gloo_available();
bool nccl_available();

// Connects a Gloo group of `size` ranks through the store (keys under `prefix`), this process being
// `rank`; hostname is the address peers reach this process at ("" : the address on the route to the
// store's host), iface a network interface to use instead (GLOO_SOCKET_IFNAME). Blocks until every
// rank has joined or timeout_ms passes (Dist error). Without Gloo in the build: Dist error.
GroupPtr make_gloo_group(std::shared_ptr<StoreClient> store, const std::string& prefix, int rank, int size,
                         int64_t timeout_ms, const std::string& hostname, const std::string& iface);

// Connects an NCCL communicator on CUDA device `device` (rank 0 of the group makes the unique id and
// sets it in the store under prefix; the others wait for it). Blocks until every rank has joined
// or timeout_ms passes. Without CUDA in the build: Dist error.
GroupPtr make_nccl_group(std::shared_ptr<StoreClient> store, const std::string& prefix, int rank, int size,
                         int64_t timeout_ms, int device);

}  // namespace kiln::dist
