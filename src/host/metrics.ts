// `prism host serve --metrics HOST:PORT`: Prometheus text at /metrics (prom-client). The names are
// documented in docs/metrics.md; per VM and procedure, with the store's totals read at most every
// 10 s (counting them walks every volume).
import http from 'node:http';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { PrismError } from '../errors.js';
import { PROC_NAMES } from '../protocol/procs.js';
import type { Store, StoreStats } from '../store/store.js';
import { parseAddress } from '../vrpc/tcp.js';

/** What the metrics need to hear of each call (src/host/vm-counters.ts tells them). */
/** What the metrics need to hear of each call (src/host/vm-counters.ts tells them). */
export interface CallObserver {
  call(vm: string, proc: number, seconds: number, error: string | undefined, bytesIn: number, bytesOut: number): void;
}

export interface MetricsSource {
  store: Store;
  /** Per VM: whether an agent is connected now, and over what; its metadata table's answers. */
  vms(): Array<{ name: string; connected: boolean; transport: string; metaHits: number; metaMisses: number }>;
}

export class HostMetrics implements CallObserver {
  readonly registry = new Registry();
  private readonly calls = new Counter({ name: 'prism_vm_requests_total', help: 'VRPC requests a VM sent, by procedure', labelNames: ['vm', 'procedure'], registers: [this.registry] });
  private readonly errors = new Counter({ name: 'prism_vm_errors_total', help: 'VRPC requests answered with an error, by POSIX code', labelNames: ['vm', 'code'], registers: [this.registry] });
  private readonly latency = new Histogram({
    name: 'prism_vm_request_duration_seconds', help: 'time from a request reaching the host to its reply, by procedure', labelNames: ['vm', 'procedure'],
    buckets: [0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1], registers: [this.registry],
  });
  private readonly bytes = new Counter({ name: 'prism_vm_data_bytes_total', help: 'bytes of file data, in (WRITE) and out (READ)', labelNames: ['vm', 'direction'], registers: [this.registry] });
  private readonly commits = new Histogram({ name: 'prism_store_commit_duration_seconds', help: 'durable commits of the store (LMDB and segment fsyncs)', buckets: [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3], registers: [this.registry] });
  private statsAt = 0;
  private stats: StoreStats | undefined;
  private server: http.Server | undefined;

  constructor(private readonly source: MetricsSource) {
    const stats = () => this.storeStats();
    const storeGauge = (name: string, help: string, value: (s: StoreStats) => number) => new Gauge({
      name, help, registers: [this.registry],
      collect() { const s = stats(); if (s) this.set(value(s)); },
    });
    storeGauge('prism_store_logical_bytes', 'bytes of file content in all volumes, as the files see them', (s) => s.logicalBytes);
    storeGauge('prism_store_physical_bytes', 'bytes of the unique blocks stored', (s) => s.physicalBytes);
    storeGauge('prism_store_dedup_ratio', 'logical bytes over physical bytes', (s) => s.dedupRatio);
    storeGauge('prism_store_volumes', 'volumes in the store', (s) => s.volumes);
    const vms = () => this.source.vms();
    new Gauge({
      name: 'prism_vm_connected', help: '1 when an agent of the VM is connected, by transport', labelNames: ['vm', 'transport'], registers: [this.registry],
      collect() { this.reset(); for (const v of vms()) this.set({ vm: v.name, transport: v.transport }, v.connected ? 1 : 0); },
    });
    // The host keeps the totals (VmCounters.metaAnswers): set afresh at each scrape.
    new Counter({
      name: 'prism_vm_metadata_answers_total', help: 'LOOKUP/GETATTR/xattr questions the agent answered from its metadata table (hit) or had to ask (miss), as the guest reports them',
      labelNames: ['vm', 'result'], registers: [this.registry],
      collect() { this.reset(); for (const v of vms()) { this.inc({ vm: v.name, result: 'hit' }, v.metaHits); this.inc({ vm: v.name, result: 'miss' }, v.metaMisses); } },
    });
  }

  call(vm: string, proc: number, seconds: number, error: string | undefined, bytesIn: number, bytesOut: number): void {
    const procedure = PROC_NAMES[proc] ?? String(proc);
    this.calls.inc({ vm, procedure });
    this.latency.observe({ vm, procedure }, seconds);
    if (error) this.errors.inc({ vm, code: error });
    if (bytesIn) this.bytes.inc({ vm, direction: 'in' }, bytesIn);
    if (bytesOut) this.bytes.inc({ vm, direction: 'out' }, bytesOut);
  }

  committed(seconds: number): void {
    this.commits.observe(seconds);
  }

  private storeStats(): StoreStats | undefined {
    if (!this.stats || Date.now() - this.statsAt > 10_000) {
      try { this.stats = this.source.store.stats(); this.statsAt = Date.now(); } catch { /* a closed store: the last figures */ }
    }
    return this.stats;
  }

  /** Serve /metrics on HOST:PORT (port 0: any); resolves to the address it listens on. */
  listen(address: string): Promise<string> {
    const where = parseAddress(address);
    if ('path' in where) throw new PrismError('EINVAL', `--metrics takes HOST:PORT, not ${address}`);
    const server = http.createServer((req, res) => {
      if (req.url !== '/metrics') { res.writeHead(404).end('metrics are at /metrics\n'); return; }
      this.registry.metrics().then((text) => {
        res.writeHead(200, { 'Content-Type': this.registry.contentType }).end(text);
      }, (e: Error) => { res.writeHead(500).end(`${e.message}\n`); });
    });
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', (e) => reject(new PrismError('EIO', `cannot serve metrics on ${address}: ${e.message}`)));
      server.listen(where.port, where.host, () => {
        const a = server.address() as { address: string; port: number };
        resolve(`${a.address}:${a.port}`);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => { if (this.server) this.server.close(() => resolve()); else resolve(); });
  }
}
