// prism_doorbell: what the ivshmem doorbell needs from the kernel and Node cannot do: eventfds, a Unix
// socket that passes descriptors (SCM_RIGHTS, QEMU's ivshmem server protocol), a wait with a timeout
// on a descriptor (a guest's /dev/uioN), and a watch of a descriptor on the event loop.
//
//   eventfd() -> fd                        (non-blocking, close-on-exec, counter 0)
//   signal(fd)                             (adds 1: wakes whoever polls it)
//   drain(fd) -> number                    (the counter, reset to 0; 0 if it was 0)
//   listen(path) -> fd                     (a non-blocking Unix stream socket bound at path)
//   accept(fd) -> fd | -1                  (-1: nobody waiting)
//   send(fd, value: bigint, passFd)        (one 8-byte little-endian message, with passFd if >= 0)
//   receive(fd) -> [bigint, fd] | null     (null: nothing yet; fd -1 when none came; throws EPIPE at end)
//   waitReadable(fd, timeoutMs) -> boolean (poll(2): readable within the timeout)
//   watch(fd, callback) -> stop()          (calls back on the event loop while fd is readable)
//   close(fd)
#include <napi.h>
#include <uv.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace {

Napi::Error ErrnoError(Napi::Env env, const std::string& what, int err) {
  Napi::Error e = Napi::Error::New(env, what + ": " + std::strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, uv_err_name(-err)));
  return e;
}

int FdArg(const Napi::CallbackInfo& info, size_t i, const char* fn) {
  if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(fn) + ": fd must be a number");
  return info[i].As<Napi::Number>().Int32Value();
}

Napi::Value EventFd(const Napi::CallbackInfo& info) {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) throw ErrnoError(info.Env(), "eventfd", errno);
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value Signal(const Napi::CallbackInfo& info) {
  uint64_t one = 1;
  // EAGAIN only when the counter is at its maximum: the peer is already due a wake-up.
  if (write(FdArg(info, 0, "signal"), &one, sizeof one) < 0 && errno != EAGAIN) throw ErrnoError(info.Env(), "eventfd write", errno);
  return info.Env().Undefined();
}

Napi::Value Drain(const Napi::CallbackInfo& info) {
  uint64_t n = 0;
  if (read(FdArg(info, 0, "drain"), &n, sizeof n) < 0) {
    if (errno == EAGAIN) return Napi::Number::New(info.Env(), 0);
    throw ErrnoError(info.Env(), "eventfd read", errno);
  }
  return Napi::Number::New(info.Env(), static_cast<double>(n));
}

Napi::Value Listen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "listen(path)");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  sockaddr_un addr;
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) throw ErrnoError(env, "listen " + path, ENAMETOOLONG);
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw ErrnoError(env, "socket", errno);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 8) != 0) {
    int e = errno;
    ::close(fd);
    throw ErrnoError(env, "listen " + path, e);
  }
  return Napi::Number::New(env, fd);
}

Napi::Value Accept(const Napi::CallbackInfo& info) {
  int fd = accept4(FdArg(info, 0, "accept"), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED || errno == EINTR) return Napi::Number::New(info.Env(), -1);
    throw ErrnoError(info.Env(), "accept", errno);
  }
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value Send(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "send");
  if (info.Length() < 3 || !info[1].IsBigInt()) throw Napi::TypeError::New(env, "send(fd, value: bigint, passFd)");
  bool lossless = false;
  int64_t value = info[1].As<Napi::BigInt>().Int64Value(&lossless);
  int pass = FdArg(info, 2, "send");
  unsigned char bytes[8];
  for (int i = 0; i < 8; i++) bytes[i] = static_cast<unsigned char>(static_cast<uint64_t>(value) >> (8 * i));
  iovec iov{bytes, sizeof bytes};
  msghdr msg;
  std::memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  if (pass >= 0) {
    std::memset(control, 0, sizeof control);
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &pass, sizeof(int));
  }
  // Messages are 8 bytes into an idle socket: a short or refused send means the peer is gone or stuck.
  ssize_t n;
  do n = sendmsg(fd, &msg, MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
  if (n < 0) throw ErrnoError(env, "send", errno);
  if (n != static_cast<ssize_t>(sizeof bytes)) throw ErrnoError(env, "send", EAGAIN);
  return env.Undefined();
}

Napi::Value Receive(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "receive");
  unsigned char bytes[8];
  iovec iov{bytes, sizeof bytes};
  msghdr msg;
  std::memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  // MSG_WAITALL would block; the server sends whole 8-byte messages, each in one sendmsg.
  ssize_t n;
  do n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    throw ErrnoError(env, "receive", errno);
  }
  int got = -1;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
      std::memcpy(&got, CMSG_DATA(c), sizeof(int));
    }
  }
  if (n == 0) throw ErrnoError(env, "receive", EPIPE);
  if (n != static_cast<ssize_t>(sizeof bytes)) {
    if (got >= 0) ::close(got);
    throw ErrnoError(env, "receive: short message", EPROTO);
  }
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, Napi::BigInt::New(env, static_cast<int64_t>(v)));
  out.Set(1u, Napi::Number::New(env, got));
  return out;
}

Napi::Value WaitReadable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "waitReadable");
  double ms = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : -1;
  int timeout = !(ms >= 0) ? -1 : ms > 2e9 ? 2000000000 : static_cast<int>(ms + 0.999);
  pollfd p{fd, POLLIN, 0};
  int r = poll(&p, 1, timeout);
  if (r < 0) {
    if (errno == EINTR) return Napi::Boolean::New(env, false);
    throw ErrnoError(env, "poll", errno);
  }
  return Napi::Boolean::New(env, r > 0 && (p.revents & POLLIN) != 0);
}

struct Watch {
  uv_poll_t poll;
  Napi::FunctionReference cb;
  napi_env env;
};

void OnReadable(uv_poll_t* handle, int /*status*/, int /*events*/) {
  Watch* w = static_cast<Watch*>(handle->data);
  Napi::Env env(w->env);
  Napi::HandleScope scope(env);
  w->cb.MakeCallback(env.Global(), {});
}

Napi::Value WatchFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "watch");
  if (info.Length() < 2 || !info[1].IsFunction()) throw Napi::TypeError::New(env, "watch(fd, callback)");
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || !loop) throw Napi::Error::New(env, "no event loop");
  Watch* w = new Watch();
  w->cb = Napi::Persistent(info[1].As<Napi::Function>());
  w->env = env;
  w->poll.data = w;
  int r = uv_poll_init(loop, &w->poll, fd);
  if (r == 0) r = uv_poll_start(&w->poll, UV_READABLE | UV_DISCONNECT, OnReadable);
  if (r != 0) {
    delete w;
    throw Napi::Error::New(env, std::string("uv_poll: ") + uv_strerror(r));
  }
  // The watch does not keep the process alive: the owner's other handles say when it ends.
  uv_unref(reinterpret_cast<uv_handle_t*>(&w->poll));
  return Napi::Function::New(env, [w](const Napi::CallbackInfo& ci) {
    if (!w->cb.IsEmpty()) {
      w->cb.Reset();
      uv_poll_stop(&w->poll);
      uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), [](uv_handle_t* h) { delete static_cast<Watch*>(h->data); });
    }
    return ci.Env().Undefined();
  });
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  ::close(FdArg(info, 0, "close"));
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("eventfd", Napi::Function::New(env, EventFd, "eventfd"));
  exports.Set("signal", Napi::Function::New(env, Signal, "signal"));
  exports.Set("drain", Napi::Function::New(env, Drain, "drain"));
  exports.Set("listen", Napi::Function::New(env, Listen, "listen"));
  exports.Set("accept", Napi::Function::New(env, Accept, "accept"));
  exports.Set("send", Napi::Function::New(env, Send, "send"));
  exports.Set("receive", Napi::Function::New(env, Receive, "receive"));
  exports.Set("waitReadable", Napi::Function::New(env, WaitReadable, "waitReadable"));
  exports.Set("watch", Napi::Function::New(env, WatchFd, "watch"));
  exports.Set("close", Napi::Function::New(env, CloseFd, "close"));
  return exports;
}

}  // namespace

NODE_API_MODULE(prism_doorbell, Init)
