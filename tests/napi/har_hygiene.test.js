// The HAR as an app developer gets it: the permissions it needs are declared and documented, and
// nothing points at a default server address (on a phone 127.0.0.1 is the phone).
// Needs nothing built. Run: node --test tests/napi/
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');

const har = path.resolve(__dirname, '..', '..', 'ohos', 'receipt');
const read = (rel) => fs.readFileSync(path.join(har, rel), 'utf8');
const etsSources = () => fs.readdirSync(path.join(har, 'src', 'main', 'ets')).filter((f) => f.endsWith('.ets'))
  .map((f) => read(path.join('src', 'main', 'ets', f)));

test('module.json5 requests INTERNET, and GET_NETWORK_INFO only if the sources watch the network', () => {
  const module = JSON.parse(read('src/main/module.json5')).module;
  const names = (module.requestPermissions || []).map((p) => p.name);
  assert.ok(names.includes('ohos.permission.INTERNET'), `requestPermissions: ${names}`);
  const watchesNetwork = etsSources().some((s) => /@ohos\.net\.connection|@kit\.NetworkKit/.test(s));
  assert.strictEqual(names.includes('ohos.permission.GET_NETWORK_INFO'), watchesNetwork);
  // The app developer is told too.
  assert.match(fs.readFileSync(path.join(har, '..', 'README.md'), 'utf8'), /ohos\.permission\.INTERNET/);
});

test('no default server address in the ArkTS layer', () => {
  for (const s of etsSources()) {
    assert.doesNotMatch(s, /127\.0\.0\.1|localhost|7878/);
  }
});
