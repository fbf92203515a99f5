// prism_ivshmem: map a shared-memory file or a PCI BAR into JS as an ArrayBuffer, and futex
// wait/wake on a 32-bit word of it. Nothing else: the rings are TypeScript (src/ring).
//
//   map(path | fd, { size?, create?, readonly?, guard?, offset? }) -> ArrayBuffer
//                                       (MAP_SHARED; PROT_READ if readonly; an fd stays the caller's;
//                                        offset: page-aligned, with a descriptor and a size, e.g. a
//                                        VFIO device's region)
//   unmap(buf)                                                (detaches buf, then munmap)
//   futexWait(buf, byteOffset, expected, timeoutMs) -> 'ok' | 'not-equal' | 'timed-out'
//   futexWake(buf, byteOffset, count) -> number of waiters woken
//   lock(fd, byte, exclusive) -> true | false (held by another open file description)
//   lost(buf) -> whether the file behind a guarded mapping shrank under it (see below)
//
// The futexes are shared (no FUTEX_PRIVATE_FLAG): the kernel keys them by the mapped file and
// offset, so two processes mapping the same file wake each other.
//
// Locks are open-file-description locks (F_OFD_SETLK) on one byte: they conflict between two opens
// of the file even in one process, are not dropped when some other descriptor of the file is closed
// (as classic POSIX locks are), and go away with the last descriptor (or mapping) of the open.
//
// Guarded mappings: a file someone truncates under a mapping makes every access past its new end
// raise SIGBUS, which would end the process. For mappings made with `guard`, a SIGBUS handler
// replaces the whole mapping with private zero pages (so the access is retried and succeeds) and
// marks it lost; the owner asks lost(buf) and stops using it. The technique of Wayland compositors
// facing client-owned shared memory. Other SIGBUSes go to the previous handler (or kill as before).
#include <napi.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

namespace {

// One live mapping. The finalizer of the ArrayBuffer owns this struct; `unmapped` tells it that
// unmap() already released the memory (the address may since have been reused by another map()).
struct Mapping {
  void* addr;
  size_t length;
  bool unmapped;
};

std::mutex g_mutex;
std::unordered_map<void*, Mapping*> g_live;  // addr -> mapping, live mappings only

// Guarded ranges, read by the SIGBUS handler: no locks there, only atomics. start == 0: free slot.
struct Guard {
  std::atomic<uintptr_t> start;
  std::atomic<size_t> length;
  std::atomic<int> lost;
  std::atomic<int> readonly;
};
constexpr size_t kGuards = 4096;
constexpr uintptr_t kClaimed = 1;
Guard g_guards[kGuards];
struct sigaction g_prevBus;
std::once_flag g_busOnce;

void OnSigbus(int sig, siginfo_t* si, void* uc) {
  uintptr_t a = reinterpret_cast<uintptr_t>(si->si_addr);
  for (Guard& g : g_guards) {
    uintptr_t s = g.start.load(std::memory_order_acquire);
    size_t len = g.length.load(std::memory_order_acquire);
    if (s <= kClaimed || a < s || a >= s + len) continue;
    int prot = g.readonly.load() ? PROT_READ : (PROT_READ | PROT_WRITE);
    void* r = mmap(reinterpret_cast<void*>(s), len, prot, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r != MAP_FAILED) {
      g.lost.store(1, std::memory_order_release);
      return;  // the faulting access is retried on the zero pages
    }
  }
  if (g_prevBus.sa_flags & SA_SIGINFO) {
    if (g_prevBus.sa_sigaction) g_prevBus.sa_sigaction(sig, si, uc);
    return;
  }
  if (g_prevBus.sa_handler != SIG_DFL && g_prevBus.sa_handler != SIG_IGN) {
    g_prevBus.sa_handler(sig);
    return;
  }
  // Not ours: die of it as we would have without this handler (the access faults again).
  signal(SIGBUS, SIG_DFL);
}

void InstallSigbus() {
  std::call_once(g_busOnce, [] {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = OnSigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &g_prevBus);
  });
}

Guard* GuardOf(uintptr_t start) {
  for (Guard& g : g_guards) {
    if (g.start.load(std::memory_order_acquire) == start) return &g;
  }
  return nullptr;
}

void AddGuard(void* addr, size_t length, bool readonly) {
  InstallSigbus();
  for (Guard& g : g_guards) {
    uintptr_t expected = 0;
    // Claim the slot (1: taken, not yet valid; the handler skips it), fill it in, then publish.
    if (!g.start.compare_exchange_strong(expected, kClaimed)) continue;
    g.length.store(length, std::memory_order_release);
    g.readonly.store(readonly ? 1 : 0);
    g.lost.store(0);
    g.start.store(reinterpret_cast<uintptr_t>(addr), std::memory_order_release);
    return;
  }
  // Table full: this mapping is unguarded (a truncation would kill the process, as before).
}

void RemoveGuard(void* addr) {
  Guard* g = GuardOf(reinterpret_cast<uintptr_t>(addr));
  if (g) g->start.store(0, std::memory_order_release);
}

void ReleaseLocked(Mapping* m) {
  if (!m->unmapped) {
    RemoveGuard(m->addr);
    munmap(m->addr, m->length);
    m->unmapped = true;
    g_live.erase(m->addr);
  }
}

void Finalize(Napi::Env, void*, Mapping* m) {
  std::lock_guard<std::mutex> lock(g_mutex);
  ReleaseLocked(m);
  delete m;
}

std::string Errno(const std::string& what, const std::string& path, int err) {
  return what + " " + path + ": " + std::strerror(err) + " (errno " + std::to_string(err) + ")";
}

Napi::Value Map(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !(info[0].IsString() || info[0].IsNumber())) {
    throw Napi::TypeError::New(env, "map(path | fd, opts?): path must be a string or an open descriptor");
  }
  int givenFd = -1;
  std::string path;
  if (info[0].IsNumber()) {
    givenFd = info[0].As<Napi::Number>().Int32Value();
    if (givenFd < 0) throw Napi::RangeError::New(env, "map: bad descriptor");
    path = "fd " + std::to_string(givenFd);
  } else {
    path = info[0].As<Napi::String>().Utf8Value();
  }
  bool create = false, readonly = false, haveSize = false, guard = false;
  double sizeArg = 0, offsetArg = 0;
  if (info.Length() >= 2 && !info[1].IsUndefined() && !info[1].IsNull()) {
    if (!info[1].IsObject()) throw Napi::TypeError::New(env, "map(path, opts?): opts must be an object");
    Napi::Object o = info[1].As<Napi::Object>();
    Napi::Value v = o.Get("size");
    if (!v.IsUndefined()) {
      if (!v.IsNumber()) throw Napi::TypeError::New(env, "map: opts.size must be a number");
      sizeArg = v.As<Napi::Number>().DoubleValue();
      if (!(sizeArg >= 1) || sizeArg != std::floor(sizeArg) || sizeArg > 9007199254740991.0) {
        throw Napi::RangeError::New(env, "map: opts.size must be a positive integer");
      }
      haveSize = true;
    }
    Napi::Value off = o.Get("offset");
    if (!off.IsUndefined()) {
      if (!off.IsNumber()) throw Napi::TypeError::New(env, "map: opts.offset must be a number");
      offsetArg = off.As<Napi::Number>().DoubleValue();
      if (!(offsetArg >= 0) || offsetArg != std::floor(offsetArg) || offsetArg > 9007199254740991.0 ||
          std::fmod(offsetArg, static_cast<double>(sysconf(_SC_PAGESIZE))) != 0) {
        throw Napi::RangeError::New(env, "map: opts.offset must be a multiple of the page size");
      }
    }
    create = o.Get("create").ToBoolean();
    readonly = o.Get("readonly").ToBoolean();
    guard = o.Get("guard").ToBoolean();
  }
  if (givenFd >= 0 && create) throw Napi::TypeError::New(env, "map: create takes a path, not a descriptor");
  if (create && readonly) throw Napi::TypeError::New(env, "map: create and readonly exclude each other");
  if (create && !haveSize) throw Napi::TypeError::New(env, "map: create needs opts.size");
  if (offsetArg > 0 && (givenFd < 0 || !haveSize)) throw Napi::TypeError::New(env, "map: an offset needs a descriptor and opts.size");

  int fd = givenFd;
  if (fd < 0) {
    int flags = (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | (create ? O_CREAT : 0);
    fd = open(path.c_str(), flags, 0600);
    if (fd < 0) throw Napi::Error::New(env, Errno("open", path, errno));
  }
  // Our own descriptor is closed once mapped; a caller's is left open (it may hold a lock).
  auto done = [&]() { if (givenFd < 0) close(fd); };

  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    done();
    throw Napi::Error::New(env, Errno("fstat", path, e));
  }
  size_t fileSize = st.st_size > 0 ? static_cast<size_t>(st.st_size) : 0;
  size_t length = haveSize ? static_cast<size_t>(sizeArg) : fileSize;
  if (create && fileSize < length) {
    if (ftruncate(fd, static_cast<off_t>(length)) != 0) {
      int e = errno;
      done();
      throw Napi::Error::New(env, Errno("ftruncate", path, e));
    }
    fileSize = length;
  }
  if (length == 0) {
    done();
    throw Napi::Error::New(env, "map " + path + ": size is 0 (give opts.size)");
  }
  // A mapping beyond the end of a regular file raises SIGBUS on access: refuse it here. (sysfs
  // resource files report the BAR size; character devices report 0 and are taken on trust.)
  if ((S_ISREG(st.st_mode)) && length > fileSize) {
    done();
    throw Napi::RangeError::New(env, "map " + path + ": file has " + std::to_string(fileSize) +
                                         " bytes, " + std::to_string(length) + " requested");
  }

  int prot = readonly ? PROT_READ : (PROT_READ | PROT_WRITE);
  void* addr = mmap(nullptr, length, prot, MAP_SHARED, fd, static_cast<off_t>(offsetArg));
  int e = errno;
  done();  // the mapping keeps the file
  if (addr == MAP_FAILED) throw Napi::Error::New(env, Errno("mmap", path, e));

  Mapping* m = new Mapping{addr, length, false};
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_live[addr] = m;
    if (guard) AddGuard(addr, length, readonly);
  }
  return Napi::ArrayBuffer::New(env, addr, length, Finalize, m);
}

Napi::Value Unmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer()) {
    throw Napi::TypeError::New(env, "unmap(buf): buf must be an ArrayBuffer returned by map()");
  }
  Napi::ArrayBuffer buf = info[0].As<Napi::ArrayBuffer>();
  if (buf.IsDetached()) return Napi::Boolean::New(env, false);
  void* addr = buf.Data();
  Mapping* m = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_live.find(addr);
    if (it != g_live.end() && it->second->length == buf.ByteLength()) m = it->second;
  }
  if (m == nullptr) throw Napi::TypeError::New(env, "unmap(buf): buf is not a live mapping from map()");
  // Detach first so that no JS view can touch the memory once it is gone.
  buf.Detach();
  std::lock_guard<std::mutex> lock(g_mutex);
  ReleaseLocked(m);  // the finalizer still runs later and frees `m`
  return Napi::Boolean::New(env, true);
}

// The 32-bit word at byteOffset of an ArrayBuffer, checked.
int32_t* WordAt(const Napi::CallbackInfo& info, const char* fn) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsArrayBuffer() || !info[1].IsNumber() || !info[2].IsNumber()) {
    throw Napi::TypeError::New(env, std::string(fn) + ": expected (ArrayBuffer, byteOffset, number, ...)");
  }
  Napi::ArrayBuffer buf = info[0].As<Napi::ArrayBuffer>();
  double off = info[1].As<Napi::Number>().DoubleValue();
  size_t len = buf.ByteLength();
  if (buf.IsDetached() || buf.Data() == nullptr) throw Napi::TypeError::New(env, std::string(fn) + ": buffer is detached");
  if (!(off >= 0) || off != std::floor(off) || off + 4 > static_cast<double>(len)) {
    throw Napi::RangeError::New(env, std::string(fn) + ": byteOffset out of bounds");
  }
  uintptr_t p = reinterpret_cast<uintptr_t>(buf.Data()) + static_cast<size_t>(off);
  if (p % 4 != 0) throw Napi::RangeError::New(env, std::string(fn) + ": word is not 4-byte aligned");
  return reinterpret_cast<int32_t*>(p);
}

long Futex(int32_t* addr, int op, int32_t val, const struct timespec* ts) {
  return syscall(SYS_futex, addr, op, val, ts, nullptr, 0);
}

Napi::Value FutexWait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t* word = WordAt(info, "futexWait");
  int32_t expected = info[2].As<Napi::Number>().Int32Value();
  double timeoutMs = -1;
  if (info.Length() >= 4 && info[3].IsNumber()) timeoutMs = info[3].As<Napi::Number>().DoubleValue();
  struct timespec ts;
  const struct timespec* tsp = nullptr;
  if (timeoutMs >= 0 && std::isfinite(timeoutMs)) {
    double ns = timeoutMs * 1e6;
    ts.tv_sec = static_cast<time_t>(ns / 1e9);
    ts.tv_nsec = static_cast<long>(ns - static_cast<double>(ts.tv_sec) * 1e9);
    if (ts.tv_nsec < 0) ts.tv_nsec = 0;
    if (ts.tv_nsec > 999999999) ts.tv_nsec = 999999999;
    tsp = &ts;
  }
  // Shared futex: FUTEX_WAIT without FUTEX_PRIVATE_FLAG. The timeout is relative.
  long r = Futex(word, FUTEX_WAIT, expected, tsp);
  if (r == 0) return Napi::String::New(env, "ok");
  switch (errno) {
    case EAGAIN: return Napi::String::New(env, "not-equal");
    case ETIMEDOUT: return Napi::String::New(env, "timed-out");
    case EINTR: return Napi::String::New(env, "ok");  // a signal: callers re-check their condition
    default: throw Napi::Error::New(env, std::string("futexWait: ") + std::strerror(errno));
  }
}

Napi::Value FutexWake(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t* word = WordAt(info, "futexWake");
  double c = info[2].As<Napi::Number>().DoubleValue();
  int32_t count = !(c >= 0) ? 0 : c >= static_cast<double>(INT_MAX) ? INT_MAX : static_cast<int32_t>(c);
  long r = Futex(word, FUTEX_WAKE, count, nullptr);
  if (r < 0) throw Napi::Error::New(env, std::string("futexWake: ") + std::strerror(errno));
  return Napi::Number::New(env, static_cast<double>(r));
}

Napi::Value Lock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsBoolean()) {
    throw Napi::TypeError::New(env, "lock(fd, byte, exclusive)");
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  int64_t byte = info[1].As<Napi::Number>().Int64Value();
  if (fd < 0 || byte < 0) throw Napi::RangeError::New(env, "lock: bad descriptor or byte");
  struct flock fl;
  std::memset(&fl, 0, sizeof fl);
  fl.l_type = info[2].As<Napi::Boolean>().Value() ? F_WRLCK : F_RDLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(byte);
  fl.l_len = 1;
  if (fcntl(fd, F_OFD_SETLK, &fl) == 0) return Napi::Boolean::New(env, true);
  if (errno == EAGAIN || errno == EACCES) return Napi::Boolean::New(env, false);
  throw Napi::Error::New(env, std::string("lock: ") + std::strerror(errno));
}

Napi::Value Lost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer()) throw Napi::TypeError::New(env, "lost(buf)");
  Napi::ArrayBuffer buf = info[0].As<Napi::ArrayBuffer>();
  if (buf.IsDetached() || buf.Data() == nullptr) return Napi::Boolean::New(env, false);
  Guard* g = GuardOf(reinterpret_cast<uintptr_t>(buf.Data()));
  return Napi::Boolean::New(env, g != nullptr && g->lost.load(std::memory_order_acquire) != 0);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("lock", Napi::Function::New(env, Lock, "lock"));
  exports.Set("lost", Napi::Function::New(env, Lost, "lost"));
  exports.Set("map", Napi::Function::New(env, Map, "map"));
  exports.Set("unmap", Napi::Function::New(env, Unmap, "unmap"));
  exports.Set("futexWait", Napi::Function::New(env, FutexWait, "futexWait"));
  exports.Set("futexWake", Napi::Function::New(env, FutexWake, "futexWake"));
  exports.Set("pageSize", Napi::Number::New(env, static_cast<double>(sysconf(_SC_PAGESIZE))));
  return exports;
}

}  // namespace

NODE_API_MODULE(prism_ivshmem, Init)
