// listeners.js: leaking event listeners.
// LABEL: leak, js-heap (~13 MiB/min at the defaults).
//
// Each "request" subscribes a new closure to a long-lived EventEmitter
// (`bus.on('config', ...)`) and never removes it; the closure captures the
// request's context, which holds PAYLOAD_LEN numbers (~16 KB). One request
// every REQ_INTERVAL_MS (70 ms: ~857/min) retains ~13 MiB/min. The emitter
// fires every EMIT_MS, so the listeners really are called (cheaply).
// setMaxListeners(0) silences the MaxListenersExceededWarning that would
// otherwise give the leak away.
//
//   env: PAYLOAD_LEN=2000 REQ_INTERVAL_MS=70 EMIT_MS=10000, churn knobs, VERBOSE=1
//   node --trace-gc listeners.js
'use strict';
// The GC churn every workload here shares, num() for env knobs, MiB(),
// and VERBOSE=1 stats: see churn.js.
const { num, MiB, stats } = require('./churn.js');
const { EventEmitter } = require('node:events');
const PAYLOAD_LEN = num('PAYLOAD_LEN', 2000);
const REQ_INTERVAL_MS = num('REQ_INTERVAL_MS', 70);
const EMIT_MS = num('EMIT_MS', 10000);

const bus = new EventEmitter();
bus.setMaxListeners(0);
let served = 0;
let seen = 0;

function handleRequest(id) {
  const ctx = { id, user: `user-${id}`, samples: new Array(PAYLOAD_LEN).fill(id) };
  // The leak: subscribed per request, never removed.
  bus.on('config', (cfg) => {
    if (cfg.version > 0) seen += ctx.samples.length > 0 ? 1 : 0;
  });
}

setInterval(() => handleRequest(++served), REQ_INTERVAL_MS);
let version = 0;
setInterval(() => bus.emit('config', { version: ++version }), EMIT_MS);
stats(() => `listeners=${bus.listenerCount('config')}`);

console.log(`ready ${process.pid}`);
