// slow-leak.js: a slow JS-heap leak, about 1 MiB per minute.
// LABEL: leak, js-heap (slow; must still be detectable within 5 minutes).
//
// Every TICK_MS a metrics sample (an object plus an array of numbers) is
// appended to a history that is never trimmed, sized so that the retained
// total is LEAK_KB_PER_MIN (1024 KiB) per minute: 17 KiB per second.
//
//   env: LEAK_KB_PER_MIN=1024 TICK_MS=1000, churn knobs, VERBOSE=1
//   node --trace-gc slow-leak.js
'use strict';
// The GC churn every workload here shares, num() for env knobs, MiB(),
// and VERBOSE=1 stats: see churn.js.
const { num, MiB, stats } = require('./churn.js');
const LEAK_KB_PER_MIN = num('LEAK_KB_PER_MIN', 1024);
const TICK_MS = num('TICK_MS', 1000);

const history = [];
// bytes per tick / 8 bytes per element, minus the ~100 bytes of the object itself
const perTickBytes = (LEAK_KB_PER_MIN * 1024 * TICK_MS) / 60000;
const elems = Math.max(1, Math.round((perTickBytes - 100) / 8));
let n = 0;
setInterval(() => {
  n++;
  history.push({ at: Date.now(), seq: n, values: new Array(elems).fill(n) });
}, TICK_MS);
stats(() => `samples=${history.length} retainedMiB=${MiB(history.length * (elems * 8 + 100))}`);

console.log(`ready ${process.pid}`);
