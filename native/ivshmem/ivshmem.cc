// prism_ivshmem: map a shared-memory file or a PCI BAR into JS as an ArrayBuffer, and futex
// wait/wake on a 32-bit word of it. Nothing else: the rings are TypeScript (src/ring).
//
//   map(path, { size?, create?, readonly? }) -> ArrayBuffer   (MAP_SHARED; PROT_READ if readonly)
//   unmap(buf)                                                (detaches buf, then munmap)
//   futexWait(buf, byteOffset, expected, timeoutMs) -> 'ok' | 'not-equal' | 'timed-out'
//   futexWake(buf, byteOffset, count) -> number of waiters woken
//
// The futexes are shared (no FUTEX_PRIVATE_FLAG): the kernel keys them by the mapped file and
// offset, so two processes mapping the same file wake each other.
#include <napi.h>

#include <cerrno>
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

void ReleaseLocked(Mapping* m) {
  if (!m->unmapped) {
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
  if (info.Length() < 1 || !info[0].IsString()) {
    throw Napi::TypeError::New(env, "map(path, opts?): path must be a string");
  }
  std::string path = info[0].As<Napi::String>();
  bool create = false, readonly = false, haveSize = false;
  double sizeArg = 0;
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
    create = o.Get("create").ToBoolean();
    readonly = o.Get("readonly").ToBoolean();
  }
  if (create && readonly) throw Napi::TypeError::New(env, "map: create and readonly exclude each other");
  if (create && !haveSize) throw Napi::TypeError::New(env, "map: create needs opts.size");

  int flags = (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | (create ? O_CREAT : 0);
  int fd = open(path.c_str(), flags, 0600);
  if (fd < 0) throw Napi::Error::New(env, Errno("open", path, errno));

  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    throw Napi::Error::New(env, Errno("fstat", path, e));
  }
  size_t fileSize = st.st_size > 0 ? static_cast<size_t>(st.st_size) : 0;
  size_t length = haveSize ? static_cast<size_t>(sizeArg) : fileSize;
  if (create && fileSize < length) {
    if (ftruncate(fd, static_cast<off_t>(length)) != 0) {
      int e = errno;
      close(fd);
      throw Napi::Error::New(env, Errno("ftruncate", path, e));
    }
    fileSize = length;
  }
  if (length == 0) {
    close(fd);
    throw Napi::Error::New(env, "map " + path + ": size is 0 (give opts.size)");
  }
  // A mapping beyond the end of a regular file raises SIGBUS on access: refuse it here. (sysfs
  // resource files report the BAR size; character devices report 0 and are taken on trust.)
  if ((S_ISREG(st.st_mode)) && length > fileSize) {
    close(fd);
    throw Napi::RangeError::New(env, "map " + path + ": file has " + std::to_string(fileSize) +
                                         " bytes, " + std::to_string(length) + " requested");
  }

  int prot = readonly ? PROT_READ : (PROT_READ | PROT_WRITE);
  void* addr = mmap(nullptr, length, prot, MAP_SHARED, fd, 0);
  int e = errno;
  close(fd);  // the mapping keeps the file
  if (addr == MAP_FAILED) throw Napi::Error::New(env, Errno("mmap", path, e));

  Mapping* m = new Mapping{addr, length, false};
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_live[addr] = m;
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

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("map", Napi::Function::New(env, Map, "map"));
  exports.Set("unmap", Napi::Function::New(env, Unmap, "unmap"));
  exports.Set("futexWait", Napi::Function::New(env, FutexWait, "futexWait"));
  exports.Set("futexWake", Napi::Function::New(env, FutexWake, "futexWake"));
  exports.Set("pageSize", Napi::Number::New(env, static_cast<double>(sysconf(_SC_PAGESIZE))));
  return exports;
}

}  // namespace

NODE_API_MODULE(prism_ivshmem, Init)
