// Shared-memory rings for VRPC: the region layout (region.ts), SPSC byte-record rings (ring.ts),
// waiting (wait.ts) and the files behind regions (region-file.ts); mapping and futexes are src/native/'s.
// docs/shm-layout.md describes the layout.
export * from './ring.js';
export * from './region.js';
export * from './wait.js';
export { wakePeer, SLEEP_NONE, SLEEP_FUTEX, SLEEP_DOORBELL } from './wake.js';
export * from './region-file.js';
