// `npm run bench:flows [-- --quick] [-- --json] [-- --sizes 10,1000] [-- --rounds N] [-- --out DIR] [-- --modes none,kernel,agent,relay,sockmap]`
// (root, iproute2, nftables, a C compiler). Progress goes to stderr; stdout gets the Markdown
// table, or with --json exactly one JSON object {"modes": {"none": M, "kernel": M, "agent": M}, ...}.
// (`npm run -s ...` keeps npm's own banner off stdout.)
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { flowConfigFromArgs, formatFlowMarkdown, runFlowBench } from './flows.js';
import { withSignalAbort } from './signals.js';

async function main(argv: string[]): Promise<void> {
  const program = new Command('bench:flows')
    .option('--quick', 'one tiny size (10 policies), 2 rounds, short phases: well under two minutes')
    .option('--json', 'print exactly one JSON object on stdout')
    .option('--sizes <list>', 'policy counts, comma-separated (default 10,1000,10000; --quick: 10)')
    .option('--rounds <n>', 'rounds of none, kernel, agent (default 5; --quick: 2)')
    .option('--out <dir>', 'also write flows.json and flows.md there')
    .option('--agent-relay <how>', "the agent's TCP relay: splice (default, as the agent) or js")
    .option('--bridge', 'pods on a Linux bridge (Flannel style) instead of routed veths; modes none, kernel, agent only')
    .option('--modes <list>', 'modes, comma-separated, from none, kernel, agent (the default three) and the yardstick relays relay, sockmap (TCP only)')
    .parse(argv);
  const o = program.opts<{ quick?: boolean; json?: boolean; sizes?: string; rounds?: string; out?: string; agentRelay?: string; modes?: string; bridge?: boolean }>();
  const cfg = flowConfigFromArgs(o);
  const report = await withSignalAbort((signal) => runFlowBench(cfg, { log: (t) => process.stderr.write(`${t}\n`), signal }));
  const md = formatFlowMarkdown(report);
  if (o.out) {
    mkdirSync(o.out, { recursive: true });
    writeFileSync(join(o.out, 'flows.json'), `${JSON.stringify(report, null, 1)}\n`);
    writeFileSync(join(o.out, 'flows.md'), `${md}\n`);
  }
  if (o.json) process.stdout.write(`${JSON.stringify(report)}\n`);
  else process.stdout.write(`${md}\n`);
  process.stderr.write(`bench:flows: done in ${report.seconds} s\n`);
}

main(process.argv).catch((e: unknown) => {
  process.stderr.write(`bench:flows: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(process.exitCode && process.exitCode !== 0 ? process.exitCode : 1);
});
