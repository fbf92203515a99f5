#!/usr/bin/env node
// Thin launcher: the CLI is compiled from src/cli into dist/.
import('../dist/src/cli/main.js').then((m) => m.main(process.argv)).catch((err) => {
  process.stderr.write(`prism: ${err?.message ?? err}\n`);
  process.exit(1);
});
