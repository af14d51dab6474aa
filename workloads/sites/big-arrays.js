// big-arrays.js: one uniquely named function allocates large arrays in a
// loop, for the allocation-site tests (heaptrace/tests/sites.rs).
//
// new Array(LEN).fill(1.5) with LEN = 300000 makes a 2.3 MiB backing store
// of doubles: beyond V8's regular object size, so each one is a large
// object, mapped on its own (one mmap per array). The last KEEP arrays stay
// alive, the rest are collected: live memory plateaus, allocation goes on.
//
//   env: LEN=300000 KEEP=20 TICK_MS=20
//   prints "ready <pid>"
'use strict';
const LEN = Number(process.env.LEN || 300000);
const KEEP = Number(process.env.KEEP || 20);
const TICK_MS = Number(process.env.TICK_MS || 20);
const kept = [];

function heaptraceBigArrayMaker() {
  const a = new Array(LEN).fill(1.5);
  kept.push(a);
  if (kept.length > KEEP) kept.shift();
}

setInterval(heaptraceBigArrayMaker, TICK_MS);
console.log(`ready ${process.pid}`);
