#!/usr/bin/env bash
# ArkTS lint of the HAR's .ets sources (ohos/receipt/Index.ets and ohos/receipt/src/main/ets),
# plus the app-code fixtures against the same API: the seed guide's snippets
# (tests/napi/SeedSnippets.ets) and code written from the Easemob SDK's docs (tests/napi/SdkDocsCompat.ets).
# Needs: Node.js 20 with npm.
# Installs the pinned linter (npm package ohos-typescript, scripts/package-lock.json) on first use.
# Exit code: non-zero on any ArkTS or type error.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

command -v npm >/dev/null || { echo "check-arkts: npm not found (needs Node.js 20 with npm)" >&2; exit 1; }
if [ ! -d "$here/node_modules/ohos-typescript" ]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

cd "$repo"
node "$here/arkts-lint.js"
for fixture in "$repo/tests/napi/SeedSnippets.ets" "$repo/tests/napi/SdkDocsCompat.ets"; do
  [ -f "$fixture" ] || { echo "check-arkts: missing $fixture" >&2; exit 1; }
  node "$here/arkts-lint.js" "$fixture"
done
