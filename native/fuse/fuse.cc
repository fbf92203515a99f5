// The few syscalls JS cannot make for FUSE: mount(2)/umount2(2) of /dev/fuse, and a way to learn
// that requests are waiting without blocking the event loop: watch() polls the (non-blocking) fd in
// the loop itself (no thread hop per request); read() reads on a worker thread (blocking fds).
// The protocol is parsed in TS.
#include <napi.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <string>
#include <sys/mount.h>
#include <unistd.h>
#include <uv.h>

static Napi::Error errnoError(Napi::Env env, const char* what, int err) {
  Napi::Error e = Napi::Error::New(env, std::string(what) + ": " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  return e;
}

// mount(mountpoint, fsname, extraOptions) -> fd
static Napi::Value Mount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string mp = info[0].As<Napi::String>();
  std::string fsname = info[1].As<Napi::String>();
  std::string extra = info.Length() > 2 && info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "";
  bool nonblock = info.Length() > 3 && info[3].ToBoolean();
  int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC | (nonblock ? O_NONBLOCK : 0));
  if (fd < 0) throw errnoError(env, "open /dev/fuse", errno);
  std::string data = "fd=" + std::to_string(fd) +
      ",rootmode=40000,user_id=0,group_id=0,default_permissions,allow_other,max_read=1048576";
  if (!extra.empty()) data += "," + extra;
  if (mount(fsname.c_str(), mp.c_str(), "fuse.prism", MS_NOSUID | MS_NODEV, data.c_str()) != 0) {
    int err = errno;
    close(fd);
    throw errnoError(env, "mount", err);
  }
  return Napi::Number::New(env, fd);
}

static Napi::Value Umount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string mp = info[0].As<Napi::String>();
  bool lazy = info.Length() > 1 && info[1].ToBoolean();
  if (umount2(mp.c_str(), lazy ? MNT_DETACH : 0) != 0) throw errnoError(env, "umount", errno);
  return env.Undefined();
}

// read(fd, buffer, callback(err, n)): one read(2) of /dev/fuse on the libuv pool.
class ReadWorker : public Napi::AsyncWorker {
 public:
  ReadWorker(Napi::Function cb, int fd, Napi::Buffer<uint8_t> buf)
      : Napi::AsyncWorker(cb), fd_(fd), ref_(Napi::Persistent(buf)), data_(buf.Data()), len_(buf.Length()) {}
  void Execute() override {
    for (;;) {
      n_ = ::read(fd_, data_, len_);
      if (n_ >= 0) return;
      err_ = errno;
      if (err_ != EINTR) return;
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (n_ < 0) Callback().Call({errnoError(env, "read /dev/fuse", err_).Value(), env.Undefined()});
    else Callback().Call({env.Null(), Napi::Number::New(env, static_cast<double>(n_))});
  }
 private:
  int fd_;
  Napi::Reference<Napi::Buffer<uint8_t>> ref_;
  uint8_t* data_;
  size_t len_;
  ssize_t n_ = -1;
  int err_ = 0;
};

static Napi::Value Read(const Napi::CallbackInfo& info) {
  int fd = info[0].As<Napi::Number>().Int32Value();
  auto buf = info[1].As<Napi::Buffer<uint8_t>>();
  auto cb = info[2].As<Napi::Function>();
  (new ReadWorker(cb, fd, buf))->Queue();
  return info.Env().Undefined();
}

// watch(fd, callback()) -> stop(): calls back on the event loop whenever the fd is readable (or
// errored: the read then reports why, e.g. ENODEV after unmount).
struct Watch {
  uv_poll_t poll;
  Napi::FunctionReference cb;
  napi_env env;
};

static void OnReadable(uv_poll_t* handle, int /*status*/, int /*events*/) {
  Watch* w = static_cast<Watch*>(handle->data);
  Napi::Env env(w->env);
  Napi::HandleScope scope(env);
  w->cb.MakeCallback(env.Global(), {});
}

static Napi::Value WatchFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || !loop) throw Napi::Error::New(env, "no event loop");
  Watch* w = new Watch();
  w->cb = Napi::Persistent(info[1].As<Napi::Function>());
  w->env = env;
  int r = uv_poll_init(loop, &w->poll, fd);
  if (r == 0) r = uv_poll_start(&w->poll, UV_READABLE | UV_DISCONNECT, OnReadable);
  if (r != 0) {
    delete w;
    throw Napi::Error::New(env, std::string("uv_poll: ") + uv_strerror(r));
  }
  w->poll.data = w;
  return Napi::Function::New(env, [w](const Napi::CallbackInfo& ci) {
    if (!w->cb.IsEmpty()) {
      w->cb.Reset();
      uv_poll_stop(&w->poll);
      uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), [](uv_handle_t* h) { delete static_cast<Watch*>(h->data); });
    }
    return ci.Env().Undefined();
  });
}

// close(fd): the fd came from mount() (not from Node's fs, which would warn in a worker thread).
static Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  ::close(info[0].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("close", Napi::Function::New(env, CloseFd));
  exports.Set("watch", Napi::Function::New(env, WatchFd));
  exports.Set("mount", Napi::Function::New(env, Mount));
  exports.Set("umount", Napi::Function::New(env, Umount));
  exports.Set("read", Napi::Function::New(env, Read));
  return exports;
}
NODE_API_MODULE(prism_fuse, Init)
