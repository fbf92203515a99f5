// A Link that counts each call by procedure (AgentCounters: `prism agent stats`) before it goes out.
import type { Proc } from '../protocol/procs.js';
import type { AgentCounters } from './counters.js';
import type { Link } from './host-link.js';

export class CountedLink implements Link {
  readonly post?: (proc: Proc, args: unknown[]) => Promise<unknown[]>;
  readonly settle?: () => void;
  readonly collect?: () => void;
  readonly connection?: () => number;

  constructor(private readonly link: Link, private readonly counters: AgentCounters) {
    const post = link.post, settle = link.settle;
    if (post) this.post = (proc, args) => { counters.rpc(proc); return post.call(link, proc, args); };
    if (settle) this.settle = () => { counters.add('settles'); settle.call(link); };
    const collect = link.collect;
    if (collect) this.collect = () => collect.call(link);
    const connection = link.connection;
    if (connection) this.connection = () => connection.call(link);
  }

  call(proc: Proc, args?: unknown[]): Promise<unknown[]>;
  call<T>(proc: Proc, args: unknown[], take: (r: unknown[]) => T): Promise<T>;
  call(proc: Proc, args: unknown[] = [], take?: (r: unknown[]) => unknown): Promise<unknown> {
    this.counters.rpc(proc);
    return take ? this.link.call(proc, args, take) : this.link.call(proc, args);
  }
}
