// One error table, four copies: the Rust enum (crates/receipt-core/src/error.rs), the C ABI
// (include/receipt.h, rcpt_result), the NAPI shim's own codes (napi_receipt.c) and ArkTS
// (ChatError.ets), plus the documented table (docs/errors.md). This test parses all of them and
// fails when any disagrees with another or with the Easemob HarmonyOS SDK's table.
// Needs nothing built. Run: node --test tests/napi/
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');

const repo = path.resolve(__dirname, '..', '..');
const read = (rel) => fs.readFileSync(path.join(repo, rel), 'utf8');

// The SDK's codes and names (easemob-doc docs/document/harmonyos/error.md, ChatError), for every
// code we produce and for the codes whose meaning we must not borrow (501, 301).
const SDK = new Map([
  [1, 'GENERAL_ERROR'], [4, 'EXCEED_SERVICE_LIMIT'], [104, 'INVALID_TOKEN'], [108, 'TOKEN_EXPIRED'], [110, 'INVALID_PARAM'], [200, 'USER_ALREADY_LOGIN'], [201, 'USER_NOT_LOGIN'],
  [202, 'USER_AUTHENTICATION_FAILED'], [206, 'USER_LOGIN_ANOTHER_DEVICE'], [214, 'USER_LOGIN_TOO_MANY_DEVICES'],
  [300, 'SERVER_NOT_REACHABLE'], [301, 'SERVER_TIMEOUT'], [302, 'SERVER_BUSY'], [500, 'MESSAGE_INVALID'],
  [501, 'MESSAGE_INCLUDE_ILLEGAL_CONTENT'], [502, 'MESSAGE_SEND_TRAFFIC_LIMIT'], [505, 'SERVICE_NOT_ENABLED'], [506, 'MESSAGE_EXPIRED'],
  [600, 'GROUP_INVALID_ID'], [602, 'GROUP_NOT_JOINED'], [603, 'GROUP_PERMISSION_DENIED'], [604, 'GROUP_MEMBERS_FULL'],
]);

/** "UserLoginTooManyDevices" -> "USER_LOGIN_TOO_MANY_DEVICES". */
const snake = (camel) => camel.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();

/** The text between `open` and the next line that is exactly `close` (trimmed). */
function block(text, open, close, what) {
  const start = text.indexOf(open);
  assert.ok(start >= 0, `${what}: '${open}' not found`);
  const rest = text.slice(start + open.length);
  const end = rest.split('\n').findIndex((l) => l.trim() === close);
  assert.ok(end >= 0, `${what}: end of block not found`);
  return rest.split('\n').slice(0, end).join('\n');
}

/** Map name -> code from every match of `re` (groups: name, code) in `text`; no duplicates. */
function table(text, re, what, mapName = (n) => n) {
  const out = new Map();
  for (const m of text.matchAll(re)) {
    const name = mapName(m[1]);
    assert.ok(!out.has(name), `${what}: ${name} twice`);
    out.set(name, Number(m[2]));
  }
  assert.ok(out.size > 0, `${what}: no codes found`);
  return out;
}

function rustTable() {
  const body = block(read('crates/receipt-core/src/error.rs'), 'pub enum ErrorCode {', '}', 'error.rs');
  return table(body, /^\s*([A-Z][A-Za-z0-9]*)\s*=\s*(\d+),/gm, 'error.rs', snake);
}

function cTable() {
  const body = block(read('include/receipt.h'), 'enum rcpt_result', '};', 'receipt.h');
  const all = table(body, /^\s*RCPT_([A-Z0-9_]+)\s*=\s*(\d+),/gm, 'receipt.h');
  // RCPT_OK and the C boundary's own failures (1001 and up) are not SDK error codes.
  return new Map([...all].filter(([name, code]) => name !== 'OK' && code < 1001));
}

function arktsTable() {
  const text = read('ohos/receipt/src/main/ets/ChatError.ets');
  return table(text, /static readonly ([A-Z][A-Z0-9_]*): number = (\d+);/g, 'ChatError.ets');
}

function docsTable() {
  // Rows are `| code | NAME | ... |`.
  const out = new Map();
  for (const m of read('docs/errors.md').matchAll(/^\|\s*(\d+)\s*\|\s*`?([A-Z][A-Z0-9_]*)`?\s*\|/gm)) {
    assert.ok(!out.has(m[2]), `docs/errors.md: ${m[2]} twice`);
    out.set(m[2], Number(m[1]));
  }
  assert.ok(out.size > 0, 'docs/errors.md: no codes found');
  return out;
}

/** The shim's own codes: `ERR_<NAME> = RCPT_<NAME>,`; every name must be the same on both sides. */
function shimNames() {
  const text = read('ohos/receipt/src/main/cpp/napi_receipt.c');
  const out = [];
  for (const m of text.matchAll(/^\s*ERR_([A-Z0-9_]+)\s*=\s*([^,\s]+),/gm)) {
    assert.strictEqual(m[2], `RCPT_${m[1]}`, `napi_receipt.c: ERR_${m[1]} must be RCPT_${m[1]}, is ${m[2]}`);
    out.push(m[1]);
  }
  assert.ok(out.length > 0, 'napi_receipt.c: no ERR_ codes found');
  // No bare numbers handed to JS as codes: every error the shim makes goes through these names.
  assert.doesNotMatch(text, /(make_error|throw_error|rejected)\(env,\s*\d+/, 'napi_receipt.c: a numeric error code');
  return out;
}

const show = (m) => [...m].sort((a, b) => a[1] - b[1]).map(([n, c]) => `${c} ${n}`).join(', ');

test('Rust, C ABI, ArkTS and docs/errors.md carry the same codes with the same names', () => {
  const rust = rustTable();
  const copies = { 'include/receipt.h': cTable(), 'ChatError.ets': arktsTable(), 'docs/errors.md': docsTable() };
  for (const [where, t] of Object.entries(copies)) {
    assert.strictEqual(show(t), show(rust), `${where} disagrees with error.rs`);
  }
});

test('every code we produce is the SDK code of that name (error.md)', () => {
  for (const [name, code] of rustTable()) {
    assert.ok(SDK.has(code), `${code} ${name}: not a code this test knows from the SDK's table`);
    assert.strictEqual(name, SDK.get(code), `code ${code} is ${SDK.get(code)} in the SDK, ${name} here`);
  }
  // 501 is the SDK's illegal-content code: we must not use it for anything else.
  assert.ok(![...rustTable().values()].includes(501), '501 is MESSAGE_INCLUDE_ILLEGAL_CONTENT in the SDK');
});

test('the NAPI shim names its own codes after the C ABI, which has them', () => {
  const c = cTable();
  for (const name of shimNames()) {
    assert.ok(c.has(name), `napi_receipt.c: ERR_${name} has no RCPT_${name} in receipt.h`);
  }
});
