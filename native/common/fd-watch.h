// watch(fd, callback) -> stop(), shared by the addons that wait on a descriptor in Node's event loop
// (/dev/fuse in prism_fuse, eventfds and sockets in prism_doorbell): calls back on the loop whenever
// the fd is readable (or errored: the caller's read then says why). `keepAlive`: whether the watch
// alone keeps the loop running.
#pragma once
#include <napi.h>
#include <uv.h>

#include <string>

namespace fdwatch {

struct Watch {
  uv_poll_t poll;
  Napi::FunctionReference cb;
  napi_env env;
};

inline void OnReadable(uv_poll_t* handle, int /*status*/, int /*events*/) {
  Watch* w = static_cast<Watch*>(handle->data);
  Napi::Env env(w->env);
  Napi::HandleScope scope(env);
  w->cb.MakeCallback(env.Global(), {});
}

inline Napi::Value Start(const Napi::CallbackInfo& info, bool keepAlive) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsFunction()) throw Napi::TypeError::New(env, "watch(fd, callback)");
  int fd = info[0].As<Napi::Number>().Int32Value();
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
  if (!keepAlive) uv_unref(reinterpret_cast<uv_handle_t*>(&w->poll));
  return Napi::Function::New(env, [w](const Napi::CallbackInfo& ci) {
    if (!w->cb.IsEmpty()) {
      w->cb.Reset();
      uv_poll_stop(&w->poll);
      uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), [](uv_handle_t* h) { delete static_cast<Watch*>(h->data); });
    }
    return ci.Env().Undefined();
  });
}

}  // namespace fdwatch
