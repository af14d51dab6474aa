// express-churn.js: express-leak.js without the leak, for the stack-capture
// benchmark (cargo xtask bench-stacks, xtask/src/bench_stacks.rs).
//
// Same tiny Express-like router on node:http. GET / allocates
// new Array(ARRAY_LEN) (100000 preallocates an ~800 KB backing store, a
// large object that V8 maps on its own: one mmap per request, each one an
// allocation stack when heaptrace captures them), does a little string
// work, responds, and drops it all. Live memory stays flat; allocation goes
// on at ~800 KB per request. Meant to be driven by
//   ab -k -c 20 -n 10000 http://127.0.0.1:PORT/
//
//   env: PORT=0 (0: ephemeral) ARRAY_LEN=100000
//   prints "listening <port>" then "ready <pid>"
'use strict';
const http = require('node:http');
const num = (k, d) => (process.env[k] === undefined || process.env[k] === '' ? d : Number(process.env[k]));
const PORT = num('PORT', 0);
const ARRAY_LEN = num('ARRAY_LEN', 100000);

// A tiny Express-like app: see mini-express.js.
const { createApp } = require('../mini-express.js');

const app = createApp();

// A named handler, so allocation sites and stacks can say whose it is.
let sink = 0;
app.get('/', function churnHandler(req, res) {
  const scratch = new Array(ARRAY_LEN); // dropped when the handler returns
  scratch[app.requests % ARRAY_LEN] = app.requests;
  const words = [];
  for (let k = 0; k < 20; k++) words.push(`item-${app.requests}-${k}`);
  const tag = words.join(',').toUpperCase().split(',').reverse().join('|');
  sink = (sink + tag.length + scratch.length) | 0;
  // The same length every time: ab counts a body of another length as failed.
  res.send('Hello World');
});

const server = http.createServer(app);
server.keepAliveTimeout = 65000;
server.listen(PORT, '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
  console.log(`ready ${process.pid}`);
});
