// lru-bounded.js: a bounded LRU cache that warms up, then stays flat.
// LABEL: steady (a cache filling up during warm-up is not a leak).
//
// REQ_PER_SEC lookups of keys drawn from KEY_SPACE keys (skewed: a few keys
// are hot); a miss builds a ~2.3 KiB value and inserts it, a hit refreshes
// the key's recency (Map delete + set). Past CACHE_MAX entries the least
// recently used entry (the Map's first key) is evicted. The heap floor rises
// for the first ~30-40 s while the cache fills (CACHE_MAX entries, ~9 MiB),
// then is flat: evicted entries become old-space garbage at a steady rate.
//
//   env: CACHE_MAX=4000 KEY_SPACE=12000 REQ_PER_SEC=200 VALUE_LEN=256, churn knobs, VERBOSE=1
//   node --trace-gc lru-bounded.js
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
const CACHE_MAX = num('CACHE_MAX', 4000);
const KEY_SPACE = num('KEY_SPACE', 12000);
const REQ_PER_SEC = num('REQ_PER_SEC', 200);
const VALUE_LEN = num('VALUE_LEN', 256);

class LRU {
  constructor(max) {
    this.max = max;
    this.map = new Map();
    this.hits = 0;
    this.misses = 0;
    this.evictions = 0;
  }
  get(key) {
    const v = this.map.get(key);
    if (v === undefined) return undefined;
    this.map.delete(key);
    this.map.set(key, v);
    return v;
  }
  set(key, value) {
    if (this.map.has(key)) this.map.delete(key);
    this.map.set(key, value);
    while (this.map.size > this.max) {
      this.map.delete(this.map.keys().next().value);
      this.evictions++;
    }
  }
}

const cache = new LRU(CACHE_MAX);
function lookup(key) {
  let v = cache.get(key);
  if (v !== undefined) {
    cache.hits++;
    return v;
  }
  cache.misses++;
  v = { key, fetchedAt: Date.now(), etag: `W/"${key.toString(16)}"`, rows: new Array(VALUE_LEN).fill(key) };
  cache.set(key, v);
  return v;
}

const TICK_MS = 50;
let carry = 0;
setInterval(() => {
  carry += (REQ_PER_SEC * TICK_MS) / 1000;
  for (; carry >= 1; carry--) {
    const r = Math.random();
    lookup(Math.floor(r * r * KEY_SPACE)); // skewed: low keys are hot
  }
}, TICK_MS);
statsExtra = () =>
  `cache=${cache.map.size} hits=${cache.hits} misses=${cache.misses} evictions=${cache.evictions}`;

console.log(`ready ${process.pid}`);
