// buffer-hoard.js: a native-memory leak of Buffers from one uniquely named
// function, for the allocation-site tests (heaptrace/tests/sites.rs).
//
// Buffer.alloc(SIZE_KB KiB, fill) puts the bytes outside V8's heap: glibc
// malloc maps blocks of 128 KiB and more on their own, so each 256 KiB
// Buffer is one mmap from malloc. None is ever released.
//
//   env: SIZE_KB=256 TICK_MS=20
//   prints "ready <pid>"
'use strict';
const SIZE_KB = Number(process.env.SIZE_KB || 256);
const TICK_MS = Number(process.env.TICK_MS || 20);
const hoard = [];

function heaptraceBufferHoarder() {
  hoard.push(Buffer.alloc(SIZE_KB * 1024, hoard.length & 0xff));
}

setInterval(heaptraceBufferHoarder, TICK_MS);
console.log(`ready ${process.pid}`);
