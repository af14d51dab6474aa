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
// The GC churn every workload here shares, num() for env knobs, MiB(),
// and VERBOSE=1 stats: see churn.js.
const { num, MiB, stats } = require('./churn.js');
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
stats(() =>
  `cache=${cache.map.size} hits=${cache.hits} misses=${cache.misses} evictions=${cache.evictions}`);

console.log(`ready ${process.pid}`);
