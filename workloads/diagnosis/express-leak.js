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
// The GC churn every workload here shares, num() for env knobs, MiB(),
// and VERBOSE=1 stats: see churn.js.
const { num, MiB, stats } = require('./churn.js');
const http = require('node:http');
const PORT = num('PORT', 0);
const ARRAY_LEN = num('ARRAY_LEN', 100000);

// A tiny Express-like app: see mini-express.js.
const { createApp } = require('../mini-express.js');

const app = createApp();

const leaks = [];
// A named handler, so allocation sites and stacks can say whose it is.
app.get('/', function handler(req, res) {
  leaks.push({ name: `leak-${app.requests}`, arr: new Array(ARRAY_LEN) }); // the leak
  res.send('Hello World');
});
stats(() => `requests=${app.requests} leaks=${leaks.length}`);

const server = http.createServer(app);
server.keepAliveTimeout = 65000;
server.listen(PORT, '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
  console.log(`ready ${process.pid}`);
});
