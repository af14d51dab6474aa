// map-leak.js: a leak of a uniquely named class, held in a Map that only a
// closure can reach (no global name leads to it): the case where a heap
// snapshot's retainer path has to name the closure's variable.
//
// Every request calls rememberSession(), which keeps a new
// HeaptraceSessionLeak (with a ~10 KB array of its own) in `sessions`,
// a Map in makeSessionStore's closure, and never forgets it.
//
//   env: PORT=0 (0: ephemeral) PAYLOAD=1250 (array slots per session)
//   GET / remembers a session; GET /count says how many there are
//   prints "listening <port>"
'use strict';
const http = require('node:http');
const PORT = Number(process.env.PORT || 0);
const PAYLOAD = Number(process.env.PAYLOAD || 1250);

class HeaptraceSessionLeak {
  constructor(id) {
    this.id = id;
    this.startedAt = Date.now();
    this.history = new Array(PAYLOAD).fill(id);
  }
}

function makeSessionStore() {
  const sessions = new Map();
  return function rememberSession(id) {
    sessions.set(id, new HeaptraceSessionLeak(id)); // the leak: never deleted
    return sessions.size;
  };
}

const remember = makeSessionStore();
let served = 0;
let size = 0;
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain' });
  if (req.url === '/count') {
    res.end(`sessions ${size}\n`); // not a session: only says how many
    return;
  }
  served++;
  size = remember(`session-${served}`);
  res.end('ok\n'); // the same length every time: ab counts other lengths as failures
});
server.listen(PORT, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
