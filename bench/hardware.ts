// What the benchmark ran on: CPU count and model, kernel, memory, Node.js.
import { readFileSync } from 'node:fs';
import os from 'node:os';

export interface Hardware {
  nproc: number;
  cpuModel: string;
  kernel: string;
  memGiB: number;
  node: string;
}

export function hardware(): Hardware {
  let cpuModel = os.cpus()[0]?.model ?? 'unknown';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m?.[1]) cpuModel = m[1].trim();
  } catch {
    // not Linux
  }
  return {
    nproc: os.availableParallelism?.() ?? os.cpus().length,
    cpuModel,
    kernel: `${os.type()} ${os.release()}`,
    memGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
  };
}

export function hardwareLine(h: Hardware): string {
  return `${h.nproc} CPUs (${h.cpuModel}), ${h.kernel}, ${h.memGiB} GiB RAM, Node.js ${h.node}`;
}
