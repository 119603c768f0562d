// Entry point of `npm run bench:decide`.
import { main } from './decide.js';

main(process.argv).catch((e: unknown) => {
  process.stderr.write(`bench:decide: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
