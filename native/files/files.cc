// The file-making syscall Node has no binding for: mknod(2), for FIFOs, device nodes and socket
// files (Linux makes an S_IFSOCK node without a listener), so exporting a volume needs neither
// mkfifo/mknod processes nor a listening server per socket.
#include <napi.h>
#include <errno.h>
#include <string.h>
#include <string>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <uv.h>

// mknod(path: string | Buffer, mode, dev): the path may be any bytes (a Buffer), as names in a volume are.
// An Error as Node's fs throws them: errno and its name in `code` (EEXIST, EPERM...).
static Napi::Error errnoError(Napi::Env env, const char* what, int err) {
  Napi::Error e = Napi::Error::New(env, std::string(what) + ": " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, uv_err_name(-err)));
  return e;
}

static Napi::Value Mknod(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string p;
  if (info[0].IsBuffer()) {
    Napi::Buffer<char> b = info[0].As<Napi::Buffer<char>>();
    p.assign(b.Data(), b.Length());
  } else {
    p = info[0].As<Napi::String>().Utf8Value();
  }
  if (p.find('\0') != std::string::npos) throw errnoError(env, "mknod (a path cannot hold a NUL byte)", EINVAL);
  mode_t mode = static_cast<mode_t>(info[1].As<Napi::Number>().Uint32Value());
  // dev_t as glibc encodes it (makedev), passed as an exact double (< 2^53).
  dev_t dev = static_cast<dev_t>(info[2].As<Napi::Number>().DoubleValue());
  if (mknod(p.c_str(), mode, dev) != 0) throw errnoError(env, "mknod", errno);
  return env.Undefined();
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("mknod", Napi::Function::New(env, Mknod));
  return exports;
}
NODE_API_MODULE(prism_files, Init)
