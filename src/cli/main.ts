// The composition root of the `netpold` command: parses arguments and dispatches. No command
// ever ends with a stack trace: input problems exit 2 with coded messages, internal faults 3.
import { Command, CommanderError, Option } from 'commander';
import { debugEnabled } from '../config/env.js';
import { NetpoldError } from '../errors.js';
import { runCheck } from './check.js';
import { runCompile } from './compile-cmd.js';
import { registerAgent } from './agent.js';
import { runDemo } from './demo.js';
import { registerExplain } from './explain.js';
import { runMatrix } from './matrix.js';
import { registerLab } from './lab.js';
import { EXIT_INPUT, type Io } from './common.js';

const EXIT_INTERNAL = 3;

const stdio: Io = {
  out: (t) => process.stdout.write(`${t}\n`),
  err: (t) => process.stderr.write(`${t}\n`),
};

function build(io: Io, setResult: (code: number) => void): Command {
  const program = new Command('netpold')
    .description('Kubernetes NetworkPolicy, compiled and enforced in userspace')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) })
    .showHelpAfterError();

  const manifests = () => new Option('--manifests <paths...>', 'YAML/JSON files or folders (recursive)').makeOptionMandatory();
  const common = (c: Command): Command =>
    c
      .addOption(manifests())
      .option('--allow-errors', 'report manifest errors but evaluate anyway (invalid policies fail closed)')
      .option('--node <name>', 'node the pods without spec.nodeName run on (node-local traffic)')
      .option('--json', 'machine-readable output on stdout');

  common(program.command('check'))
    .description('decide one flow: prints allow/deny and the reason for each direction; exit 0 allowed, 1 denied, 2 input error')
    .requiredOption('--from <NS/POD|IP>', 'source pod or address')
    .requiredOption('--to <NS/POD|IP>', 'destination pod or address')
    .requiredOption('--port <n>', 'destination port')
    .option('--protocol <TCP|UDP|SCTP>', 'protocol', 'TCP')
    .option('--family <4|6>', 'address family when both endpoints have both')
    .action((o) => setResult(runCheck(io, o)));

  common(program.command('matrix'))
    .description('reachability truth table among all pods with an address of the family')
    .requiredOption('--port <n>', 'destination port')
    .option('--protocol <TCP|UDP|SCTP>', 'protocol', 'TCP')
    .option('--family <4|6>', 'address family', '4')
    .action((o) => setResult(runMatrix(io, o)));

  common(program.command('compile'))
    .description('compile the manifests: report the decision structure (--stats) or print it as an nftables ruleset (--target nft)')
    .option('--stats', 'sizes (pods, identities, selectors, policies, trie nodes), compile time, heap')
    .option('--target <nft>', 'print the policies as an nftables ruleset enforcing them in the kernel (forward hook); with --node, for that node\'s pods')
    .option('--table <name>', 'with --target nft: the table (family inet; default netpold_kernel)')
    .option('--protocols <list>', 'with --target nft: protocols to enforce, comma-separated (default TCP,UDP,SCTP)')
    .action((o) => setResult(runCompile(io, o)));

  program
    .command('demo')
    .description('a guided tour on the embedded example manifests')
    .option('--manifests <paths...>', 'show the computed reachability of these manifests instead')
    .option('--no-live', 'skip the live part (lab + agent), even as root')
    .option('--bridge', 'the live part with the pods on a Linux bridge (Flannel style) instead of routed veths')
    .action(async (o) => setResult(await runDemo(io, o)));

  registerExplain(program, io, setResult);
  registerLab(program, io, setResult);
  registerAgent(program, io, setResult);

  return program;
}

/** Runs the CLI; returns the exit code. */
export async function run(argv: string[], io: Io = stdio): Promise<number> {
  let code = 0;
  try {
    const program = build(io, (c) => (code = c));
    await program.parseAsync(argv, { from: 'user' });
    return code;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : EXIT_INPUT;
    if (e instanceof NetpoldError) {
      io.err(`error: ${e.message} [${e.code}]`);
      return EXIT_INPUT;
    }
    io.err(`internal error: ${e instanceof Error ? e.message : String(e)} (set NETPOLD_DEBUG=1 for a stack trace)`);
    if (debugEnabled()) io.err(e instanceof Error ? (e.stack ?? '') : '');
    return EXIT_INTERNAL;
  }
}
