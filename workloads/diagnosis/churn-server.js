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
// The GC churn every workload here shares, num() for env knobs, MiB(),
// and VERBOSE=1 stats: see churn.js.
const { num, MiB, stats } = require('./churn.js');
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
  stats(() => `ok=${ok} failed=${failed} inFlight=${inFlight}`);
  console.log(`listening ${port}`);
  console.log(`ready ${process.pid}`);
});
