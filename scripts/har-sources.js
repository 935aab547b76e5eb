// Where the HAR's ArkTS sources and their typings are, for the desktop scripts
// (arkts-lint.js, build-napi-js.js).
'use strict';

const fs = require('fs');
const path = require('path');

const repo = path.resolve(__dirname, '..');
const har = path.join(repo, 'ohos', 'receipt');
/** The native module's contract: what `import native from 'libreceipt_napi.so'` is typed by. */
const nativeDts = path.join(har, 'src', 'main', 'cpp', 'types', 'libreceipt_napi', 'index.d.ts');
/** The ArkTS globals the sources use, declared for the desktop compiler. */
const globalsDts = path.join(__dirname, 'arkts-globals.d.ts');

/** Appends every .ets file under `dir` (recursively) to `out`; a missing `dir` adds nothing. */
function walk(dir, out) {
  if (!fs.existsSync(dir)) return out;
  for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, ent.name);
    if (ent.isDirectory()) walk(p, out);
    else if (ent.isFile() && ent.name.endsWith('.ets')) out.push(p);
  }
  return out;
}

/** Index.ets, then every .ets under src/main/ets. */
function etsSources() {
  return walk(path.join(har, 'src', 'main', 'ets'), [path.join(har, 'Index.ets')]);
}

module.exports = { repo, har, nativeDts, globalsDts, etsSources };
