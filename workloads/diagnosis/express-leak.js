// express-leak.js: the classic "Express leak", on node:http with a tiny router.
// LABEL: leak, js-heap (fast: dies of "JavaScript heap out of memory").
//
// GET / pushes { name, arr: new Array(ARRAY_LEN) } onto a global array on
// every request and never removes it. new Array(100000) preallocates its
// backing store: ~800 KB per request, in V8's large-object space. Meant to be
// run as
//   node --max-old-space-size=96 express-leak.js
//   ab -c 100 -n 1000 -k http://127.0.0.1:PORT/
// after ~120 requests (119 measured) the old generation reaches 96 MB and V8 aborts with
// "FATAL ERROR: ... JavaScript heap out of memory", printing its
// "<--- Last few GCs --->" section to stderr.
//
//   env: PORT=0 (0: ephemeral) ARRAY_LEN=100000, churn knobs, VERBOSE=1
//   prints "listening <port>" then "ready <pid>"
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
const PORT = num('PORT', 0);
const ARRAY_LEN = num('ARRAY_LEN', 100000);

// A tiny Express-like app: app.use(mw), app.get(path, handler), res.send().
function createApp() {
  const middleware = [];
  const routes = new Map();
  const app = (req, res) => {
    res.send = (body, status = 200) => {
      const text = typeof body === 'string' ? body : JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    };
    const path = req.url.split('?')[0];
    const handler = routes.get(`${req.method} ${path}`);
    let i = 0;
    const next = () => {
      const mw = middleware[i++];
      if (mw) return mw(req, res, next);
      if (handler) return handler(req, res);
      res.send('Not Found', 404);
    };
    next();
  };
  app.use = (fn) => middleware.push(fn);
  app.get = (path, fn) => routes.set(`GET ${path}`, fn);
  return app;
}

const app = createApp();
let requests = 0;
app.use((req, res, next) => {
  requests++;
  req.startedAt = Date.now();
  next();
});

const leaks = [];
app.get('/', (req, res) => {
  leaks.push({ name: `leak-${requests}`, arr: new Array(ARRAY_LEN) }); // the leak
  res.send('Hello World');
});
statsExtra = () => `requests=${requests} leaks=${leaks.length}`;

const server = http.createServer(app);
server.keepAliveTimeout = 65000;
server.listen(PORT, '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
  console.log(`ready ${process.pid}`);
});
