// sized-heap.js: a server whose JS heap holds about HEAP_MB of live data,
// in objects shaped like an application's (records with a few fields, a
// string and a small array each, ~200 bytes apiece), for measuring what a
// heap snapshot costs the process (bench-heap): the pause grows with the
// number of objects, and these are as small as real data gets.
//
// GET /lag answers the longest event-loop stall since the last /lag, in ms
// (a 1 ms interval timer measures it), and resets it; GET / answers "ok".
//
//   env: HEAP_MB=100 PORT=0
//   prints "listening <port>" once the heap is built
'use strict';
const http = require('node:http');
const HEAP_MB = Number(process.env.HEAP_MB || 100);
const PORT = Number(process.env.PORT || 0);

const records = [];
// ~200 bytes each on a 64-bit heap without pointer compression: the object
// (5 fields), its string, its 4-element array.
const PER_RECORD = 200;
const count = Math.round((HEAP_MB * 1024 * 1024) / PER_RECORD);
for (let i = 0; i < count; i++) {
  records.push({ id: i, kind: i % 7, name: `record-${i}`, tags: [i, i + 1, i + 2, i + 3], next: null });
}

let last = process.hrtime.bigint();
let worst = 0;
setInterval(() => {
  const now = process.hrtime.bigint();
  worst = Math.max(worst, Number(now - last) / 1e6);
  last = now;
}, 1);

const server = http.createServer((req, res) => {
  if (req.url === '/lag') {
    const answer = worst.toFixed(1);
    worst = 0;
    res.end(`${answer}\n`);
    return;
  }
  res.end(`ok ${records.length}\n`);
});
server.listen(PORT, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
