// A progress bar on a TTY (stderr), silent otherwise.
import cliProgress from 'cli-progress';

export interface Progress {
  update(done: number, total: number, label?: string): void;
  stop(): void;
}

export function progress(title: string, unit = ''): Progress {
  if (!process.stderr.isTTY) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar({
    stream: process.stderr, clearOnComplete: true, hideCursor: true,
    format: `${title} [{bar}] {percentage}% {value}/{total}${unit} {label}`,
  }, cliProgress.Presets.shades_classic);
  let started = false;
  return {
    update(done, total, label = '') {
      if (!started) { bar.start(Math.max(total, 1), 0, { label }); started = true; }
      bar.setTotal(Math.max(total, 1));
      bar.update(done, { label });
    },
    stop() { if (started) bar.stop(); },
  };
}
