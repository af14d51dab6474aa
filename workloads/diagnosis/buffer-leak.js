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
const num = (k, d) => (process.env[k] === undefined || process.env[k] === '' ? d : Number(process.env[k]));

// ---- GC churn (the same block is in every workload of this directory) ------
// Realistic garbage so that V8 keeps collecting whatever the workload's label.
// Every 100 ms it allocates
//  * SHORT_KB_S/10 KiB of short-lived "request" records that die at once
//    (they fill the young generation: scavenges every second or two), and
//  * MEDIUM_KB_S/10 KiB of "session" records kept in a ring for
//    MEDIUM_HOLD_MS, long enough to survive two scavenges and be promoted to
//    old space, then dropped. Old space fills with these dead sessions at
//    about MEDIUM_KB_S and V8 runs a Mark-Compact every ~10-15 s, which
//    brings the heap back to its floor (live data + ~MEDIUM_KB_S*HOLD of
//    sessions still in the ring, a constant). A record is ~1.3 KiB.
// Set SHORT_KB_S=0 MEDIUM_KB_S=0 to switch the churn off.
const SHORT_KB_S = num('SHORT_KB_S', 4096);
const MEDIUM_KB_S = num('MEDIUM_KB_S', 1024);
const MEDIUM_HOLD_MS = num('MEDIUM_HOLD_MS', 6000);
function makeRecord(id) {
  const items = [];
  for (let k = 0; k < 8; k++) items.push({ sku: k, qty: id & 7, price: k * 1.5 });
  return { id, at: Date.now(), user: `user-${id}`, items, payload: new Array(64).fill(id) };
}
const churnRing = [];
let churnSeq = 0;
let churnSink = 0;
setInterval(() => {
  const shortN = Math.round(SHORT_KB_S / 10 / 1.3);
  for (let i = 0; i < shortN; i++) churnSink += makeRecord(churnSeq++).items.length;
  const slot = [];
  const mediumN = Math.round(MEDIUM_KB_S / 10 / 1.3);
  for (let i = 0; i < mediumN; i++) slot.push(makeRecord(churnSeq++));
  churnRing.push(slot);
  while (churnRing.length > MEDIUM_HOLD_MS / 100) churnRing.shift();
}, 100);

// ---- VERBOSE=1: memory and CPU on stderr every 10 s -------------------------
const MiB = (b) => (b / 1048576).toFixed(2);
let statsExtra = () => '';
if (process.env.VERBOSE === '1') {
  let lastCpu = process.cpuUsage();
  let lastAt = process.hrtime.bigint();
  setInterval(() => {
    const m = process.memoryUsage();
    const now = process.hrtime.bigint();
    const c = process.cpuUsage(lastCpu);
    const cpu = ((c.user + c.system) / (Number(now - lastAt) / 1000)) * 100;
    lastCpu = process.cpuUsage();
    lastAt = now;
    process.stderr.write(
      `stats t=${process.uptime().toFixed(1)} rss=${MiB(m.rss)} heapUsed=${MiB(m.heapUsed)} ` +
        `heapTotal=${MiB(m.heapTotal)} external=${MiB(m.external)} arrayBuffers=${MiB(m.arrayBuffers)} ` +
        `cpu=${cpu.toFixed(1)}% ${statsExtra()}\n`
    );
  }, 10000);
}
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
statsExtra = () => `messages=${pending.length} retainedMiB=${MiB(bytes)}`;

console.log(`ready ${process.pid}`);
