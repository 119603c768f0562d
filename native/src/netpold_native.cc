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
//
// Errors: system errors are Error objects with code (errno name, e.g. 'ECONNREFUSED'), errno
// (negative, as in Node's own system errors) and syscall, and a message naming the call.
// Invalid arguments throw TypeError with code 'ERR_INVALID_ARG_VALUE'. Nothing here aborts the
// process on bad input. Every fd is closed on every error path; a UDP handle that JS drops
// without close() is closed by its finalizer; everything still open is closed when the Node
// environment is torn down (worker exit).
//
// Design note: the TCP byte path is plain Node sockets today. A later step moves relaying of
// established TCP flows into native code (splice(2) between the two fds) without changing
// callers: the JS API stays shaped as "give me a connected upstream socket".

#include <napi.h>
#include <uv.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <set>
#include <string>

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

struct AddonData {
  std::set<ConnectReq*> connects;
  std::set<UdpSocket*> udps;
  Napi::FunctionReference udpConstructor;
  bool tearingDown = false;
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
  int fd = socket(family == 6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) f = Failure{errno, "socket", ""};
  r->fd = fd;
  if (!f) f = SetTransparent(fd, family);
  if (!f) f = SetInt(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
  if (!f && hasMark) f = SetMark(fd, mark);
  if (!f && bind(fd, src.sa(), src.len) != 0) f = Failure{errno, "bind", ""};
  bool inProgress = false;
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
  if (!f && inProgress) {
    int rc = uv_poll_init(loop, &r->poll, fd);
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
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);
  napi_add_env_cleanup_hook(env, Teardown, data);
  data->udpConstructor = Napi::Persistent(UdpSocket::Define(env));
  exports.Set("tcpListen", Napi::Function::New(env, TcpListen, "tcpListen"));
  exports.Set("tcpConnect", Napi::Function::New(env, TcpConnect, "tcpConnect"));
  exports.Set("udpOpen", Napi::Function::New(env, UdpOpen, "udpOpen"));
  return exports;
}

}  // namespace

NODE_API_MODULE(netpold_native, Init)
