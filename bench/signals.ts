// SIGINT/SIGTERM during a benchmark: the first signal aborts (the running phase is stopped, then
// every lab, table and route the benchmark built is removed by its own finally blocks); the
// process then exits with 130. A second signal only says that the cleanup is still running.
export async function withSignalAbort<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ctl = new AbortController();
  let count = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    count++;
    if (count === 1) {
      process.stderr.write(`\n${sig}: stopping the benchmark and removing its labs...\n`);
      process.exitCode = 130;
      ctl.abort();
    } else {
      process.stderr.write(`${sig}: still removing the benchmark's labs, please wait\n`);
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await fn(ctl.signal);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
