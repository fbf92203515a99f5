// The host's side of a VM's `ivshmem-doorbell` device: QEMU's ivshmem server protocol on a Unix
// socket (QEMU docs/specs/ivshmem-spec; docs/doorbell.md), spoken by the host itself (Debian ships no
// server). The host is peer 0 with one eventfd that QEMU writes when the guest writes 0 (peer 0,
// vector 0) to its Doorbell register; each QEMU that connects gets the region's descriptor, the
// host's eventfd and eventfds of its own, which the host writes to interrupt that guest. The host
// waits on its eventfd in the event loop (no thread, no timer); a guest ringing without cause is
// rate-limited (ivshmem-bell.ts).
import fs from 'node:fs';
import { PrismError, fromNodeError } from '../errors.js';
import { log } from '../log.js';
import { doorbellAddon, type DoorbellAddon } from '../native/doorbell.js';

/** The protocol version QEMU speaks (since 2.5). */
const PROTOCOL_VERSION = 0n;
/** The host's peer id: a guest rings it by writing (0 << 16) | 0 to its Doorbell register. */
export const HOST_PEER = 0;
/** Interrupt vectors per guest: one (a doorbell carries no data). */
export const VECTORS = 1;

interface Peer { id: number; socket: number; eventfds: number[]; unwatch: () => void }

export interface IvshmemServerOptions {
  /** Called when the first guest connects and when the last one leaves: the host says so in the region. */
  onPeers?(connected: number): void;
  /** A group that may connect (QEMU running as another user): the socket is made 0660 instead of 0600. */
  group?: number;
}

export class IvshmemServer {
  private readonly addon: DoorbellAddon;
  private readonly listenFd: number;
  private readonly unwatchListen: () => void;
  /** QEMU writes it when its guest rings peer 0. */
  private readonly hostFd: number;
  private readonly peers = new Map<number, Peer>();
  private nextId = HOST_PEER + 1;
  private closed = false;

  /** Listen at `socketPath` for the VM whose region is the file `regionFile`. */
  constructor(readonly socketPath: string, private readonly regionFile: string, private readonly opts: IvshmemServerOptions = {}) {
    this.addon = doorbellAddon.need();
    removeStaleSocket(socketPath);
    this.listenFd = this.addon.listen(socketPath);
    try {
      fs.chmodSync(socketPath, opts.group === undefined ? 0o600 : 0o660);
      if (opts.group !== undefined) fs.chownSync(socketPath, process.getuid?.() ?? 0, opts.group);
      this.hostFd = this.addon.eventfd();
    } catch (e) {
      this.addon.close(this.listenFd);
      throw fromNodeError(e, `cannot set up ${socketPath}`);
    }
    this.unwatchListen = this.addon.watch(this.listenFd, () => this.acceptAll());
  }

  /** Guests connected now. */
  get connected(): number {
    return this.peers.size;
  }

  /** Interrupt every connected guest (vector 0). */
  ringGuests(): void {
    for (const p of this.peers.values()) this.addon.signal(p.eventfds[0]);
  }

  /** How many times guests rang since the last call (0: none), clearing the count. */
  takeRings(): number {
    return this.addon.drain(this.hostFd);
  }

  /** Call back whenever a guest rings (on the event loop); returns stop(). */
  watchRings(cb: () => void): () => void {
    return this.addon.watch(this.hostFd, cb);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.unwatchListen();
    this.addon.close(this.listenFd);
    for (const p of [...this.peers.values()]) this.drop(p);
    this.addon.close(this.hostFd);
    try { fs.unlinkSync(this.socketPath); } catch { /* gone already */ }
  }

  private acceptAll(): void {
    for (;;) {
      let fd: number;
      try {
        fd = this.addon.accept(this.listenFd);
      } catch (e) {
        log.warn({ socket: this.socketPath, err: (e as Error).message }, 'ivshmem server: accept failed');
        return;
      }
      if (fd < 0) return;
      this.greet(fd);
    }
  }

  /** Steps 1-5 of the protocol: version, its id, the region, the host's eventfd, its own eventfds. */
  private greet(socket: number): void {
    const id = this.nextId;
    const peer: Peer = { id, socket, eventfds: [], unwatch: () => {} };
    let region = -1;
    try {
      if (id > 0xffff) throw new PrismError('ENOSPC', 'no peer ids left (65535 connections)');
      this.nextId++;
      region = fs.openSync(this.regionFile, fs.constants.O_RDWR | fs.constants.O_NOFOLLOW);
      this.addon.send(socket, PROTOCOL_VERSION, -1);
      this.addon.send(socket, BigInt(id), -1);
      this.addon.send(socket, -1n, region);
      this.addon.send(socket, BigInt(HOST_PEER), this.hostFd);
      for (let v = 0; v < VECTORS; v++) {
        const efd = this.addon.eventfd();
        peer.eventfds.push(efd);
        this.addon.send(socket, BigInt(id), efd);
      }
    } catch (e) {
      log.warn({ socket: this.socketPath, err: (e as Error).message }, 'ivshmem server: could not set up a guest');
      for (const efd of peer.eventfds) this.addon.close(efd);
      this.addon.close(socket);
      return;
    } finally {
      if (region >= 0) fs.closeSync(region);
    }
    // QEMU never writes to the socket: readable means it went away (or sent what it must not).
    peer.unwatch = this.addon.watch(socket, () => this.drop(peer));
    this.peers.set(id, peer);
    log.info({ socket: this.socketPath, peer: id }, 'guest doorbell connected');
    if (this.peers.size === 1) this.opts.onPeers?.(1);
  }

  private drop(p: Peer): void {
    if (!this.peers.delete(p.id)) return;
    p.unwatch();
    this.addon.close(p.socket);
    for (const efd of p.eventfds) this.addon.close(efd);
    log.info({ socket: this.socketPath, peer: p.id }, 'guest doorbell disconnected');
    if (this.peers.size === 0 && !this.closed) this.opts.onPeers?.(0);
  }
}

/**
 * A socket left by a host that was killed: only a socket is removed (the region's lock, taken before,
 * says no other host serves this VM); anything else at that path is refused.
 */
function removeStaleSocket(p: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new PrismError('EEXIST', `${p} exists and is not a socket: remove it or choose another store`);
  fs.unlinkSync(p);
}
