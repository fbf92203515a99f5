// Human-readable output for the CLI.
import fs from 'node:fs';
import { PrismError } from '../errors.js';
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFSOCK } from '../posix/mode.js';
import type { Attr } from '../posix/types.js';

export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0, v = n;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

/** Seconds as "1h02m", "3m05s", "42s". */
export function duration(s: number): string {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

/** "10G", "512M", "1.5T", "4096" -> bytes (binary units). */
export function parseBytes(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?$/i.exec(s.trim());
  if (!m) throw new PrismError('EINVAL', `not a size: ${JSON.stringify(s)} (use e.g. 4096, 512M, 10G)`);
  const mult = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50 }[m[2].toLowerCase() as '' | 'k'];
  return Math.round(Number(m[1]) * mult);
}

/** "1000", "1k", "2M" -> a count (decimal units, as inode counts are usually given). */
export function parseCount(s: string): number {
  const m = /^(\d+)\s*([kmg]?)$/i.exec(s.trim());
  if (!m) throw new PrismError('EINVAL', `not a count: ${JSON.stringify(s)} (use e.g. 100000, 100k, 2M)`);
  return Number(m[1]) * { '': 1, k: 1e3, m: 1e6, g: 1e9 }[m[2].toLowerCase() as '' | 'k'];
}

export function table(rows: string[][]): string {
  if (rows.length === 0) return '';
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]))).join('  ').trimEnd()).join('\n');
}

export function modeString(mode: number): string {
  const types: Record<number, string> = { [S_IFDIR]: 'd', [S_IFLNK]: 'l', [S_IFIFO]: 'p', [S_IFSOCK]: 's', [S_IFCHR]: 'c', [S_IFBLK]: 'b' };
  let s = types[mode & S_IFMT] ?? '-';
  const rwx = 'rwxrwxrwx';
  for (let i = 0; i < 9; i++) s += mode & (1 << (8 - i)) ? rwx[i] : '-';
  return s;
}

export function isoTime(t: [number, number]): string {
  return new Date(t[0] * 1000).toISOString().replace(/\.000Z$/, `.${String(t[1]).padStart(9, '0')}Z`);
}

export function attrJson(a: Attr): Record<string, unknown> {
  return { ...a, mode: `0${a.mode.toString(8)}`, atime: isoTime(a.atime), mtime: isoTime(a.mtime), ctime: isoTime(a.ctime), btime: isoTime(a.btime) };
}

/** Lines of /etc/passwd or /etc/group split at ':' (none when it cannot be read). */
function idFile(file: string): string[][] {
  try { return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => l.split(':')); } catch { return []; }
}
let users: Map<number, string> | undefined, groups: Map<number, string> | undefined;

/** This machine's name for a uid or gid, or the number (a guest's ids may mean nothing here). */
export function userName(uid: number): string {
  users ??= new Map(idFile('/etc/passwd').map((f) => [Number(f[2]), f[0]!]));
  return users.get(uid) ?? String(uid);
}
export function groupName(gid: number): string {
  groups ??= new Map(idFile('/etc/group').map((f) => [Number(f[2]), f[0]!]));
  return groups.get(gid) ?? String(gid);
}

/** A group id from a number or a name in /etc/group. */
export function groupId(g: string): number {
  if (/^\d+$/.test(g)) return Number(g);
  const entry = idFile('/etc/group').find((f) => f[0] === g);
  if (!entry || !/^\d+$/.test(entry[2] ?? '')) throw new PrismError('EINVAL', `no group named ${JSON.stringify(g)} (give a name from /etc/group or a number)`);
  return Number(entry[2]);
}
