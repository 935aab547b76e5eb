#!/usr/bin/env node
// ArkTS lint for the HAR's .ets sources, on desktop.
//
// Uses the ArkTS linter that ships in the npm package `ohos-typescript` (the TypeScript fork in the
// OpenHarmony SDK's ets-loader): an incremental ArkTS builder program, then
// ts.ArkTSLinter_1_1.runArkTSLinter, which reports both the strict tsc diagnostics and the ArkTS
// rule violations (no any/unknown, no untyped object literals, no var, no structural typing, ...).
//
// Usage: node scripts/arkts-lint.js [file.ets ...]
//   with no arguments it lints ohos/receipt/Index.ets and every .ets under ohos/receipt/src/main/ets.
// Exit code: 0 when no error was reported, 1 otherwise (warnings are printed but do not fail).
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

const { repo, nativeDts, globalsDts, etsSources } = require('./har-sources');

function defaultFiles() {
  return etsSources().filter((f) => fs.existsSync(f)).sort();
}

function main(argv) {
  const files = (argv.length > 0 ? argv.map((f) => path.resolve(f)) : defaultFiles());
  if (files.length === 0) {
    console.error('arkts-lint: no .ets files found');
    return 1;
  }
  // A fresh build-info location each run, so nothing is skipped as "unchanged".
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arkts-lint-'));
  const options = {
    target: ts.ScriptTarget.ES2021,
    module: ts.ModuleKind.ES2020,
    moduleResolution: ts.ModuleResolutionKind.NodeJs,
    lib: ['lib.es2021.d.ts'],
    strict: true,
    noImplicitReturns: true,
    skipLibCheck: true,
    noEmit: true,
    incremental: true,
    tsBuildInfoFile: path.join(tmp, 'lint.tsbuildinfo'),
    // ArkTS linter switches, as the SDK's ets-loader sets them for a strict ArkTS project.
    needDoArkTsLinter: true,
    isCompatibleVersion: false,
    // `import native from 'libreceipt_napi.so'` resolves to the native module contract, the way the
    // HAR's oh-package.json5 dependency "libreceipt_napi.so" does on a HarmonyOS build.
    baseUrl: repo,
    paths: { 'libreceipt_napi.so': [nativeDts] },
    types: [],
    // As the SDK's ets-loader does, so `import native from 'libxxx.so'` typechecks.
    allowSyntheticDefaultImports: true,
    esModuleInterop: true,
  };
  const rootNames = files.concat([globalsDts]);
  const host = ts.createIncrementalCompilerHost(options, ts.sys);
  const builder = ts.createIncrementalProgramForArkTs({ rootNames, options, host });

  const diags = [];
  const program = builder.getProgram();
  diags.push(...program.getConfigFileParsingDiagnostics());
  diags.push(...program.getOptionsDiagnostics());
  diags.push(...program.getGlobalDiagnostics());
  for (const sf of program.getSourceFiles()) {
    if (!files.includes(path.resolve(sf.fileName))) continue;
    diags.push(...program.getSyntacticDiagnostics(sf));
    diags.push(...program.getSemanticDiagnostics(sf));
  }
  diags.push(...ts.ArkTSLinter_1_1.runArkTSLinter(builder, undefined, undefined, 'ArkTS_1_1'));
  fs.rmSync(tmp, { recursive: true, force: true });

  // Deduplicate (the linter re-reports the strict tsc diagnostics) and print.
  const seen = new Set();
  let errors = 0;
  let warnings = 0;
  const lines = [];
  for (const d of diags) {
    const msg = ts.flattenDiagnosticMessageText(d.messageText, '\n');
    let where = '';
    if (d.file && d.start !== undefined) {
      const { line, character } = d.file.getLineAndCharacterOfPosition(d.start);
      where = `${path.relative(repo, d.file.fileName)}:${line + 1}:${character + 1}`;
    } else if (d.file) {
      where = path.relative(repo, d.file.fileName);
    }
    const isError = d.category === ts.DiagnosticCategory.Error;
    const key = `${where}|${d.code}|${msg}`;
    if (seen.has(key)) continue;
    seen.add(key);
    if (isError) errors++;
    else if (d.category === ts.DiagnosticCategory.Warning) warnings++;
    else continue;
    lines.push(`${where || '<global>'}: ${isError ? 'error' : 'warning'} [${d.code}] ${msg}`);
  }
  lines.sort();
  for (const l of lines) console.log(l);
  console.log(`arkts-lint: ${files.length} file(s), ${errors} error(s), ${warnings} warning(s)`);
  return errors > 0 ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));
