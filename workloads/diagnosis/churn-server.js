// churn-server.js: a steady, high-churn HTTP server with its own load.
// LABEL: steady (lots of short-lived garbage, flat floor).
//
// A node:http server on 127.0.0.1 answers GET /items?n=ITEMS with a JSON
// list built fresh per request (objects, strings, the JSON text: all garbage
// once the response is sent). In the same process a load generator with a
// keep-alive agent (CONCURRENCY sockets) sends RPS requests per second over
// loopback, paced by a 20 ms timer, and parses every response; so the same
// process runs both ends and a single pid is traced. Nothing is retained.
//
//   env: RPS=200 CONCURRENCY=4 ITEMS=50 PORT=0, churn knobs, VERBOSE=1
//   node --trace-gc churn-server.js        (prints "listening <port>", "ready <pid>")
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
const http = require('node:http');
const RPS = num('RPS', 200);
const CONCURRENCY = num('CONCURRENCY', 4);
const ITEMS = num('ITEMS', 50);
const PORT = num('PORT', 0);

let served = 0;
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  const n = Number(url.searchParams.get('n') || ITEMS);
  const items = [];
  for (let i = 0; i < n; i++) {
    items.push({ id: `${served}-${i}`, name: `item ${i}`, price: i * 0.99, tags: ['a', 'b', String(i)] });
  }
  const body = JSON.stringify({ served: served++, at: new Date().toISOString(), items });
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});

let ok = 0;
let failed = 0;
let inFlight = 0;
server.listen(PORT, '127.0.0.1', () => {
  const port = server.address().port;
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const fire = () => {
    inFlight++;
    const req = http.get({ host: '127.0.0.1', port, path: `/items?n=${ITEMS}`, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        inFlight--;
        const doc = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        if (doc.items.length === ITEMS) ok++;
        else failed++;
      });
    });
    req.on('error', () => {
      inFlight--;
      failed++;
    });
  };
  const TICK_MS = 20;
  let carry = 0;
  setInterval(() => {
    carry += (RPS * TICK_MS) / 1000;
    for (; carry >= 1; carry--) if (inFlight < CONCURRENCY * 4) fire();
  }, TICK_MS);
  statsExtra = () => `ok=${ok} failed=${failed} inFlight=${inFlight}`;
  console.log(`listening ${port}`);
  console.log(`ready ${process.pid}`);
});
