// Allocates from its first line and exits: its first GC comes within a few
// tens of ms of exec, before anyone could attach by pid. heaptrace's
// "started later" test runs it under `node --trace-gc` and checks that
// every GC V8 reports was seen.
'use strict';
const retained = [];
for (let round = 0; round < 40; round++) {
  for (let i = 0; i < 20000; i++) {
    const o = { i, s: 'x' + i };
    if (i % 20 === 0) retained.push(o);
  }
}
console.log('DONE ' + retained.length);
