// unbounded-array.js: the classic JS-heap leak.
// LABEL: leak, js-heap (~12 MiB/min at the defaults).
//
// Every TICK_MS a "request" pushes { name, arr: new Array(ARRAY_LEN) } onto a
// global array that is never trimmed. new Array(10000) is a holey fast array
// whose backing store is allocated up front: ~80 KB each (8-byte slots, no
// pointer compression in stock Node), so 160 requests/min retain ~12.2 MiB/min.
// The heap floor after each Mark-Compact rises by that much per minute.
//
//   env: ARRAY_LEN=10000 TICK_MS=375, plus the churn knobs below, VERBOSE=1
//   node --trace-gc unbounded-array.js      (prints "ready <pid>", runs until killed)
'use strict';
// The GC churn every workload here shares, num() for env knobs, MiB(),
// and VERBOSE=1 stats: see churn.js.
const { num, MiB, stats } = require('./churn.js');
const ARRAY_LEN = num('ARRAY_LEN', 10000);
const TICK_MS = num('TICK_MS', 375);

const leaks = [];
let served = 0;
setInterval(() => {
  served++;
  leaks.push({ name: `request-${served}`, arr: new Array(ARRAY_LEN) });
}, TICK_MS);
stats(() => `retained=${leaks.length}`);

console.log(`ready ${process.pid}`);
