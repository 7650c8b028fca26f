// TCPStore server (one poll() thread) and client (a pool of blocking sockets with deadlines); the
// header says why and describes the wire format.
#include "store.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <unordered_map>

#include "../core/error.h"

namespace kiln::dist {

namespace {

enum Op : uint8_t { kSet = 1, kGet = 2, kAdd = 3, kCheck = 4, kWait = 5, kDelete = 6, kNumKeys = 7 };
enum Status : uint8_t { kOk = 0, kTimeout = 1, kFailed = 2 };

using Clock = std::chrono::steady_clock;

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
}

void put_u32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; i++) s.push_back(char((v >> (8 * i)) & 0xff));
}
void put_i64(std::string& s, int64_t v) {
  for (int i = 0; i < 8; i++) s.push_back(char((uint64_t(v) >> (8 * i)) & 0xff));
}
void put_str(std::string& s, const std::string& v) {
  put_u32(s, uint32_t(v.size()));
  s += v;
}
uint32_t get_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v |= uint32_t(uint8_t(p[i])) << (8 * i);
  return v;
}
int64_t get_i64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= uint64_t(uint8_t(p[i])) << (8 * i);
  return int64_t(v);
}

// Bounds-checked reader over one frame's body; every read past the end sets bad.
struct Reader {
  const char* p;
  size_t n;
  size_t at = 0;
  bool bad = false;
  bool need(size_t k) {
    if (bad || n - at < k) bad = true;
    return !bad;
  }
  uint8_t u8() { return need(1) ? uint8_t(p[at++]) : 0; }
  uint32_t u32() {
    if (!need(4)) return 0;
    at += 4;
    return get_u32(p + at - 4);
  }
  int64_t i64() {
    if (!need(8)) return 0;
    at += 8;
    return get_i64(p + at - 8);
  }
  std::string str(uint32_t cap) {
    uint32_t len = u32();
    if (bad || len > cap || !need(len)) {
      bad = true;
      return {};
    }
    at += len;
    return std::string(p + at - len, len);
  }
  bool done() const { return !bad && at == n; }
};

std::string frame(const std::string& body) {
  std::string f;
  f.reserve(body.size() + 4);
  put_u32(f, uint32_t(body.size()));
  return f + body;
}

void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK); }

std::string errno_str(int e) { return std::strerror(e); }

// Parses a stored counter; false when the value is not a decimal int64.
bool parse_i64(const std::string& s, int64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return false;
  int64_t v = 0;
  for (; i < s.size(); i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    int d = s[i] - '0';
    if (v > (INT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = s[0] == '-' ? -v : v;
  return true;
}

struct Conn {
  int fd;
  std::string in;   // bytes of the request being read
  std::string out;  // reply bytes not yet written
  // A parked get/wait: its op, keys and deadline.
  uint8_t parked = 0;
  std::vector<std::string> keys;
  int64_t deadline = 0;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Server

StoreServer::StoreServer(const std::string& host, int port) : host_(host) {
  const char* op = "TCPStore.listen";
  KILN_CHECK(port >= 0 && port <= 65535, Dist, op, "port ", port, " is out of range");
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  const std::string port_s = std::to_string(port);
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port_s.c_str(), &hints, &res);
  KILN_CHECK(rc == 0, Dist, op, "cannot resolve ", host, ":", port, ": ", gai_strerror(rc));
  std::string last = "no address";
  for (addrinfo* a = res; a; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last = errno_str(errno);
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 1024) == 0) {
      listen_fd_ = fd;
      break;
    }
    last = errno_str(errno);
    ::close(fd);
  }
  freeaddrinfo(res);
  KILN_CHECK(listen_fd_ >= 0, Dist, op, "cannot listen on ", host, ":", port, ": ", last);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len);
  port_ = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                   : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  set_nonblocking(listen_fd_);
  if (pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
    int e = errno;
    ::close(listen_fd_);
    throw Error(ErrorCode::Dist, op, str_cat("pipe: ", errno_str(e)));
  }
  thread_ = std::thread([this] { loop(); });
}

StoreServer::~StoreServer() { stop(); }

void StoreServer::stop() {
  std::lock_guard<std::mutex> g(stop_mu_);
  if (!thread_.joinable()) return;
  stopping_ = true;
  char c = 1;
  (void)!write(wake_[1], &c, 1);
  thread_.join();
  ::close(wake_[0]);
  ::close(wake_[1]);
  ::close(listen_fd_);
  listen_fd_ = wake_[0] = wake_[1] = -1;
}

void StoreServer::loop() {
  std::unordered_map<std::string, std::string> data;
  std::vector<std::unique_ptr<Conn>> conns;

  auto reply = [](Conn& c, uint8_t status, const std::string& payload) {
    std::string body(1, char(status));
    body += payload;
    c.out += frame(body);
  };
  auto present = [&](const std::vector<std::string>& keys) {
    for (const auto& k : keys)
      if (!data.count(k)) return false;
    return true;
  };
  // Answers a parked request when its keys are present or its deadline passed.
  auto try_unpark = [&](Conn& c, int64_t now) {
    if (!c.parked) return;
    if (present(c.keys)) {
      std::string p;
      if (c.parked == kGet) put_str(p, data[c.keys[0]]);
      reply(c, kOk, p);
    } else if (now >= c.deadline) {
      reply(c, kTimeout, "");
    } else {
      return;
    }
    c.parked = 0;
    c.keys.clear();
  };
  // Handles one complete request body; false closes the connection (malformed input).
  auto handle = [&](Conn& c, const char* p, size_t n) -> bool {
    Reader r{p, n};
    const uint8_t op = r.u8();
    switch (op) {
      case kSet: {
        std::string k = r.str(kMaxKey), v = r.str(kMaxValue);
        if (!r.done()) return false;
        data[std::move(k)] = std::move(v);
        reply(c, kOk, "");
        return true;
      }
      case kGet: {
        std::string k = r.str(kMaxKey);
        int64_t t = r.i64();
        if (!r.done()) return false;
        c.parked = kGet;
        c.keys = {std::move(k)};
        c.deadline = now_ms() + (t < 0 ? 0 : t);
        try_unpark(c, now_ms());
        return true;
      }
      case kAdd: {
        std::string k = r.str(kMaxKey);
        int64_t d = r.i64();
        if (!r.done()) return false;
        int64_t v = 0;
        auto it = data.find(k);
        if (it != data.end() && !parse_i64(it->second, &v)) {
          std::string p;
          put_str(p, "the value stored at the key is not an integer");
          reply(c, kFailed, p);
          return true;
        }
        v = int64_t(uint64_t(v) + uint64_t(d));  // wraps like torch's int64 counter, no UB
        data[k] = std::to_string(v);
        std::string p;
        put_i64(p, v);
        reply(c, kOk, p);
        return true;
      }
      case kCheck:
      case kWait: {
        uint32_t count = r.u32();
        if (count > kMaxKeysPerRequest) return false;
        std::vector<std::string> keys;
        for (uint32_t i = 0; i < count && !r.bad; i++) keys.push_back(r.str(kMaxKey));
        int64_t t = op == kWait ? r.i64() : 0;
        if (!r.done()) return false;
        if (op == kCheck) {
          reply(c, kOk, std::string(1, char(present(keys) ? 1 : 0)));
        } else {
          c.parked = kWait;
          c.keys = std::move(keys);
          c.deadline = now_ms() + (t < 0 ? 0 : t);
          try_unpark(c, now_ms());
        }
        return true;
      }
      case kDelete: {
        std::string k = r.str(kMaxKey);
        if (!r.done()) return false;
        reply(c, kOk, std::string(1, char(data.erase(k) ? 1 : 0)));
        return true;
      }
      case kNumKeys: {
        if (!r.done()) return false;
        std::string p;
        put_i64(p, int64_t(data.size()));
        reply(c, kOk, p);
        return true;
      }
      default:
        return false;
    }
  };
  // Reads what the socket has and handles complete requests; false closes it. A connection with a
  // parked request or unsent reply is not read (one request in flight per connection), which bounds
  // its memory to one frame and one reply.
  auto serve = [&](Conn& c, bool& mutated) -> bool {
    char buf[65536];
    for (;;) {
      while (!c.parked && c.out.empty()) {
        if (c.in.size() < 4) break;
        const uint32_t len = get_u32(c.in.data());
        if (len == 0 || len > kMaxFrame) return false;
        if (c.in.size() - 4 < len) break;
        const uint8_t op = uint8_t(c.in[4]);
        if (!handle(c, c.in.data() + 4, len)) return false;
        if (op == kSet || op == kAdd || op == kDelete) mutated = true;
        c.in.erase(0, 4 + size_t(len));
      }
      if (c.parked || !c.out.empty()) return true;
      if (c.in.size() >= 4) {
        const uint32_t len = get_u32(c.in.data());
        if (len == 0 || len > kMaxFrame) return false;
      }
      ssize_t k = recv(c.fd, buf, sizeof buf, 0);
      if (k == 0) return false;
      if (k < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
      c.in.append(buf, size_t(k));
    }
  };
  auto flush = [](Conn& c) -> bool {
    while (!c.out.empty()) {
      ssize_t k = send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
      if (k < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
      c.out.erase(0, size_t(k));
    }
    return true;
  };

  std::vector<pollfd> fds;
  while (!stopping_) {
    int64_t now = now_ms();
    int64_t next = -1;
    for (auto& c : conns)
      if (c->parked) next = next < 0 ? c->deadline : std::min(next, c->deadline);
    int timeout = next < 0 ? -1 : int(std::max<int64_t>(0, std::min<int64_t>(next - now, 1 << 30)));
    fds.clear();
    fds.push_back({wake_[0], POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    for (auto& c : conns) {
      fds.push_back({c->fd, short(c->out.empty() ? POLLIN : POLLOUT), 0});
    }
    int n = poll(fds.data(), fds.size(), timeout);
    if (n < 0 && errno != EINTR) break;
    if (stopping_) break;
    if (n > 0 && (fds[1].revents & POLLIN)) {
      for (;;) {
        int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) break;
        if (conns.size() >= size_t(kMaxConnections)) {
          ::close(fd);
          continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conns.push_back(std::unique_ptr<Conn>(new Conn{fd}));
      }
    }
    bool mutated = false;
    // The connections polled this round are fds[2 ..]; those accepted just now are after them.
    std::vector<bool> dead(conns.size(), false);
    for (size_t i = 0; i + 2 < fds.size(); i++) {
      Conn& c = *conns[i];
      const short re = fds[i + 2].revents;
      if (re & POLLNVAL) {
        dead[i] = true;
        continue;
      }
      if (re & (POLLOUT | POLLERR | POLLHUP)) {
        if (!flush(c)) {
          dead[i] = true;
          continue;
        }
      }
      if (re & (POLLIN | POLLERR | POLLHUP)) {
        if (c.parked) {
          // A parked client sends nothing more: data or EOF here means it gave up or misbehaves.
          char b;
          ssize_t k = recv(c.fd, &b, 1, MSG_PEEK);
          if (k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) || k > 0) dead[i] = true;
          continue;
        }
        if (!serve(c, mutated)) dead[i] = true;
      }
    }
    now = now_ms();
    for (size_t i = 0; i < conns.size(); i++) {
      if (i < dead.size() && dead[i]) continue;
      Conn& c = *conns[i];
      if (c.parked) try_unpark(c, now);
      if (!c.out.empty() && !flush(c)) {
        if (i < dead.size()) dead[i] = true;
        continue;
      }
      // A reply sent in full lets the connection's next (already buffered) request run.
      if (c.out.empty() && !c.parked && c.in.size() >= 4 && i < dead.size()) {
        if (!serve(c, mutated)) dead[i] = true;
      }
    }
    if (mutated) {
      for (size_t i = 0; i < conns.size(); i++) {
        if (i < dead.size() && dead[i]) continue;
        Conn& c = *conns[i];
        if (!c.parked) continue;
        try_unpark(c, now);
        if (!flush(c) && i < dead.size()) dead[i] = true;
      }
    }
    size_t w = 0;
    for (size_t i = 0; i < conns.size(); i++) {
      if (i < dead.size() && dead[i]) {
        ::close(conns[i]->fd);
        continue;
      }
      conns[w++] = std::move(conns[i]);
    }
    conns.resize(w);
  }
  for (auto& c : conns) ::close(c->fd);
}

// ---------------------------------------------------------------------------------------------
// Client

struct StoreClient::Reply {
  uint8_t status;
  std::string body;  // after the status byte
};

namespace {

[[noreturn]] void fail(const char* op, const std::string& addr, const std::string& key, const std::string& why) {
  throw Error(ErrorCode::Dist, op,
              key.empty() ? str_cat(addr, ": ", why) : str_cat("key '", key, "' at ", addr, ": ", why));
}

// Waits for fd to be ready for events before deadline; false on timeout.
bool wait_fd(int fd, short events, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - now_ms();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    int n = poll(&p, 1, int(std::min<int64_t>(left, 1 << 30)));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return true;  // let the following call report the error
  }
}

}  // namespace

StoreClient::StoreClient(std::string host, int port, int64_t timeout_ms)
    : host_(std::move(host)), port_(port), timeout_ms_(timeout_ms) {
  KILN_CHECK(port > 0 && port <= 65535, Dist, "TCPStore.connect", "port ", port, " is out of range");
  KILN_CHECK(timeout_ms > 0, Dist, "TCPStore.connect", "timeout ", timeout_ms, " ms is not positive");
  release(acquire("TCPStore.connect", ""));
}

StoreClient::~StoreClient() { close(); }

std::string StoreClient::address() const { return str_cat(host_, ":", port_); }

void StoreClient::close() {
  std::lock_guard<std::mutex> g(mu_);
  closed_ = true;
  for (int fd : idle_) ::close(fd);
  idle_.clear();
}

// An idle pooled connection, or a new one: refused and unreachable addresses are retried every
// 100 ms until the client's timeout passes.
int StoreClient::acquire(const char* op, const std::string& key) {
  {
    std::lock_guard<std::mutex> g(mu_);
    if (closed_) fail(op, address(), key, "the store client is closed");
    if (!idle_.empty()) {
      int fd = idle_.back();
      idle_.pop_back();
      return fd;
    }
  }
  const int64_t deadline = now_ms() + timeout_ms_;
  std::string last = "timed out";
  for (;;) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    const std::string port_s = std::to_string(port_);
    int rc = getaddrinfo(host_.c_str(), port_s.c_str(), &hints, &res);
    if (rc != 0) {
      last = gai_strerror(rc);
    } else {
      for (addrinfo* a = res; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0) {
          last = errno_str(errno);
          continue;
        }
        int err = 0;
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
          err = errno;
          if (err == EINPROGRESS) {
            if (!wait_fd(fd, POLLOUT, std::min(deadline, now_ms() + 1000))) {
              err = ETIMEDOUT;
            } else {
              socklen_t len = sizeof err;
              getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
            }
          }
        }
        if (err == 0) {
          freeaddrinfo(res);
          fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) & ~O_NONBLOCK);
          int one = 1;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          return fd;
        }
        // An attempt cut short by the overall deadline keeps the previous attempt's reason (refused).
        if (!(err == ETIMEDOUT && now_ms() >= deadline && last != "timed out")) last = errno_str(err);
        ::close(fd);
      }
      freeaddrinfo(res);
    }
    const int64_t left = deadline - now_ms();
    if (left <= 0)
      fail(op, address(), key, str_cat("could not connect within ", timeout_ms_, " ms (last error: ", last, ")"));
    usleep(useconds_t(std::min<int64_t>(left, 100) * 1000));
  }
}

void StoreClient::release(int fd) {
  std::lock_guard<std::mutex> g(mu_);
  if (closed_ || idle_.size() >= 8) {
    ::close(fd);
    return;
  }
  idle_.push_back(fd);
}

StoreClient::Reply StoreClient::call(const char* op, const std::string& key, const std::string& request,
                                     int64_t wait_ms) {
  if (request.size() + 4 > kMaxFrame) fail(op, address(), key, str_cat("request is larger than ", kMaxFrame, " bytes"));
  const int fd = acquire(op, key);
  // The server answers a get/wait by its own deadline; the client allows the store timeout on top
  // for the network before it gives up on the connection.
  const int64_t deadline = now_ms() + wait_ms + timeout_ms_;
  auto broken = [&](const std::string& why) {
    ::close(fd);
    fail(op, address(), key, why);
  };
  const std::string f = frame(request);
  size_t sent = 0;
  while (sent < f.size()) {
    if (!wait_fd(fd, POLLOUT, deadline)) broken("timed out sending the request");
    ssize_t k = send(fd, f.data() + sent, f.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
      broken(str_cat("send failed: ", errno_str(errno)));
    }
    sent += size_t(k);
  }
  auto read_exact = [&](char* p, size_t n) {
    size_t got = 0;
    while (got < n) {
      if (!wait_fd(fd, POLLIN, deadline))
        broken(wait_ms > 0 ? str_cat("timed out after ", wait_ms, " ms (no reply from the server)")
                           : str_cat("timed out after ", timeout_ms_, " ms waiting for the server"));
      ssize_t k = recv(fd, p + got, n - got, MSG_DONTWAIT);
      if (k == 0) broken("the server closed the connection");
      if (k < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
        broken(str_cat("recv failed: ", errno_str(errno)));
      }
      got += size_t(k);
    }
  };
  char hdr[4];
  read_exact(hdr, 4);
  const uint32_t len = get_u32(hdr);
  if (len == 0 || len > kMaxFrame) broken(str_cat("malformed reply (length ", len, ")"));
  std::string body(len, '\0');
  read_exact(&body[0], len);
  release(fd);
  Reply r{uint8_t(body[0]), body.substr(1)};
  if (r.status == kTimeout) fail(op, address(), key, str_cat("timed out after ", wait_ms, " ms"));
  if (r.status == kFailed) {
    Reader rd{r.body.data(), r.body.size()};
    fail(op, address(), key, rd.str(kMaxFrame));
  }
  if (r.status != kOk) fail(op, address(), key, "malformed reply");
  return r;
}

namespace {
void check_key(const char* op, const std::string& addr, const std::string& key) {
  if (key.size() > kMaxKey) fail(op, addr, key.substr(0, 32) + "...", str_cat("key is longer than ", kMaxKey, " bytes"));
}
std::string keys_str(const std::vector<std::string>& keys) {
  std::string s;
  for (size_t i = 0; i < keys.size() && i < 8; i++) s += (i ? "', '" : "") + keys[i];
  if (keys.size() > 8) s += str_cat("' and ", keys.size() - 8, " more");
  return s;
}
// The request body of check/wait up to the key list.
std::string keys_request(uint8_t code, const char* op, const std::string& addr, const std::vector<std::string>& keys) {
  if (keys.size() > kMaxKeysPerRequest) fail(op, addr, "", str_cat("more than ", kMaxKeysPerRequest, " keys"));
  std::string req(1, char(code));
  put_u32(req, uint32_t(keys.size()));
  for (const auto& k : keys) {
    check_key(op, addr, k);
    put_str(req, k);
  }
  return req;
}
}  // namespace

void StoreClient::set(const std::string& key, const std::string& value) {
  const char* op = "TCPStore.set";
  check_key(op, address(), key);
  if (value.size() > kMaxValue) fail(op, address(), key, str_cat("value is longer than ", kMaxValue, " bytes"));
  std::string req(1, char(kSet));
  put_str(req, key);
  put_str(req, value);
  call(op, key, req, 0);
}

std::string StoreClient::get(const std::string& key, int64_t timeout_ms) {
  const char* op = "TCPStore.get";
  check_key(op, address(), key);
  std::string req(1, char(kGet));
  put_str(req, key);
  put_i64(req, timeout_ms);
  Reply r = call(op, key, req, timeout_ms);
  Reader rd{r.body.data(), r.body.size()};
  std::string v = rd.str(kMaxValue);
  if (!rd.done()) fail(op, address(), key, "malformed reply");
  return v;
}

int64_t StoreClient::add(const std::string& key, int64_t delta) {
  const char* op = "TCPStore.add";
  check_key(op, address(), key);
  std::string req(1, char(kAdd));
  put_str(req, key);
  put_i64(req, delta);
  Reply r = call(op, key, req, 0);
  if (r.body.size() != 8) fail(op, address(), key, "malformed reply");
  return get_i64(r.body.data());
}

bool StoreClient::check(const std::vector<std::string>& keys) {
  const char* op = "TCPStore.check";
  Reply r = call(op, keys_str(keys), keys_request(kCheck, op, address(), keys), 0);
  if (r.body.size() != 1) fail(op, address(), keys_str(keys), "malformed reply");
  return r.body[0] != 0;
}

void StoreClient::wait(const std::vector<std::string>& keys, int64_t timeout_ms) {
  const char* op = "TCPStore.wait";
  std::string req = keys_request(kWait, op, address(), keys);
  put_i64(req, timeout_ms);
  call(op, keys_str(keys), req, timeout_ms);
}

bool StoreClient::del(const std::string& key) {
  const char* op = "TCPStore.deleteKey";
  check_key(op, address(), key);
  std::string req(1, char(kDelete));
  put_str(req, key);
  Reply r = call(op, key, req, 0);
  if (r.body.size() != 1) fail(op, address(), key, "malformed reply");
  return r.body[0] != 0;
}

int64_t StoreClient::num_keys() {
  const char* op = "TCPStore.numKeys";
  Reply r = call(op, "", std::string(1, char(kNumKeys)), 0);
  if (r.body.size() != 8) fail(op, address(), "", "malformed reply");
  return get_i64(r.body.data());
}

}  // namespace kiln::dist
