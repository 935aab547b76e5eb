#!/usr/bin/env bash
# ArkTS lint of the HAR's .ets sources (ohos/receipt/Index.ets and ohos/receipt/src/main/ets),
# plus the seed-snippet fixture (tests/napi/SeedSnippets.ets) against the same API.
# Installs the pinned linter (npm package ohos-typescript, scripts/package-lock.json) on first use.
# Exit code: non-zero on any ArkTS or type error.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

if [ ! -d "$here/node_modules/ohos-typescript" ]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

cd "$repo"
node "$here/arkts-lint.js"
if [ -f "$repo/tests/napi/SeedSnippets.ets" ]; then
  node "$here/arkts-lint.js" "$repo/tests/napi/SeedSnippets.ets"
fi
