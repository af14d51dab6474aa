// churn.js: what every workload of this directory shares, loaded with
// require('./churn.js'): num() for the env knobs, MiB(), realistic GC
// churn (below), and with VERBOSE=1 a stats line on stderr every 10 s, to
// which a workload adds its own figures with stats(() => '...').
'use strict';
const num = (k, d) => (process.env[k] === undefined || process.env[k] === '' ? d : Number(process.env[k]));

// ---- GC churn ---------------------------------------------------------------
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
/** Sets the workload's own figures for the VERBOSE=1 stats line. */
const stats = (extra) => {
  statsExtra = extra;
};
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

module.exports = { num, MiB, stats };
