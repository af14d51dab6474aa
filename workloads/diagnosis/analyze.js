// Summarise a run.sh log: node analyze.js results/<base> [warmup_seconds=30]
// Major GCs are spelled "Mark-sweep" (Node 18/20?), "Mark-Compact" (Node 22/24),
// "Incremental Mark-Compact" (Node 26), each maybe followed by " (reduce)".
// Reads <base>.out (stdout: --trace-gc lines, "ready <pid>") and <base>.err
// (stderr: VERBOSE stats lines every 10 s). Prints:
//  - Mark-Compacts: count and per minute (over the whole run),
//  - the floor (heap used after each Mark-Compact, the C of "A (B) -> C (D) MB"):
//    first/last, min/max after warm-up, least-squares slope in MiB/min over the
//    points after warm-up, and over the second half of the run,
//  - RSS / external / arrayBuffers / heapUsed from the stats lines: slope after
//    warm-up, min/max, and the mean CPU%.
'use strict';
const fs = require('fs');
const base = process.argv[2];
const warmup = Number(process.argv[3] || 30);
const out = fs.readFileSync(`${base}.out`, 'utf8');
const err = fs.existsSync(`${base}.err`) ? fs.readFileSync(`${base}.err`, 'utf8') : '';

const mc = [];
const scav = [];
for (const line of (out + '\n' + err).split('\n')) {
  let m = line.match(/\s([\d.]+) ms: ((?:Incremental )?(?:Mark-Compact|Mark-sweep)(?: \([^)]*\))?) ([\d.]+) \(([\d.]+)\) -> ([\d.]+) \(([\d.]+)\) MB/);
  if (m) {
    mc.push({ t: Number(m[1]) / 1000, kind: m[2], before: Number(m[3]), after: Number(m[5]), committed: Number(m[6]), line });
    continue;
  }
  m = line.match(/\s([\d.]+) ms: Scavenge/);
  if (m) scav.push(Number(m[1]) / 1000);
}
const stats = [];
for (const line of err.split('\n')) {
  if (!line.startsWith('stats ')) continue;
  const o = {};
  for (const kv of line.slice(6).split(' ')) {
    const [k, v] = kv.split('=');
    if (v !== undefined) o[k] = parseFloat(v);
  }
  stats.push(o);
}
const dur = process.argv[4] ? Number(process.argv[4]) : Math.max(stats.length ? stats[stats.length - 1].t : 0, mc.length ? mc[mc.length - 1].t : 0);

function slope(pts) {
  // least squares, x in minutes
  const n = pts.length;
  if (n < 2) return NaN;
  let sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (const [x, y] of pts) { sx += x; sy += y; sxx += x * x; sxy += x * y; }
  return (n * sxy - sx * sy) / (n * sxx - sx * sx);
}
const f = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const range = (a) => (a.length ? `${f(Math.min(...a))}..${f(Math.max(...a))}` : 'n/a');

console.log(`duration: ${f(dur, 0)} s; warm-up excluded: ${warmup} s`);
console.log(`scavenges: ${scav.length} (${f(scav.length / (dur / 60), 1)}/min)`);
const kinds = {};
for (const g of mc) kinds[g.kind] = (kinds[g.kind] || 0) + 1;
console.log(`mark-compacts: ${mc.length} (${f(mc.length / (dur / 60), 1)}/min) ${JSON.stringify(kinds)}`);
const post = mc.filter((g) => g.t >= warmup);
if (post.length > 1) {
  const gaps = post.slice(1).map((g, i) => g.t - post[i].t);
  console.log(`mark-compacts after warm-up: ${post.length} (${f(post.length / ((dur - warmup) / 60), 1)}/min), gap ${range(gaps)} s, median ${f(gaps.sort((a, b) => a - b)[gaps.length >> 1], 1)} s`);
}
if (mc.length) {
  console.log(`floor (MB after Mark-Compact): first ${f(mc[0].after)} @${f(mc[0].t, 0)}s, last ${f(mc[mc.length - 1].after)} @${f(mc[mc.length - 1].t, 0)}s, after warm-up ${range(post.map((g) => g.after))}`);
  console.log(`floor slope after warm-up: ${f(slope(post.map((g) => [g.t / 60, g.after])), 3)} MB/min over ${post.length} points`);
  const half = mc.filter((g) => g.t >= dur / 2);
  console.log(`floor slope, second half: ${f(slope(half.map((g) => [g.t / 60, g.after])), 3)} MB/min over ${half.length} points`);
  console.log(`floor series: ${mc.map((g) => `${f(g.t, 0)}s:${f(g.after, 1)}`).join(' ')}`);
}
if (stats.length) {
  const ps = stats.filter((s) => s.t >= warmup);
  for (const s of stats) s.rssMinusHeapTotal = s.rss - s.heapTotal; // RSS outside V8's committed heap (approx.)
  for (const k of ['rss', 'rssMinusHeapTotal', 'heapUsed', 'external', 'arrayBuffers']) {
    const h2 = stats.filter((s) => s.t >= dur / 2);
    console.log(`${k}: slope after warm-up ${f(slope(ps.map((s) => [s.t / 60, s[k]])), 3)} MiB/min, second half ${f(slope(h2.map((s) => [s.t / 60, s[k]])), 3)} MiB/min, range after warm-up ${range(ps.map((s) => s[k]))}, first ${f(stats[0][k])} last ${f(stats[stats.length - 1][k])}`);
  }
  const cpu = stats.map((s) => s.cpu);
  console.log(`cpu: mean ${f(cpu.reduce((a, b) => a + b, 0) / cpu.length, 1)}% max ${f(Math.max(...cpu), 1)}%`);
  const perMin = [];
  for (const s of stats) (perMin[Math.floor(s.t / 60)] ||= []).push(s.rss);
  console.log(`rss min..max per minute: ${perMin.map((a, i) => `m${i}:${range(a)}`).join(' ')}`);
  console.log(`rss series: ${stats.map((s) => `${f(s.t, 0)}s:${f(s.rss, 0)}`).join(' ')}`);
}
