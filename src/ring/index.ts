// Shared-memory rings for VRPC: the region layout (region.ts), SPSC byte-record rings (ring.ts),
// waiting (wait.ts) and the native addon (native.ts). docs/shm-layout.md describes the layout.
export * from './ring.js';
export * from './region.js';
export * from './wait.js';
export { wakePeer } from './wake.js';
export { nativeAvailable, isDeviceMemory, map, unmap, futexWait, futexWake, lockByte, mappingLost, type MapOptions, type FutexWaitResult } from './native.js';
export * from './region-file.js';
