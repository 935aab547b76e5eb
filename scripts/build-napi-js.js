#!/usr/bin/env node
// Desktop compile of the HAR's ArkTS layer: ohos/receipt/Index.ets + ohos/receipt/src/main/ets/*.ets
// -> CommonJS JavaScript in target/napi/, for the Node tests.
//
//   target/napi/index.js          require('<repo>/target/napi') returns the HAR's exports
//   target/napi/lib/**.js         the compiled sources (same layout as in the HAR)
//   target/napi/libreceipt_napi.node   the NAPI shim built as a Node addon (built by another script)
//
// How: the .ets files are copied to .ts in a temporary directory and compiled with the TypeScript
// compiler that ships in ohos-typescript (pinned in scripts/package.json). The native module import
// `import native from 'libreceipt_napi.so'` is typed by the contract
// ohos/receipt/src/main/cpp/types/libreceipt_napi/index.d.ts and rewritten in the output to
// require('<relative>/libreceipt_napi.node'). Type errors fail the build.
//
// Usage: node scripts/build-napi-js.js [--out DIR]     (default DIR: <repo>/target/napi)
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const ts = (() => {
  try {
    return require('ohos-typescript');
  } catch (e) {
    // Say exactly what is missing and how to get it (the shell wrappers install it themselves).
    console.error(`${path.basename(__filename)}: the npm package ohos-typescript is not installed: ` +
      `run \`npm ci\` in ${__dirname} (scripts/check-arkts.sh and scripts/build-napi.sh do it for you)`);
    process.exit(1);
  }
})();

const { repo, har, nativeDts, globalsDts, etsSources } = require('./har-sources');
const NATIVE_MODULE = 'libreceipt_napi.so';
const NATIVE_ADDON = 'libreceipt_napi.node';

function parseArgs(argv) {
  let out = path.join(repo, 'target', 'napi');
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out' && i + 1 < argv.length) out = path.resolve(argv[++i]);
    else throw new Error(`unknown argument: ${argv[i]}`);
  }
  return { out };
}

function formatDiagnostic(d, tmp) {
  const msg = ts.flattenDiagnosticMessageText(d.messageText, '\n');
  if (!d.file || d.start === undefined) return msg;
  const { line, character } = d.file.getLineAndCharacterOfPosition(d.start);
  let file = d.file.fileName;
  if (file.startsWith(tmp)) file = path.join(har, path.relative(tmp, file)).replace(/\.ts$/, '.ets');
  return `${path.relative(repo, file)}:${line + 1}:${character + 1}: ${msg}`;
}

function main() {
  const { out } = parseArgs(process.argv.slice(2));
  const sources = etsSources();

  // .ets -> .ts copies, same layout relative to the HAR root.
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'napi-js-'));
  const rootNames = [];
  for (const src of sources) {
    const dst = path.join(tmp, path.relative(har, src)).replace(/\.ets$/, '.ts');
    fs.mkdirSync(path.dirname(dst), { recursive: true });
    fs.copyFileSync(src, dst);
    rootNames.push(dst);
  }
  rootNames.push(globalsDts);

  const libOut = path.join(out, 'lib');
  fs.rmSync(libOut, { recursive: true, force: true });
  const options = {
    target: ts.ScriptTarget.ES2021,
    module: ts.ModuleKind.CommonJS,
    moduleResolution: ts.ModuleResolutionKind.NodeJs,
    lib: ['lib.es2021.d.ts'],
    strict: true,
    esModuleInterop: true,
    allowSyntheticDefaultImports: true,
    skipLibCheck: true,
    types: [],
    baseUrl: tmp,
    paths: { [NATIVE_MODULE]: [nativeDts] },
    rootDir: tmp,
    outDir: libOut,
    sourceMap: false,
    declaration: false,
    newLine: ts.NewLineKind.LineFeed,
  };
  const program = ts.createProgram({ rootNames, options });
  const emit = program.emit();
  const diags = ts.getPreEmitDiagnostics(program).concat(emit.diagnostics)
    .filter((d) => d.category === ts.DiagnosticCategory.Error);
  fs.rmSync(tmp, { recursive: true, force: true });
  if (diags.length > 0 || emit.emitSkipped) {
    for (const d of diags) console.error(formatDiagnostic(d, tmp));
    console.error(`build-napi-js: ${diags.length} error(s)`);
    return 1;
  }

  // Point the native module import at the Node addon, and check nothing else non-relative remains.
  const emitted = [];
  (function collect(dir) {
    for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, ent.name);
      if (ent.isDirectory()) collect(p);
      else if (ent.name.endsWith('.js')) emitted.push(p);
    }
  })(libOut);
  let problems = 0;
  for (const file of emitted) {
    let rel = path.relative(path.dirname(file), path.join(out, NATIVE_ADDON)).split(path.sep).join('/');
    if (!rel.startsWith('.')) rel = './' + rel;
    let js = fs.readFileSync(file, 'utf8');
    js = js.split(`require("${NATIVE_MODULE}")`).join(`require(${JSON.stringify(rel)})`);
    const re = /require\("([^"]*)"\)/g;
    let m;
    while ((m = re.exec(js)) !== null) {
      if (!m[1].startsWith('.')) {
        console.error(`${path.relative(repo, file)}: unexpected require("${m[1]}") in the output`);
        problems++;
      }
    }
    fs.writeFileSync(file, js);
  }
  if (problems > 0) return 1;

  fs.writeFileSync(path.join(out, 'index.js'),
    "'use strict';\n" +
    '// Generated by scripts/build-napi-js.js: the receipt HAR\'s ArkTS API compiled for Node.\n' +
    "module.exports = require('./lib/Index.js');\n");
  console.log(`build-napi-js: ${emitted.length} file(s) -> ${out}`);
  return 0;
}

process.exitCode = main();
