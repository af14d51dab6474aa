// typed-arrays.js: big short-lived typed arrays, a healthy native saw.
// LABEL: steady (native memory saws up and down; flat baseline).
//
// Every TICK_MS a Float64Array or Uint8Array of MIN_MB..MAX_MB MiB (random)
// is allocated, filled (every page touched), summed over a stride and
// dropped. Its backing store is outside the V8 heap, so external/arrayBuffers
// climb by ~20 MiB a tick until V8's external-memory pressure triggers a
// Mark-Compact (every ~2.5 s here) that frees the dead arrays: external saws
// between ~0 and ~45 MiB around a flat baseline. RSS does not follow every
// tooth, most likely because glibc raises its mmap threshold (up to 32 MiB) once big chunks are
// freed, so later arrays reuse malloc-heap memory instead of mmap/munmap, and
// RSS sits at a bounded high-water mark (90-180 MiB measured at the defaults on
// Node 22), dropping when glibc trims; it does not trend upwards.
//
//   env: MIN_MB=8 MAX_MB=32 TICK_MS=1000, churn knobs, VERBOSE=1
//   node --trace-gc typed-arrays.js
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
const MIN_MB = num('MIN_MB', 8);
const MAX_MB = num('MAX_MB', 32);
const TICK_MS = num('TICK_MS', 1000);

let n = 0;
let checksum = 0;
let allocatedMiB = 0;
setInterval(() => {
  n++;
  const mb = MIN_MB + Math.random() * (MAX_MB - MIN_MB);
  const bytes = Math.floor(mb * 1048576 / 8) * 8;
  let a;
  if (n % 2) {
    a = new Float64Array(bytes / 8);
    a.fill(n * 0.5);
  } else {
    a = new Uint8Array(bytes);
    a.fill(n & 0xff);
  }
  for (let i = 0; i < a.length; i += 4096) checksum += a[i];
  allocatedMiB += bytes / 1048576;
  // a is dropped here
}, TICK_MS);
statsExtra = () => `arrays=${n} allocatedMiB=${allocatedMiB.toFixed(0)}`;

console.log(`ready ${process.pid}`);
