// A GC-heavy workload for heaptrace's GC tests and benchmark, run under
// `node --trace-gc` so that V8's own report is the ground truth.
//
// Prints "READY" once node has booted (attach after it: node's bootstrap
// GCs are not part of the run), waits for a line on stdin, prints
// "GO <Unix time in ms>" (everything --trace-gc prints after it, and every GC
// that starts after that time, belongs to the measured run),
// allocates for the given seconds, prints "DONE" and exits: a tracer that
// follows the process to its exit has seen every GC --trace-gc printed.
//
//   node --trace-gc gc-heavy.js [seconds=3] [--force-gc (needs --expose-gc)]
'use strict';

const seconds = Number(process.argv[2] || 3);
const forceGc = process.argv.includes('--force-gc');
const retained = [];

function burst() {
  for (let i = 0; i < 20000; i++) {
    const o = { i, s: 'x' + i, a: [i, i + 1] };
    if (i % 50 === 0) retained.push(o);
  }
  if (retained.length > 150000) retained.length = 0;
}

function run() {
  process.stdout.write(`GO ${Date.now()}\n`);
  const end = Date.now() + seconds * 1000;
  let n = 0;
  (function tick() {
    burst();
    if (forceGc && ++n % 50 === 0) global.gc();
    if (Date.now() < end) return setImmediate(tick);
    process.stdout.write('DONE\n', () => process.exit(0));
  })();
}

process.stdin.once('data', run);
process.stdout.write('READY\n');
