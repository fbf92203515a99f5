// What `npm run bench -- guest` asks the guest to run (bench/guest.ts writes it to the inputs disk as
// plan.json; bench/guest-run.ts runs it inside the VM), and what the guest reports back on the
// serial console, one marker line each.

/** How the guest mounts a target at /sysroot/mnt/t. */
export type GuestMount =
  | { kind: 'blk'; serial: string }
  | { kind: 'virtiofs'; tag: string }
  | { kind: 'nfs'; addr: string; port: number; mountPort: number; export: string }
  | { kind: 'prism'; args: string[] };

export interface GuestTarget { id: string; label: string; mount: GuestMount }

/** Every target of the bench, in the order the guest runs them and the report shows them. */
export const TARGETS: { id: string; label: string }[] = [
  { id: 'raw', label: 'ext4 on virtio-blk (raw)' },
  { id: 'qcow2', label: 'ext4 on virtio-blk (qcow2 clone)' },
  { id: 'virtiofs', label: 'virtio-fs (virtiofsd)' },
  { id: 'nfs', label: 'NFSv3 (NFS-Ganesha)' },
  { id: 'prism-shm', label: 'Prism, ivshmem + metadata' },
  { id: 'prism-nometa', label: 'Prism, ivshmem, no metadata' },
  { id: 'prism-tcp', label: 'Prism over TCP' },
];


export const WORKLOADS = ['build', 'untar', 'git', 'fs'] as const;
export type Workload = typeof WORKLOADS[number];

export interface GuestPlan {
  targets: GuestTarget[];
  workloads: Workload[];
  /** Each workload runs this many times on each target (medians and spread are reported). */
  reps: number;
  fs: { dirs: number; filesPerDir: number; seqMiB: number; randomWrites: number };
}

/** Markers on the console: `PRISM-BENCH {json}` with one of these. */
export type GuestMarker =
  | { kind: 'info'; key: string; value: string }
  | { kind: 'result'; target: string; workload: Workload; phase: string; rep: number; seconds: number }
  | { kind: 'skip'; target: string; reason: string }
  | { kind: 'fail'; target: string; workload: Workload; rep: number; reason: string }
  | { kind: 'progress'; target: string; workload: Workload; rep: number }
  | { kind: 'done' };

export const MARKER = 'PRISM-BENCH ';

/** The marker lines in a console transcript (QEMU's serial console ends lines with \r\n). */
export function parseMarkers(console: string): GuestMarker[] {
  const out: GuestMarker[] = [];
  for (const raw of console.split('\n')) {
    const at = raw.indexOf(MARKER);
    if (at < 0) continue;
    try {
      out.push(JSON.parse(raw.slice(at + MARKER.length).trim()) as GuestMarker);
    } catch { /* a line cut by kernel output: the guest reports each result once, so it is lost */ }
  }
  return out;
}
