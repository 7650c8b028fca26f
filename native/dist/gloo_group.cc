// The Gloo process group (CPU tensors), on Debian's libgloo (the library torch.distributed uses for
// CPU collectives), compiled when CMake finds it (KILN_GLOO).
//
// Rendezvous: gloo::rendezvous::Context::connectFullMesh over kiln's TCPStore (an adapter below; the
// Gloo release Debian ships has only file, hash and redis stores). Each rank's TCP device listens on
// the address on its route to the store's host (what peers can reach: 127.0.0.1 on one machine, the
// interface facing the master across machines), or on GLOO_SOCKET_IFNAME's interface.
//
// Collectives run one after another on the group's own thread, in the order they were issued (every
// rank issues them in the same order, so the tag counter agrees across ranks). Each is checked
// first against the other ranks' calls with a 32-byte signature (op, dtype, element count, root):
// Gloo's TCP transport aborts the whole process when a message is longer than the buffer posted for
// it, so a rank that passes a tensor of another size (or calls another op) must be caught before any
// data moves; it then fails on every rank with a DistError naming the ranks and their sizes. The
// signature goes to every other rank point to point as soon as the collective is issued, from the
// calling thread, so it travels while earlier collectives run and the group's thread usually finds
// the others' signatures already there (an all-gather before each op cost DDP about 0.5 ms per
// bucket on 2 processes). Point-to-point ops send an 8-byte
// size header before the data for the same reason. Point-to-point ops are
// posted at once from the calling thread, as torch does, and each is waited for on a thread of its
// own, so sends and recvs in any order and to any peers never wait on each other (shutdown aborts
// the waits still pending). Avg is a sum followed by
// a division on the group's thread; reduceScatter is an all-reduce of a copy of the input of which
// each rank keeps its chunk (Gloo 2022 has no unbound-buffer reduce-scatter).
#ifdef KILN_GLOO
#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/types.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <thread>
#include <unordered_map>

#include "../core/convert.h"
#include "process_group.h"

namespace kiln::dist {
namespace {

using ms = std::chrono::milliseconds;

// Gloo prefixes its messages with "[file:line] "; users need the rest.
std::string gloo_message(const std::exception& e) {
  std::string m = e.what();
  while (!m.empty() && m[0] == '[') {
    size_t end = m.find("] ");
    if (end == std::string::npos) break;
    m = m.substr(end + 2);
  }
  return m;
}

// gloo's rendezvous store on kiln's TCPStore client, with the group's key prefix.
class StoreAdapter : public gloo::rendezvous::Store {
 public:
  StoreAdapter(std::shared_ptr<StoreClient> c, std::string prefix, int64_t timeout_ms)
      : c_(std::move(c)), prefix_(std::move(prefix)), timeout_ms_(timeout_ms) {}
  void set(const std::string& key, const std::vector<char>& data) override {
    c_->set(prefix_ + key, std::string(data.begin(), data.end()));
  }
  std::vector<char> get(const std::string& key) override {
    std::string v = c_->get(prefix_ + key, timeout_ms_);
    return std::vector<char>(v.begin(), v.end());
  }
  void wait(const std::vector<std::string>& keys) override { wait(keys, ms(timeout_ms_)); }
  // Gloo passes its context's timeout, which is shortened while pairs connect (make_gloo_group):
  // waiting for the other ranks to arrive keeps the group's whole timeout.
  void wait(const std::vector<std::string>& keys, const ms&) override {
    std::vector<std::string> full;
    for (const auto& k : keys) full.push_back(prefix_ + k);
    c_->wait(full, timeout_ms_);
  }

 private:
  std::shared_ptr<StoreClient> c_;
  std::string prefix_;
  int64_t timeout_ms_;
};

// Runs tasks one at a time on its own thread, in order. stop() lets queued tasks run (they fail at
// once: the group is stopping) and joins the thread, unless a task is inside a Gloo call, which may
// take until its timeout: then the thread is left to finish on its own (it owns what it touches).
class SerialThread {
 public:
  SerialThread() : st_(std::make_shared<State>()) {
    thread_ = std::thread([st = st_] {
      std::unique_lock<std::mutex> g(st->mu);
      for (;;) {
        st->cv.wait(g, [&] { return st->stop || !st->tasks.empty(); });
        if (st->tasks.empty()) return;
        auto task = std::move(st->tasks.front());
        st->tasks.pop_front();
        st->busy = true;
        g.unlock();
        task();
        g.lock();
        st->busy = false;
      }
    });
  }
  ~SerialThread() { stop(); }
  void push(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> g(st_->mu);
      st_->tasks.push_back(std::move(task));
    }
    st_->cv.notify_one();
  }
  void stop() {
    if (!thread_.joinable()) return;
    bool busy;
    {
      std::lock_guard<std::mutex> g(st_->mu);
      st_->stop = true;
      busy = st_->busy;
    }
    st_->cv.notify_one();
    if (busy) thread_.detach();
    else thread_.join();
  }

 private:
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::function<void()>> tasks;
    bool stop = false, busy = false;
  };
  std::shared_ptr<State> st_;
  std::thread thread_;
};

// The first failure, after which every op fails; shared with the threads' tasks.
// On the first failure the group's connections close (on_failure): the peers' pending ops then fail
// at once with a closed connection instead of at their timeout, and buffers still posted for
// transfers that will not happen are dropped with the connections.
struct Health {
  std::mutex mu;
  std::string failure;
  std::function<void()> on_failure;
  std::string get() {
    std::lock_guard<std::mutex> g(mu);
    return failure;
  }
  void fail(const std::string& why) {
    std::function<void()> first;
    {
      std::lock_guard<std::mutex> g(mu);
      if (!failure.empty()) return;
      failure = why;
      first.swap(on_failure);
    }
    if (first) first();
  }
};

template <typename T>
void reduce_into(T* out, const T* a, const T* b, size_t n, ReduceOp op) {
  if constexpr (is_half<T>::value) {
    for (size_t i = 0; i < n; i++) {
      float x = float(a[i]), y = float(b[i]);
      out[i] = T(op == ReduceOp::Max ? (x > y ? x : y) : op == ReduceOp::Min ? (x < y ? x : y) : x + y);
    }
  } else if (op == ReduceOp::Max) {
    for (size_t i = 0; i < n; i++) out[i] = a[i] > b[i] ? a[i] : b[i];
  } else if (op == ReduceOp::Min) {
    for (size_t i = 0; i < n; i++) out[i] = a[i] < b[i] ? a[i] : b[i];
  } else {
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
  }
}

template <typename T>
void divide(T* x, size_t n, int size) {
  if constexpr (is_half<T>::value) {
    for (size_t i = 0; i < n; i++) x[i] = T(float(x[i]) / float(size));
  } else if ((size & (size - 1)) == 0) {
    // A power of two: multiplying by its reciprocal is exact and several times cheaper than dividing.
    const T inv = T(1) / T(size);
    for (size_t i = 0; i < n; i++) x[i] *= inv;
  } else {
    for (size_t i = 0; i < n; i++) x[i] /= T(size);
  }
}

// What every rank must agree on before a collective moves data.
struct Signature {
  int64_t op, dtype, count, root;
};

const char* const kOpNames[] = {"allReduce", "broadcast", "allGather", "reduceScatter", "barrier"};

std::string describe(const Signature& s) {
  if (s.op < 0 || s.op > 4) return "an unknown op";
  if (s.op == 4) return "barrier";
  std::string extra;
  if (s.op == 1) extra = str_cat(" from rank ", s.root);
  if (s.op == 0 || s.op == 3) extra = str_cat(" (", reduce_op_name(ReduceOp(s.root)), ")");
  return str_cat(kOpNames[s.op], " of ", s.count, " ", dtype_name(DType(s.dtype)), " elements", extra);
}

// One collective's signature exchange: this rank's signature sent to every other rank, theirs
// received, all posted when the collective is issued. The buffers point into this object, which the
// collective's task holds until every transfer has ended.
struct SignatureExchange {
  Signature mine;
  std::vector<Signature> theirs;
  std::vector<std::unique_ptr<gloo::transport::UnboundBuffer>> sends, recvs;
};

std::shared_ptr<SignatureExchange> post_signature(const std::shared_ptr<gloo::Context>& ctx, const Signature& sig,
                                                  uint32_t tag) {
  auto ex = std::make_shared<SignatureExchange>();
  ex->mine = sig;
  ex->theirs.resize(size_t(ctx->size));
  ex->sends.resize(size_t(ctx->size));
  ex->recvs.resize(size_t(ctx->size));
  // 0x7c: a slot prefix none of Gloo's algorithms use (nor kiln's point-to-point ops, 0x7d and 0x7e).
  const uint64_t slot = (uint64_t(0x7c) << 56) | tag;
  for (int r = 0; r < ctx->size; r++) {
    if (r == ctx->rank) continue;
    ex->recvs[size_t(r)] = ctx->createUnboundBuffer(&ex->theirs[size_t(r)], sizeof(Signature));
    ex->recvs[size_t(r)]->recv(r, slot);
    ex->sends[size_t(r)] = ctx->createUnboundBuffer(&ex->mine, sizeof(Signature));
    ex->sends[size_t(r)]->send(r, slot);
  }
  return ex;
}

// Waits (until deadline) for every other rank's signature and for this rank's to leave, so every rank
// sees every signature, then throws a Dist error naming the first rank whose differs from this one's.
void agree(const SignatureExchange& ex, int rank, std::chrono::steady_clock::time_point deadline) {
  auto left = [&] {
    auto l = std::chrono::duration_cast<ms>(deadline - std::chrono::steady_clock::now());
    return l.count() < 1 ? ms(1) : l;
  };
  for (size_t r = 0; r < ex.theirs.size(); r++) {
    if (int(r) == rank) continue;
    KILN_CHECK(ex.recvs[r]->waitRecv(left()), Dist, "", "waiting for rank ", r, "'s call was aborted");
  }
  for (size_t r = 0; r < ex.sends.size(); r++) {
    if (int(r) != rank) KILN_CHECK(ex.sends[r]->waitSend(left()), Dist, "", "sending to rank ", r, " was aborted");
  }
  const Signature& mine = ex.mine;
  for (size_t r = 0; r < ex.theirs.size(); r++) {
    const Signature& o = ex.theirs[r];
    if (int(r) != rank && (o.op != mine.op || o.dtype != mine.dtype || o.count != mine.count || o.root != mine.root)) {
      throw Error(ErrorCode::Dist, "", str_cat("rank ", r, " called ", describe(o), " while this rank called ", describe(mine),
                                               " (every rank must issue the same collectives with the same sizes, in the same order)"));
    }
  }
}

// In-place all-reduce of n elements at data (avg: sum, then divide by the group's size).
void gloo_all_reduce(const std::shared_ptr<gloo::Context>& ctx, void* data, size_t n, DType dt, ReduceOp op,
                     uint32_t tag) {
  if (n == 0) return;
  // Bool never gets here: check_reduce refuses it.
  KILN_DISPATCH_ALL(dt, "allReduce", {
    gloo::AllreduceOptions o(ctx);
    o.setOutput(static_cast<scalar_t*>(data), n);
    o.setTag(tag);
    o.setReduceFunction([op](void* c, const void* a, const void* b, size_t k) {
      reduce_into(static_cast<scalar_t*>(c), static_cast<const scalar_t*>(a), static_cast<const scalar_t*>(b), k, op);
    });
    gloo::allreduce(o);
    if (op == ReduceOp::Avg) divide(static_cast<scalar_t*>(data), n, ctx->size);
  });
}

// The address on this machine's route to host (no packet is sent: connect() on a UDP socket only
// picks the route), which is where the store's peers can reach this process.
std::string local_address_towards(const std::string& host, int port) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_DGRAM;
  int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  KILN_CHECK(rc == 0 && res, Dist, "initProcessGroup", "cannot resolve the store's host ", host, ": ",
             gai_strerror(rc));
  std::string out;
  int fd = socket(res->ai_family, SOCK_DGRAM, 0);
  if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
    sockaddr_storage me{};
    socklen_t len = sizeof(me);
    char buf[INET6_ADDRSTRLEN] = {0};
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&me), &len) == 0) {
      const void* a = me.ss_family == AF_INET6 ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&me)->sin6_addr)
                                               : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&me)->sin_addr);
      if (inet_ntop(me.ss_family, a, buf, sizeof(buf))) out = buf;
    }
  }
  if (fd >= 0) close(fd);
  freeaddrinfo(res);
  KILN_CHECK(!out.empty(), Dist, "initProcessGroup", "no route from this machine to the store's host ", host,
             " (set GLOO_SOCKET_IFNAME to the interface to use)");
  return out;
}

class GlooGroup : public ProcessGroup {
 public:
  GlooGroup(std::shared_ptr<gloo::rendezvous::Context> ctx, std::shared_ptr<gloo::transport::Device> dev,
            int64_t timeout_ms)
      : ProcessGroup(ctx->rank, ctx->size, "gloo"), ctx_(std::move(ctx)), dev_(std::move(dev)),
        timeout_ms_(timeout_ms), health_(std::make_shared<Health>()) {
    health_->on_failure = [weak = std::weak_ptr<gloo::rendezvous::Context>(ctx_)] {
      if (auto c = weak.lock()) c->closeConnections();
    };
  }
  ~GlooGroup() override { shutdown(); }

  WorkPtr all_reduce(Tensor t, ReduceOp op) override {
    check_cpu("allReduce", t, "tensor");
    check_reduce("allReduce", t, op);
    const uint32_t tag = next_tag();
    return collective("allReduce", {0, int64_t(t.dtype), t.numel(), int64_t(op)}, tag, [ctx = ctx_, t, op, tag] {
      gloo_all_reduce(ctx, t.data_ptr(), size_t(t.numel()), t.dtype, op, tag);
    });
  }

  WorkPtr broadcast(Tensor t, int root) override {
    check_cpu("broadcast", t, "tensor");
    check_peer("broadcast", root, "src");
    const uint32_t tag = next_tag();
    return collective("broadcast", {1, int64_t(t.dtype), t.numel(), root}, tag, [ctx = ctx_, t, root, tag] {
      const size_t n = size_t(t.numel()) * t.itemsize();
      if (n == 0) return;
      gloo::BroadcastOptions o(ctx);
      o.setOutput(static_cast<uint8_t*>(t.data_ptr()), n);
      o.setRoot(root);
      o.setTag(tag);
      gloo::broadcast(o);
    });
  }

  WorkPtr all_gather(Tensor out, Tensor in) override {
    check_cpu("allGather", out, "output");
    check_cpu("allGather", in, "input");
    check_chunks("allGather", out, in, "output", "input");
    const uint32_t tag = next_tag();
    return collective("allGather", {2, int64_t(in.dtype), in.numel(), 0}, tag, [ctx = ctx_, out, in, tag] {
      const size_t n = size_t(in.numel()) * in.itemsize();
      if (n == 0) return;
      gloo::AllgatherOptions o(ctx);
      o.setInput(static_cast<uint8_t*>(in.data_ptr()), n);
      o.setOutput(static_cast<uint8_t*>(out.data_ptr()), n * size_t(ctx->size));
      o.setTag(tag);
      gloo::allgather(o);
    });
  }

  WorkPtr reduce_scatter(Tensor out, Tensor in, ReduceOp op) override {
    check_cpu("reduceScatter", out, "output");
    check_cpu("reduceScatter", in, "input");
    check_chunks("reduceScatter", in, out, "input", "output");
    check_reduce("reduceScatter", in, op);
    const uint32_t tag = next_tag();
    return collective("reduceScatter", {3, int64_t(in.dtype), in.numel(), int64_t(op)}, tag, [ctx = ctx_, out, in, op, tag] {
      const size_t bytes = size_t(in.numel()) * in.itemsize(), chunk = size_t(out.numel()) * out.itemsize();
      std::vector<char> tmp(static_cast<const char*>(in.data_ptr()), static_cast<const char*>(in.data_ptr()) + bytes);
      gloo_all_reduce(ctx, tmp.data(), size_t(in.numel()), in.dtype, op, tag);
      if (chunk) std::memcpy(out.data_ptr(), tmp.data() + chunk * size_t(ctx->rank), chunk);
    });
  }

  WorkPtr barrier() override {
    const uint32_t tag = next_tag();
    return collective("barrier", {4, 0, 0, 0}, tag, [ctx = ctx_, tag] {
      gloo::BarrierOptions o(ctx);
      o.setTag(tag);
      gloo::barrier(o);
    });
  }

  WorkPtr send(Tensor t, int dst, uint32_t tag) override { return point_to_point("send", t, dst, tag, true); }
  WorkPtr recv(Tensor t, int src, uint32_t tag) override { return point_to_point("recv", t, src, tag, false); }

  void shutdown() override {
    std::lock_guard<std::mutex> g(shutdown_mu_);
    if (shut_) return;
    shut_ = true;
    health_->fail(who() + ": the process group was destroyed");
    collectives_.stop();
    std::lock_guard<std::mutex> p2p_guard(p2p_mu_);
    for (auto& weak : p2p_) {
      if (auto b = weak.lock()) {
        b->abortWaitSend();
        b->abortWaitRecv();
      }
    }
    p2p_.clear();
  }

 private:
  void check_cpu(const char* op, const Tensor& t, const char* name) const {
    check_tensor(op, t, name);
    KILN_CHECK(t.device().is_cpu(), Device, op, who(), ": ", name, " is on cuda:", t.device().index,
               "; gloo takes CPU tensors (backend 'nccl' takes CUDA tensors)");
  }

  // Queues fn on the collective thread; its Work ends with fn's error (which also breaks the group).
  // Posts the signature exchange now and queues fn behind it on the collective thread.
  WorkPtr collective(const char* op, Signature sig, uint32_t tag, std::function<void()> fn) {
    auto w = std::make_shared<Work>(op);
    std::string failed = health_->get();
    if (!failed.empty()) {
      w->finish(failed);
      return w;
    }
    std::shared_ptr<SignatureExchange> ex;
    try {
      ex = post_signature(ctx_, sig, tag);
    } catch (const std::exception& e) {
      std::string err = who() + ": " + gloo_message(e);
      health_->fail(err);
      w->finish(err);
      return w;
    }
    // The timeout counts from when the group's thread takes the op up, not from when it was queued.
    collectives_.push([w, ex, timeout = timeout_ms_, rank = rank_, fn = std::move(fn), health = health_, who = who()] {
      const auto deadline = std::chrono::steady_clock::now() + ms(timeout);
      w->finish(run_guarded([&] { agree(*ex, rank, deadline); fn(); }, *health, who));
    });
    return w;
  }

  static std::string run_guarded(const std::function<void()>& fn, Health& health, const std::string& who) {
    std::string failed = health.get();
    if (!failed.empty()) return failed;
    std::string err;
    try {
      fn();
      return "";
    } catch (const Error& e) {
      err = e.detail();
    } catch (const std::exception& e) {
      err = gloo_message(e);
    }
    err = who + ": " + err;
    health.fail(err);
    return err;
  }

  // Posts the send/recv now (so opposite pairs never wait on each other) and waits on the p2p thread.
  // A send posts its size header and its data at once; a recv posts the header's buffer now and,
  // once the header says the sizes match, the data's on the p2p thread.
  WorkPtr point_to_point(const char* op, Tensor t, int peer, uint32_t tag, bool sending) {
    check_cpu(op, t, "tensor");
    check_peer(op, peer, sending ? "dst" : "src");
    KILN_CHECK(peer != rank_, Value, op, who(), ": cannot ", op, " to or from its own rank");
    auto w = std::make_shared<Work>(op);
    std::string failed = health_->get();
    if (!failed.empty()) {
      w->finish(failed);
      return w;
    }
    // Gloo's collectives use slots with an algorithm prefix in the top byte; 0x7d and 0x7e are none of
    // theirs. Bits 32-55 count the messages of this (peer, tag) in issue order, the same count on the
    // sending and the receiving side, so each data recv (posted later, from its own thread) can only
    // match its own message even when several are in flight.
    const uint64_t seq = (sending ? sent_ : received_)[(uint64_t(peer) << 32) | tag]++ & 0xffffff;
    const uint64_t low = (seq << 32) | tag;
    const uint64_t header_slot = (uint64_t(0x7d) << 56) | low, data_slot = (uint64_t(0x7e) << 56) | low;
    const int64_t nbytes = t.numel() * int64_t(t.itemsize());
    auto header = std::make_shared<int64_t>(sending ? nbytes : -1);
    std::shared_ptr<gloo::transport::UnboundBuffer> head, data;
    try {
      head = ctx_->createUnboundBuffer(header.get(), sizeof(int64_t));
      data = ctx_->createUnboundBuffer(t.data_ptr(), size_t(nbytes));
      if (sending) {
        head->send(peer, header_slot);
        data->send(peer, data_slot);
      } else {
        head->recv(peer, header_slot);
      }
    } catch (const std::exception& e) {
      std::string err = who() + ": " + gloo_message(e);
      health_->fail(err);
      w->finish(err);
      return w;
    }
    const auto deadline = std::chrono::steady_clock::now() + ms(timeout_ms_);
    track(head);
    track(data);
    // The thread holds t, the header and the context until the transfer has ended.
    std::thread([w, t, ctx = ctx_, header, head, data, sending, deadline, peer, data_slot, nbytes, health = health_, who = who()] {
      auto left = [&] {
        auto l = std::chrono::duration_cast<ms>(deadline - std::chrono::steady_clock::now());
        return l.count() < 1 ? ms(1) : l;
      };
      w->finish(run_guarded(
          [&] {
            const char* what = sending ? "send to rank " : "recv from rank ";
            KILN_CHECK(sending ? head->waitSend(left()) : head->waitRecv(left()), Dist, "", what, peer, " was aborted");
            if (!sending) {
              KILN_CHECK(*header == nbytes, Dist, "", "rank ", peer, " sent ", *header, " bytes but this recv's tensor (",
                         shape_str(t.shape), " ", dtype_name(t.dtype), ") holds ", nbytes);
              data->recv(peer, data_slot);
            }
            KILN_CHECK(sending ? data->waitSend(left()) : data->waitRecv(left()), Dist, "", what, peer, " was aborted");
          },
          *health, who));
    }).detach();
    return w;
  }

  // Remembers a posted buffer so that shutdown can abort its wait.
  void track(const std::shared_ptr<gloo::transport::UnboundBuffer>& b) {
    std::lock_guard<std::mutex> g(p2p_mu_);
    p2p_.erase(std::remove_if(p2p_.begin(), p2p_.end(), [](const auto& w) { return w.expired(); }), p2p_.end());
    p2p_.push_back(b);
  }

  std::shared_ptr<gloo::rendezvous::Context> ctx_;
  std::shared_ptr<gloo::transport::Device> dev_;
  int64_t timeout_ms_;
  std::shared_ptr<Health> health_;
  // Collective tags count up from 0 (wrapping at 2^32, long after any collective with that tag ended).
  uint32_t next_tag() { return next_tag_++; }
  uint32_t next_tag_ = 0;
  // Point-to-point messages so far per (peer << 32 | tag), sent and received (issuing thread only).
  std::unordered_map<uint64_t, uint64_t> sent_, received_;
  std::mutex shutdown_mu_;
  bool shut_ = false;
  SerialThread collectives_;
  std::mutex p2p_mu_;
  std::vector<std::weak_ptr<gloo::transport::UnboundBuffer>> p2p_;
};

}  // namespace

bool gloo_available() { return true; }

GroupPtr make_gloo_group(std::shared_ptr<StoreClient> store, const std::string& prefix, int rank, int size,
                         int64_t timeout_ms, const std::string& hostname, const std::string& iface) {
  const char* op = "initProcessGroup";
  KILN_CHECK(size >= 1 && rank >= 0 && rank < size, Value, op, "rank ", rank, " is not in [0, ", size, ")");
  gloo::transport::tcp::attr attr;
  if (!iface.empty()) attr.iface = iface;
  else attr.hostname = hostname.empty() ? local_address_towards(store->host(), store->port()) : hostname;
  const std::string where = str_cat("rank ", rank, " of ", size, " (gloo)");
  std::shared_ptr<gloo::transport::Device> dev;
  try {
    dev = gloo::transport::tcp::CreateDevice(attr);
  } catch (const std::exception& e) {
    throw Error(ErrorCode::Dist, op,
                str_cat(where, ": cannot listen on ", iface.empty() ? "address " + attr.hostname : "interface " + iface,
                        ": ", gloo_message(e)));
  }
  auto ctx = std::make_shared<gloo::rendezvous::Context>(rank, size);
  // Gloo's TCP pairs wait 5 x their context's timeout for the first connection: the pairs get a fifth,
  // so an unreachable peer fails within timeout_ms; the collectives then use the whole timeout.
  ctx->setTimeout(ms(std::max<int64_t>(1, timeout_ms / 5)));
  StoreAdapter adapter(std::move(store), prefix, timeout_ms);
  try {
    ctx->connectFullMesh(adapter, dev);
  } catch (const Error& e) {
    throw Error(ErrorCode::Dist, op, str_cat(where, ": rendezvous failed: ", e.detail()));
  } catch (const std::exception& e) {
    throw Error(ErrorCode::Dist, op, str_cat(where, ": connecting to the other ranks failed: ", gloo_message(e)));
  }
  ctx->setTimeout(ms(timeout_ms));
  return std::make_shared<GlooGroup>(std::move(ctx), std::move(dev), timeout_ms);
}

}  // namespace kiln::dist
#endif  // KILN_GLOO
