// The rendezvous key-value store process groups use to exchange Gloo addresses and NCCL unique ids
// (kiln's torch.distributed.TCPStore): a server on the master process and a client in every rank,
// over plain POSIX TCP sockets. Nothing here knows about JavaScript: Gloo's rendezvous calls the
// client from native threads, the binding (native/binding/dist.cc) from libuv workers.
//
// Server: one thread runs a poll() loop over the listening socket, every connection and a wake-up
// pipe. One thread rather than one per connection because the state (the map, parked waiters) then
// needs no lock, a thousand idle ranks cost a thousand fds rather than a thousand stacks, and
// stop() is one write to the pipe. A get/wait whose keys are missing parks its connection (the
// loop reads no further request from it) until a set/add supplies the keys or the request's own
// deadline passes, when the server answers "timeout"; the client therefore never has a reply in
// flight it did not wait for, and the stream stays in step.
//
// Protocol (all integers little-endian): a frame is u32 body length then the body. Request body:
// u8 op, then per op: strings are u32 length + bytes, key lists u32 count + strings, timeouts and
// deltas i64. Reply body: u8 status (0 ok, 1 timeout, 2 error + string) then the op's result.
// Input is untrusted: a frame longer than kMaxFrame, a key over kMaxKey bytes, a value over
// kMaxValue, a count or string running past the frame's end or an unknown op closes that
// connection and nothing else.
//
// Client: each call borrows an idle connection from a small pool or opens a new one, so calls from
// several threads (a pending get while another thread sets the key) never share a socket nor wait
// on each other. Every call has a deadline; refused connections, timeouts and closed peers throw
// kiln::Error(Dist) naming the op, the address and the key.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace kiln::dist {

inline constexpr uint32_t kMaxKey = 4096;                 // bytes in a key
inline constexpr uint32_t kMaxValue = 64u << 20;          // bytes in a value
inline constexpr uint32_t kMaxKeysPerRequest = 65536;     // keys in one check/wait
inline constexpr uint32_t kMaxFrame = kMaxValue + kMaxKey + 64;
inline constexpr int kMaxConnections = 4096;

class StoreServer {
 public:
  // Listens on host:port (port 0: the kernel picks one; "" or "0.0.0.0": every interface) and starts
  // the serving thread. Throws Dist errors when the address does not resolve or bind.
  StoreServer(const std::string& host, int port);
  ~StoreServer();
  StoreServer(const StoreServer&) = delete;
  StoreServer& operator=(const StoreServer&) = delete;
  int port() const { return port_; }
  // Stops the thread and closes every socket, releasing the port; idempotent.
  void stop();

 private:
  void loop();
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  int port_ = 0;
  std::string host_;
  std::atomic<bool> stopping_{false};
  std::mutex stop_mu_;
  std::thread thread_;
};

class StoreClient {
 public:
  // Connects to host:port, retrying refused connections until timeout_ms passes (the master may
  // start later); timeout_ms is also the deadline of calls that take none.
  StoreClient(std::string host, int port, int64_t timeout_ms);
  ~StoreClient();
  StoreClient(const StoreClient&) = delete;
  StoreClient& operator=(const StoreClient&) = delete;

  void set(const std::string& key, const std::string& value);
  // Waits until key is present (at most timeout_ms) and returns its value.
  std::string get(const std::string& key, int64_t timeout_ms);
  // Adds delta to the integer stored at key (absent: 0) and returns the new value.
  int64_t add(const std::string& key, int64_t delta);
  // Whether every key is present, without waiting.
  bool check(const std::vector<std::string>& keys);
  // Waits until every key is present (at most timeout_ms).
  void wait(const std::vector<std::string>& keys, int64_t timeout_ms);
  // Removes key; whether it was present.
  bool del(const std::string& key);
  int64_t num_keys();
  // Closes idle connections; later calls throw. Calls in flight finish on their own connection.
  void close();
  int64_t timeout_ms() const { return timeout_ms_; }
  const std::string& host() const { return host_; }
  int port() const { return port_; }
  std::string address() const;

 private:
  struct Reply;
  // Sends one request and returns the reply; wait_ms is the server-side wait (get/wait), added to the
  // call's deadline.
  Reply call(const char* op, const std::string& key, const std::string& request, int64_t wait_ms);
  int acquire(const char* op, const std::string& key);
  void release(int fd);

  std::string host_;
  int port_;
  int64_t timeout_ms_;
  std::mutex mu_;
  std::vector<int> idle_;
  bool closed_ = false;
};

}  // namespace kiln::dist
