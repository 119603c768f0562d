// netpold_native: what Node.js cannot do by itself for a TPROXY data plane (Linux only).
//
//   tcpListen(family, address, port, backlog) -> fd
//       A listening TCP socket with IP_TRANSPARENT / IPV6_TRANSPARENT (IPV6_V6ONLY=1 for v6),
//       SO_REUSEADDR, non-blocking. JS adopts it with net.Server#listen({ fd }); accepted
//       sockets have the ORIGINAL destination as their local address under TPROXY.
//   tcpConnect({family, srcAddress, srcPort, dstAddress, dstPort, mark?, timeoutMs}, cb)
//       A transparent upstream connection from a foreign source address: IP_TRANSPARENT,
//       bind(src), SO_MARK, non-blocking connect, then a uv_poll_t (writable) and a uv_timer_t
//       (timeout) on Node's loop; cb(err, fd) with the connected fd, or an error carrying
//       code/errno/syscall. Every failure, including setup (EADDRINUSE on bind), reaches cb,
//       always asynchronously; only invalid arguments throw (TypeError).
//   udpOpen({family, address, port, transparent, recvOrigDst, mark?, reuse?}, onMessage)
//       A UDP socket read with recvmsg (IP_RECVORIGDSTADDR / IPV6_RECVORIGDSTADDR gives the
//       original destination), driven by a uv_poll_t on Node's loop, up to 64 datagrams per
//       wakeup. onMessage(buf, srcAddr, srcPort, dstAddr, dstPort). The handle has send, connect,
//       close, counters, fd, localAddress, localPort.
//   spliceRelay(clientFd, upstreamFd, flags, onDone) -> id; spliceAbort(id); spliceProgress();
//   spliceStats(); tcpClose(fd, reset)
//       The byte path of an allowed TCP flow in the kernel: splice(2) through a pipe per
//       direction on the addon's own epoll thread, JS told once when the flow ends. See the
//       "spliceRelay" section below.
//
// Errors: system errors are Error objects with code (errno name, e.g. 'ECONNREFUSED'), errno
// (negative, as in Node's own system errors) and syscall, and a message naming the call.
// Invalid arguments throw TypeError with code 'ERR_INVALID_ARG_VALUE'. Nothing here aborts the
// process on bad input. Every fd is closed on every error path; a UDP handle that JS drops
// without close() is closed by its finalizer; everything still open is closed when the Node
// environment is torn down (worker exit).
//
// tcpConnect hands JS a raw fd: the JS relay wraps it in a net.Socket, the splice relay gives it
// to spliceRelay as it is.

#include <napi.h>
#include <uv.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <deque>
#include <future>
#include <mutex>
#include <new>
#include <set>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <vector>

#ifndef IP_TRANSPARENT
#define IP_TRANSPARENT 19
#endif
#ifndef IP_ORIGDSTADDR
#define IP_ORIGDSTADDR 20
#endif
#ifndef IP_RECVORIGDSTADDR
#define IP_RECVORIGDSTADDR IP_ORIGDSTADDR
#endif
#ifndef IPV6_TRANSPARENT
#define IPV6_TRANSPARENT 75
#endif
#ifndef IPV6_ORIGDSTADDR
#define IPV6_ORIGDSTADDR 74
#endif
#ifndef IPV6_RECVORIGDSTADDR
#define IPV6_RECVORIGDSTADDR IPV6_ORIGDSTADDR
#endif
#ifndef SO_MARK
#define SO_MARK 36
#endif

namespace {

constexpr int kMaxDatagramsPerWakeup = 64;
constexpr size_t kRecvBufferSize = 65536;  // > largest UDP payload without jumbograms

// ---------------------------------------------------------------------------------------------
// Errors

std::string ErrnoName(int err) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  const char* name = strerrorname_np(err);
  if (name != nullptr) return name;
#else
  const char* name = uv_err_name(-err);
  if (name != nullptr && strncmp(name, "Unknown", 7) != 0) return name;
#endif
  return "E" + std::to_string(err);
}

// "<call>: <syscall>[ <detail>] failed: <CODE> (<strerror>)[, <where>]"
Napi::Error SysError(Napi::Env env, int err, const std::string& call, const std::string& syscall,
                     const std::string& detail, const std::string& where = "") {
  std::string code = ErrnoName(err);
  std::string msg = call + ": " + syscall;
  if (!detail.empty()) msg += " " + detail;
  msg += " failed: " + code + " (" + strerror(err) + ")";
  if (!where.empty()) msg += ", " + where;
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  return e;
}

[[noreturn]] void ThrowTypeError(Napi::Env env, const std::string& msg) {
  Napi::TypeError e = Napi::TypeError::New(env, msg);
  e.Set("code", Napi::String::New(env, "ERR_INVALID_ARG_VALUE"));
  throw e;
}

// ---------------------------------------------------------------------------------------------
// Arguments

int ArgFamily(Napi::Env env, Napi::Value v, const std::string& call) {
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (d == 4) return 4;
    if (d == 6) return 6;
  }
  ThrowTypeError(env, call + ": family must be 4 or 6");
}

int64_t ArgInt(Napi::Env env, Napi::Value v, const std::string& call, const char* name, int64_t min,
               int64_t max) {
  if (!v.IsNumber()) ThrowTypeError(env, call + ": " + name + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::floor(d) != d || d < static_cast<double>(min) ||
      d > static_cast<double>(max)) {
    ThrowTypeError(env, call + ": " + name + " must be an integer from " + std::to_string(min) +
                            " to " + std::to_string(max));
  }
  return static_cast<int64_t>(d);
}

std::string ArgString(Napi::Env env, Napi::Value v, const std::string& call, const char* name) {
  if (!v.IsString()) ThrowTypeError(env, call + ": " + name + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

bool ArgBool(Napi::Env env, Napi::Value v, const std::string& call, const char* name, bool dflt) {
  if (v.IsUndefined()) return dflt;
  if (!v.IsBoolean()) ThrowTypeError(env, call + ": " + name + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

// mark: undefined or null = not set; else an unsigned 32-bit integer.
bool ArgMark(Napi::Env env, Napi::Value v, const std::string& call, uint32_t* out) {
  if (v.IsUndefined() || v.IsNull()) return false;
  *out = static_cast<uint32_t>(ArgInt(env, v, call, "mark", 0, 0xffffffffLL));
  return true;
}

Napi::Object ArgObject(Napi::Env env, Napi::Value v, const std::string& call, const char* name) {
  if (!v.IsObject() || v.IsArray() || v.IsFunction()) {
    ThrowTypeError(env, call + ": " + name + " must be an object");
  }
  return v.As<Napi::Object>();
}

Napi::Function ArgFunction(Napi::Env env, Napi::Value v, const std::string& call,
                           const char* name) {
  if (!v.IsFunction()) ThrowTypeError(env, call + ": " + name + " must be a function");
  return v.As<Napi::Function>();
}

struct SockAddr {
  sockaddr_storage ss{};
  socklen_t len = 0;
  const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&ss); }
  uint16_t Port() const {
    return ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port
                                          : reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
  }
  void SetPort(uint16_t port) {
    if (ss.ss_family == AF_INET6) reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port = htons(port);
    else reinterpret_cast<sockaddr_in*>(&ss)->sin_port = htons(port);
  }
};

// Parses a numeric IPv4/IPv6 address of the given family (no names, no zone ids).
SockAddr ArgAddress(Napi::Env env, int family, const std::string& address, int port,
                    const std::string& call, const char* name) {
  SockAddr a;
  if (address.size() > 64 || address.find('\0') != std::string::npos) {
    ThrowTypeError(env, call + ": " + name + " is not an IPv" + std::to_string(family) + " address");
  }
  if (family == 4) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&a.ss);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, address.c_str(), &sin->sin_addr) != 1) {
      ThrowTypeError(env, call + ": " + name + " '" + address + "' is not an IPv4 address");
    }
    a.len = sizeof(sockaddr_in);
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&a.ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, address.c_str(), &sin6->sin6_addr) != 1) {
      ThrowTypeError(env, call + ": " + name + " '" + address + "' is not an IPv6 address");
    }
    a.len = sizeof(sockaddr_in6);
  }
  return a;
}

// Formats a sockaddr as address text and port; false if not AF_INET/AF_INET6.
bool FormatAddress(const sockaddr* sa, std::string* addr, int* port) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (sa->sa_family == AF_INET) {
    auto* sin = reinterpret_cast<const sockaddr_in*>(sa);
    if (inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf) == nullptr) return false;
    *port = ntohs(sin->sin_port);
  } else if (sa->sa_family == AF_INET6) {
    auto* sin6 = reinterpret_cast<const sockaddr_in6*>(sa);
    if (inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof buf) == nullptr) return false;
    *port = ntohs(sin6->sin6_port);
  } else {
    return false;
  }
  *addr = buf;
  return true;
}

std::string Describe(const SockAddr& a) {
  std::string addr;
  int port = 0;
  if (!FormatAddress(a.sa(), &addr, &port)) return "?";
  return a.ss.ss_family == AF_INET6 ? "[" + addr + "]:" + std::to_string(port)
                                    : addr + ":" + std::to_string(port);
}

// ---------------------------------------------------------------------------------------------
// Sockets

// Owns an fd until released; closes it on every early exit.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  int Release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void Reset() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// A failed step: errno and the syscall (with its option) that failed.
struct Failure {
  int err = 0;
  std::string syscall;
  std::string detail;
  explicit operator bool() const { return err != 0; }
};

Failure SetInt(int fd, int level, int opt, int value, const char* optname) {
  if (setsockopt(fd, level, opt, &value, sizeof value) != 0) {
    return Failure{errno, "setsockopt", optname};
  }
  return Failure{};
}

Failure SetTransparent(int fd, int family) {
  return family == 6 ? SetInt(fd, IPPROTO_IPV6, IPV6_TRANSPARENT, 1, "IPV6_TRANSPARENT")
                     : SetInt(fd, IPPROTO_IP, IP_TRANSPARENT, 1, "IP_TRANSPARENT");
}

// Upstream ports. An upstream connection (TCP or UDP) leaves from the client's address but
// never from its port: with the client's exact 4-tuple, the kernel's connection tracking takes
// the upstream leg for the client leg it already knows (one entry, two TCP sequence spaces), so
// the node's source NAT (masquerade of pod traffic leaving the cluster) never runs for it and
// stateful rules see invalid packets. A port of its own gives the leg its own entry (tested end
// to end: egress through a masquerading node).

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

Failure SetMark(int fd, uint32_t mark) {
  if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) {
    return Failure{errno, "setsockopt", "SO_MARK"};
  }
  return Failure{};
}

// ---------------------------------------------------------------------------------------------
// Per-environment state: everything still open, closed when the environment goes away.

struct ConnectReq;
class UdpSocket;
namespace splice {
struct Channel;
struct FastState;
}

struct AddonData {
  std::set<ConnectReq*> connects;
  std::set<UdpSocket*> udps;
  Napi::FunctionReference udpConstructor;
  bool tearingDown = false;
  // spliceRelay (JS thread only): this environment's completion channel (created on first
  // use), the onDone callback of each live relay by id, and the async context they run in.
  std::shared_ptr<splice::Channel> spliceChannel;
  std::unordered_map<uint64_t, Napi::FunctionReference> spliceWaiters;
  Napi::AsyncContext* spliceContext = nullptr;
  // The fast path (fastOpen), JS thread only.
  splice::FastState* fast = nullptr;
};

uv_loop_t* LoopOf(Napi::Env env) {
  uv_loop_t* loop = nullptr;
  napi_status st = napi_get_uv_event_loop(env, &loop);
  if (st != napi_ok || loop == nullptr) throw Napi::Error::New(env, "netpold_native: no event loop");
  return loop;
}

// Runs code that touches JS from a libuv callback (no JS on the stack). An exception thrown
// by a JS callback becomes an uncaught exception of the process, as for any event listener;
// failures of N-API itself (for example while a worker is being terminated) are dropped. No
// C++ exception ever escapes into libuv.
template <typename F>
void FromLoop(napi_env env, F&& f) {
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  try {
    f();
  } catch (const Napi::Error& e) {
    try {
      Napi::Object v = e.Value();
      if (!v.IsEmpty()) napi_fatal_exception(env, v);
    } catch (...) {
    }
  } catch (...) {
  }
  napi_close_handle_scope(env, scope);
}

// ---------------------------------------------------------------------------------------------
// tcpListen

Napi::Value TcpListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string call = "tcpListen";
  if (info.Length() < 4) ThrowTypeError(env, call + ": expected (family, address, port, backlog)");
  int family = ArgFamily(env, info[0], call);
  std::string address = ArgString(env, info[1], call, "address");
  int port = static_cast<int>(ArgInt(env, info[2], call, "port", 0, 65535));
  int backlog = static_cast<int>(ArgInt(env, info[3], call, "backlog", 1, 65535));
  SockAddr addr = ArgAddress(env, family, address, port, call, "address");
  std::string where = "on " + Describe(addr);

  Fd fd(socket(family == 6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) throw SysError(env, errno, call, "socket", "", where);
  Failure f = SetInt(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
  if (!f && family == 6) f = SetInt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY");
  if (!f) f = SetTransparent(fd.get(), family);
  if (f) throw SysError(env, f.err, call, f.syscall, f.detail, where);
  if (bind(fd.get(), addr.sa(), addr.len) != 0) throw SysError(env, errno, call, "bind", "", where);
  if (listen(fd.get(), backlog) != 0) throw SysError(env, errno, call, "listen", "", where);
  return Napi::Number::New(env, fd.Release());
}

// ---------------------------------------------------------------------------------------------
// tcpConnect

struct ConnectReq {
  napi_env env = nullptr;
  AddonData* data = nullptr;
  Napi::FunctionReference callback;
  Napi::AsyncContext* context = nullptr;
  uv_poll_t poll{};
  uv_timer_t timer{};
  bool pollStarted = false;  // poll initialised (needs closing)
  bool timerStarted = false;
  int openHandles = 0;  // handles whose close callback has not run yet
  bool done = false;
  int fd = -1;
  Failure failure;  // set when setup failed (reported from the timer, asynchronously)
  std::string where;
};

void OnConnectHandleClosed(uv_handle_t* h) {
  auto* r = static_cast<ConnectReq*>(h->data);
  if (--r->openHandles == 0) delete r;
}

// Stops and closes the libuv handles (and the fd unless it was handed to JS). The req frees
// itself once both handles are closed.
void ReleaseConnect(ConnectReq* r) {
  if (r->pollStarted) {
    r->pollStarted = false;
    uv_poll_stop(&r->poll);
    uv_close(reinterpret_cast<uv_handle_t*>(&r->poll), OnConnectHandleClosed);
  }
  if (r->timerStarted) {
    r->timerStarted = false;
    uv_timer_stop(&r->timer);
    uv_close(reinterpret_cast<uv_handle_t*>(&r->timer), OnConnectHandleClosed);
  }
  if (r->fd >= 0) {
    close(r->fd);
    r->fd = -1;
  }
}

void FinishConnect(ConnectReq* r, Failure failure) {
  if (r->done) return;
  r->done = true;
  r->data->connects.erase(r);
  int fd = -1;
  if (!failure) {
    fd = r->fd;
    r->fd = -1;  // handed to JS
  }
  // The poll handle must be closed (fd removed from epoll) before JS wraps the fd.
  ReleaseConnect(r);
  Napi::FunctionReference cb = std::move(r->callback);
  Napi::AsyncContext* ctx = r->context;
  r->context = nullptr;
  const std::string where = r->where;  // r is freed once its handles have closed
  bool handedOver = false;
  FromLoop(r->env, [&] {
    Napi::Env env(r->env);
    Napi::HandleScope scope(env);
    Napi::Value err =
        failure ? SysError(env, failure.err, "tcpConnect", failure.syscall, failure.detail, where).Value()
                : env.Null();
    Napi::Value fdv = Napi::Number::New(env, fd);
    handedOver = true;
    cb.MakeCallback(env.Global(), {err, fdv}, *ctx);
  });
  if (!handedOver && fd >= 0) close(fd);  // JS never saw it
  delete ctx;
}

void OnConnectWritable(uv_poll_t* h, int status, int events) {
  auto* r = static_cast<ConnectReq*>(h->data);
  if (r->done) return;
  // libuv reports POLLERR as status UV_EBADF: the socket's own error says what happened.
  int soerr = 0;
  socklen_t len = sizeof soerr;
  if (getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) soerr = errno;
  if (soerr == 0 && status < 0) soerr = -status;
  FinishConnect(r, soerr != 0 ? Failure{soerr, "connect", ""} : Failure{});
}

void OnConnectTimer(uv_timer_t* h) {
  auto* r = static_cast<ConnectReq*>(h->data);
  if (r->done) return;
  if (r->failure) {
    FinishConnect(r, r->failure);  // a setup failure, delivered asynchronously
  } else if (r->pollStarted) {
    FinishConnect(r, Failure{ETIMEDOUT, "connect", ""});
  } else {
    FinishConnect(r, Failure{});  // connect() completed at once
  }
}

Napi::Value TcpConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string call = "tcpConnect";
  if (info.Length() < 2) ThrowTypeError(env, call + ": expected (options, callback)");
  Napi::Object o = ArgObject(env, info[0], call, "options");
  Napi::Function cb = ArgFunction(env, info[1], call, "callback");
  int family = ArgFamily(env, o.Get("family"), call);
  std::string srcAddress = ArgString(env, o.Get("srcAddress"), call, "srcAddress");
  int srcPort = static_cast<int>(ArgInt(env, o.Get("srcPort"), call, "srcPort", 0, 65535));
  std::string dstAddress = ArgString(env, o.Get("dstAddress"), call, "dstAddress");
  int dstPort = static_cast<int>(ArgInt(env, o.Get("dstPort"), call, "dstPort", 1, 65535));
  uint32_t mark = 0;
  bool hasMark = ArgMark(env, o.Get("mark"), call, &mark);
  Napi::Value avoid = o.Get("avoidPort");
  uint16_t avoidPort = avoid.IsUndefined() ? 0 : static_cast<uint16_t>(ArgInt(env, avoid, call, "avoidPort", 0, 65535));
  int64_t timeoutMs = ArgInt(env, o.Get("timeoutMs"), call, "timeoutMs", 1, 2147483647LL);
  SockAddr src = ArgAddress(env, family, srcAddress, srcPort, call, "srcAddress");
  SockAddr dst = ArgAddress(env, family, dstAddress, dstPort, call, "dstAddress");
  uv_loop_t* loop = LoopOf(env);
  auto* data = env.GetInstanceData<AddonData>();

  auto* r = new ConnectReq();
  r->env = env;
  r->data = data;
  r->where = "to " + Describe(dst) + " from " + Describe(src);
  r->callback = Napi::Persistent(cb);
  r->context = new Napi::AsyncContext(env, "netpold:tcpConnect");
  // The timer exists in every case: it delivers setup failures and immediate success on a
  // later turn of the loop (never synchronously), and the timeout otherwise.
  uv_timer_init(loop, &r->timer);
  r->timer.data = r;
  r->timerStarted = true;
  r->openHandles = 1;
  data->connects.insert(r);

  Failure f;
  bool inProgress = false;
  // socket, options, bind, non-blocking connect: into r->fd, f and inProgress.
  auto start = [&]() {
    int fd = socket(family == 6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) f = Failure{errno, "socket", ""};
    r->fd = fd;
    if (!f) f = SetTransparent(fd, family);
    if (!f && srcPort != 0) f = SetInt(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
    if (!f && hasMark) f = SetMark(fd, mark);
    // Port 0: picked at connect(), unique for the 4-tuple (see "Upstream ports").
    if (!f && srcPort == 0) f = SetInt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1, "IP_BIND_ADDRESS_NO_PORT");
    if (!f && bind(fd, src.sa(), src.len) != 0) f = Failure{errno, "bind", ""};
    if (!f) {
      int rc;
      do {
        rc = connect(fd, dst.sa(), dst.len);
      } while (rc != 0 && errno == EINTR);
      if (rc != 0) {
        if (errno == EINPROGRESS) {
          inProgress = true;
        } else {
          f = Failure{errno, "connect", ""};
        }
      }
    }
  };
  start();
  if (!f && srcPort == 0 && avoidPort != 0) {
    // The kernel picked the port to avoid (the client's: see "Upstream ports")? Another one,
    // connected while this one still holds it.
    SockAddr got;
    got.len = sizeof got.ss;
    if (getsockname(r->fd, reinterpret_cast<sockaddr*>(&got.ss), &got.len) == 0 && got.Port() == avoidPort) {
      int first = r->fd;
      inProgress = false;
      start();
      close(first);
    }
  }
  if (!f && inProgress) {
    int rc = uv_poll_init(loop, &r->poll, r->fd);
    if (rc == 0) {
      r->poll.data = r;
      r->pollStarted = true;
      r->openHandles++;
      rc = uv_poll_start(&r->poll, UV_WRITABLE, OnConnectWritable);
    }
    if (rc != 0) f = Failure{-rc, "uv_poll_start", ""};
  }
  if (f) {
    r->failure = f;
    if (r->pollStarted) {  // close the poll (and its epoll entry) before the fd
      r->pollStarted = false;
      uv_poll_stop(&r->poll);
      uv_close(reinterpret_cast<uv_handle_t*>(&r->poll), OnConnectHandleClosed);
    }
    if (r->fd >= 0) {
      close(r->fd);
      r->fd = -1;
    }
  }
  uv_timer_start(&r->timer, OnConnectTimer, (!f && inProgress) ? static_cast<uint64_t>(timeoutMs) : 0, 0);
  return env.Undefined();
}

// ---------------------------------------------------------------------------------------------
// UDP

thread_local unsigned char recvBuffer[kRecvBufferSize];

void OnUdpPollClosed(uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); }

class UdpSocket : public Napi::ObjectWrap<UdpSocket> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "UdpHandle",
                       {
                           InstanceMethod<&UdpSocket::Send>("send"),
                           InstanceMethod<&UdpSocket::Connect>("connect"),
                           InstanceMethod<&UdpSocket::Close>("close"),
                           InstanceMethod<&UdpSocket::Counters>("counters"),
                           InstanceAccessor<&UdpSocket::GetFd>("fd"),
                           InstanceAccessor<&UdpSocket::GetLocalAddress>("localAddress"),
                           InstanceAccessor<&UdpSocket::GetLocalPort>("localPort"),
                       });
  }

  // Constructed empty (closed) by the `new` in udpOpen, then opened; JS cannot reach the
  // constructor itself.
  explicit UdpSocket(const Napi::CallbackInfo& info) : Napi::ObjectWrap<UdpSocket>(info) {
    data_ = info.Env().GetInstanceData<AddonData>();
  }

  ~UdpSocket() override { CloseNow(); }

  // Sets up socket, options, bind and the poll; throws (closing the fd) on failure.
  void Open(Napi::Env env, Napi::Object o, Napi::Function onMessage) {
    const std::string call = "udpOpen";
    int family = ArgFamily(env, o.Get("family"), call);
    std::string address = ArgString(env, o.Get("address"), call, "address");
    int port = static_cast<int>(ArgInt(env, o.Get("port"), call, "port", 0, 65535));
    bool transparent = ArgBool(env, o.Get("transparent"), call, "transparent", false);
    bool recvOrigDst = ArgBool(env, o.Get("recvOrigDst"), call, "recvOrigDst", false);
    bool reuse = ArgBool(env, o.Get("reuse"), call, "reuse", false);
    uint32_t mark = 0;
    bool hasMark = ArgMark(env, o.Get("mark"), call, &mark);
    SockAddr addr = ArgAddress(env, family, address, port, call, "address");
    std::string where = "on " + Describe(addr);
    uv_loop_t* loop = LoopOf(env);

    Fd fd(socket(family == 6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) throw SysError(env, errno, call, "socket", "", where);
    Failure f = SetInt(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
    if (!f && reuse) f = SetInt(fd.get(), SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
    if (!f && family == 6) f = SetInt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY");
    if (!f && transparent) f = SetTransparent(fd.get(), family);
    if (!f && recvOrigDst) {
      f = family == 6 ? SetInt(fd.get(), IPPROTO_IPV6, IPV6_RECVORIGDSTADDR, 1, "IPV6_RECVORIGDSTADDR")
                      : SetInt(fd.get(), IPPROTO_IP, IP_RECVORIGDSTADDR, 1, "IP_RECVORIGDSTADDR");
    }
    if (!f && hasMark) f = SetMark(fd.get(), mark);
    if (f) throw SysError(env, f.err, call, f.syscall, f.detail, where);
    if (bind(fd.get(), addr.sa(), addr.len) != 0) throw SysError(env, errno, call, "bind", "", where);
    SockAddr local;
    local.len = sizeof local.ss;
    if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local.ss), &local.len) != 0) {
      throw SysError(env, errno, call, "getsockname", "", where);
    }
    FormatAddress(local.sa(), &localAddress_, &localPort_);

    auto* poll = new uv_poll_t();
    int rc = uv_poll_init(loop, poll, fd.get());
    if (rc != 0) {
      delete poll;
      throw SysError(env, -rc, call, "uv_poll_init", "", where);
    }
    poll->data = this;
    rc = uv_poll_start(poll, UV_READABLE, OnReadable);
    if (rc != 0) {
      poll->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(poll), OnUdpPollClosed);
      throw SysError(env, -rc, call, "uv_poll_start", "", where);
    }
    poll_ = poll;
    family_ = family;
    recvOrigDst_ = recvOrigDst;
    onMessage_ = Napi::Persistent(onMessage);
    context_ = new Napi::AsyncContext(env, "netpold:udp");
    fd_ = fd.Release();
    data_->udps.insert(this);
  }

  // Idempotent; safe from JS, from the finalizer and from environment teardown.
  void CloseNow() {
    if (poll_ != nullptr) {
      poll_->data = nullptr;
      uv_poll_stop(poll_);
      uv_close(reinterpret_cast<uv_handle_t*>(poll_), OnUdpPollClosed);  // removes fd from epoll
      poll_ = nullptr;
    }
    if (fd_ >= 0) {
      close(fd_);
      fd_ = -1;
    }
    if (data_ != nullptr) {
      if (!data_->tearingDown) {
        data_->udps.erase(this);
        delete context_;  // napi_async_destroy: only while the environment is alive
        onMessage_.Reset();
      }
      context_ = nullptr;
    }
  }

 private:
  static void OnReadable(uv_poll_t* h, int status, int events) {
    auto* self = static_cast<UdpSocket*>(h->data);
    if (self != nullptr) self->ReadSome(status);
  }

  void ReadSome(int status) {
    FromLoop(Env(), [&] { ReadSomeJs(status); });
  }

  void ReadSomeJs(int status) {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Napi::Object self = Value();  // weak: empty if JS already let go of the handle
    if (self.IsEmpty() || fd_ < 0) return;
    if (status < 0) {
      errors_++;
      if (poll_ != nullptr) uv_poll_stop(poll_);  // a broken fd: stop instead of spinning
      return;
    }
    for (int i = 0; i < kMaxDatagramsPerWakeup && fd_ >= 0; i++) {
      sockaddr_storage from{};
      alignas(cmsghdr) unsigned char control[CMSG_SPACE(sizeof(sockaddr_in6)) + CMSG_SPACE(64)];
      iovec iov{recvBuffer, sizeof recvBuffer};
      msghdr msg{};
      msg.msg_name = &from;
      msg.msg_namelen = sizeof from;
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      ssize_t n = recvmsg(fd_, &msg, MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == EINTR) continue;
        // ICMP errors queued on connected sockets (ECONNREFUSED...): counted, then go on.
        errors_++;
        continue;
      }
      if (msg.msg_flags & MSG_TRUNC) {
        truncated_++;
        continue;
      }
      std::string srcAddr;
      int srcPort = 0;
      FormatAddress(reinterpret_cast<sockaddr*>(&from), &srcAddr, &srcPort);
      std::string dstAddr = localAddress_;
      int dstPort = localPort_;
      if (recvOrigDst_) {
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
          if ((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_ORIGDSTADDR &&
               c->cmsg_len >= CMSG_LEN(sizeof(sockaddr_in))) ||
              (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_ORIGDSTADDR &&
               c->cmsg_len >= CMSG_LEN(sizeof(sockaddr_in6)))) {
            sockaddr_storage orig{};
            size_t len = c->cmsg_len - CMSG_LEN(0);
            memcpy(&orig, CMSG_DATA(c), len < sizeof orig ? len : sizeof orig);
            FormatAddress(reinterpret_cast<sockaddr*>(&orig), &dstAddr, &dstPort);
          }
        }
      }
      received_++;
      Napi::HandleScope inner(env);
      Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::Copy(env, recvBuffer, static_cast<size_t>(n));
      onMessage_.MakeCallback(self,
                              {buf, Napi::String::New(env, srcAddr), Napi::Number::New(env, srcPort),
                               Napi::String::New(env, dstAddr), Napi::Number::New(env, dstPort)},
                              *context_);
    }
  }

  SockAddr PeerArg(const Napi::CallbackInfo& info, size_t at, const std::string& call) {
    Napi::Env env = info.Env();
    std::string addr = ArgString(env, info[at], call, "address");
    int port = static_cast<int>(ArgInt(env, info[at + 1], call, "port", 1, 65535));
    return ArgAddress(env, family_, addr, port, call, "address");
  }

  Napi::Value Send(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const std::string call = "UdpHandle.send";
    if (info.Length() < 1 || !info[0].IsTypedArray() ||
        info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
      ThrowTypeError(env, call + ": msg must be a Buffer or Uint8Array");
    }
    Napi::Uint8Array msg = info[0].As<Napi::Uint8Array>();
    bool toPeer = info.Length() < 2 || info[1].IsUndefined();
    SockAddr to;
    if (!toPeer) to = PeerArg(info, 1, call);
    if (fd_ < 0) throw SysError(env, EBADF, call, "sendto", "", "the handle is closed");
    ssize_t n;
    do {
      n = toPeer ? send(fd_, msg.Data(), msg.ByteLength(), MSG_DONTWAIT | MSG_NOSIGNAL)
                 : sendto(fd_, msg.Data(), msg.ByteLength(), MSG_DONTWAIT | MSG_NOSIGNAL, to.sa(), to.len);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
        dropped_++;  // a full send buffer: drop, as the network would
        return Napi::Boolean::New(env, false);
      }
      throw SysError(env, errno, call, toPeer ? "send" : "sendto", "", toPeer ? "" : "to " + Describe(to));
    }
    sent_++;
    return Napi::Boolean::New(env, true);
  }

  Napi::Value Connect(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const std::string call = "UdpHandle.connect";
    if (info.Length() < 2) ThrowTypeError(env, call + ": expected (address, port)");
    SockAddr to = PeerArg(info, 0, call);
    if (fd_ < 0) throw SysError(env, EBADF, call, "connect", "", "the handle is closed");
    if (connect(fd_, to.sa(), to.len) != 0) throw SysError(env, errno, call, "connect", "", "to " + Describe(to));
    return env.Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    CloseNow();
    return info.Env().Undefined();
  }

  Napi::Value Counters(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("received", Napi::Number::New(env, static_cast<double>(received_)));
    o.Set("sent", Napi::Number::New(env, static_cast<double>(sent_)));
    o.Set("dropped", Napi::Number::New(env, static_cast<double>(dropped_)));
    o.Set("truncated", Napi::Number::New(env, static_cast<double>(truncated_)));
    o.Set("errors", Napi::Number::New(env, static_cast<double>(errors_)));
    return o;
  }

  Napi::Value GetFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_); }
  Napi::Value GetLocalAddress(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), localAddress_);
  }
  Napi::Value GetLocalPort(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), localPort_);
  }

  AddonData* data_ = nullptr;
  int fd_ = -1;
  int family_ = 4;
  uv_poll_t* poll_ = nullptr;
  bool recvOrigDst_ = false;
  Napi::FunctionReference onMessage_;
  Napi::AsyncContext* context_ = nullptr;
  std::string localAddress_;
  int localPort_ = 0;
  uint64_t received_ = 0, sent_ = 0, dropped_ = 0, truncated_ = 0, errors_ = 0;
};

Napi::Value UdpOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string call = "udpOpen";
  if (info.Length() < 2) ThrowTypeError(env, call + ": expected (options, onMessage)");
  Napi::Object o = ArgObject(env, info[0], call, "options");
  Napi::Function onMessage = ArgFunction(env, info[1], call, "onMessage");
  auto* data = env.GetInstanceData<AddonData>();
  Napi::Object handle = data->udpConstructor.New({});
  UdpSocket::Unwrap(handle)->Open(env, o, onMessage);
  return handle;
}

// ---------------------------------------------------------------------------------------------
// spliceRelay: the byte path of an allowed TCP flow, in the kernel
//
//   spliceRelay(clientFd, upstreamFd, flags, onDone) -> relay id
//       Relays bytes both ways between two connected TCP sockets with splice(2) through one pipe
//       per direction (socket -> pipe -> socket: pages move, no copy through userspace, no JS
//       per chunk). flags: 1 = the engine takes clientFd itself, 2 = it takes upstreamFd itself;
//       otherwise it works on a dup() of the fd and the caller keeps its own (see "Resets"
//       below). Ownership passes only when the call returns; if it throws (EMFILE...), every fd
//       is still the caller's. onDone(end, bytesToServer, bytesToClient, syscalls) is called
//       once, on the JS thread, when the engine has let go of both sockets: end is null (both
//       directions ended with a FIN, each forwarded as shutdown(SHUT_WR) after its pipe
//       drained), 'reset-client' / 'reset-upstream' (that side failed: ECONNRESET, EPIPE,
//       ETIMEDOUT...; the other side was reset), or 'aborted' (spliceAbort: both reset).
//   spliceAbort(id) -> boolean     resets both sides; false if the relay already ended
//   spliceProgress() -> Float64Array   [id, bytesToServer, bytesToClient, ...] of this
//       environment's live relays whose totals changed since the last call
//   spliceStats() -> object        process-wide counters (below)
//   tcpClose(fd, reset)            close(2) an fd, with SO_LINGER {1, 0} first when reset
//
// Engine: a small fixed pool of event-loop threads (1 by default; NETPOLD_SPLICE_THREADS, at
// most 16), started on first use and never stopped; relay i runs on loop i % n. Each loop is one
// epoll instance with every relay socket registered once, edge-triggered, for EPOLLIN|EPOLLOUT.
// Edge-triggered interest is the "toggled" interest of a level-triggered design without its
// epoll_ctl calls: the loop keeps per-socket readable/writable flags (set by an event, cleared
// by EAGAIN) and only splices where that can make progress. Backpressure: a direction reads
// from its source only while its pipe has room; a full pipe is drained into the destination
// when that becomes writable (EPOLLOUT edge), and only then is the source read again. So the
// source socket's receive buffer fills and TCP's window closes towards the sender, exactly as
// when the JS relay pauses a stream. A relay that could keep moving bytes gets a budget of
// splice calls per turn and is then queued behind the other relays (fairness). Pipes come from
// a small pool of empty ones (else pipe2), start at the kernel's default size and grow once to
// 256 KiB (NETPOLD_SPLICE_PIPE_BYTES) when their direction fills them: bulk flows get large
// splices, request/response flows keep small pipes. A pipe with bytes left in it (a reset) is
// closed, never pooled.
//
// Resets. SO_LINGER {1, 0} on a TCP socket makes its final close send an RST instead of a FIN.
// "Final" matters: a dup()ed fd and the caller's fd are two references to one open socket, and
// the socket is released (and the RST sent) only when the LAST of them is closed. So when the
// engine resets a side it sets SO_LINGER {1, 0} (a property of the socket, seen through every
// fd) and closes its own fd; if the caller still holds an fd of that socket (a net.Socket), the
// RST goes out when the caller closes it: onDone tells the caller to resetAndDestroy() its
// sockets when end !== null, destroy() otherwise. A socket the engine took over (flags) has no
// other reference, so its RST goes out at once. For the same reason every non-owned fd is
// removed from epoll explicitly before it is closed: epoll forgets a registration only when the
// open socket is released, and that would not happen while the caller's fd lives.
//
// Counters (spliceStats, process-wide): relays started/active/completed, how they ended, bytes
// each way, splice calls, every syscall the engine made (setup on the JS thread, splices,
// epoll, shutdown, close...), loop wakeups, pipes created/reused, start failures. onDone's
// syscalls argument is the count attributable to that relay (setup, its splices and teardown;
// not the shared epoll_wait calls, which spliceStats counts as wakeups).
//
// Threads: the loops block every signal (Node's handlers run on the main thread). SIGPIPE from
// a splice into a reset socket is ignored process-wide by Node. Completions reach JS through one
// napi threadsafe function per environment, referenced (keeping the loop alive) only while that
// environment has live relays; when the environment goes away its relays are aborted.

namespace splice {

enum End : int {
  kEndDone = 0,
  kEndResetClient = 1,
  kEndResetUpstream = 2,
  kEndAborted = 3,
  kEndUpstreamFailed = 4,  // fast path only: the upstream connect failed (errno in the record)
};

const char* EndName(int end) {
  switch (end) {
    case kEndResetClient:
      return "reset-client";
    case kEndResetUpstream:
      return "reset-upstream";
    case kEndAborted:
      return "aborted";
    case kEndUpstreamFailed:
      return "upstream-failed";
    default:
      return nullptr;
  }
}

constexpr int kOwnClient = 1;
constexpr int kOwnUpstream = 2;
constexpr unsigned kSpliceFlags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;
// A direction holding no pipe reads with recv() into the loop's buffer of this size and sends
// at once: for the small messages of most connections that is one copy of a few bytes instead
// of a pipe taken, two splices and an EAGAIN probe (a short read means the socket is empty).
// A full buffer is a bulk direction: it takes a pipe and splices from then on. 8 KiB: what the
// destination does not take must fit in one empty pipe, and a new pipe has only 2 pages once
// the user's pipe quota (fs.pipe-user-pages-soft) is used up.
constexpr size_t kCopyBytes = 8192;
constexpr int kMaxEvents = 256;
constexpr int kPumpBudget = 64;    // splice calls per relay per turn of its loop
constexpr size_t kPoolMax = 64;    // empty pipes kept for reuse per loop (2 fds each)
constexpr int kMaxLoops = 16;
constexpr int kAcceptBatch = 64;   // accept4 calls per listener event
constexpr size_t kMaxPendingConns = 16384;  // accepted, awaiting a verdict from JS

struct Stats {
  std::atomic<uint64_t> started{0}, active{0}, completed{0}, resetClient{0}, resetUpstream{0},
      aborted{0}, bytesToServer{0}, bytesToClient{0}, spliceCalls{0}, syscalls{0}, wakeups{0},
      pipesCreated{0}, pipesReused{0}, pipesPooled{0}, startFailures{0},
      // fast path
      accepted{0}, acceptErrors{0}, refusedBacklog{0}, connectFailures{0}, connectTimeouts{0},
      cacheHits{0},  // connections relayed from a loop's verdict cache
      // UDP fast path
      udpFlows{0}, udpActive{0}, udpDatagrams{0}, udpDropped{0}, udpErrors{0}, udpRecvCalls{0}, udpSendCalls{0};
  std::atomic<uint64_t> acceptedByLoop[kMaxLoops] = {};
};

// One environment's way back to JS. Deliver() and the threadsafe function's finalizer take the
// mutex, so no completion is ever pushed into a threadsafe function Node has let go of.
struct Channel {
  std::mutex mu;
  napi_threadsafe_function tsfn = nullptr;
  bool closed = false;
};

struct Completion {
  uint64_t id;
  int end;
  uint64_t toServer;
  uint64_t toClient;
  uint64_t syscalls;
};

struct Pipe {
  int r = -1;
  int w = -1;
  uint32_t cap = 0;  // at most 64 MiB (NETPOLD_SPLICE_PIPE_BYTES)
};

struct Relay;
struct FastChannel;

// What an epoll registration's data.ptr points to (the loop's wakeup fd has nullptr).
struct EpollItem {
  enum Kind : uint8_t { kSide = 1, kListener = 2, kUdp = 3 };
  Kind kind;
  explicit EpollItem(Kind k) : kind(k) {}
};

// One socket of a relay. No pointer back to the relay (8 bytes a side): the sides are the
// relay's first member, so RelayOf() finds it from `index`. The EpollItem is a member, not a
// base, so that Side (and RelaySides) stay standard-layout and those casts are well-defined.
struct Side {
  EpollItem item{EpollItem::kSide};
  uint8_t index = 0;       // side[index] of its relay
  bool exclusive = false;  // no other fd refers to this socket (taken over from the caller)
  bool readable = true;    // not known to be empty (cleared by EAGAIN, set by an event)
  bool writable = true;    // not known to be full
  bool registered = false;
  bool rdhup = false;      // the peer's FIN has arrived (EPOLLRDHUP): read until recv says 0
  int fd = -1;
};

struct RelaySides {
  Side side[2];
  RelaySides() { side[1].index = 1; }
};
static_assert(std::is_standard_layout<Side>::value && std::is_standard_layout<RelaySides>::value,
              "RelayOf() and the epoll dispatch cast between a Side, its item and its relay");

// Direction 0 = client -> upstream (toServer), 1 = upstream -> client (toClient): source
// side[d], destination side[1 - d].
// Field widths and order keep a relay small (the per-flow memory bound): 32-bit counts where a
// pipe bounds them.
struct Dir {
  Pipe pipe;
  uint32_t inPipe = 0; // bytes spliced in and not yet out (exact: splice returns both counts)
  bool eof = false;    // the source sent its FIN (splice returned 0)
  bool shut = false;   // forwarded: shutdown(destination, SHUT_WR)
  bool grown = false;   // tried to grow the pipe to bulkSize (once)
  bool bulk = false;    // filled the copy buffer once: spliced from then on (Copy)
  std::atomic<uint64_t> bytes{0};  // delivered to the destination
};

// Where a fast-path relay connects to (freed once connected).
struct ConnectTarget {
  SockAddr src;
  SockAddr dst;
  bool fromNode = false;  // a plain connect from the node's address (destination is the node)
  int family = 4;
  uint32_t cacheGen = 0;  // != 0: JS's verdict, decided at this generation, goes into the cache
  uint32_t key[9] = {};   // VerdictCache key: source words, destination words, port | family << 16
};

// A relay lives in its loop's RelaySlab (see there). Field widths and order keep it small:
// the per-flow memory bound (bench:memory) is mostly this struct.
struct Relay : RelaySides {
  uint64_t id = 0;                   // (generation, slot, loop): see RelaySlab
  std::shared_ptr<Channel> channel;  // spliceRelay: onDone goes there
  FastChannel* fast = nullptr;       // fast path: completions go there (outlives its relays)
  std::unique_ptr<ConnectTarget> target;
  Dir dir[2];
  uint32_t tag = 0;                  // fast path: the caller's name for the flow
  int error = 0;                     // kEndUpstreamFailed: the connect's errno
  uint32_t syscalls = 0;
  uint32_t livePos = 0;              // index in the slab's live list while published
  // Bytes moved since the last progress poll: set by the loop, cleared by the poll (under mu).
  // A flag instead of the polled totals: the caller keeps those (8 bytes a relay less).
  std::atomic<bool> moved{false};
  bool published = false;            // findable by id (under the loop's mu)
  bool finished = false;
  bool queued = false;
  bool connecting = false;           // fast path: upstream connect in flight
};

static_assert(sizeof(Relay) <= 152, "the per-flow memory bound: see bench:memory before growing a relay");

inline Relay* RelayOf(Side* s) {
  return static_cast<Relay*>(reinterpret_cast<RelaySides*>(s - s->index));
}

// ---- verdict cache ---------------------------------------------------------------------------
//
// Each engine loop remembers JS's recent TCP "relay" verdicts by (source address, destination
// address and port): a connection that finds one is relayed at once, on the loop that accepted
// it, without waiting for the JS thread (two thread wakeups and a queue each way). A verdict is
// a function of exactly those (the policy snapshot decides on source and destination identity,
// destination port and protocol; the source port plays no part), so the cache is exact while the
// snapshot stays. Every change that can change a verdict (a new snapshot, the node's addresses,
// draining) makes JS bump the engine's generation: entries of another generation never match.
// A verdict decided at generation g is stored with g, so one that crosses a bump in flight is
// stale at once. Denials are not cached (they go to JS, which counts and logs them). A
// connection relayed from the cache still reaches JS as a record: JS decides it too, tracks it
// (flow table, revalidation) and adopts it, or aborts it if its decision differs (a bump raced
// the lookup). Direct-mapped: a colliding verdict replaces the older; misses just go to JS.

class VerdictCache {
 public:
  explicit VerdictCache(uint32_t size) : mask_(size - 1), e_(new Entry[size]) {}

  static uint32_t Hash(const uint32_t* k) {
    uint64_t h = 0x9e3779b97f4a7c15ULL;
    for (int i = 0; i < 9; i++) h = (h ^ k[i]) * 0xc2b2ae3d27d4eb4fULL;
    return static_cast<uint32_t>(h >> 32);
  }

  // The cached action (1 relay, 2 relay from the node) or 0.
  int Find(const uint32_t* key, const void* channel, uint32_t gen) const {
    const Entry& e = e_[Hash(key) & mask_];
    if (e.gen != gen || e.channel != channel || memcmp(e.key, key, sizeof e.key) != 0) return 0;
    return e.action;
  }

  void Put(const uint32_t* key, const void* channel, uint32_t gen, int action) {
    Entry& e = e_[Hash(key) & mask_];
    memcpy(e.key, key, sizeof e.key);
    e.channel = channel;
    e.gen = gen;
    e.action = static_cast<uint8_t>(action);
  }

 private:
  struct Entry {
    uint32_t key[9] = {};
    uint32_t gen = 0;  // 0: empty (generations start at 1)
    const void* channel = nullptr;  // verdicts are per environment (its snapshot)
    uint8_t action = 0;
  };
  uint32_t mask_;
  std::unique_ptr<Entry[]> e_;
};

// A cache key from a connection's addresses (words as PendingConn has them).
void VerdictKeyOf(int family, const uint32_t* src, const uint32_t* dst, uint16_t dstPort, uint32_t* key) {
  for (int i = 0; i < 4; i++) {
    key[i] = src[i];
    key[4 + i] = dst[i];
  }
  key[8] = static_cast<uint32_t>(dstPort) | static_cast<uint32_t>(family) << 16;
}

// The relays of one loop. They sit in chunks that never move, so a relay costs sizeof(Relay)
// and 8 bytes of bookkeeping (free list, live list): no malloc header and no hash-map node per
// flow, as with new/delete and an id map. An id is (generation, slot, loop); a slot's
// generation changes each time it is taken, so a stale id (its relay ended, the slot reused)
// finds nothing. 24 bits each of generation and slot, 4 of loop: 52 bits, exact as a JS number.
// Everything here runs under the owning Loop's mu.
class RelaySlab {
 public:
  static constexpr uint64_t kLoopBits = 4;    // kMaxLoops = 16
  static constexpr uint64_t kSlotBits = 24;
  static constexpr uint64_t kGenMask = (1u << 24) - 1;

  static uint32_t SlotOf(uint64_t id) { return static_cast<uint32_t>((id >> kLoopBits) & ((1u << kSlotBits) - 1)); }
  static uint32_t GenOf(uint64_t id) { return static_cast<uint32_t>(id >> (kLoopBits + kSlotBits)); }

  // A clean relay with its id, not yet findable (Publish); nullptr when the slots ran out.
  Relay* Take(int loop) {
    uint32_t slot;
    if (!free_.empty()) {
      slot = free_.back();
      free_.pop_back();
    } else {
      if (size_ == (1u << kSlotBits)) return nullptr;
      if (size_ % kChunk == 0) chunks_.emplace_back(new Relay[kChunk]);
      slot = size_++;
    }
    Relay* r = At(slot);
    uint32_t gen = (GenOf(r->id) + 1) & kGenMask;
    if (gen == 0) gen = 1;  // id 0 is no relay
    r->id = ((static_cast<uint64_t>(gen) << kSlotBits | slot) << kLoopBits) | static_cast<uint64_t>(loop);
    return r;
  }

  void Publish(Relay* r) {
    r->published = true;
    r->livePos = static_cast<uint32_t>(live_.size());
    live_.push_back(r);
  }

  void Unpublish(Relay* r) {
    if (!r->published) return;
    r->published = false;
    Relay* last = live_.back();
    live_[r->livePos] = last;
    last->livePos = r->livePos;
    live_.pop_back();
  }

  // Back to the free list, reset (its channel reference and connect target let go); the id
  // stays, for the next generation.
  void Give(Relay* r) {
    Unpublish(r);
    uint64_t id = r->id;
    r->~Relay();
    new (r) Relay();
    r->id = id;
    free_.push_back(SlotOf(id));
  }

  Relay* Find(uint64_t id) {
    uint32_t slot = SlotOf(id);
    if (slot >= size_) return nullptr;
    Relay* r = At(slot);
    return r->published && r->id == id ? r : nullptr;
  }

  // The published relays. Unpublishing reorders this: copy it first to end relays while
  // walking it (as kAbortChannel does).
  const std::vector<Relay*>& Live() const { return live_; }

 private:
  static constexpr uint32_t kChunk = 256;
  Relay* At(uint32_t slot) { return &chunks_[slot / kChunk][slot % kChunk]; }
  std::vector<std::unique_ptr<Relay[]>> chunks_;
  uint32_t size_ = 0;
  std::vector<uint32_t> free_;
  std::vector<Relay*> live_;
};

struct Engine;
Engine& TheEngine();

// ---- pipes ----------------------------------------------------------------------------------

struct PipePool {
  // A pipe starts at the kernel's default (64 KiB) and grows to bulkSize the first time its
  // direction fills it: a bulk flow gets big splices (fewer syscalls, larger TCP sends), a
  // request/response flow keeps the small one. NETPOLD_SPLICE_PIPE_BYTES overrides bulkSize.
  int bulkSize = 256 * 1024;
};

// ---- the fast path's way to and from JS -----------------------------------------------------

// An accepted connection awaiting its verdict. Addresses as the decision core holds them: IPv4
// in word 0, IPv6 as four words, each word the host-order value of 4 address bytes.
struct PendingConn {
  int fd = -1;
  int loop = 0;
  int family = 4;
  uint32_t src[4] = {0, 0, 0, 0};
  uint32_t dst[4] = {0, 0, 0, 0};
  uint16_t srcPort = 0;
  uint16_t dstPort = 0;
  uint32_t syscalls = 0;  // made for it so far (accept4, getsockname)
  int proto = 6;          // 6 TCP (fd is the accepted socket), 17 UDP (udpId names the flow)
  uint64_t udpId = 0;
  // TCP, a hit in the loop's verdict cache: the relay runs already (relayId, its fd is the
  // relay's); JS decides it anyway and adopts it (or aborts it). cachedAction: 1 or 2.
  uint64_t relayId = 0;
  int cachedAction = 0;
};

struct FastDone {
  uint32_t tag;
  int end;
  int error;
  uint64_t toServer;
  uint64_t toClient;
  uint64_t syscalls;
};

// One environment's fast path: connections the loops accepted, waiting for JS to decide them,
// and relays that ended, waiting for JS to forget them. JS is woken by one threadsafe-function
// call per batch (`notified` stays set until JS starts draining), then drains both queues with
// plain calls: no JS call, object or callback per connection. Never freed: loops may still hold
// a pointer when the environment goes away (`closed` then turns every push into a close).
struct FastChannel {
  std::mutex mu;
  std::vector<PendingConn> pending;
  std::vector<FastDone> done;
  bool notified = false;
  bool closed = false;
  napi_threadsafe_function tsfn = nullptr;

  // With mu held.
  void NotifyLocked() {
    if (notified || closed || tsfn == nullptr) return;
    if (napi_call_threadsafe_function(tsfn, nullptr, napi_tsfn_nonblocking) == napi_ok) notified = true;
  }
};

// ---- UDP fast path ---------------------------------------------------------------------------
//
// UDP runs on one engine loop (loop 0): its listener, every flow and every socket, so the
// loop's table of flows by 5-tuple needs no lock. An allowed flow gets one socket of its own,
// `upstream`: IP_TRANSPARENT, bound to the client's address and a port of its own (or to the
// node, when the node is the destination), connected to the destination. Replies come back on
// it (the nft `socket transparent` rule marks them for local delivery) and leave through the
// destination's `reply` socket: IP_TRANSPARENT, bound to the destination address and port,
// unconnected, shared by every flow to that destination (so a flow costs one fd, and binds
// never pile up on one port). Client datagrams that the kernel delivers to a reply socket (its lookup comes before
// TPROXY) are handled exactly like those on the listener: the flow is found in the table (or is
// new, and asks JS for a verdict) and the datagrams go out on its upstream socket. No JS per
// datagram: recvmmsg takes up to kUdpBatch datagrams per call, and each run of datagrams of one
// flow leaves in one sendmmsg.

struct UdpKey {
  uint32_t src[4];
  uint32_t dst[4];
  uint16_t srcPort;
  uint16_t dstPort;
  uint8_t family;
  bool operator==(const UdpKey& o) const {
    return family == o.family && srcPort == o.srcPort && dstPort == o.dstPort && memcmp(src, o.src, sizeof src) == 0 &&
           memcmp(dst, o.dst, sizeof dst) == 0;
  }
};

struct UdpKeyHash {
  size_t operator()(const UdpKey& k) const {
    uint64_t h = (static_cast<uint64_t>(k.srcPort) << 32) ^ (static_cast<uint64_t>(k.dstPort) << 16) ^ k.family;
    for (int i = 0; i < 4; i++) {
      h = (h ^ k.src[i]) * 0x9e3779b97f4a7c15ULL;
      h = (h ^ k.dst[i]) * 0xc2b2ae3d27d4eb4fULL;
    }
    return static_cast<size_t>(h ^ (h >> 29));
  }
};

struct UdpFlow;
struct Listener;

// A flow's upstream socket.
struct UdpSock : EpollItem {
  UdpSock() : EpollItem(kUdp) {}
  UdpFlow* flow = nullptr;
  int fd = -1;
};

constexpr uint32_t kUntracked = UINT32_MAX;  // a flow JS keeps no entry for (refused)
// A relay started from the verdict cache that JS aborted before adopting it: it ends with no
// record, not even one kept for an adoption (JS tags are slots, far below these two).
constexpr uint32_t kDiscarded = UINT32_MAX - 1;
constexpr size_t kUdpQueueMax = 16;           // datagrams held per flow while its verdict is awaited
constexpr size_t kUdpFlowsMax = 262144;       // flows (any state) per loop
constexpr int kUdpBatch = 32;                 // datagrams per recvmmsg/sendmmsg
constexpr size_t kUdpSlot = 65536;            // bytes per datagram buffer (the largest UDP payload)

struct UdpFlow {
  enum State : uint8_t { kPending, kAllowed, kDenied };
  uint64_t id = 0;
  uint32_t tag = kUntracked;
  FastChannel* fast = nullptr;
  UdpKey key{};
  State state = kPending;
  bool finished = false;
  UdpSock upstream;
  Listener* reply = nullptr;  // the destination's shared reply socket (allowed flows)
  bool rawReply = false;      // to the node itself: replies leave through the loop's raw socket
  int64_t lastSeen = 0;
  std::atomic<uint64_t> bytes[2] = {{0}, {0}};
  uint64_t reported[2] = {0, 0};  // by fastProgress (JS thread, under Loop::mu)
  std::vector<std::string> queued;  // before the verdict
};

class Loop;

// One SO_REUSEPORT member of a fast-path listener group: each loop accepts on its own socket,
// and the kernel spreads new connections over the group by their addresses (so over cores).
struct Listener : EpollItem {
  Listener() : EpollItem(kListener) {}
  int fd = -1;
  int family = 4;
  int proto = 6;
  FastChannel* channel = nullptr;
  bool paused = false;     // out of fds: not polled until resumeAt
  int64_t resumeAt = 0;
  // A UDP reply socket (see "UDP fast path"): bound to this destination, used by `users` flows.
  bool reply = false;
  int users = 0;
  UdpKey addr{};  // dst words, dstPort and family set; src zero
};

SockAddr WordsToAddr(int family, const uint32_t* w, uint16_t port) {
  SockAddr a;
  if (family == 6) {
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&a.ss);
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(port);
    for (int k = 0; k < 4; k++) {
      uint32_t v = htonl(w[k]);
      memcpy(s6->sin6_addr.s6_addr + 4 * k, &v, 4);
    }
    a.len = sizeof(sockaddr_in6);
  } else {
    auto* s4 = reinterpret_cast<sockaddr_in*>(&a.ss);
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    s4->sin_addr.s_addr = htonl(w[0]);
    a.len = sizeof(sockaddr_in);
  }
  return a;
}

// The inverse of WordsToAddr (the port aside).
void AddrToWords(const SockAddr& a, uint32_t* w) {
  if (a.ss.ss_family == AF_INET6) {
    const auto* s6 = reinterpret_cast<const sockaddr_in6*>(&a.ss);
    for (int k = 0; k < 4; k++) {
      uint32_t v;
      memcpy(&v, s6->sin6_addr.s6_addr + 4 * k, 4);
      w[k] = ntohl(v);
    }
  } else {
    w[0] = ntohl(reinterpret_cast<const sockaddr_in*>(&a.ss)->sin_addr.s_addr);
    w[1] = w[2] = w[3] = 0;
  }
}

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

class Loop {
 public:
  explicit Loop(int index) : index_(index) {}
  bool Start(int* err);

  enum Kind : int { kAdd, kAbort, kAbortChannel, kConnect, kAddListener, kCloseListener, kAbortFast, kUdpVerdict, kUdpAbort };
  struct Cmd {
    Kind kind;
    Relay* relay;
    uint64_t id;
    Channel* channel;
    Listener* listener = nullptr;
    FastChannel* fast = nullptr;
    std::promise<void>* done = nullptr;
    int action = 0;
    uint32_t tag = 0;
  };

  std::mutex mu;  // cmds_ and relays
  RelaySlab relays;

  // A relay of this loop (any thread): fill it in, then Add or Connect it; DropRelay if not.
  // nullptr if the loop has 2^24 relays already.
  Relay* NewRelay() {
    std::lock_guard<std::mutex> lock(mu);
    return relays.Take(index_);
  }
  void DropRelay(Relay* r) {
    std::lock_guard<std::mutex> lock(mu);
    relays.Give(r);
  }
  // A relay started from the verdict cache gets JS's tag (any thread). One that ended first is
  // adopted all the same: its completion (kept by Close) goes to JS now, with the tag, so JS
  // counts its bytes and how it ended like any other. False only if the id names neither.
  bool Adopt(uint64_t id, uint32_t tag) {
    FastDone d{};
    FastChannel* ch = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu);
      Relay* r = relays.Find(id);
      if (r != nullptr) {
        r->tag = tag;  // Deliver reads it after Close unpublished the relay under mu
        return true;
      }
      if (!TakeUnadoptedLocked(id, &d, &ch)) return false;
    }
    d.tag = tag;
    std::lock_guard<std::mutex> lock(ch->mu);
    if (!ch->closed) {
      ch->done.push_back(d);
      ch->NotifyLocked();
    }
    return true;
  }
  // JS refused or denied a cached relay that has ended already: nothing left to abort but the
  // completion it kept (under mu).
  void ForgetUnadoptedLocked(uint64_t id) {
    FastDone d{};
    FastChannel* ch = nullptr;
    TakeUnadoptedLocked(id, &d, &ch);
  }

  int index() const { return index_; }
  void Add(Relay* r);
  void Abort(uint64_t id);
  void AbortChannel(Channel* ch);
  // fast path (any thread)
  void Connect(Relay* r);
  void AddListener(Listener* l);
  void CloseListener(Listener* l);  // waits until the loop has closed it
  void AbortFast(FastChannel* ch);
  // UDP fast path (any thread)
  void UdpVerdict(uint64_t id, int action, uint32_t tag, FastChannel* ch);
  std::unordered_map<uint64_t, UdpFlow*> udps;  // by id, under mu (aborts, progress)

 private:
  // Completions of relays started from the verdict cache that ended before JS adopted them,
  // under mu. JS decides every connection it was handed, so each entry is taken by Adopt or
  // Abort (a few at a time, in practice none); kAbortFast drops a closing channel's.
  struct Unadopted {
    uint64_t id;
    FastChannel* ch;
    FastDone done;
  };
  std::vector<Unadopted> unadopted_;
  bool TakeUnadoptedLocked(uint64_t id, FastDone* out, FastChannel** ch) {
    for (size_t i = 0; i < unadopted_.size(); i++) {
      if (unadopted_[i].id != id) continue;
      *out = unadopted_[i].done;
      *ch = unadopted_[i].ch;
      unadopted_[i] = unadopted_.back();
      unadopted_.pop_back();
      return true;
    }
    return false;
  }

  void PostLocked(const Cmd& c);
  void Run();
  void RunCommands();
  void OnEvent(Side* s, uint32_t events);
  void Pump(Relay* r);
  int Step(Relay* r, int d, int* budget);
  int Copy(Relay* r, int d, int* budget);
  void Fail(Relay* r, int end);
  void Close(Relay* r, int end);
  bool TakePipe(Relay* r, Pipe* out, Failure* f);
  void GivePipe(Relay* r, Pipe* p, bool empty);
  // fast path
  void OnAccept(Listener* l);
  Relay* StartCached(PendingConn& p, FastChannel* ch, int action);
  void StartConnect(Relay* r);
  void Connected(Relay* r);
  void ExpireConnects(int64_t now);
  int TimeoutMs();
  void OnUdpListener(Listener* l);
  void OnUdpReadable(UdpSock* s);
  void ApplyUdpVerdict(const Cmd& c);
  bool OpenUdpSockets(UdpFlow* f, bool fromNode, Failure* fail);
  void EndUdp(UdpFlow* f, int end, int error);
  void SweepUdp(int64_t now);
  void FlushQueued(UdpFlow* f);
  void EndUdpLockedForget(UdpFlow* f);
  Listener* ReplySocket(const UdpKey& flowKey, FastChannel* ch, Failure* fail);
  // The loop's raw socket for a family (IPPROTO_RAW, headers included), opened on first use;
  // -1 (and *fail, when given) if it cannot be.
  int RawSocket(int family, Failure* fail);
  void ReleaseReply(Listener* l);

  int index_;
  std::vector<Pipe> pool_;
  // Fast-path relays connecting upstream, by deadline (one timeout for all: FIFO order).
  std::deque<std::pair<int64_t, uint64_t>> connecting_;
  std::vector<Listener*> listeners_;
  std::unordered_map<UdpKey, UdpFlow*, UdpKeyHash> udpByKey_;
  std::vector<UdpFlow*> deadUdp_;
  std::unordered_map<UdpKey, Listener*, UdpKeyHash> replies_;  // by destination (src zero)
  std::vector<Listener*> deadListeners_;
  int64_t udpSweepAt_ = 0;
  std::unique_ptr<char[]> udpBuf_;  // kUdpBatch slots of kUdpSlot bytes, allocated on first use
  int raw_[2] = {-1, -1};           // RawSocket(): IPv4, IPv6
  std::unique_ptr<char[]> rawHdrs_;  // kUdpBatch headers of kRawHdrMax bytes, with raw_
  iovec rawIovs_[2 * kUdpBatch];
  int ep_ = -1;
  int wake_ = -1;
  std::vector<Cmd> cmds_;
  std::vector<Relay*> again_;
  std::vector<Relay*> dead_;
  std::unique_ptr<char[]> copyBuf_;  // Copy(): kCopyBytes, made on first use
  std::unique_ptr<VerdictCache> cache_;  // loop thread only; made on the first verdict to keep
};

struct Engine {
  std::mutex mu;  // loops
  Loop* loops[kMaxLoops] = {};
  int nloops = 1;
  std::atomic<uint64_t> nextSeq{1};
  std::atomic<int64_t> connectTimeoutMs{10000};  // fast path upstream connects
  std::atomic<int64_t> udpIdleMs{30000};         // fast path: a UDP flow idle this long ends
  // The verdict cache (see VerdictCache): entries per loop (a power of two; 0 = none), and the
  // generation JS bumps whenever a verdict may change.
  std::atomic<uint32_t> verdictCacheSize{0};
  std::atomic<uint32_t> verdictGen{1};
  PipePool pool;
  Stats stats;

  Engine() {
    const char* t = getenv("NETPOLD_SPLICE_THREADS");
    if (t != nullptr) {
      int n = atoi(t);
      if (n >= 1 && n <= kMaxLoops) nloops = n;
    }
    const char* p = getenv("NETPOLD_SPLICE_PIPE_BYTES");
    if (p != nullptr) {
      long n = atol(p);
      if (n >= 4096 && n <= (64L << 20)) pool.bulkSize = static_cast<int>(n);
    }
  }

  // Ids name their loop: id % kMaxLoops. Relay ids come from the loop's RelaySlab (below
  // 2^52); UDP flow ids have bit 52 set, so the two never meet (Abort looks up both).
  static constexpr uint64_t kUdpIdBit = 1ull << 52;
  uint64_t NewUdpId(int loop) {
    return kUdpIdBit | ((nextSeq.fetch_add(1, std::memory_order_relaxed) * kMaxLoops + static_cast<uint64_t>(loop)) & (kUdpIdBit - 1));
  }
  // spliceRelay spreads its relays over the loops round-robin.
  int NextLoop() { return static_cast<int>(nextSeq.fetch_add(1, std::memory_order_relaxed) % static_cast<uint64_t>(nloops)); }

  // The loop of a relay id, started if needed; nullptr with *err set if it cannot start.
  Loop* LoopFor(uint64_t id, int* err) { return LoopAt(static_cast<int>(id % kMaxLoops), err); }

  Loop* LoopAt(int i, int* err) {
    std::lock_guard<std::mutex> lock(mu);
    if (loops[i] == nullptr) {
      auto* l = new Loop(i);
      if (!l->Start(err)) {
        delete l;
        return nullptr;
      }
      loops[i] = l;
    }
    return loops[i];
  }

  // Loops already started (never stopped, so the pointers stay valid).
  std::vector<Loop*> Started() {
    std::lock_guard<std::mutex> lock(mu);
    std::vector<Loop*> out;
    for (int i = 0; i < kMaxLoops; i++)
      if (loops[i] != nullptr) out.push_back(loops[i]);
    return out;
  }
};

// Never destroyed: the loop threads outlive static destruction at process exit.
Engine& TheEngine() {
  static Engine* e = new Engine();
  return *e;
}

inline void Count(Relay* r, uint32_t n = 1) {
  r->syscalls += n;
  TheEngine().stats.syscalls.fetch_add(n, std::memory_order_relaxed);
}

// A pipe for one direction: from the loop's pool, else a new non-blocking one. Pipes are
// held only while a direction has bytes to move (taken before reading from the source, given
// back once empty and the source has nothing more for now): an idle flow holds no pipe, just
// its two sockets, and a loop's pool serves all its flows without locking.
bool Loop::TakePipe(Relay* r, Pipe* out, Failure* f) {
  Engine& e = TheEngine();
  if (!pool_.empty()) {
    *out = pool_.back();
    pool_.pop_back();
    e.stats.pipesReused.fetch_add(1, std::memory_order_relaxed);
    e.stats.pipesPooled.fetch_sub(1, std::memory_order_relaxed);
    return true;
  }
  int fds[2];
  Count(r);
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
    *f = Failure{errno, "pipe2", ""};
    return false;
  }
  Pipe p{fds[0], fds[1], 0};
  // Read back, not assumed: past fs.pipe-user-pages-soft an unprivileged user's new pipes get
  // 2 pages only (root with CAP_SYS_RESOURCE is exempt).
  Count(r);
  int cap = fcntl(p.w, F_GETPIPE_SZ);
  p.cap = cap > 0 ? static_cast<uint32_t>(cap) : 65536;
  e.stats.pipesCreated.fetch_add(1, std::memory_order_relaxed);
  *out = p;
  return true;
}

// Returns an EMPTY pipe to the loop's pool, or closes it (full pool, or bytes still in it).
void Loop::GivePipe(Relay* r, Pipe* p, bool empty) {
  if (p->r < 0) return;
  Engine& e = TheEngine();
  if (empty && pool_.size() < kPoolMax) {
    pool_.push_back(*p);
    e.stats.pipesPooled.fetch_add(1, std::memory_order_relaxed);
    *p = Pipe{};
    return;
  }
  Count(r, 2);
  close(p->r);
  close(p->w);
  *p = Pipe{};
}

// ---- completion -----------------------------------------------------------------------------

void Deliver(Relay* r, int end) {
  if (r->fast != nullptr) {
    // Started from the verdict cache and ended before JS adopted it: Close kept its completion
    // for the adoption (fastVerdicts).
    if (r->tag == kUntracked || r->tag == kDiscarded) return;
    FastChannel* ch = r->fast;
    std::lock_guard<std::mutex> lock(ch->mu);
    if (ch->closed) return;
    ch->done.push_back(FastDone{r->tag, end, r->error, r->dir[0].bytes.load(std::memory_order_relaxed),
                                r->dir[1].bytes.load(std::memory_order_relaxed), r->syscalls});
    ch->NotifyLocked();
    return;
  }
  auto* c = new Completion{r->id, end, r->dir[0].bytes.load(std::memory_order_relaxed),
                           r->dir[1].bytes.load(std::memory_order_relaxed), r->syscalls};
  Channel* ch = r->channel.get();
  std::lock_guard<std::mutex> lock(ch->mu);
  if (ch->closed || ch->tsfn == nullptr ||
      napi_call_threadsafe_function(ch->tsfn, c, napi_tsfn_nonblocking) != napi_ok) {
    delete c;
  }
}

// ---- the loop ------------------------------------------------------------------------------

bool Loop::Start(int* err) {
  ep_ = epoll_create1(EPOLL_CLOEXEC);
  if (ep_ < 0) {
    *err = errno;
    return false;
  }
  wake_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_ < 0) {
    *err = errno;
    close(ep_);
    return false;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // the wakeup fd; relay sockets carry their Side*
  if (epoll_ctl(ep_, EPOLL_CTL_ADD, wake_, &ev) != 0) {
    *err = errno;
    close(wake_);
    close(ep_);
    return false;
  }
  try {
    std::thread([this] { Run(); }).detach();
  } catch (const std::system_error& e) {
    *err = e.code().value() != 0 ? e.code().value() : EAGAIN;
    close(wake_);
    close(ep_);
    return false;
  }
  TheEngine().stats.syscalls.fetch_add(3, std::memory_order_relaxed);
  return true;
}

void Loop::PostLocked(const Cmd& c) {
  bool wasEmpty = cmds_.empty();
  cmds_.push_back(c);
  if (wasEmpty) {  // the loop drains every command per wakeup: one write per batch
    uint64_t one = 1;
    ssize_t n = write(wake_, &one, sizeof one);
    (void)n;  // EAGAIN only if the counter is saturated: a wakeup is pending anyway
    TheEngine().stats.syscalls.fetch_add(1, std::memory_order_relaxed);
  }
}

void Loop::Add(Relay* r) {
  std::lock_guard<std::mutex> lock(mu);
  relays.Publish(r);
  PostLocked(Cmd{kAdd, r, r->id, nullptr});
}

void Loop::Abort(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu);
  Relay* r = relays.Find(id);
  if (r == nullptr) {
    ForgetUnadoptedLocked(id);
    if (udps.count(id) != 0) {  // a UDP flow of the fast path
      Cmd c{kUdpAbort, nullptr, id, nullptr};
      PostLocked(c);
    }
    return;  // ended already; its completion is on its way
  }
  // Started from the verdict cache and never adopted: JS refused it, so when it ends nothing is
  // kept for an adoption that will not come (tag read by Close under mu).
  if (r->fast != nullptr && r->tag == kUntracked) r->tag = kDiscarded;
  // SO_LINGER {1, 0} on both sockets now, from the caller's thread: the RSTs are then certain
  // even if the process exits before the loop gets to the command (exit closes every fd). The
  // fds are still open: Close() takes the relay out of the map (under mu) before closing them.
  linger lg{1, 0};
  for (Side& s : r->side) setsockopt(s.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  TheEngine().stats.syscalls.fetch_add(2, std::memory_order_relaxed);
  PostLocked(Cmd{kAbort, nullptr, id, nullptr});
}

void Loop::AbortChannel(Channel* ch) {
  std::lock_guard<std::mutex> lock(mu);
  PostLocked(Cmd{kAbortChannel, nullptr, 0, ch});
}

void Loop::Connect(Relay* r) {
  std::lock_guard<std::mutex> lock(mu);
  relays.Publish(r);
  PostLocked(Cmd{kConnect, r, r->id, nullptr});
}

void Loop::AddListener(Listener* l) {
  std::lock_guard<std::mutex> lock(mu);
  Cmd c{kAddListener, nullptr, 0, nullptr};
  c.listener = l;
  PostLocked(c);
}

void Loop::CloseListener(Listener* l) {
  std::promise<void> done;
  std::future<void> f = done.get_future();
  {
    std::lock_guard<std::mutex> lock(mu);
    Cmd c{kCloseListener, nullptr, 0, nullptr};
    c.listener = l;
    c.done = &done;
    PostLocked(c);
  }
  f.wait();  // the loop only has to close one fd: microseconds
}

void Loop::AbortFast(FastChannel* ch) {
  std::lock_guard<std::mutex> lock(mu);
  Cmd c{kAbortFast, nullptr, 0, nullptr};
  c.fast = ch;
  PostLocked(c);
}

// How long epoll_wait may sleep: 0 with relays queued for another turn, else until the first
// connect deadline or paused listener, else forever.
int Loop::TimeoutMs() {
  if (!again_.empty()) return 0;
  int64_t next = -1;
  if (!connecting_.empty()) next = connecting_.front().first;
  for (Listener* l : listeners_)
    if (l->paused && (next < 0 || l->resumeAt < next)) next = l->resumeAt;
  if (udpSweepAt_ != 0 && (next < 0 || udpSweepAt_ < next)) next = udpSweepAt_;
  if (next < 0) return -1;
  int64_t wait = next - NowMs();
  return wait <= 0 ? 0 : static_cast<int>(std::min<int64_t>(wait, 60000));
}

void Loop::Run() {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  std::string name = "netpold-splice" + std::to_string(index_);
  pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
  Stats& stats = TheEngine().stats;
  epoll_event evs[kMaxEvents];
  std::vector<Relay*> batch;
  for (;;) {
    int n = epoll_wait(ep_, evs, kMaxEvents, TimeoutMs());
    stats.wakeups.fetch_add(1, std::memory_order_relaxed);
    stats.syscalls.fetch_add(1, std::memory_order_relaxed);
    if (n < 0) n = 0;  // EINTR (signals are blocked here, so in practice never)
    for (int i = 0; i < n; i++) {
      auto* item = static_cast<EpollItem*>(evs[i].data.ptr);
      if (item == nullptr) {
        uint64_t v;
        ssize_t rd = read(wake_, &v, sizeof v);
        (void)rd;
        stats.syscalls.fetch_add(1, std::memory_order_relaxed);
        RunCommands();
        continue;
      }
      if (item->kind == EpollItem::kListener) {
        auto* l = static_cast<Listener*>(item);
        if (l->fd < 0) continue;  // a reply socket closed earlier in this turn
        if (l->proto == 6) OnAccept(l);
        else OnUdpListener(l);
        continue;
      }
      if (item->kind == EpollItem::kUdp) {
        auto* u = static_cast<UdpSock*>(item);
        if (!u->flow->finished) OnUdpReadable(u);
        continue;
      }
      auto* s = reinterpret_cast<Side*>(item);  // its first member (standard-layout)
      if (!RelayOf(s)->finished) OnEvent(s, evs[i].events);
    }
    // Relays that used up their budget last turn, after everyone else had a turn.
    batch.swap(again_);
    for (Relay* r : batch) {
      r->queued = false;
      if (!r->finished) Pump(r);
    }
    batch.clear();
    if (!connecting_.empty() || !listeners_.empty()) {
      int64_t now = NowMs();
      ExpireConnects(now);
      for (Listener* l : listeners_) {
        if (!l->paused || l->resumeAt > now) continue;
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.ptr = l;
        stats.syscalls.fetch_add(1, std::memory_order_relaxed);
        if (epoll_ctl(ep_, EPOLL_CTL_MOD, l->fd, &ev) == 0) l->paused = false;
        else l->resumeAt = now + 100;
      }
    }
    if (udpSweepAt_ != 0) {
      int64_t now = NowMs();
      if (now >= udpSweepAt_) SweepUdp(now);
    }
    // Freed only now: a later event of the same batch may still name a relay that ended.
    if (!dead_.empty()) {
      std::lock_guard<std::mutex> lock(mu);
      for (Relay* r : dead_) relays.Give(r);
    }
    dead_.clear();
    for (UdpFlow* f : deadUdp_) delete f;
    deadUdp_.clear();
    for (Listener* l : deadListeners_) delete l;
    deadListeners_.clear();
  }
}

void Loop::RunCommands() {
  std::vector<Cmd> cmds;
  {
    std::lock_guard<std::mutex> lock(mu);
    cmds.swap(cmds_);
  }
  Stats& stats = TheEngine().stats;
  for (const Cmd& c : cmds) {
    if (c.kind == kAdd) {
      Relay* r = c.relay;
      bool ok = true;
      for (Side& s : r->side) {
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP;
        ev.data.ptr = &s;
        Count(r);
        if (epoll_ctl(ep_, EPOLL_CTL_ADD, s.fd, &ev) != 0) {
          ok = false;
          break;
        }
        s.registered = true;
      }
      // An fd that is already readable or writable gets its first event from ADD itself.
      if (!ok) Fail(r, kEndAborted);
    } else if (c.kind == kConnect) {
      StartConnect(c.relay);
    } else if (c.kind == kUdpVerdict) {
      ApplyUdpVerdict(c);
    } else if (c.kind == kUdpAbort) {
      UdpFlow* f = nullptr;
      {
        std::lock_guard<std::mutex> lock(mu);
        auto it = udps.find(c.id);
        if (it != udps.end()) f = it->second;
      }
      if (f != nullptr && !f->finished) EndUdp(f, kEndAborted, 0);
    } else if (c.kind == kAbort) {
      Relay* r = nullptr;
      {
        std::lock_guard<std::mutex> lock(mu);
        r = relays.Find(c.id);
      }
      if (r != nullptr && !r->finished) Fail(r, kEndAborted);
    } else if (c.kind == kAddListener) {
      Listener* l = c.listener;
      epoll_event ev{};
      ev.events = EPOLLIN;  // level-triggered: a batch limit leaves the rest for the next turn
      ev.data.ptr = l;
      stats.syscalls.fetch_add(1, std::memory_order_relaxed);
      if (epoll_ctl(ep_, EPOLL_CTL_ADD, l->fd, &ev) != 0) {
        l->paused = true;  // retried by the resume check
        l->resumeAt = NowMs() + 100;
      }
      listeners_.push_back(l);
    } else if (c.kind == kCloseListener) {
      Listener* l = c.listener;
      for (size_t i = 0; i < listeners_.size(); i++) {
        if (listeners_[i] != l) continue;
        listeners_[i] = listeners_.back();
        listeners_.pop_back();
        break;
      }
      stats.syscalls.fetch_add(1, std::memory_order_relaxed);
      close(l->fd);  // leaves the epoll set with it (no other fd refers to it)
      delete l;
      c.done->set_value();
    } else {
      std::vector<Relay*> mine;
      {
        std::lock_guard<std::mutex> lock(mu);
        for (Relay* r : relays.Live()) {
          if (c.kind == kAbortChannel ? r->channel.get() == c.channel : r->fast == c.fast) mine.push_back(r);
        }
      }
      for (Relay* r : mine)
        if (!r->finished) Fail(r, kEndAborted);
      if (c.kind == kAbortFast) {
        {
          std::lock_guard<std::mutex> lock(mu);
          for (size_t i = 0; i < unadopted_.size();) {
            if (unadopted_[i].ch != c.fast) {
              i++;
              continue;
            }
            unadopted_[i] = unadopted_.back();
            unadopted_.pop_back();
          }
        }
        std::vector<UdpFlow*> flows;
        for (auto& kv : udpByKey_)
          if (kv.second->fast == c.fast) flows.push_back(kv.second);
        for (UdpFlow* f : flows)
          if (!f->finished) EndUdp(f, kEndAborted, 0);
      }
    }
  }
}

// Accepts what the listener has (up to a batch), reads each connection's original destination
// (its local address, under TPROXY) and hands the batch to JS for verdicts in one push.
void Loop::OnAccept(Listener* l) {
  Stats& stats = TheEngine().stats;
  PendingConn batch[kAcceptBatch];
  int n = 0;
  for (int i = 0; i < kAcceptBatch; i++) {
    sockaddr_storage peer{};
    socklen_t plen = sizeof peer;
    stats.syscalls.fetch_add(1, std::memory_order_relaxed);
    int fd = accept4(l->fd, reinterpret_cast<sockaddr*>(&peer), &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED) break;
      stats.acceptErrors.fetch_add(1, std::memory_order_relaxed);
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of fds or memory: a level-triggered listener would wake us at once again. Stop
        // polling it for a while; the kernel keeps the queued connections (up to the backlog).
        epoll_event ev{};
        ev.data.ptr = l;
        stats.syscalls.fetch_add(1, std::memory_order_relaxed);
        epoll_ctl(ep_, EPOLL_CTL_MOD, l->fd, &ev);
        l->paused = true;
        l->resumeAt = NowMs() + 100;
      }
      break;
    }
    sockaddr_storage local{};
    socklen_t llen = sizeof local;
    stats.syscalls.fetch_add(1, std::memory_order_relaxed);
    PendingConn& p = batch[n];
    p = PendingConn{};
    p.fd = fd;
    p.loop = index_;
    p.syscalls = 2;
    bool ok = getsockname(fd, reinterpret_cast<sockaddr*>(&local), &llen) == 0 && peer.ss_family == local.ss_family;
    if (ok && peer.ss_family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(&peer);
      auto* b = reinterpret_cast<sockaddr_in*>(&local);
      p.family = 4;
      p.src[0] = ntohl(a->sin_addr.s_addr);
      p.dst[0] = ntohl(b->sin_addr.s_addr);
      p.srcPort = ntohs(a->sin_port);
      p.dstPort = ntohs(b->sin_port);
    } else if (ok && peer.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&peer);
      auto* b = reinterpret_cast<sockaddr_in6*>(&local);
      p.family = 6;
      for (int k = 0; k < 4; k++) {
        uint32_t w;
        memcpy(&w, a->sin6_addr.s6_addr + 4 * k, 4);
        p.src[k] = ntohl(w);
        memcpy(&w, b->sin6_addr.s6_addr + 4 * k, 4);
        p.dst[k] = ntohl(w);
      }
      p.srcPort = ntohs(a->sin6_port);
      p.dstPort = ntohs(b->sin6_port);
    } else {
      ok = false;
    }
    if (!ok) {  // cannot be decided: refused (reset)
      linger lg{1, 0};
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      close(fd);
      stats.syscalls.fetch_add(2, std::memory_order_relaxed);
      stats.acceptErrors.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    n++;
  }
  if (n == 0) return;
  stats.accepted.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
  stats.acceptedByLoop[index_].fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
  FastChannel* ch = l->channel;
  // Verdicts this loop remembers: those connections are relayed now (see VerdictCache).
  Relay* cached[kAcceptBatch] = {};
  if (cache_ != nullptr) {
    uint32_t gen = TheEngine().verdictGen.load(std::memory_order_acquire);
    uint32_t key[9];
    for (int i = 0; i < n; i++) {
      PendingConn& p = batch[i];
      VerdictKeyOf(p.family, p.src, p.dst, p.dstPort, key);
      int action = cache_->Find(key, ch, gen);
      if (action != 0) cached[i] = StartCached(p, ch, action);
      if (cached[i] != nullptr) p.cachedAction = action;
    }
  }
  int refused = 0;
  Relay* refusedRelays[kAcceptBatch];
  {
    std::lock_guard<std::mutex> lock(ch->mu);
    for (int i = 0; i < n; i++) {
      if (!ch->closed && ch->pending.size() < kMaxPendingConns) {
        ch->pending.push_back(batch[i]);
      } else {
        refusedRelays[refused] = cached[i];
        batch[refused++] = batch[i];  // JS is not keeping up (or gone): refuse, never allow
      }
    }
    if (refused < n) ch->NotifyLocked();
  }
  for (int i = 0; i < refused; i++) {
    if (refusedRelays[i] != nullptr) {  // relayed from the cache: JS will never know it
      if (!refusedRelays[i]->finished) Fail(refusedRelays[i], kEndAborted);
      continue;
    }
    linger lg{1, 0};
    setsockopt(batch[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(batch[i].fd);
  }
  if (refused > 0) {
    stats.refusedBacklog.fetch_add(static_cast<uint64_t>(refused), std::memory_order_relaxed);
    stats.syscalls.fetch_add(2 * static_cast<uint64_t>(refused), std::memory_order_relaxed);
  }
}

// A fast-path relay for an accepted connection, to be connected upstream (action 1: from the
// client's address, 2: from the node): counted as started.
void InitFastRelay(Relay* r, const PendingConn& p, FastChannel* ch, uint32_t tag, int action) {
  r->fast = ch;
  r->tag = tag;
  r->syscalls = p.syscalls;
  r->side[0].fd = p.fd;
  r->side[0].exclusive = true;
  r->target = std::make_unique<ConnectTarget>();
  r->target->family = p.family;
  r->target->fromNode = action == 2;
  r->target->src = WordsToAddr(p.family, p.src, p.srcPort);
  r->target->dst = WordsToAddr(p.family, p.dst, p.dstPort);
  Stats& stats = TheEngine().stats;
  stats.started.fetch_add(1, std::memory_order_relaxed);
  stats.active.fetch_add(1, std::memory_order_relaxed);
}

// A connection whose verdict the cache has: its relay starts here and now, with no tag until JS
// adopts it. nullptr (JS decides it as usual) if the loop has no relay slot left.
Relay* Loop::StartCached(PendingConn& p, FastChannel* ch, int action) {
  Relay* r = NewRelay();
  if (r == nullptr) return nullptr;
  InitFastRelay(r, p, ch, kUntracked, action);  // before it is published: progress polls read it
  {
    std::lock_guard<std::mutex> lock(mu);
    relays.Publish(r);
  }
  TheEngine().stats.cacheHits.fetch_add(1, std::memory_order_relaxed);
  p.relayId = r->id;
  StartConnect(r);  // a failure ends the relay (no record: JS finds it gone when adopting)
  return r;
}

// The upstream connection of an allowed fast-path flow: transparent from the client's address
// (or a plain one from the node, when the node itself is the destination), non-blocking.
// The client socket is registered only once the upstream is connected, so nothing is read from
// the client before there is somewhere to send it.
void Loop::StartConnect(Relay* r) {
  ConnectTarget& t = *r->target;
  if (t.cacheGen != 0) {  // JS's verdict: remembered for the next connections of the same kind
    if (cache_ == nullptr) {
      uint32_t size = TheEngine().verdictCacheSize.load(std::memory_order_relaxed);
      if (size != 0) cache_ = std::make_unique<VerdictCache>(size);
    }
    if (cache_ != nullptr) cache_->Put(t.key, r->fast, t.cacheGen, t.fromNode ? 2 : 1);
  }
  Failure f;
  bool inProgress = false;
  const uint16_t clientPort = t.src.Port();
  for (int attempt = 0; attempt < 2; attempt++) {
    f = Failure{};
    Count(r);
    int fd = socket(t.family == 6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) f = Failure{errno, "socket", ""};
    r->side[1].fd = fd;
    r->side[1].exclusive = true;
    if (!f && !t.fromNode) {
      // From the client's address with a port of its own (see "Upstream ports"): the port is
      // picked at connect(), unique for the 4-tuple (IP_BIND_ADDRESS_NO_PORT).
      Count(r, 3);
      t.src.SetPort(0);
      f = SetTransparent(fd, t.family);
      if (!f) f = SetInt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1, "IP_BIND_ADDRESS_NO_PORT");
      if (!f && bind(fd, t.src.sa(), t.src.len) != 0) f = Failure{errno, "bind", ""};
    }
    if (!f) {
      int rc;
      Count(r);
      do {
        rc = connect(fd, t.dst.sa(), t.dst.len);
      } while (rc != 0 && errno == EINTR);
      if (rc != 0) {
        if (errno == EINPROGRESS) inProgress = true;
        else f = Failure{errno, "connect", ""};
      }
    }
    if (f || t.fromNode || attempt == 1) break;
    // The kernel may pick the client's own port (it checks sockets, not conntrack): that is the
    // one 4-tuple that must not be (see "Upstream ports"). Once more, then from another port.
    Count(r);
    SockAddr got;
    got.len = sizeof got.ss;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&got.ss), &got.len) != 0 || got.Port() != clientPort) break;
    Count(r);
    close(fd);
    r->side[1].fd = -1;
    inProgress = false;
  }
  if (!f) {
    Side& s = r->side[1];
    s.readable = false;
    s.writable = false;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP;
    ev.data.ptr = &s;
    Count(r);
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, s.fd, &ev) != 0) f = Failure{errno, "epoll_ctl", ""};
    else s.registered = true;
  }
  if (f) {
    r->error = f.err;
    TheEngine().stats.connectFailures.fetch_add(1, std::memory_order_relaxed);
    Fail(r, kEndUpstreamFailed);
    return;
  }
  r->connecting = true;
  connecting_.emplace_back(NowMs() + TheEngine().connectTimeoutMs.load(std::memory_order_relaxed), r->id);
  (void)inProgress;  // connected at once or not: the first EPOLLOUT edge tells (OnEvent)
}

// The upstream connect finished (first event on it while connecting): the relay starts.
void Loop::Connected(Relay* r) {
  r->connecting = false;
  r->target.reset();
  Side& c = r->side[0];
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP;
  ev.data.ptr = &c;
  Count(r);
  if (epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &ev) != 0) {
    Fail(r, kEndAborted);
    return;
  }
  c.registered = true;  // ADD reports what the client has already sent (EPOLLIN) right away
}

void Loop::ExpireConnects(int64_t now) {
  while (!connecting_.empty() && connecting_.front().first <= now) {
    uint64_t id = connecting_.front().second;
    connecting_.pop_front();
    Relay* r = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu);
      r = relays.Find(id);
    }
    if (r == nullptr || r->finished || !r->connecting) continue;
    r->error = ETIMEDOUT;
    TheEngine().stats.connectTimeouts.fetch_add(1, std::memory_order_relaxed);
    Fail(r, kEndUpstreamFailed);
  }
}

// ---- UDP fast path: the loop side -------------------------------------------------------------

void Loop::UdpVerdict(uint64_t id, int action, uint32_t tag, FastChannel* ch) {
  std::lock_guard<std::mutex> lock(mu);
  Cmd c{kUdpVerdict, nullptr, id, nullptr};
  c.action = action;
  c.tag = tag;
  c.fast = ch;
  PostLocked(c);
}

namespace {
bool KeyFromAddrs(const sockaddr_storage& src, const sockaddr_storage& dst, UdpKey* k) {
  memset(k, 0, sizeof *k);
  if (src.ss_family != dst.ss_family) return false;
  if (src.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&src);
    auto* b = reinterpret_cast<const sockaddr_in*>(&dst);
    k->family = 4;
    k->src[0] = ntohl(a->sin_addr.s_addr);
    k->dst[0] = ntohl(b->sin_addr.s_addr);
    k->srcPort = ntohs(a->sin_port);
    k->dstPort = ntohs(b->sin_port);
    return true;
  }
  if (src.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&src);
    auto* b = reinterpret_cast<const sockaddr_in6*>(&dst);
    k->family = 6;
    for (int i = 0; i < 4; i++) {
      uint32_t w;
      memcpy(&w, a->sin6_addr.s6_addr + 4 * i, 4);
      k->src[i] = ntohl(w);
      memcpy(&w, b->sin6_addr.s6_addr + 4 * i, 4);
      k->dst[i] = ntohl(w);
    }
    k->srcPort = ntohs(a->sin6_port);
    k->dstPort = ntohs(b->sin6_port);
    return true;
  }
  return false;
}

// Sends msgs[from, to) on fd in as few sendmmsg calls as it takes; returns how many left.
constexpr size_t kRawHdrMax = 48;  // IPv6 (40) + UDP (8)

uint32_t SumWords(const void* p, size_t len, uint32_t sum) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i + 1 < len; i += 2) sum += static_cast<uint32_t>(b[i] << 8 | b[i + 1]);
  if (len & 1) sum += static_cast<uint32_t>(b[len - 1] << 8);
  return sum;
}

uint16_t FoldSum(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum & 0xffff);
}

void Put16(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}

void Put32(uint8_t* p, uint32_t v) {
  Put16(p, v >> 16);
  Put16(p + 2, v & 0xffff);
}

// The IP and UDP headers (into `hdr`, kRawHdrMax bytes) of a reply on flow `k`, from its
// destination to its source, carrying `payload` (`len` bytes, sent after the headers); returns
// the headers' length, 0 if the datagram cannot be carried. The UDP checksum covers the
// pseudo-header, the UDP header and the payload (mandatory for IPv6). For IPv4 the kernel fills
// in the header checksum and the id (raw(7), IP_HDRINCL).
// A raw socket for whole UDP datagrams (headers included), non-blocking; -1 and *f on failure.
// IPv4 IPPROTO_RAW implies IP_HDRINCL; IPv6 needs it said. Transparent: the interception's
// output chain takes connections of non-transparent local sockets for the node's own.
int OpenRawSocket(int family, Failure* f) {
  int s = socket(family == 6 ? AF_INET6 : AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_RAW);
  if (s < 0) {
    *f = Failure{errno, "socket", "SOCK_RAW"};
    return -1;
  }
  *f = family == 6 ? SetInt(s, IPPROTO_IPV6, IPV6_HDRINCL, 1, "IPV6_HDRINCL") : Failure{};
  if (!*f) *f = SetTransparent(s, family);
  if (*f) {
    close(s);
    return -1;
  }
  return s;
}

size_t BuildUdpHeaders(const UdpKey& k, char* hdr, size_t len, const void* payload) {
  auto* h = reinterpret_cast<uint8_t*>(hdr);
  const size_t ulen = 8 + len;
  const size_t ip = k.family == 6 ? 40 : 20;
  if (ip + ulen > 65535 + (k.family == 6 ? 40 : 0)) return 0;
  memset(h, 0, ip + 8);
  uint32_t sum = 17 + static_cast<uint32_t>(ulen);  // pseudo-header: protocol and UDP length
  if (k.family == 6) {
    h[0] = 0x60;
    Put16(h + 4, static_cast<uint32_t>(ulen));
    h[6] = 17;  // next header: UDP
    h[7] = 64;  // hop limit
    for (int i = 0; i < 4; i++) {
      Put32(h + 8 + 4 * i, k.dst[i]);
      Put32(h + 24 + 4 * i, k.src[i]);
    }
    sum = SumWords(h + 8, 32, sum);
  } else {
    h[0] = 0x45;
    Put16(h + 2, static_cast<uint32_t>(ip + ulen));
    Put16(h + 6, 0x4000);  // don't fragment
    h[8] = 64;             // TTL
    h[9] = 17;             // UDP
    Put32(h + 12, k.dst[0]);
    Put32(h + 16, k.src[0]);
    sum = SumWords(h + 12, 8, sum);
  }
  uint8_t* u = h + ip;
  Put16(u, k.dstPort);
  Put16(u + 2, k.srcPort);
  Put16(u + 4, static_cast<uint32_t>(ulen));
  sum = SumWords(u, 8, sum);
  sum = SumWords(payload, len, sum);
  uint16_t c = FoldSum(sum);
  Put16(u + 6, c == 0 ? 0xffff : c);
  return ip + 8;
}

int SendRun(int fd, mmsghdr* msgs, int n, Stats& stats) {
  int done = 0;  // sent or skipped
  int sent = 0;
  while (done < n) {
    stats.syscalls.fetch_add(1, std::memory_order_relaxed);
    stats.udpSendCalls.fetch_add(1, std::memory_order_relaxed);
    int k = sendmmsg(fd, msgs + done, static_cast<unsigned>(n - done), MSG_DONTWAIT);
    if (k > 0) {
      done += k;
      sent += k;
      continue;
    }
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && errno == EMSGSIZE) {  // this datagram only (a raw socket does not fragment)
      done++;
      continue;
    }
    break;  // EAGAIN (send buffer full), ECONNREFUSED...: the rest is dropped, as UDP may
  }
  stats.udpDatagrams.fetch_add(static_cast<uint64_t>(sent), std::memory_order_relaxed);
  if (sent < n) stats.udpDropped.fetch_add(static_cast<uint64_t>(n - sent), std::memory_order_relaxed);
  return sent;
}
}  // namespace

// Datagrams from clients, on the listener or on a reply socket: a batch in; each run of
// datagrams of one allowed flow out on its upstream socket in one sendmmsg; the first datagrams
// of a new flow queued with it while JS decides.
void Loop::OnUdpListener(Listener* l) {
  Engine& eng = TheEngine();
  Stats& stats = eng.stats;
  if (!udpBuf_) udpBuf_.reset(new char[kUdpBatch * kUdpSlot]);
  mmsghdr msgs[kUdpBatch];
  iovec iovs[kUdpBatch];
  sockaddr_storage from[kUdpBatch];
  alignas(cmsghdr) unsigned char control[kUdpBatch][CMSG_SPACE(sizeof(sockaddr_in6)) + CMSG_SPACE(64)];
  PendingConn batch[kUdpBatch];
  int nb = 0;
  memset(msgs, 0, sizeof msgs);
  for (int i = 0; i < kUdpBatch; i++) {
    iovs[i] = iovec{udpBuf_.get() + static_cast<size_t>(i) * kUdpSlot, kUdpSlot};
    msgs[i].msg_hdr.msg_name = &from[i];
    msgs[i].msg_hdr.msg_namelen = sizeof from[i];
    msgs[i].msg_hdr.msg_iov = &iovs[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_control = control[i];
    msgs[i].msg_hdr.msg_controllen = sizeof control[i];
  }
  stats.syscalls.fetch_add(1, std::memory_order_relaxed);
  stats.udpRecvCalls.fetch_add(1, std::memory_order_relaxed);
  int n = recvmmsg(l->fd, msgs, kUdpBatch, MSG_DONTWAIT, nullptr);
  if (n <= 0) return;
  int64_t now = NowMs();
  // Runs of one flow's datagrams, rebuilt in place as outgoing messages (no names: connected).
  mmsghdr out[kUdpBatch];
  iovec outIov[kUdpBatch];
  int runLen = 0;
  UdpFlow* runFlow = nullptr;
  auto flush = [&]() {
    if (runLen == 0) return;
    int sent = SendRun(runFlow->upstream.fd, out, runLen, stats);
    uint64_t bytes = 0;
    for (int j = 0; j < sent; j++) bytes += outIov[j].iov_len;
    runFlow->bytes[0].fetch_add(bytes, std::memory_order_relaxed);
    runLen = 0;
    runFlow = nullptr;
  };
  for (int i = 0; i < n; i++) {
    msghdr& m = msgs[i].msg_hdr;
    if (m.msg_flags & MSG_TRUNC) {
      stats.udpDropped.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    sockaddr_storage orig{};
    bool haveOrig = false;
    for (cmsghdr* c = CMSG_FIRSTHDR(&m); c != nullptr; c = CMSG_NXTHDR(&m, c)) {
      if ((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_ORIGDSTADDR && c->cmsg_len >= CMSG_LEN(sizeof(sockaddr_in))) ||
          (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_ORIGDSTADDR &&
           c->cmsg_len >= CMSG_LEN(sizeof(sockaddr_in6)))) {
        size_t len = c->cmsg_len - CMSG_LEN(0);
        memcpy(&orig, CMSG_DATA(c), len < sizeof orig ? len : sizeof orig);
        haveOrig = true;
      }
    }
    UdpKey key;
    if (!haveOrig || !KeyFromAddrs(from[i], orig, &key)) {
      stats.udpDropped.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    char* data = static_cast<char*>(m.msg_iov->iov_base);
    size_t len = msgs[i].msg_len;
    auto it = udpByKey_.find(key);
    if (it != udpByKey_.end()) {
      UdpFlow* f = it->second;
      f->lastSeen = now;
      if (f->state == UdpFlow::kAllowed) {
        if (runFlow != f) flush();
        runFlow = f;
        outIov[runLen] = iovec{data, len};
        memset(&out[runLen].msg_hdr, 0, sizeof out[runLen].msg_hdr);
        out[runLen].msg_hdr.msg_iov = &outIov[runLen];
        out[runLen].msg_hdr.msg_iovlen = 1;
        runLen++;
      } else if (f->state == UdpFlow::kPending && f->queued.size() < kUdpQueueMax) {
        f->queued.emplace_back(data, len);
      } else {
        stats.udpDropped.fetch_add(1, std::memory_order_relaxed);  // denied, or queue full
      }
      continue;
    }
    if (udpByKey_.size() >= kUdpFlowsMax) {
      stats.udpDropped.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    auto* f = new UdpFlow();
    f->id = eng.NewUdpId(index_);
    f->fast = l->channel;
    f->key = key;
    f->lastSeen = now;
    f->queued.emplace_back(data, len);
    f->upstream.flow = f;
    udpByKey_.emplace(key, f);
    {
      std::lock_guard<std::mutex> lock(mu);
      udps.emplace(f->id, f);
    }
    stats.udpFlows.fetch_add(1, std::memory_order_relaxed);
    stats.udpActive.fetch_add(1, std::memory_order_relaxed);
    PendingConn& p = batch[nb++];
    p = PendingConn{};
    p.proto = 17;
    p.udpId = f->id;
    p.loop = index_;
    p.family = key.family;
    memcpy(p.src, key.src, sizeof p.src);
    memcpy(p.dst, key.dst, sizeof p.dst);
    p.srcPort = key.srcPort;
    p.dstPort = key.dstPort;
  }
  flush();
  if (udpSweepAt_ == 0) udpSweepAt_ = now + std::max<int64_t>(250, std::min<int64_t>(5000, eng.udpIdleMs.load() / 4));
  if (nb == 0) return;
  FastChannel* ch = l->channel;
  int refused = 0;
  {
    std::lock_guard<std::mutex> lock(ch->mu);
    for (int i = 0; i < nb; i++) {
      if (!ch->closed && ch->pending.size() < kMaxPendingConns) ch->pending.push_back(batch[i]);
      else batch[refused++] = batch[i];
    }
    if (refused < nb) ch->NotifyLocked();
  }
  for (int i = 0; i < refused; i++) {  // JS is not keeping up: dropped, decided afresh later
    std::lock_guard<std::mutex> lock(mu);
    auto it = udps.find(batch[i].udpId);
    if (it != udps.end()) EndUdpLockedForget(it->second);
  }
  if (refused > 0) stats.refusedBacklog.fetch_add(static_cast<uint64_t>(refused), std::memory_order_relaxed);
}

// The destination's shared reply socket, opened on first use.
Listener* Loop::ReplySocket(const UdpKey& flowKey, FastChannel* ch, Failure* fail) {
  UdpKey k{};
  k.family = flowKey.family;
  memcpy(k.dst, flowKey.dst, sizeof k.dst);
  k.dstPort = flowKey.dstPort;
  auto it = replies_.find(k);
  if (it != replies_.end()) return it->second;
  Stats& stats = TheEngine().stats;
  int fd = socket(k.family == 6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  stats.syscalls.fetch_add(7, std::memory_order_relaxed);
  if (fd < 0) {
    *fail = Failure{errno, "socket", ""};
    return nullptr;
  }
  SockAddr local = WordsToAddr(k.family, k.dst, k.dstPort);
  Failure f = SetTransparent(fd, k.family);
  if (!f) f = SetInt(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
  if (!f && k.family == 6) f = SetInt(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY");
  if (!f) {
    f = k.family == 6 ? SetInt(fd, IPPROTO_IPV6, IPV6_RECVORIGDSTADDR, 1, "IPV6_RECVORIGDSTADDR")
                      : SetInt(fd, IPPROTO_IP, IP_RECVORIGDSTADDR, 1, "IP_RECVORIGDSTADDR");
  }
  if (!f && bind(fd, local.sa(), local.len) != 0) f = Failure{errno, "bind", ""};
  auto* l = new Listener();
  l->fd = fd;
  l->family = k.family;
  l->proto = 17;
  l->channel = ch;
  l->reply = true;
  l->addr = k;
  if (!f) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = l;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0) f = Failure{errno, "epoll_ctl", ""};
  }
  if (f) {
    close(fd);
    delete l;
    *fail = f;
    return nullptr;
  }
  replies_.emplace(k, l);
  return l;
}

void Loop::ReleaseReply(Listener* l) {
  if (--l->users > 0) return;
  replies_.erase(l->addr);
  TheEngine().stats.syscalls.fetch_add(1, std::memory_order_relaxed);
  close(l->fd);  // leaves the epoll set with it
  l->fd = -1;
  deadListeners_.push_back(l);  // a later event of this turn may still name it
}

// An allowed flow's upstream socket, and its share of the destination's reply socket. A flow
// to the node itself has no reply socket: one bound to the node's address and port would fail
// next to the node's own server there, or (when both allow address reuse) take that server's
// datagrams from everyone. Its replies are written whole, headers included, to a raw socket.
bool Loop::OpenUdpSockets(UdpFlow* f, bool fromNode, Failure* fail) {
  const UdpKey& k = f->key;
  if (fromNode) {
    if (RawSocket(k.family, fail) < 0) return false;
    f->rawReply = true;
  } else {
    Listener* reply = ReplySocket(k, f->fast, fail);
    if (reply == nullptr) return false;
    reply->users++;
    f->reply = reply;
  }
  SockAddr client = WordsToAddr(k.family, k.src, 0);  // a port of its own: see "Upstream ports"
  SockAddr server = WordsToAddr(k.family, k.dst, k.dstPort);
  Stats& stats = TheEngine().stats;
  Failure& e = *fail;
  // A UDP socket, from the client's address (bound now) unless from the node.
  auto open = [&]() -> int {
    int s = socket(k.family == 6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    stats.syscalls.fetch_add(fromNode ? 1 : 3, std::memory_order_relaxed);  // socket, setsockopt, bind
    if (s < 0) {
      e = Failure{errno, "socket", ""};
      return -1;
    }
    if (!fromNode) {
      // No SO_REUSEADDR: the kernel must pick a port no other socket of this address holds
      // (two connected sockets sharing address, port and destination would split the replies).
      e = SetTransparent(s, k.family);
      if (!e && k.family == 6) e = SetInt(s, IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY");
      if (!e && bind(s, client.sa(), client.len) != 0) e = Failure{errno, "bind", ""};
    }
    return s;
  };
  int fd = open();
  if (fd < 0) return false;
  f->upstream.fd = fd;
  if (!e && !fromNode) {
    // Not the client's own port, the one 4-tuple that must not be (see "Upstream ports"): if
    // the kernel picked it, another port, picked while this one is still held.
    SockAddr got;
    got.len = sizeof got.ss;
    stats.syscalls.fetch_add(1, std::memory_order_relaxed);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&got.ss), &got.len) == 0 && got.Port() == k.srcPort) {
      int other = open();
      stats.syscalls.fetch_add(1, std::memory_order_relaxed);
      close(fd);
      fd = other;
      f->upstream.fd = fd;
      if (fd < 0) return false;
    }
  }
  if (!e) stats.syscalls.fetch_add(2, std::memory_order_relaxed);  // connect, epoll_ctl
  if (!e && connect(fd, server.sa(), server.len) != 0) e = Failure{errno, "connect", ""};
  if (!e) {
    epoll_event ev{};
    ev.events = EPOLLIN;  // level-triggered: a batch limit leaves the rest for the next turn
    ev.data.ptr = &f->upstream;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0) e = Failure{errno, "epoll_ctl", ""};
  }
  return !e;
}

void Loop::FlushQueued(UdpFlow* f) {
  Stats& stats = TheEngine().stats;
  for (const std::string& d : f->queued) {
    stats.syscalls.fetch_add(1, std::memory_order_relaxed);
    if (send(f->upstream.fd, d.data(), d.size(), MSG_DONTWAIT) >= 0) {
      f->bytes[0].fetch_add(d.size(), std::memory_order_relaxed);
      stats.udpDatagrams.fetch_add(1, std::memory_order_relaxed);
    } else {
      stats.udpDropped.fetch_add(1, std::memory_order_relaxed);
    }
  }
  std::vector<std::string>().swap(f->queued);
}

void Loop::ApplyUdpVerdict(const Cmd& c) {
  UdpFlow* f = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = udps.find(c.id);
    if (it != udps.end()) f = it->second;
  }
  if (f == nullptr || f->finished) {
    // Gone meanwhile (swept, aborted): JS still counts on an end for the tag it gave.
    if (c.action != 0 && c.fast != nullptr) {
      std::lock_guard<std::mutex> lock(c.fast->mu);
      if (!c.fast->closed) {
        c.fast->done.push_back(FastDone{c.tag, kEndAborted, 0, 0, 0, 0});
        c.fast->NotifyLocked();
      }
    }
    return;
  }
  if (c.action == 0) {  // refused: forgotten, the next datagram is decided afresh
    EndUdp(f, kEndAborted, 0);
    return;
  }
  f->tag = c.tag;
  if (c.action == 3) {  // denied: remembered (datagrams dropped here) until idle or aborted
    f->state = UdpFlow::kDenied;
    TheEngine().stats.udpDropped.fetch_add(f->queued.size(), std::memory_order_relaxed);
    std::vector<std::string>().swap(f->queued);
    return;
  }
  Failure fail;
  if (!OpenUdpSockets(f, c.action == 2, &fail)) {
    TheEngine().stats.udpErrors.fetch_add(1, std::memory_order_relaxed);
    EndUdp(f, kEndUpstreamFailed, fail.err);
    return;
  }
  f->state = UdpFlow::kAllowed;
  FlushQueued(f);
}

int Loop::RawSocket(int family, Failure* fail) {
  int& fd = raw_[family == 6 ? 1 : 0];
  if (fd >= 0) return fd;
  TheEngine().stats.syscalls.fetch_add(3, std::memory_order_relaxed);
  Failure f;
  int s = OpenRawSocket(family, &f);
  if (s < 0) {
    if (fail != nullptr) *fail = f;
    return -1;
  }
  if (!rawHdrs_) rawHdrs_.reset(new char[kUdpBatch * kRawHdrMax]);
  fd = s;
  return fd;
}

// A flow's upstream socket is readable: the server's datagrams, a batch in, the same batch out
// through the destination's reply socket to the client.
void Loop::OnUdpReadable(UdpSock* s) {
  UdpFlow* f = s->flow;
  Stats& stats = TheEngine().stats;
  if (!udpBuf_) udpBuf_.reset(new char[kUdpBatch * kUdpSlot]);
  mmsghdr msgs[kUdpBatch];
  iovec iovs[kUdpBatch];
  SockAddr client = WordsToAddr(f->key.family, f->key.src, f->key.srcPort);
  for (int round = 0; round < 4; round++) {  // then other sockets get a turn (level-triggered)
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < kUdpBatch; i++) {
      iovs[i] = iovec{udpBuf_.get() + static_cast<size_t>(i) * kUdpSlot, kUdpSlot};
      msgs[i].msg_hdr.msg_iov = &iovs[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    stats.syscalls.fetch_add(1, std::memory_order_relaxed);
    stats.udpRecvCalls.fetch_add(1, std::memory_order_relaxed);
    int n = recvmmsg(s->fd, msgs, kUdpBatch, MSG_DONTWAIT, nullptr);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      // An ICMP error queued on the connected socket (ECONNREFUSED: nothing listens there):
      // counted; the flow stays, as a kernel-forwarded flow would.
      stats.udpErrors.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (n == 0) return;
    int m = 0;
    uint64_t bytes = 0;
    for (int i = 0; i < n; i++) {
      if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
        stats.udpDropped.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      iovs[m] = iovec{iovs[i].iov_base, msgs[i].msg_len};
      memset(&msgs[m].msg_hdr, 0, sizeof msgs[m].msg_hdr);
      msgs[m].msg_hdr.msg_iov = &iovs[m];
      msgs[m].msg_hdr.msg_iovlen = 1;
      msgs[m].msg_hdr.msg_name = const_cast<sockaddr*>(client.sa());
      msgs[m].msg_hdr.msg_namelen = client.len;
      bytes += msgs[i].msg_len;
      m++;
    }
    if (f->rawReply) {
      int raw = RawSocket(f->key.family, nullptr);
      if (raw >= 0) {
        // Each datagram as [IP and UDP headers][payload]: two iovecs, headers from the flow.
        SockAddr to = WordsToAddr(f->key.family, f->key.src, 0);
        int out = 0;
        for (int i = 0; i < m; i++) {
          char* hdr = rawHdrs_.get() + static_cast<size_t>(out) * kRawHdrMax;
          size_t hlen = BuildUdpHeaders(f->key, hdr, iovs[i].iov_len, iovs[i].iov_base);
          if (hlen == 0) {
            stats.udpDropped.fetch_add(1, std::memory_order_relaxed);
            continue;
          }
          rawIovs_[2 * out] = iovec{hdr, hlen};
          rawIovs_[2 * out + 1] = iovs[i];
          msgs[out].msg_hdr = msghdr{};
          msgs[out].msg_hdr.msg_iov = &rawIovs_[2 * out];
          msgs[out].msg_hdr.msg_iovlen = 2;
          msgs[out].msg_hdr.msg_name = const_cast<sockaddr*>(to.sa());
          msgs[out].msg_hdr.msg_namelen = to.len;
          out++;
        }
        SendRun(raw, msgs, out, stats);
      }
    } else if (f->reply != nullptr && f->reply->fd >= 0) {
      SendRun(f->reply->fd, msgs, m, stats);
    }
    f->bytes[1].fetch_add(bytes, std::memory_order_relaxed);
    f->lastSeen = NowMs();
    if (n < kUdpBatch) return;
  }
}

// Out of the JS-visible maps (mu held by the caller) and closed, with no completion: a flow JS
// never heard of (its pending record was refused).
void Loop::EndUdpLockedForget(UdpFlow* f) {
  udps.erase(f->id);
  udpByKey_.erase(f->key);
  f->finished = true;
  f->tag = kUntracked;
  TheEngine().stats.udpActive.fetch_sub(1, std::memory_order_relaxed);
  deadUdp_.push_back(f);
}

void Loop::EndUdp(UdpFlow* f, int end, int error) {
  f->finished = true;
  {
    std::lock_guard<std::mutex> lock(mu);
    udps.erase(f->id);
  }
  udpByKey_.erase(f->key);
  Stats& stats = TheEngine().stats;
  if (f->upstream.fd >= 0) {
    stats.syscalls.fetch_add(1, std::memory_order_relaxed);
    close(f->upstream.fd);  // leaves the epoll set with it (no other fd refers to it)
    f->upstream.fd = -1;
  }
  if (f->reply != nullptr) {
    ReleaseReply(f->reply);
    f->reply = nullptr;
  }
  stats.udpActive.fetch_sub(1, std::memory_order_relaxed);
  if (f->tag != kUntracked && f->fast != nullptr) {
    FastChannel* ch = f->fast;
    std::lock_guard<std::mutex> lock(ch->mu);
    if (!ch->closed) {
      ch->done.push_back(FastDone{f->tag, end, error, f->bytes[0].load(std::memory_order_relaxed),
                                  f->bytes[1].load(std::memory_order_relaxed), 0});
      ch->NotifyLocked();
    }
  }
  deadUdp_.push_back(f);
}

// Ends flows idle for udpIdleMs (end Done): allowed, denied, and pending ones JS never answered.
void Loop::SweepUdp(int64_t now) {
  Engine& eng = TheEngine();
  int64_t idle = eng.udpIdleMs.load(std::memory_order_relaxed);
  std::vector<UdpFlow*> idleFlows;
  for (auto& kv : udpByKey_)
    if (now - kv.second->lastSeen >= idle) idleFlows.push_back(kv.second);
  for (UdpFlow* f : idleFlows) EndUdp(f, kEndDone, 0);
  udpSweepAt_ = udpByKey_.empty() ? 0 : now + std::max<int64_t>(250, std::min<int64_t>(5000, idle / 4));
}

void Loop::OnEvent(Side* s, uint32_t events) {
  Relay* r = RelayOf(s);
  if (r->connecting) {
    if (s != &r->side[1]) return;
    // The connect's outcome: writable and no error = connected; an error (refused, unreachable,
    // reset) shows as EPOLLERR/EPOLLHUP and fails the flow, the client gets a reset. SO_ERROR is
    // read only then, for the errno.
    if ((events & (EPOLLERR | EPOLLHUP)) != 0) {
      int soerr = 0;
      socklen_t len = sizeof soerr;
      Count(r);
      if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) soerr = errno;
      if (soerr != 0 || (events & EPOLLOUT) == 0) {  // else: connected, and the peer already closed
        r->error = soerr != 0 ? soerr : ECONNRESET;
        TheEngine().stats.connectFailures.fetch_add(1, std::memory_order_relaxed);
        Fail(r, kEndUpstreamFailed);
        return;
      }
    }
    if ((events & EPOLLOUT) == 0) return;
    Connected(r);
    if (r->finished) return;
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) s->readable = true;
  if (events & (EPOLLRDHUP | EPOLLHUP)) s->rdhup = true;
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) s->writable = true;
  // Bytes that arrived before an RST are still relayed (as Node reads them before the error).
  Pump(r);
  if (r->finished || (events & EPOLLERR) == 0) return;
  // A pending socket error (an RST: ECONNRESET, or EPIPE after its FIN; ETIMEDOUT...) that the
  // pump did not trip over: that direction may be idle, blocked by the other side's
  // backpressure, or past its EOF (a reset after a FIN reads as 0, not as the error).
  int soerr = 0;
  socklen_t len = sizeof soerr;
  Count(r);
  if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) soerr = errno;
  if (soerr != 0) Fail(r, s == &r->side[0] ? kEndResetClient : kEndResetUpstream);
}

void Loop::Pump(Relay* r) {
  int budget = kPumpBudget;
  for (;;) {
    int a = Step(r, 0, &budget);
    if (a < 0) return;
    int b = Step(r, 1, &budget);
    if (b < 0) return;
    if (r->dir[0].shut && r->dir[1].shut) {
      Close(r, kEndDone);
      return;
    }
    if (a == 0 && b == 0) return;  // waiting for an event
    if (budget <= 0) {
      if (!r->queued) {
        r->queued = true;
        again_.push_back(r);
      }
      return;
    }
  }
}

// One round of direction d: out of the pipe into the destination, then from the source into
// the pipe, then the FIN once the source ended and the pipe is empty. 1 if anything changed,
// 0 if not, -1 if the relay failed (and is closed).
int Loop::Step(Relay* r, int d, int* budget) {
  Dir& dir = r->dir[d];
  Side& src = r->side[d];
  Side& dst = r->side[1 - d];
  const int srcFailed = d == 0 ? kEndResetClient : kEndResetUpstream;
  const int dstFailed = d == 0 ? kEndResetUpstream : kEndResetClient;
  Stats& stats = TheEngine().stats;
  bool changed = false;
  if (dir.inPipe > 0 && dst.writable) {
    Count(r);
    stats.spliceCalls.fetch_add(1, std::memory_order_relaxed);
    (*budget)--;
    ssize_t n = ::splice(dir.pipe.r, nullptr, dst.fd, nullptr, dir.inPipe, kSpliceFlags);
    if (n > 0) {
      dir.inPipe -= static_cast<uint32_t>(n);
      dir.bytes.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
      r->moved.store(true, std::memory_order_release);
      (d == 0 ? stats.bytesToServer : stats.bytesToClient).fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
      changed = true;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      dst.writable = false;  // the socket's send buffer is full: wait for EPOLLOUT
    } else if (n < 0 && errno == EINTR) {
      changed = true;
    } else {
      Fail(r, dstFailed);  // EPIPE, ECONNRESET...: the destination is gone
      return -1;
    }
  }
  if (!dir.eof && src.readable && dir.pipe.r < 0 && dst.writable && !dir.bulk) {
    int c = Copy(r, d, budget);
    if (c < 0) return -1;
    if (c > 0) changed = true;
  } else if (!dir.eof && src.readable && (dir.pipe.r < 0 || dir.inPipe < dir.pipe.cap)) {
    if (dir.pipe.r < 0) {
      Failure f;
      if (!TakePipe(r, &dir.pipe, &f)) {  // EMFILE/ENFILE: this flow cannot go on
        Fail(r, kEndAborted);
        return -1;
      }
    }
    Count(r);
    stats.spliceCalls.fetch_add(1, std::memory_order_relaxed);
    (*budget)--;
    ssize_t n = ::splice(src.fd, nullptr, dir.pipe.w, nullptr, dir.pipe.cap - dir.inPipe, kSpliceFlags);
    if (n > 0) {
      dir.inPipe += static_cast<uint32_t>(n);
      changed = true;
      if (dir.inPipe == dir.pipe.cap && !dir.grown) {
        // A full pipe: a bulk direction. Grow it once (best effort: EPERM past the user's
        // pipe quota, then the pipe stays as it is); a pooled pipe may be grown already.
        dir.grown = true;
        int bulk = TheEngine().pool.bulkSize;
        if (dir.pipe.cap < static_cast<uint32_t>(bulk)) {
          Count(r);
          int cap = fcntl(dir.pipe.w, F_SETPIPE_SZ, bulk);
          if (cap > 0) dir.pipe.cap = static_cast<uint32_t>(cap);
        }
      }
    } else if (n == 0) {
      dir.eof = true;  // the source's FIN, after all its bytes
      changed = true;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      // With an empty pipe this means the socket has nothing: wait for EPOLLIN. With bytes in
      // the pipe it may instead mean the pipe ran out of slots (a pipe holds a fixed number of
      // buffers, however small): keep the flag and try again once the pipe has drained.
      if (dir.inPipe == 0) src.readable = false;
    } else if (errno == EINTR) {
      changed = true;
    } else {
      Fail(r, srcFailed);
      return -1;
    }
  }
  if (dir.eof && dir.inPipe == 0 && !dir.shut) {
    if (r->dir[1 - d].shut) {
      // The other direction is over too: the relay closes both sockets next, and close() sends
      // this FIN (everything was read up to the source's FIN, so nothing unread turns it into an
      // RST). One syscall (and its inline packet processing) less per connection.
      dir.shut = true;
      return 1;
    }
    Count(r);
    if (shutdown(dst.fd, SHUT_WR) != 0) {
      Fail(r, dstFailed);
      return -1;
    }
    dir.shut = true;  // the other direction goes on
    changed = true;
  }
  // Nothing in flight and nothing to read for now: the pipe goes back to the pool.
  if (dir.pipe.r >= 0 && dir.inPipe == 0 && (dir.eof || !src.readable)) GivePipe(r, &dir.pipe, true);
  return changed ? 1 : 0;
}

// Direction d without a pipe: recv() into the loop's buffer, send() on at once. What the
// destination does not take goes into a pipe (empty, so it all fits), and the splice path
// carries on from there. 1 if anything changed, 0 if not, -1 if the relay failed.
int Loop::Copy(Relay* r, int d, int* budget) {
  Dir& dir = r->dir[d];
  Side& src = r->side[d];
  Side& dst = r->side[1 - d];
  if (copyBuf_ == nullptr) copyBuf_.reset(new char[kCopyBytes]);
  char* buf = copyBuf_.get();
  Count(r);
  (*budget)--;
  ssize_t n = recv(src.fd, buf, kCopyBytes, MSG_DONTWAIT);
  if (n == 0) {
    dir.eof = true;  // the source's FIN, after all its bytes
    return 1;
  }
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      src.readable = false;
      return 0;
    }
    if (errno == EINTR) return 1;
    Fail(r, d == 0 ? kEndResetClient : kEndResetUpstream);
    return -1;
  }
  // A short read emptied the socket: wait for the next edge, which any later segment brings
  // (edge-triggered epoll queues the socket again on every arrival). Not once the peer's FIN
  // is in: it may have come with these bytes and bring no edge of its own, so read on to the 0.
  if (static_cast<size_t>(n) < kCopyBytes && !src.rdhup) src.readable = false;
  // A full buffer: a bulk direction, spliced from now on.
  if (static_cast<size_t>(n) == kCopyBytes) dir.bulk = true;
  Count(r);
  (*budget)--;
  ssize_t sent;
  do {
    sent = send(dst.fd, buf, static_cast<size_t>(n), MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      Fail(r, d == 0 ? kEndResetUpstream : kEndResetClient);  // EPIPE, ECONNRESET...
      return -1;
    }
    sent = 0;
  }
  if (sent > 0) {
    dir.bytes.fetch_add(static_cast<uint64_t>(sent), std::memory_order_relaxed);
    r->moved.store(true, std::memory_order_release);
    Stats& stats = TheEngine().stats;
    (d == 0 ? stats.bytesToServer : stats.bytesToClient).fetch_add(static_cast<uint64_t>(sent), std::memory_order_relaxed);
  }
  if (sent < n) {
    dst.writable = false;  // its send buffer is full: the rest waits in a pipe for EPOLLOUT
    Failure f;
    if (!TakePipe(r, &dir.pipe, &f)) {
      Fail(r, kEndAborted);
      return -1;
    }
    Count(r);
    ssize_t w = write(dir.pipe.w, buf + sent, static_cast<size_t>(n - sent));
    if (w != n - sent) {  // an empty pipe holds at least 2 pages (kCopyBytes): never in practice
      Fail(r, kEndAborted);
      return -1;
    }
    dir.inPipe = static_cast<uint32_t>(w);
  }
  return 1;
}

// The relay failed (end says which side) or was aborted: RST to the other side (both, when
// aborted), then close. See "Resets" above for when the RST actually leaves.
void Loop::Fail(Relay* r, int end) {
  linger lg{1, 0};
  for (int i = 0; i < 2; i++) {
    bool reset = end == kEndAborted || (end == kEndResetClient && i == 1) ||
                 ((end == kEndResetUpstream || end == kEndUpstreamFailed) && i == 0);
    if (!reset || r->side[i].fd < 0) continue;
    Count(r);
    setsockopt(r->side[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  Close(r, end);
}

void Loop::Close(Relay* r, int end) {
  r->finished = true;
  {
    // Out of the map BEFORE its fds close: whoever finds the relay under mu (spliceAbort,
    // spliceProgress) may use its fds until then.
    std::lock_guard<std::mutex> lock(mu);
    relays.Unpublish(r);
    // Not adopted yet (tag is set under mu): keep its completion for the adoption. Its byte
    // totals are final (only this thread moves them).
    if (r->fast != nullptr && r->tag == kUntracked)
      unadopted_.push_back(Unadopted{r->id, r->fast,
                                     FastDone{kUntracked, end, r->error, r->dir[0].bytes.load(std::memory_order_relaxed),
                                              r->dir[1].bytes.load(std::memory_order_relaxed), r->syscalls}});
  }
  for (Side& s : r->side) {
    // An exclusive fd leaves the epoll set by itself when closed; a dup does not (see above).
    if (s.registered && !s.exclusive) {
      Count(r);
      epoll_ctl(ep_, EPOLL_CTL_DEL, s.fd, nullptr);
    }
    if (s.fd >= 0) {
      Count(r);
      close(s.fd);
    }
    s.fd = -1;
  }
  for (Dir& d : r->dir) GivePipe(r, &d.pipe, d.inPipe == 0);
  Stats& stats = TheEngine().stats;
  stats.active.fetch_sub(1, std::memory_order_relaxed);
  stats.completed.fetch_add(1, std::memory_order_relaxed);
  if (end == kEndResetClient) stats.resetClient.fetch_add(1, std::memory_order_relaxed);
  if (end == kEndResetUpstream) stats.resetUpstream.fetch_add(1, std::memory_order_relaxed);
  if (end == kEndAborted) stats.aborted.fetch_add(1, std::memory_order_relaxed);
  Deliver(r, end);
  dead_.push_back(r);
}

// ---- the JS side ----------------------------------------------------------------------------

void CallJs(napi_env env, napi_value /*js_cb*/, void* context, void* data) {
  std::unique_ptr<Completion> c(static_cast<Completion*>(data));
  if (env == nullptr) return;  // the function is being torn down: just free the data
  auto* ad = static_cast<AddonData*>(context);
  if (ad->tearingDown) return;
  auto it = ad->spliceWaiters.find(c->id);
  if (it == ad->spliceWaiters.end()) return;
  Napi::FunctionReference cb = std::move(it->second);
  ad->spliceWaiters.erase(it);
  if (ad->spliceWaiters.empty() && ad->spliceChannel && ad->spliceChannel->tsfn != nullptr) {
    napi_unref_threadsafe_function(env, ad->spliceChannel->tsfn);  // idle: let the process exit
  }
  FromLoop(env, [&] {
    Napi::Env e(env);
    const char* name = EndName(c->end);
    Napi::Value end = name != nullptr ? Napi::String::New(e, name).As<Napi::Value>() : e.Null();
    cb.MakeCallback(e.Global(),
                    {end, Napi::Number::New(e, static_cast<double>(c->toServer)),
                     Napi::Number::New(e, static_cast<double>(c->toClient)),
                     Napi::Number::New(e, static_cast<double>(c->syscalls))},
                    *ad->spliceContext);
  });
}

// Called by Node when it destroys the threadsafe function (environment teardown).
void FinalizeChannel(napi_env /*env*/, void* finalizeData, void* /*hint*/) {
  auto* holder = static_cast<std::shared_ptr<Channel>*>(finalizeData);
  {
    std::lock_guard<std::mutex> lock((*holder)->mu);
    (*holder)->closed = true;
    (*holder)->tsfn = nullptr;
  }
  delete holder;
}

void EnsureChannel(Napi::Env env, AddonData* data) {
  if (data->spliceChannel) return;
  auto ch = std::make_shared<Channel>();
  napi_value name;
  napi_create_string_utf8(env, "netpold:spliceRelay", NAPI_AUTO_LENGTH, &name);
  auto* holder = new std::shared_ptr<Channel>(ch);
  napi_threadsafe_function tsfn = nullptr;
  napi_status st = napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, holder, FinalizeChannel,
                                                   data, CallJs, &tsfn);
  if (st != napi_ok) {
    delete holder;
    throw Napi::Error::New(env, "spliceRelay: napi_create_threadsafe_function failed");
  }
  napi_unref_threadsafe_function(env, tsfn);  // referenced only while relays are live
  ch->tsfn = tsfn;
  data->spliceChannel = ch;
  data->spliceContext = new Napi::AsyncContext(env, "netpold:spliceRelay");
}

Napi::Value SpliceRelay(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string call = "spliceRelay";
  if (info.Length() < 4) ThrowTypeError(env, call + ": expected (clientFd, upstreamFd, flags, onDone)");
  int fdIn[2] = {static_cast<int>(ArgInt(env, info[0], call, "clientFd", 0, INT_MAX)),
                 static_cast<int>(ArgInt(env, info[1], call, "upstreamFd", 0, INT_MAX))};
  int flags = static_cast<int>(ArgInt(env, info[2], call, "flags", 0, 3));
  Napi::Function onDone = ArgFunction(env, info[3], call, "onDone");
  if (fdIn[0] == fdIn[1]) ThrowTypeError(env, call + ": clientFd and upstreamFd must differ");
  auto* data = env.GetInstanceData<AddonData>();
  EnsureChannel(env, data);
  Engine& eng = TheEngine();
  int loopErr = 0;
  Loop* loop = eng.LoopAt(eng.NextLoop(), &loopErr);
  if (loop == nullptr) {
    eng.stats.startFailures.fetch_add(1, std::memory_order_relaxed);
    throw SysError(env, loopErr, call, "epoll_create1", "", "starting the splice loop");
  }
  Relay* r = loop->NewRelay();
  if (r == nullptr) {
    eng.stats.startFailures.fetch_add(1, std::memory_order_relaxed);
    throw SysError(env, ENOSPC, call, "relay", "slot", "the splice loop has 2^24 relays");
  }
  uint64_t id = r->id;
  r->channel = data->spliceChannel;
  bool own[2] = {(flags & kOwnClient) != 0, (flags & kOwnUpstream) != 0};
  Failure f;
  for (int i = 0; i < 2 && !f; i++) {
    Side& s = r->side[i];
    s.exclusive = own[i];
    if (own[i]) {
      s.fd = fdIn[i];
    } else {
      Count(r);
      s.fd = fcntl(fdIn[i], F_DUPFD_CLOEXEC, 0);
      if (s.fd < 0) f = Failure{errno, "fcntl", "F_DUPFD_CLOEXEC"};
    }
  }
  // Non-blocking on the open socket (shared with the caller's fd: Node's are non-blocking
  // already, and so are tcpConnect's). splice() needs it on the socket side, SPLICE_F_NONBLOCK
  // covers only the pipe side.
  for (int i = 0; i < 2 && !f; i++) {
    int one = 1;
    Count(r);
    if (ioctl(r->side[i].fd, FIONBIO, &one) != 0) f = Failure{errno, "ioctl", "FIONBIO"};
  }
  if (f) {
    // Nothing passes to the engine: close what this call opened, never the caller's fds.
    for (int i = 0; i < 2; i++)
      if (!own[i] && r->side[i].fd >= 0) close(r->side[i].fd);
    loop->DropRelay(r);
    eng.stats.startFailures.fetch_add(1, std::memory_order_relaxed);
    throw SysError(env, f.err, call, f.syscall, f.detail);
  }
  eng.stats.started.fetch_add(1, std::memory_order_relaxed);
  eng.stats.active.fetch_add(1, std::memory_order_relaxed);
  // The completion cannot overtake this: it is delivered on this thread, after we return.
  data->spliceWaiters.emplace(id, Napi::Persistent(onDone));
  if (data->spliceWaiters.size() == 1) napi_ref_threadsafe_function(env, data->spliceChannel->tsfn);
  loop->Add(r);
  return Napi::Number::New(env, static_cast<double>(id));
}

Napi::Value SpliceAbort(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string call = "spliceAbort";
  if (info.Length() < 1) ThrowTypeError(env, call + ": expected (id)");
  auto id = static_cast<uint64_t>(ArgInt(env, info[0], call, "id", 1, (1LL << 53)));
  auto* data = env.GetInstanceData<AddonData>();
  if (data->spliceWaiters.find(id) == data->spliceWaiters.end()) return Napi::Boolean::New(env, false);
  int err = 0;
  Loop* loop = TheEngine().LoopFor(id, &err);  // started already: it runs this relay
  if (loop == nullptr) return Napi::Boolean::New(env, false);
  loop->Abort(id);
  return Napi::Boolean::New(env, true);
}

// Progress polls (spliceProgress, fastProgress): appends [key, toServer, toClient] when a flow's
// totals changed since the last poll (`reported`, touched only under its loop's mu).
void AppendProgress(std::vector<double>* out, double key, const std::atomic<uint64_t>& toServer,
                    const std::atomic<uint64_t>& toClient, uint64_t* reported) {
  uint64_t a = toServer.load(std::memory_order_relaxed);
  uint64_t b = toClient.load(std::memory_order_relaxed);
  if (a == reported[0] && b == reported[1]) return;
  reported[0] = a;
  reported[1] = b;
  out->push_back(key);
  out->push_back(static_cast<double>(a));
  out->push_back(static_cast<double>(b));
}

// The same for a relay, whose loop flags bytes moved instead (Relay::moved).
void AppendProgress(std::vector<double>* out, double key, Relay* r) {
  if (!r->moved.exchange(false, std::memory_order_acquire)) return;
  out->push_back(key);
  out->push_back(static_cast<double>(r->dir[0].bytes.load(std::memory_order_relaxed)));
  out->push_back(static_cast<double>(r->dir[1].bytes.load(std::memory_order_relaxed)));
}

Napi::Float64Array ToFloat64Array(Napi::Env env, const std::vector<double>& v) {
  Napi::Float64Array arr = Napi::Float64Array::New(env, v.size());
  if (!v.empty()) memcpy(arr.Data(), v.data(), v.size() * sizeof(double));
  return arr;
}

Napi::Value SpliceProgress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* data = env.GetInstanceData<AddonData>();
  std::vector<double> out;
  if (data->spliceChannel && !data->spliceWaiters.empty()) {
    Channel* mine = data->spliceChannel.get();
    for (Loop* l : TheEngine().Started()) {
      std::lock_guard<std::mutex> lock(l->mu);
      for (Relay* r : l->relays.Live()) {
        if (r->channel.get() != mine) continue;
        AppendProgress(&out, static_cast<double>(r->id), r);
      }
    }
  }
  return ToFloat64Array(env, out);
}

Napi::Value SpliceStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Engine& e = TheEngine();
  Stats& s = e.stats;
  Napi::Object o = Napi::Object::New(env);
  auto put = [&](const char* k, const std::atomic<uint64_t>& v) {
    o.Set(k, Napi::Number::New(env, static_cast<double>(v.load(std::memory_order_relaxed))));
  };
  put("started", s.started);
  put("active", s.active);
  put("completed", s.completed);
  put("resetClient", s.resetClient);
  put("resetUpstream", s.resetUpstream);
  put("aborted", s.aborted);
  put("bytesToServer", s.bytesToServer);
  put("bytesToClient", s.bytesToClient);
  put("spliceCalls", s.spliceCalls);
  put("syscalls", s.syscalls);
  put("wakeups", s.wakeups);
  put("pipesCreated", s.pipesCreated);
  put("pipesReused", s.pipesReused);
  put("startFailures", s.startFailures);
  put("pipesPooled", s.pipesPooled);
  put("accepted", s.accepted);
  put("acceptErrors", s.acceptErrors);
  put("refusedBacklog", s.refusedBacklog);
  put("connectFailures", s.connectFailures);
  put("connectTimeouts", s.connectTimeouts);
  put("udpFlows", s.udpFlows);
  put("udpActive", s.udpActive);
  put("udpDatagrams", s.udpDatagrams);
  put("udpDropped", s.udpDropped);
  put("udpErrors", s.udpErrors);
  put("udpRecvCalls", s.udpRecvCalls);
  put("udpSendCalls", s.udpSendCalls);
  put("cacheHits", s.cacheHits);
  Napi::Array byLoop = Napi::Array::New(env);
  for (int i = 0; i < kMaxLoops; i++) {
    if (e.loops[i] == nullptr) break;
    byLoop.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(s.acceptedByLoop[i].load())));
  }
  o.Set("acceptedByThread", byLoop);
  // What one tracked flow costs the engine (a relay sits in its loop's slab: no allocator
  // rounding; a UDP flow is allocated on its own), for the memory benchmark's accounting.
  o.Set("relayBytes", Napi::Number::New(env, static_cast<double>(sizeof(Relay))));
  // Process-wide, not the engine's alone: bytes handed out by malloc and not freed, all
  // threads and arenas, mmapped blocks included (Node's own allocations and ArrayBuffer
  // contents too, but not the JS heap, which V8 maps itself). Unlike RSS, no allocator slack.
  struct mallinfo2 mi = mallinfo2();
  o.Set("mallocInUseBytes", Napi::Number::New(env, static_cast<double>(mi.uordblks + mi.hblkhd)));
  o.Set("udpFlowBytes", Napi::Number::New(env, static_cast<double>(sizeof(UdpFlow))));
  o.Set("threads", Napi::Number::New(env, static_cast<double>(e.Started().size())));
  return o;
}

// ---- the fast path: JS side -----------------------------------------------------------------
//
//   fastOpen(onWork, {connectTimeoutMs, udpIdleMs, verdictCacheSize?})
//       Sets up this environment's fast path: onWork() is called (no arguments) whenever accepted
//       connections wait for verdicts or relays have ended; it drains both with the calls below.
//       verdictCacheSize: entries of each loop's verdict cache (a power of two; 0, the default:
//       no cache).
//   fastListen(family, address, port, backlog, threads) -> {id, port}
//       A transparent listener group: `threads` sockets bound to one address and port with
//       SO_REUSEPORT (and IP_TRANSPARENT, SO_REUSEADDR, IPV6_V6ONLY), socket i accepted by engine
//       loop i. The kernel picks the member of a new connection by a hash of its addresses, also
//       for TPROXY's listener lookup, so connections spread over the loops (cores).
//   fastListenerClose(id)           closes the group (returns once every loop has closed its socket)
//   fastTakePending(Uint32Array) -> n
//       Moves up to length/16 accepted connections (or new UDP flows) out of the queue, 16
//       words each: [slot, family, src0..src3, dst0..dst3, srcPort, dstPort, proto,
//       cachedAction, relayIdLow, relayIdHigh] (addresses as the decision core stores them; dst
//       is the original destination). cachedAction != 0: relayed from the verdict cache already,
//       as relay relayIdHigh * 2^32 + relayIdLow.
//   fastVerdicts(Float64Array, n, generation?)
//       n records of 4: [slot, action, tag, id]. action 0: refuse (RST, at once, on this thread);
//       1: relay, upstream transparent from the client's address and port; 2: relay, upstream
//       plain from the node (the destination is the node itself); UDP also 3: deny (remembered).
//       tag: the caller's name for the flow, given back in its completion. id is written back
//       (relays: the relay id for fastAbort; 0 otherwise). A record of a cached connection
//       adopts its relay when the action is the cached one (id: the relay's; if it ended
//       already, its completion follows all the same), else aborts it. generation: fastInvalidate()'s
//       value the verdicts were decided at; relay verdicts are cached with it (0: not cached).
//   fastInvalidate() -> generation
//       Every cached verdict is forgotten (a new generation, returned): call it before deciding
//       with a new snapshot, or whenever a verdict may change.
//   fastTakeDone(Float64Array) -> n
//       Ended relays, 6 numbers each: [tag, end, errno, bytesToServer, bytesToClient, syscalls],
//       end as spliceRelay's plus 4 = the upstream connect failed (errno says why; the client
//       was reset).
//   fastAbort(id) -> boolean        resets both sides (a policy change); false if it has ended
//   fastProgress() -> Float64Array  [tag, bytesToServer, bytesToClient, ...] of live relays whose
//       totals changed since the last call
//
// Per connection this costs JS one decision and a few typed-array reads and writes; the
// threadsafe-function wakeup and the native calls are per batch.

struct FastState {
  FastChannel* channel = nullptr;
  std::vector<PendingConn> slab;  // taken by JS, awaiting its verdict (JS thread only)
  std::vector<uint32_t> freeSlots;
  std::unordered_map<uint32_t, std::vector<Listener*>> listeners;
  uint32_t nextListener = 1;
  uint64_t live = 0;  // relays handed to loops and not yet taken as done
  bool referenced = false;
};

void FastUpdateRef(napi_env env, FastState* st) {
  bool want = !st->listeners.empty() || st->live > 0;
  if (want == st->referenced || st->channel == nullptr || st->channel->tsfn == nullptr) return;
  if (want) napi_ref_threadsafe_function(env, st->channel->tsfn);
  else napi_unref_threadsafe_function(env, st->channel->tsfn);
  st->referenced = want;
}

void FastCallJs(napi_env env, napi_value js_cb, void* context, void* /*data*/) {
  if (env == nullptr || js_cb == nullptr) return;
  auto* ad = static_cast<AddonData*>(context);
  if (ad->tearingDown || ad->fast == nullptr) return;
  FastChannel* ch = ad->fast->channel;
  {
    std::lock_guard<std::mutex> lock(ch->mu);
    ch->notified = false;  // anything pushed from now on wakes JS again
  }
  FromLoop(env, [&] {
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_value result;
    napi_call_function(env, undefined, js_cb, 0, nullptr, &result);
  });
}

void FinalizeFast(napi_env /*env*/, void* finalizeData, void* /*hint*/) {
  auto* ch = static_cast<FastChannel*>(finalizeData);
  std::lock_guard<std::mutex> lock(ch->mu);
  ch->closed = true;
  ch->tsfn = nullptr;
}

FastState* FastOf(Napi::Env env, const std::string& call) {
  auto* data = env.GetInstanceData<AddonData>();
  if (data->fast == nullptr) throw Napi::Error::New(env, call + ": fastOpen() was not called");
  return data->fast;
}

Napi::Value FastOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string call = "fastOpen";
  if (info.Length() < 2) ThrowTypeError(env, call + ": expected (onWork, options)");
  Napi::Function onWork = ArgFunction(env, info[0], call, "onWork");
  Napi::Object o = ArgObject(env, info[1], call, "options");
  int64_t timeout = ArgInt(env, o.Get("connectTimeoutMs"), call, "connectTimeoutMs", 1, 2147483647LL);
  int64_t udpIdle = ArgInt(env, o.Get("udpIdleMs"), call, "udpIdleMs", 1, 2147483647LL);
  int64_t cacheSize = o.Has("verdictCacheSize") && !o.Get("verdictCacheSize").IsUndefined()
                          ? ArgInt(env, o.Get("verdictCacheSize"), call, "verdictCacheSize", 0, 1 << 24)
                          : 0;
  if ((cacheSize & (cacheSize - 1)) != 0) ThrowTypeError(env, call + ": verdictCacheSize must be 0 or a power of two");
  TheEngine().udpIdleMs.store(udpIdle);
  TheEngine().verdictCacheSize.store(static_cast<uint32_t>(cacheSize));
  auto* data = env.GetInstanceData<AddonData>();
  if (data->fast != nullptr) throw Napi::Error::New(env, call + ": already open in this environment");
  TheEngine().connectTimeoutMs.store(timeout);
  auto* ch = new FastChannel();
  napi_value name;
  napi_create_string_utf8(env, "netpold:fastPath", NAPI_AUTO_LENGTH, &name);
  napi_threadsafe_function tsfn = nullptr;
  if (napi_create_threadsafe_function(env, onWork, nullptr, name, 0, 1, ch, FinalizeFast, data, FastCallJs, &tsfn) !=
      napi_ok) {
    delete ch;
    throw Napi::Error::New(env, call + ": napi_create_threadsafe_function failed");
  }
  napi_unref_threadsafe_function(env, tsfn);
  ch->tsfn = tsfn;
  data->fast = new FastState();
  data->fast->channel = ch;
  return env.Undefined();
}

Napi::Value FastListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string call = "fastListen";
  if (info.Length() < 6) ThrowTypeError(env, call + ": expected (family, address, port, backlog, threads, proto)");
  int family = ArgFamily(env, info[0], call);
  std::string address = ArgString(env, info[1], call, "address");
  int port = static_cast<int>(ArgInt(env, info[2], call, "port", 0, 65535));
  int backlog = static_cast<int>(ArgInt(env, info[3], call, "backlog", 1, 65535));
  int threads = static_cast<int>(ArgInt(env, info[4], call, "threads", 1, kMaxLoops));
  int proto = static_cast<int>(ArgInt(env, info[5], call, "proto", 6, 17));
  if (proto != 6 && proto != 17) ThrowTypeError(env, call + ": proto must be 6 (TCP) or 17 (UDP)");
  FastState* st = FastOf(env, call);
  SockAddr addr = ArgAddress(env, family, address, port, call, "address");
  std::vector<int> fds;
  auto fail = [&](int err, const std::string& syscall, const std::string& detail) {
    for (int fd : fds) close(fd);
    throw SysError(env, err, call, syscall, detail, "on " + Describe(addr));
  };
  for (int i = 0; i < threads; i++) {
    int fd = socket(family == 6 ? AF_INET6 : AF_INET, (proto == 6 ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) fail(errno, "socket", "");
    fds.push_back(fd);
    Failure f = SetInt(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
    if (!f) f = SetInt(fd, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
    if (!f && family == 6) f = SetInt(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY");
    if (!f) f = SetTransparent(fd, family);
    if (!f && proto == 17) {
      f = family == 6 ? SetInt(fd, IPPROTO_IPV6, IPV6_RECVORIGDSTADDR, 1, "IPV6_RECVORIGDSTADDR")
                      : SetInt(fd, IPPROTO_IP, IP_RECVORIGDSTADDR, 1, "IP_RECVORIGDSTADDR");
    }
    if (f) fail(f.err, f.syscall, f.detail);
    if (bind(fd, addr.sa(), addr.len) != 0) fail(errno, "bind", "");
    if (i == 0 && port == 0) {  // the others join the port the first one got
      sockaddr_storage got{};
      socklen_t len = sizeof got;
      if (getsockname(fd, reinterpret_cast<sockaddr*>(&got), &len) != 0) fail(errno, "getsockname", "");
      port = ntohs(family == 6 ? reinterpret_cast<sockaddr_in6*>(&got)->sin6_port
                               : reinterpret_cast<sockaddr_in*>(&got)->sin_port);
      if (family == 6) reinterpret_cast<sockaddr_in6*>(&addr.ss)->sin6_port = htons(static_cast<uint16_t>(port));
      else reinterpret_cast<sockaddr_in*>(&addr.ss)->sin_port = htons(static_cast<uint16_t>(port));
    }
    if (proto == 6 && listen(fd, backlog) != 0) fail(errno, "listen", "");
  }
  std::vector<Loop*> loops;
  for (int i = 0; i < threads; i++) {
    int err = 0;
    Loop* l = TheEngine().LoopAt(i, &err);
    if (l == nullptr) fail(err, "epoll_create1", "starting an engine loop");
    loops.push_back(l);
  }
  uint32_t id = st->nextListener++;
  std::vector<Listener*>& group = st->listeners[id];
  for (int i = 0; i < threads; i++) {
    auto* l = new Listener();
    l->fd = fds[static_cast<size_t>(i)];
    l->family = family;
    l->proto = proto;
    l->channel = st->channel;
    group.push_back(l);
    loops[static_cast<size_t>(i)]->AddListener(l);
  }
  FastUpdateRef(env, st);
  Napi::Object out = Napi::Object::New(env);
  out.Set("id", Napi::Number::New(env, id));
  out.Set("port", Napi::Number::New(env, port));
  return out;
}

void CloseGroup(std::vector<Listener*>& group) {
  Engine& e = TheEngine();
  for (size_t i = 0; i < group.size(); i++) {
    int err = 0;
    Loop* l = e.LoopAt(static_cast<int>(i), &err);  // started already (fastListen)
    if (l != nullptr) l->CloseListener(group[i]);
  }
  group.clear();
}

Napi::Value FastListenerClose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string call = "fastListenerClose";
  if (info.Length() < 1) ThrowTypeError(env, call + ": expected (id)");
  auto id = static_cast<uint32_t>(ArgInt(env, info[0], call, "id", 1, UINT32_MAX));
  FastState* st = FastOf(env, call);
  auto it = st->listeners.find(id);
  if (it == st->listeners.end()) return Napi::Boolean::New(env, false);
  CloseGroup(it->second);
  st->listeners.erase(it);
  FastUpdateRef(env, st);
  return Napi::Boolean::New(env, true);
}

constexpr size_t kPendingWords = 16;

// The typed array argument of a fast-path call (the records' buffer), or a TypeError.
template <typename T>
Napi::TypedArrayOf<T> ArgRecords(const Napi::CallbackInfo& info, napi_typedarray_type type, const std::string& call,
                                 const char* expected) {
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != type)
    ThrowTypeError(info.Env(), call + ": expected " + expected);
  return info[0].As<Napi::TypedArrayOf<T>>();
}

Napi::Value FastTakePending(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string call = "fastTakePending";
  Napi::Uint32Array buf = ArgRecords<uint32_t>(info, napi_uint32_array, call, "(Uint32Array)");
  FastState* st = FastOf(env, call);
  size_t max = buf.ElementLength() / kPendingWords;
  uint32_t* out = buf.Data();
  FastChannel* ch = st->channel;
  size_t n = 0;
  std::lock_guard<std::mutex> lock(ch->mu);
  size_t take = std::min(max, ch->pending.size());
  for (; n < take; n++) {
    const PendingConn& p = ch->pending[n];
    uint32_t slot;
    if (!st->freeSlots.empty()) {
      slot = st->freeSlots.back();
      st->freeSlots.pop_back();
      st->slab[slot] = p;
    } else {
      slot = static_cast<uint32_t>(st->slab.size());
      st->slab.push_back(p);
    }
    uint32_t* w = out + n * kPendingWords;
    w[0] = slot;
    w[1] = static_cast<uint32_t>(p.family);
    for (int k = 0; k < 4; k++) {
      w[2 + k] = p.src[k];
      w[6 + k] = p.dst[k];
    }
    w[10] = p.srcPort;
    w[11] = p.dstPort;
    w[12] = static_cast<uint32_t>(p.proto);
    w[13] = static_cast<uint32_t>(p.cachedAction);
    w[14] = static_cast<uint32_t>(p.relayId & 0xffffffffu);
    w[15] = static_cast<uint32_t>(p.relayId >> 32);
  }
  ch->pending.erase(ch->pending.begin(), ch->pending.begin() + static_cast<std::ptrdiff_t>(n));
  return Napi::Number::New(env, static_cast<double>(n));
}

Napi::Value FastVerdicts(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string call = "fastVerdicts";
  Napi::Float64Array buf = ArgRecords<double>(info, napi_float64_array, call, "(Float64Array, n[, generation])");
  if (info.Length() < 2) ThrowTypeError(env, call + ": expected (Float64Array, n[, generation])");
  size_t n = static_cast<size_t>(ArgInt(env, info[1], call, "n", 0, static_cast<int64_t>(buf.ElementLength() / 4)));
  // The generation (fastInvalidate) the verdicts were decided at: relay verdicts go into the
  // accepting loop's cache with it. 0 or absent: none is cached.
  uint32_t gen = info.Length() > 2 && !info[2].IsUndefined()
                     ? static_cast<uint32_t>(ArgInt(env, info[2], call, "generation", 0, UINT32_MAX))
                     : 0;
  FastState* st = FastOf(env, call);
  Engine& eng = TheEngine();
  double* rec = buf.Data();
  for (size_t i = 0; i < n; i++, rec += 4) {
    double slotD = rec[0];
    if (!(slotD >= 0) || slotD >= static_cast<double>(st->slab.size()) || st->slab[static_cast<size_t>(slotD)].proto == 0)
      ThrowTypeError(env, call + ": record " + std::to_string(i) + " names no pending connection");
    PendingConn p = st->slab[static_cast<size_t>(slotD)];
    st->slab[static_cast<size_t>(slotD)].proto = 0;
    st->slab[static_cast<size_t>(slotD)].fd = -1;
    st->freeSlots.push_back(static_cast<uint32_t>(slotD));
    int action = static_cast<int>(rec[1]);
    rec[3] = 0;
    int err = 0;
    if (p.proto == 17) {
      // action 0 refuse (forget), 1/2 relay, 3 deny (remembered: later datagrams dropped natively)
      Loop* ul = eng.LoopAt(p.loop, &err);
      if (ul == nullptr) continue;
      if (action < 0 || action > 3) action = 0;
      if (action != 0) {  // relayed or remembered: either ends with a record
        rec[3] = static_cast<double>(p.udpId);
        st->live++;
      }
      ul->UdpVerdict(p.udpId, action, static_cast<uint32_t>(rec[2]), st->channel);
      continue;
    }
    if (p.relayId != 0) {
      // Relayed from the verdict cache already: JS's own verdict adopts it (out: its id), or
      // aborts it when it differs (out: 0; a bump of the generation raced the lookup). One that
      // ended before JS got to it is adopted too: its kept completion follows.
      Loop* cl = eng.LoopAt(p.loop, &err);
      if (cl == nullptr) continue;
      if (action == p.cachedAction && cl->Adopt(p.relayId, static_cast<uint32_t>(rec[2]))) {
        rec[3] = static_cast<double>(p.relayId);
        st->live++;
      } else if (action != p.cachedAction) {
        cl->Abort(p.relayId);
      }
      continue;
    }
    Loop* loop = action == 1 || action == 2 ? eng.LoopAt(p.loop, &err) : nullptr;
    if (loop == nullptr) {  // refused (or, never in practice, its loop is gone)
      linger lg{1, 0};
      setsockopt(p.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      close(p.fd);
      eng.stats.syscalls.fetch_add(2, std::memory_order_relaxed);
      continue;
    }
    Relay* r = loop->NewRelay();
    if (r == nullptr) {  // 2^24 relays on this loop: refused
      linger lg{1, 0};
      setsockopt(p.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      close(p.fd);
      eng.stats.syscalls.fetch_add(2, std::memory_order_relaxed);
      continue;
    }
    InitFastRelay(r, p, st->channel, static_cast<uint32_t>(rec[2]), action);
    if (gen != 0) {
      r->target->cacheGen = gen;
      VerdictKeyOf(p.family, p.src, p.dst, p.dstPort, r->target->key);
    }
    rec[3] = static_cast<double>(r->id);
    st->live++;
    loop->Connect(r);
  }
  FastUpdateRef(env, st);
  return env.Undefined();
}

constexpr size_t kDoneWords = 6;

Napi::Value FastTakeDone(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string call = "fastTakeDone";
  Napi::Float64Array buf = ArgRecords<double>(info, napi_float64_array, call, "(Float64Array)");
  FastState* st = FastOf(env, call);
  size_t max = buf.ElementLength() / kDoneWords;
  double* out = buf.Data();
  FastChannel* ch = st->channel;
  size_t n;
  {
    std::lock_guard<std::mutex> lock(ch->mu);
    n = std::min(max, ch->done.size());
    for (size_t i = 0; i < n; i++) {
      const FastDone& d = ch->done[i];
      double* w = out + i * kDoneWords;
      w[0] = d.tag;
      w[1] = d.end;
      w[2] = d.error;
      w[3] = static_cast<double>(d.toServer);
      w[4] = static_cast<double>(d.toClient);
      w[5] = static_cast<double>(d.syscalls);
    }
    ch->done.erase(ch->done.begin(), ch->done.begin() + static_cast<std::ptrdiff_t>(n));
  }
  st->live -= std::min<uint64_t>(st->live, n);
  FastUpdateRef(env, st);
  return Napi::Number::New(env, static_cast<double>(n));
}

Napi::Value FastInvalidate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  FastOf(env, "fastInvalidate");
  uint32_t gen = TheEngine().verdictGen.fetch_add(1, std::memory_order_acq_rel) + 1;
  if (gen == 0) gen = TheEngine().verdictGen.fetch_add(1, std::memory_order_acq_rel) + 1;  // 0 = never cached
  return Napi::Number::New(env, static_cast<double>(gen));
}

Napi::Value FastAbort(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string call = "fastAbort";
  if (info.Length() < 1) ThrowTypeError(env, call + ": expected (id)");
  auto id = static_cast<uint64_t>(ArgInt(env, info[0], call, "id", 1, (1LL << 53)));
  FastOf(env, call);
  int err = 0;
  Loop* loop = TheEngine().LoopFor(id, &err);
  if (loop == nullptr) return Napi::Boolean::New(env, false);
  {
    std::lock_guard<std::mutex> lock(loop->mu);
    if (loop->relays.Find(id) == nullptr && loop->udps.count(id) == 0) return Napi::Boolean::New(env, false);
  }
  loop->Abort(id);
  return Napi::Boolean::New(env, true);
}

Napi::Value FastProgress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  FastState* st = FastOf(env, "fastProgress");
  std::vector<double> out;
  if (st->live > 0) {
    for (Loop* l : TheEngine().Started()) {
      std::lock_guard<std::mutex> lock(l->mu);
      for (Relay* r : l->relays.Live()) {
        if (r->fast != st->channel || r->tag == kUntracked || r->tag == kDiscarded) continue;  // not adopted
        AppendProgress(&out, static_cast<double>(r->tag), r);
      }
      for (auto& kv : l->udps) {
        UdpFlow* f = kv.second;
        if (f->fast != st->channel || f->tag == kUntracked) continue;
        AppendProgress(&out, static_cast<double>(f->tag), f->bytes[0], f->bytes[1], f->reported);
      }
    }
  }
  return ToFloat64Array(env, out);
}

// Environment teardown: listeners closed, queued connections refused, relays aborted, and no
// completion delivered any more.
void FastTeardown(AddonData* data) {
  FastState* st = data->fast;
  if (st == nullptr) return;
  for (auto& kv : st->listeners) CloseGroup(kv.second);
  st->listeners.clear();
  FastChannel* ch = st->channel;
  {
    std::lock_guard<std::mutex> lock(ch->mu);
    ch->closed = true;
    // A connection relayed from the verdict cache is its relay's fd: AbortFast ends it below.
    for (PendingConn& p : ch->pending)
      if (p.proto == 6 && p.relayId == 0) close(p.fd);
    ch->pending.clear();
    ch->done.clear();
  }
  for (PendingConn& p : st->slab)
    if (p.proto == 6 && p.relayId == 0 && p.fd >= 0) close(p.fd);
  for (Loop* l : TheEngine().Started()) l->AbortFast(ch);
  data->fast = nullptr;  // the channel stays allocated: loops may still name it
  delete st;
}

Napi::Value TcpClose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string call = "tcpClose";
  if (info.Length() < 2) ThrowTypeError(env, call + ": expected (fd, reset)");
  int fd = static_cast<int>(ArgInt(env, info[0], call, "fd", 0, INT_MAX));
  bool reset = ArgBool(env, info[1], call, "reset", false);
  if (reset) {
    linger lg{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);  // not a socket: close anyway
  }
  if (close(fd) != 0 && errno == EBADF) throw SysError(env, EBADF, call, "close", "");
  return env.Undefined();
}

// udpSendRaw(family, srcAddress, srcPort, dstAddress, dstPort, msg) -> boolean: one UDP datagram
// with the given source, written whole to a raw socket (the JS relay's replies of flows to the
// node itself; see OpenUdpSockets for why no socket is bound there). false when the kernel
// would block or has no buffer (the datagram is dropped, as UDP may); throws on anything else.
Napi::Value UdpSendRaw(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string call = "udpSendRaw";
  if (info.Length() < 6 || !info[5].IsTypedArray() || info[5].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    ThrowTypeError(env, call + ": expected (family, srcAddress, srcPort, dstAddress, dstPort, Uint8Array)");
  }
  int family = ArgFamily(env, info[0], call);
  SockAddr src = ArgAddress(env, family, ArgString(env, info[1], call, "srcAddress"), 0, call, "srcAddress");
  int srcPort = static_cast<int>(ArgInt(env, info[2], call, "srcPort", 1, 65535));
  SockAddr dst = ArgAddress(env, family, ArgString(env, info[3], call, "dstAddress"), 0, call, "dstAddress");
  int dstPort = static_cast<int>(ArgInt(env, info[4], call, "dstPort", 1, 65535));
  Napi::Uint8Array msg = info[5].As<Napi::Uint8Array>();
  // The flow's key as the engine keeps it: src = the client (the reply's destination).
  UdpKey k{};
  k.family = static_cast<uint8_t>(family);
  AddrToWords(dst, k.src);
  AddrToWords(src, k.dst);
  k.srcPort = static_cast<uint16_t>(dstPort);
  k.dstPort = static_cast<uint16_t>(srcPort);
  static int raw[2] = {-1, -1};  // process-wide, JS thread only, opened on first use
  int& fd = raw[family == 6 ? 1 : 0];
  if (fd < 0) {
    Failure f;
    fd = OpenRawSocket(family, &f);
    if (fd < 0) throw SysError(env, f.err, call, f.syscall, f.detail);
  }
  char hdr[kRawHdrMax];
  size_t hlen = BuildUdpHeaders(k, hdr, msg.ByteLength(), msg.Data());
  if (hlen == 0) ThrowTypeError(env, call + ": the datagram is too large");
  iovec iov[2] = {{hdr, hlen}, {msg.Data(), msg.ByteLength()}};
  msghdr mh{};
  mh.msg_name = const_cast<sockaddr*>(dst.sa());
  mh.msg_namelen = dst.len;
  mh.msg_iov = iov;
  mh.msg_iovlen = 2;
  ssize_t n;
  do {
    n = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) return Napi::Boolean::New(env, false);
    throw SysError(env, errno, call, "sendmsg", "");
  }
  return Napi::Boolean::New(env, true);
}

// Environment teardown: no more completions into this environment; its relays are aborted.
void Teardown(AddonData* data) {
  if (!data->spliceChannel) return;
  std::shared_ptr<Channel> ch = data->spliceChannel;
  {
    std::lock_guard<std::mutex> lock(ch->mu);
    ch->closed = true;  // Node closes the threadsafe function itself
  }
  for (Loop* l : TheEngine().Started()) l->AbortChannel(ch.get());
  for (auto& kv : data->spliceWaiters) kv.second.Reset();
  data->spliceWaiters.clear();
  data->spliceContext = nullptr;  // leaked on purpose: no async_destroy during teardown
}

}  // namespace splice

// ---------------------------------------------------------------------------------------------
// Teardown of the environment (worker exit, process exit): close what is still open, call no JS.

void Teardown(void* arg) {
  auto* data = static_cast<AddonData*>(arg);
  data->tearingDown = true;
  for (ConnectReq* r : data->connects) {
    r->done = true;
    ReleaseConnect(r);
    r->callback.Reset();
    r->context = nullptr;  // leaked on purpose: no async_destroy during teardown
  }
  data->connects.clear();
  for (UdpSocket* s : data->udps) s->CloseNow();
  data->udps.clear();
  splice::FastTeardown(data);
  splice::Teardown(data);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);
  napi_add_env_cleanup_hook(env, Teardown, data);
  data->udpConstructor = Napi::Persistent(UdpSocket::Define(env));
  exports.Set("tcpListen", Napi::Function::New(env, TcpListen, "tcpListen"));
  exports.Set("tcpConnect", Napi::Function::New(env, TcpConnect, "tcpConnect"));
  exports.Set("udpOpen", Napi::Function::New(env, UdpOpen, "udpOpen"));
  exports.Set("spliceRelay", Napi::Function::New(env, splice::SpliceRelay, "spliceRelay"));
  exports.Set("spliceAbort", Napi::Function::New(env, splice::SpliceAbort, "spliceAbort"));
  exports.Set("spliceProgress", Napi::Function::New(env, splice::SpliceProgress, "spliceProgress"));
  exports.Set("spliceStats", Napi::Function::New(env, splice::SpliceStats, "spliceStats"));
  exports.Set("tcpClose", Napi::Function::New(env, splice::TcpClose, "tcpClose"));
  exports.Set("udpSendRaw", Napi::Function::New(env, splice::UdpSendRaw, "udpSendRaw"));
  exports.Set("fastOpen", Napi::Function::New(env, splice::FastOpen, "fastOpen"));
  exports.Set("fastListen", Napi::Function::New(env, splice::FastListen, "fastListen"));
  exports.Set("fastListenerClose", Napi::Function::New(env, splice::FastListenerClose, "fastListenerClose"));
  exports.Set("fastTakePending", Napi::Function::New(env, splice::FastTakePending, "fastTakePending"));
  exports.Set("fastVerdicts", Napi::Function::New(env, splice::FastVerdicts, "fastVerdicts"));
  exports.Set("fastTakeDone", Napi::Function::New(env, splice::FastTakeDone, "fastTakeDone"));
  exports.Set("fastAbort", Napi::Function::New(env, splice::FastAbort, "fastAbort"));
  exports.Set("fastInvalidate", Napi::Function::New(env, splice::FastInvalidate, "fastInvalidate"));
  exports.Set("fastProgress", Napi::Function::New(env, splice::FastProgress, "fastProgress"));
  return exports;
}

}  // namespace

NODE_API_MODULE(netpold_native, Init)
