// `npm run bench:memory [-- --quick] [-- --flows N] [-- --soak-seconds S] [-- --agent-relay js|splice]
// [-- --out DIR] [-- --json]` (root, iproute2, nftables, a C compiler, prlimit). Progress goes to
// stderr; stdout gets the Markdown report, or with --json exactly one JSON object. Writes
// memory.json and memory.md to --out, else a full run to bench/results/latest/ (committed) and a
// --quick run to bench/results/<date>-memory-quick/ (gitignored).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { packageRoot } from '../src/lab/sys.js';
import { formatMemoryMarkdown, memoryConfigFromArgs, runMemoryBench } from './memory.js';
import { withSignalAbort } from './signals.js';

async function main(argv: string[]): Promise<void> {
  const program = new Command('bench:memory')
    .option('--quick', '2,000 flows and a 20 s soak: about two and a half minutes (the baseline waits 75 s after start)')
    .option('--flows <n>', 'concurrent flows (default 100000; --quick: 2000); capped by the agent\'s open-files limit, reported')
    .option('--soak-seconds <s>', 'seconds of opening and closing flows (default 600; --quick: 20; 0: no soak)')
    .option('--policies <n>', 'policies the agent enforces (default 10)')
    .option('--agent-relay <how>', "the agent's TCP relay: splice or js (default: the agent's default)")
    .option('--out <dir>', 'write memory.json and memory.md there')
    .option('--json', 'print exactly one JSON object on stdout')
    .parse(argv);
  const o = program.opts<{ quick?: boolean; flows?: string; soakSeconds?: string; policies?: string; agentRelay?: string; out?: string; json?: boolean }>();
  const cfg = memoryConfigFromArgs(o);
  const command = ['npm run bench:memory --', ...argv.slice(2)].join(' ');
  const report = await withSignalAbort((signal) => runMemoryBench(cfg, { log: (t) => process.stderr.write(`${t}\n`), signal, command }));
  const md = formatMemoryMarkdown(report);
  const stamp = report.startedAt.replace(/:/g, '-').replace(/\.\d+Z$/, 'Z');
  const dir = o.out ?? join(packageRoot(), 'bench', 'results', cfg.quick ? `${stamp}-memory-quick` : 'latest');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'memory.json'), `${JSON.stringify(report, null, 1)}\n`);
  writeFileSync(join(dir, 'memory.md'), `${md}\n`);
  if (o.json) process.stdout.write(`${JSON.stringify(report)}\n`);
  else process.stdout.write(`${md}\n`);
  process.stderr.write(`bench:memory: wrote ${join(dir, 'memory.json')} and memory.md; done in ${report.seconds} s\n`);
}

main(process.argv).catch((e: unknown) => {
  process.stderr.write(`bench:memory: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(process.exitCode && process.exitCode !== 0 ? process.exitCode : 1);
});
