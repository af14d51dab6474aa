// A GC-heavy workload for heaptrace's GC tests and benchmark, run under
// `node --trace-gc` so that V8's own report is the ground truth.
//
// Prints "READY" once node (and any workers) have booted: attach after it,
// node's bootstrap GCs are not part of the run. Then waits for a line on
// stdin, prints "GO <Unix time in ms>" (every GC that starts after it belongs
// to the measured run), allocates for the given seconds on the main thread,
// or on N worker threads (each its own isolate, collecting on its own
// thread), prints "DONE" and exits: a tracer that follows the process to its
// exit has seen every GC that --trace-gc printed.
//
//   node --trace-gc gc-heavy.js [seconds=3] [--force-gc (needs --expose-gc)] [--workers N]
//   node gc-heavy.js 0 --bursts N   (fixed work for benchmarks: prints "DONE <ms>")
'use strict';

const { Worker, isMainThread, parentPort, workerData } = require('worker_threads');

function allocateFor(seconds, forceGc, done, bursts = 0) {
  const retained = [];
  const end = Date.now() + seconds * 1000;
  let n = 0;
  (function tick() {
    if (bursts > 0 && n >= bursts) return done();
    for (let i = 0; i < 20000; i++) {
      const o = { i, s: 'x' + i, a: [i, i + 1] };
      if (i % 50 === 0) retained.push(o);
    }
    if (retained.length > 150000) retained.length = 0;
    if (++n % 50 === 0 && forceGc) global.gc();
    if (bursts > 0 || Date.now() < end) return setImmediate(tick);
    done();
  })();
}

if (!isMainThread) {
  parentPort.once('message', () => allocateFor(workerData.seconds, false, () => process.exit(0)));
  parentPort.postMessage('ready');
} else {
  const seconds = Number(process.argv[2] || 3);
  const forceGc = process.argv.includes('--force-gc');
  const w = process.argv.indexOf('--workers');
  const workerCount = w > 0 ? Number(process.argv[w + 1]) : 0;
  const b = process.argv.indexOf('--bursts');
  const bursts = b > 0 ? Number(process.argv[b + 1]) : 0;
  let started = 0;
  const finish = () =>
    process.stdout.write(bursts ? `DONE ${Date.now() - started}\n` : 'DONE\n', () => process.exit(0));

  const workers = [];
  let ready = 0;
  const allReady = () => {
    process.stdin.once('data', () => {
      started = Date.now();
      process.stdout.write(`GO ${started}\n`);
      if (workers.length === 0) return allocateFor(seconds, forceGc, finish, bursts);
      let exited = 0;
      for (const worker of workers) {
        worker.once('exit', () => ++exited === workers.length && finish());
        worker.postMessage('go');
      }
    });
    process.stdout.write('READY\n');
  };
  for (let i = 0; i < workerCount; i++) {
    const worker = new Worker(__filename, { workerData: { seconds } });
    worker.once('message', () => ++ready === workerCount && allReady());
    workers.push(worker);
  }
  if (workerCount === 0) allReady();
}
