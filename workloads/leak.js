// A small "service" with a classic leak, for heaptrace's demo and tests.
//
// Every request makes short-lived garbage (the healthy GC seesaw) and also
// leaves an entry in a cache that is never evicted: JS objects and strings
// on the V8 heap, plus a Buffer whose memory is native (outside the heap).
//
//   node leak.js [seconds=60] [requests_per_tick=20]
'use strict';

const seconds = Number(process.argv[2] || 60);
const perTick = Number(process.argv[3] || 20);
const cache = new Map();
let served = 0;

function handleRequest() {
  const id = served++;
  const scratch = [];
  for (let i = 0; i < 100; i++) scratch.push({ i, text: 'x'.repeat(64) });
  // The leak: never removed.
  cache.set(id, {
    at: Date.now(),
    body: 'y'.repeat(1024) + id,
    attachment: Buffer.alloc(4096, id & 0xff),
  });
  return scratch.length;
}

const timer = setInterval(() => {
  for (let i = 0; i < perTick; i++) handleRequest();
}, 10);

setTimeout(() => {
  clearInterval(timer);
  console.log(`served ${served} requests, cache holds ${cache.size} entries`);
}, seconds * 1000);

console.log(`leak.js pid ${process.pid}: leaking ~${Math.round(perTick * 100 * 5.2 / 1024)} MiB/s for ${seconds}s`);
