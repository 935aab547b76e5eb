// The Node tests start servers one way only: tests/napi/helpers/server.js (loopback, ephemeral
// port, temporary data, bounded start). Fails when another file spawns processes itself.
// Needs nothing built. Run: node --test tests/napi/
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');

const dir = __dirname;
const helper = path.join(dir, 'helpers', 'server.js');

function jsFiles(d) {
  const out = [];
  for (const e of fs.readdirSync(d, { withFileTypes: true })) {
    const p = path.join(d, e.name);
    if (e.isDirectory() && e.name !== 'node_modules') out.push(...jsFiles(p));
    else if (e.isFile() && e.name.endsWith('.js')) out.push(p);
  }
  return out;
}

test('only helpers/server.js starts processes (receipt-server)', () => {
  const files = jsFiles(dir);
  assert.ok(files.includes(helper), 'helpers/server.js exists');
  assert.ok(files.length > 3, `found the test files (${files.length})`);
  // Built from parts so that this file does not match itself.
  const spawner = new RegExp(['child', '_process'].join(''));
  const offenders = files.filter((f) => f !== helper && spawner.test(fs.readFileSync(f, 'utf8')));
  assert.deepStrictEqual(offenders.map((f) => path.relative(dir, f)), []);
  assert.match(fs.readFileSync(helper, 'utf8'), spawner);
});
