// The few syscalls JS cannot make for FUSE: mount(2)/umount2(2) of /dev/fuse (or fusermount3 for a
// user, with the fd passed back over a socket), and a way to learn that requests are waiting without
// blocking the event loop: watch() polls the non-blocking fd in the loop itself (no thread hop per
// request). Reads and writes are plain read(2)/write(2) from JS; the protocol is parsed in TS.
#include <napi.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <string>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <vector>
#include <unistd.h>
#include <uv.h>

#include "../common/fd-watch.h"

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

// mountUser(fusermount3 path, mountpoint, options) -> fd: for a user who may not call mount(2),
// the setuid fusermount3 mounts and hands the /dev/fuse fd back over a socket (_FUSE_COMMFD).
// Everything the child needs is prepared before fork: only async-signal-safe calls follow it.
static Napi::Value MountUser(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string helper = info[0].As<Napi::String>();
  std::string mp = info[1].As<Napi::String>();
  std::string opts = info[2].As<Napi::String>();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) throw errnoError(env, "socketpair", errno);
  std::string commfd = "_FUSE_COMMFD=" + std::to_string(sv[1]);
  std::vector<char*> argv = {const_cast<char*>(helper.c_str()), const_cast<char*>("-o"), const_cast<char*>(opts.c_str()),
                             const_cast<char*>("--"), const_cast<char*>(mp.c_str()), nullptr};
  std::vector<char*> envp = {const_cast<char*>(commfd.c_str()), const_cast<char*>("PATH=/usr/bin:/bin"), nullptr};
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(sv[0]);
    close(sv[1]);
    throw errnoError(env, "fork", err);
  }
  if (pid == 0) {
    close(sv[0]);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  close(sv[1]);
  char byte;
  struct iovec iov = {&byte, 1};
  char control[CMSG_SPACE(sizeof(int))];
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do n = recvmsg(sv[0], &msg, 0); while (n < 0 && errno == EINTR);
  close(sv[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  struct cmsghdr* c = n > 0 ? CMSG_FIRSTHDR(&msg) : nullptr;
  if (!c || c->cmsg_type != SCM_RIGHTS) {
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    throw Napi::Error::New(env, "fusermount3 did not mount (exit status " + std::to_string(code) + ")");
  }
  int fd;
  memcpy(&fd, CMSG_DATA(c), sizeof(int));
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return Napi::Number::New(env, fd);
}

static Napi::Value Umount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string mp = info[0].As<Napi::String>();
  bool lazy = info.Length() > 1 && info[1].ToBoolean();
  if (umount2(mp.c_str(), lazy ? MNT_DETACH : 0) != 0) throw errnoError(env, "umount", errno);
  return env.Undefined();
}

// watch(fd, callback()) -> stop(): calls back on the event loop whenever the fd is readable (or
// errored: the read then reports why, e.g. ENODEV after unmount). The watch keeps the loop alive.
static Napi::Value WatchFd(const Napi::CallbackInfo& info) {
  return fdwatch::Start(info, true);
}

// close(fd): the fd came from mount() (not from Node's fs, which would warn in a worker thread).
static Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  ::close(info[0].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}

// coarseNow() -> [s, ns]: CLOCK_REALTIME_COARSE, the clock the kernel stamps inode times with
// (current_time): a time the agent gives the kernel from it compares equal to the kernel's own
// within the same tick.
static Napi::Value CoarseNow(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  Napi::Array a = Napi::Array::New(env, 2);
  a.Set(0u, Napi::Number::New(env, (double)ts.tv_sec));
  a.Set(1u, Napi::Number::New(env, (double)ts.tv_nsec));
  return a;
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("coarseNow", Napi::Function::New(env, CoarseNow));
  exports.Set("close", Napi::Function::New(env, CloseFd));
  exports.Set("mountUser", Napi::Function::New(env, MountUser));
  exports.Set("watch", Napi::Function::New(env, WatchFd));
  exports.Set("mount", Napi::Function::New(env, Mount));
  exports.Set("umount", Napi::Function::New(env, Umount));
  return exports;
}
NODE_API_MODULE(prism_fuse, Init)
