// prism_doorbell: what the ivshmem doorbell needs from the kernel and Node cannot do: eventfds, a Unix
// socket that passes descriptors (SCM_RIGHTS, QEMU's ivshmem server protocol), a wait with a timeout
// on a descriptor (a guest's /dev/uioN), and a watch of a descriptor on the event loop.
//
//   eventfd() -> fd                        (non-blocking, close-on-exec, counter 0)
//   signal(fd)                             (adds 1: wakes whoever polls it)
//   drain(fd) -> number                    (the counter, reset to 0; 0 if it was 0)
//   listen(path) -> fd                     (a non-blocking Unix stream socket bound at path)
//   accept(fd) -> fd | -1                  (-1: nobody waiting)
//   connect(path) -> fd                    (a non-blocking Unix stream socket connected to path)
//   send(fd, value: bigint, passFd)        (one 8-byte little-endian message, with passFd if >= 0)
//   receive(fd) -> [bigint, fd] | null     (null: nothing yet; fd -1 when none came; throws EPIPE at end)
//   waitReadable(fd, timeoutMs) -> boolean (poll(2): readable within the timeout)
//   watch(fd, callback) -> stop()          (calls back on the event loop while fd is readable)
//   vfioOpen(group, bdf) -> { container, group, device, regions: [{ offset, size, mmap }] }
//                                          (a PCI device through VFIO: type-1 IOMMU; regions by VFIO index)
//   vfioMsix(device, vector, eventfd)      (the device's MSI-X vector signals eventfd)
//   close(fd)
#include <napi.h>
#include <uv.h>

#include "../common/fd-watch.h"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <poll.h>
#include <linux/vfio.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
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

Napi::Value Accept(const Napi::CallbackInfo& info) {
  int fd = accept4(FdArg(info, 0, "accept"), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED || errno == EINTR) return Napi::Number::New(info.Env(), -1);
    throw ErrnoError(info.Env(), "accept", errno);
  }
  return Napi::Number::New(info.Env(), fd);
}

// A Unix stream socket bound and listening at path (non-blocking), or connected to it.
int UnixSocket(const Napi::CallbackInfo& info, bool listening) {
  Napi::Env env = info.Env();
  const char* what = listening ? "listen" : "connect";
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, std::string(what) + "(path)");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  sockaddr_un addr;
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) throw ErrnoError(env, std::string(what) + " " + path, ENAMETOOLONG);
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw ErrnoError(env, "socket", errno);
  sockaddr* a = reinterpret_cast<sockaddr*>(&addr);
  // A Unix stream connect completes at once (or fails): the socket is made non-blocking after it.
  bool ok = listening ? bind(fd, a, sizeof addr) == 0 && ::listen(fd, 8) == 0 : ::connect(fd, a, sizeof addr) == 0;
  if (!ok || fcntl(fd, F_SETFL, O_NONBLOCK) != 0) {
    int e = errno;
    ::close(fd);
    throw ErrnoError(env, std::string(what) + " " + path, e);
  }
  return fd;
}

Napi::Value Listen(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), UnixSocket(info, true));
}

Napi::Value Connect(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), UnixSocket(info, false));
}

// One message of QEMU's ivshmem protocol: 8 bytes (a little-endian int64), and room for one fd.
struct Message {
  unsigned char bytes[8] = {};
  iovec iov{bytes, sizeof bytes};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  Message() { msg.msg_iov = &iov; msg.msg_iovlen = 1; }
  Message(const Message&) = delete;  // iov points into this object
  void WithControl() { msg.msg_control = control; msg.msg_controllen = sizeof control; }
};

Napi::Value Send(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "send");
  if (info.Length() < 3 || !info[1].IsBigInt()) throw Napi::TypeError::New(env, "send(fd, value: bigint, passFd)");
  bool lossless = false;
  int64_t value = info[1].As<Napi::BigInt>().Int64Value(&lossless);
  int pass = FdArg(info, 2, "send");
  Message m;
  for (int i = 0; i < 8; i++) m.bytes[i] = static_cast<unsigned char>(static_cast<uint64_t>(value) >> (8 * i));
  msghdr& msg = m.msg;
  if (pass >= 0) {
    m.WithControl();
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
  if (n != static_cast<ssize_t>(sizeof m.bytes)) throw ErrnoError(env, "send", EAGAIN);
  return env.Undefined();
}

Napi::Value Receive(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "receive");
  Message m;
  m.WithControl();
  msghdr& msg = m.msg;
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
  if (n != static_cast<ssize_t>(sizeof m.bytes)) {
    if (got >= 0) ::close(got);
    throw ErrnoError(env, "receive: short message", EPROTO);
  }
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= static_cast<uint64_t>(m.bytes[i]) << (8 * i);
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

// The watch does not keep the process alive: the owner's other handles say when it ends.
Napi::Value WatchFd(const Napi::CallbackInfo& info) {
  return fdwatch::Start(info, false);
}

Napi::Value VfioOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) throw Napi::TypeError::New(env, "vfioOpen(groupPath, bdf)");
  std::string groupPath = info[0].As<Napi::String>().Utf8Value();
  std::string bdf = info[1].As<Napi::String>().Utf8Value();
  int container = -1, group = -1, device = -1;
  auto fail = [&](const std::string& what) -> Napi::Error {
    int e = errno;
    if (device >= 0) ::close(device);
    if (group >= 0) ::close(group);
    if (container >= 0) ::close(container);
    return ErrnoError(env, what, e);
  };
  container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
  if (container < 0) throw fail("open /dev/vfio/vfio");
  if (ioctl(container, VFIO_GET_API_VERSION) != VFIO_API_VERSION) { errno = EPROTO; throw fail("VFIO API version"); }
  if (ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU) <= 0) { errno = ENOTSUP; throw fail("VFIO type-1 IOMMU"); }
  group = open(groupPath.c_str(), O_RDWR | O_CLOEXEC);
  if (group < 0) throw fail("open " + groupPath);
  vfio_group_status status;
  std::memset(&status, 0, sizeof status);
  status.argsz = sizeof status;
  if (ioctl(group, VFIO_GROUP_GET_STATUS, &status) != 0) throw fail("VFIO group status");
  if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) { errno = EBUSY; throw fail(groupPath + " is not viable (another device of the group has a driver)"); }
  if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) != 0) throw fail("VFIO set container");
  if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU) != 0) throw fail("VFIO set IOMMU");
  device = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf.c_str());
  if (device < 0) throw fail("VFIO device " + bdf);
  Napi::Array regions = Napi::Array::New(env);
  for (uint32_t i = 0; i <= VFIO_PCI_CONFIG_REGION_INDEX; i++) {
    vfio_region_info r;
    std::memset(&r, 0, sizeof r);
    r.argsz = sizeof r;
    r.index = i;
    Napi::Object o = Napi::Object::New(env);
    if (ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &r) == 0) {
      o.Set("offset", Napi::Number::New(env, static_cast<double>(r.offset)));
      o.Set("size", Napi::Number::New(env, static_cast<double>(r.size)));
      o.Set("mmap", Napi::Boolean::New(env, (r.flags & VFIO_REGION_INFO_FLAG_MMAP) != 0));
    } else {
      o.Set("offset", Napi::Number::New(env, 0));
      o.Set("size", Napi::Number::New(env, 0));
      o.Set("mmap", Napi::Boolean::New(env, false));
    }
    regions.Set(i, o);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("container", Napi::Number::New(env, container));
  out.Set("group", Napi::Number::New(env, group));
  out.Set("device", Napi::Number::New(env, device));
  out.Set("regions", regions);
  return out;
}

Napi::Value VfioMsix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int device = FdArg(info, 0, "vfioMsix");
  int vector = FdArg(info, 1, "vfioMsix");
  int efd = FdArg(info, 2, "vfioMsix");
  alignas(vfio_irq_set) char buf[sizeof(vfio_irq_set) + sizeof(int)];
  std::memset(buf, 0, sizeof buf);
  vfio_irq_set* set = reinterpret_cast<vfio_irq_set*>(buf);
  set->argsz = sizeof buf;
  set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  set->index = VFIO_PCI_MSIX_IRQ_INDEX;
  set->start = static_cast<uint32_t>(vector);
  set->count = 1;
  std::memcpy(set->data, &efd, sizeof(int));
  if (ioctl(device, VFIO_DEVICE_SET_IRQS, set) != 0) throw ErrnoError(env, "VFIO MSI-X", errno);
  return env.Undefined();
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
  exports.Set("connect", Napi::Function::New(env, Connect, "connect"));
  exports.Set("send", Napi::Function::New(env, Send, "send"));
  exports.Set("receive", Napi::Function::New(env, Receive, "receive"));
  exports.Set("waitReadable", Napi::Function::New(env, WaitReadable, "waitReadable"));
  exports.Set("watch", Napi::Function::New(env, WatchFd, "watch"));
  exports.Set("vfioOpen", Napi::Function::New(env, VfioOpen, "vfioOpen"));
  exports.Set("vfioMsix", Napi::Function::New(env, VfioMsix, "vfioMsix"));
  exports.Set("close", Napi::Function::New(env, CloseFd, "close"));
  return exports;
}

}  // namespace

NODE_API_MODULE(prism_doorbell, Init)
