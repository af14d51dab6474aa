// buffer-leak.js: a native-memory leak of retained Buffers.
// LABEL: leak, native (~20 MiB/min of Buffer memory; JS heap floor flat).
//
// Every TICK_MS a "message" is queued for a consumer that never drains it:
// BIG_COUNT Buffers of BIG_KB KiB and SMALL_COUNT of SMALL_KB KiB, allocated
// with Buffer.alloc(size, fill) (the fill touches every page, as real data
// would; a bare calloc'd Buffer may not count in RSS until written). The
// bytes live outside the V8 heap (ArrayBuffer backing stores, malloc'd), so
// RSS and process.memoryUsage().external/arrayBuffers grow by
// (5*64 + 4*4) KiB/s = ~19.7 MiB/min, while the JS heap only keeps the small
// Buffer wrapper objects (~0.2 KiB each: ~0.1 MiB/min).
//
//   env: BIG_COUNT=5 BIG_KB=64 SMALL_COUNT=4 SMALL_KB=4 TICK_MS=1000, churn knobs, VERBOSE=1
//   node --trace-gc buffer-leak.js
'use strict';
// The GC churn every workload here shares, num() for env knobs, MiB(),
// and VERBOSE=1 stats: see churn.js.
const { num, MiB, stats } = require('./churn.js');
const BIG_COUNT = num('BIG_COUNT', 5);
const BIG_KB = num('BIG_KB', 64);
const SMALL_COUNT = num('SMALL_COUNT', 4);
const SMALL_KB = num('SMALL_KB', 4);
const TICK_MS = num('TICK_MS', 1000);

const pending = [];
let n = 0;
let bytes = 0;
setInterval(() => {
  n++;
  const parts = [];
  for (let i = 0; i < BIG_COUNT; i++) parts.push(Buffer.alloc(BIG_KB * 1024, (n + i) & 0xff));
  for (let i = 0; i < SMALL_COUNT; i++) parts.push(Buffer.alloc(SMALL_KB * 1024, (n + i) & 0xff));
  bytes += (BIG_COUNT * BIG_KB + SMALL_COUNT * SMALL_KB) * 1024;
  pending.push(parts); // the leak: never consumed
}, TICK_MS);
stats(() => `messages=${pending.length} retainedMiB=${MiB(bytes)}`);

console.log(`ready ${process.pid}`);
