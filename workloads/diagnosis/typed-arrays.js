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
// heaptrace's verdict test (heaptrace/tests/diagnosis.rs) runs it with
// MALLOC_MMAP_THRESHOLD_=1048576, which turns glibc's dynamic threshold off:
// every array is then mmapped and munmapped whole, and native memory saws
// with the arrays (50-90 MiB measured over 240 s, no trend) instead of
// climbing to the brk heap's high-water mark for minutes.
//
//   env: MIN_MB=8 MAX_MB=32 TICK_MS=1000, churn knobs, VERBOSE=1
//   node --trace-gc typed-arrays.js
'use strict';
// The GC churn every workload here shares, num() for env knobs, MiB(),
// and VERBOSE=1 stats: see churn.js.
const { num, MiB, stats } = require('./churn.js');
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
stats(() => `arrays=${n} allocatedMiB=${allocatedMiB.toFixed(0)}`);

console.log(`ready ${process.pid}`);
