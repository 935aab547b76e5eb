#!/usr/bin/env bash
# Desktop build of the HarmonyOS module for the Node tests (tests/napi/):
#   1. the Rust C ABI library and the receipt server (cargo, release):
#        target/release/libreceipt_ffi.so, target/release/receipt-server
#   2. the NAPI shim ohos/receipt/src/main/cpp/napi_receipt.c as a Node addon (gcc, C11, against
#      Node's headers), linked to libreceipt_ffi.so with rpath $ORIGIN:
#        target/napi/libreceipt_napi.node + target/napi/libreceipt_ffi.so
#   3. the ArkTS layer compiled to CommonJS (scripts/build-napi-js.js): target/napi/index.js, so
#      require('<repo>/target/napi') returns ChatClient, ChatOptions, ChatMessage, ...
#
# Node headers: $NODE_INCLUDE_DIR if set, else /usr/include/node, else <node prefix>/include/node,
# else the npm package node-api-headers. Step 3 needs the npm package ohos-typescript. Both are
# pinned in scripts/package-lock.json and installed here (npm ci into scripts/node_modules) when
# missing. Installs nothing global.
# Needs: cargo, a C compiler (gcc, or $CC), Node.js 20 with npm.
#
# Usage: scripts/build-napi.sh [--skip-cargo] [--debug]   (CARGO_TARGET_DIR is honoured)
#   --debug: use the debug profile (the test command does, to reuse `cargo test`'s build);
#            then run the tests with RECEIPT_SERVER_BIN=target/debug/receipt-server.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"

skip_cargo=0
profile=release
for a in "$@"; do
  case "$a" in
    --skip-cargo) skip_cargo=1 ;;
    --debug) profile=debug ;;
    *) echo "build-napi.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done

for tool in cargo node npm "${CC:-gcc}"; do
  command -v "$tool" >/dev/null || { echo "build-napi: $tool not found (needs cargo, ${CC:-gcc}, Node.js 20 with npm)" >&2; exit 1; }
done
# The pinned npm packages (the .ets -> JS compiler, and Node's headers as a fallback).
if [ ! -d "$here/node_modules/ohos-typescript" ] || [ ! -d "$here/node_modules/node-api-headers" ]; then
  echo "build-napi: npm ci in scripts/ (ohos-typescript, node-api-headers)" >&2
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

target_dir="${CARGO_TARGET_DIR:-$repo/target}"
release="$target_dir/$profile"
out="$repo/target/napi"
shim="$repo/ohos/receipt/src/main/cpp/napi_receipt.c"

if [ "$skip_cargo" = 0 ]; then
  profile_flag=()
  [ "$profile" = release ] && profile_flag=(--release)
  echo "build-napi: cargo build ${profile_flag[*]} -p receipt-ffi -p receipt-server" >&2
  cargo build "${profile_flag[@]}" -p receipt-ffi -p receipt-server
fi
for f in "$release/libreceipt_ffi.so" "$repo/include/receipt.h"; do
  [ -f "$f" ] || { echo "build-napi: missing $f" >&2; exit 1; }
done

# Node's headers (node_api.h).
node_inc=""
for d in "${NODE_INCLUDE_DIR:-}" /usr/include/node "$(dirname "$(command -v node)")/../include/node"; do
  if [ -n "$d" ] && [ -f "$d/node_api.h" ]; then node_inc="$(cd "$d" && pwd)"; break; fi
done
if [ -z "$node_inc" ]; then
  node_inc="$here/node_modules/node-api-headers/include"
  [ -f "$node_inc/node_api.h" ] || { echo "build-napi: no node_api.h found" >&2; exit 1; }
fi
echo "build-napi: Node headers in $node_inc" >&2

mkdir -p "$out"
cp -f "$release/libreceipt_ffi.so" "$out/libreceipt_ffi.so"
# The addon resolves napi_* from the node binary at load time (-undefined symbols are allowed in a
# shared object), and libreceipt_ffi.so from its own directory.
${CC:-gcc} -std=c11 -O2 -g -fPIC -shared -fvisibility=hidden \
  -Wall -Wextra -Werror -Wno-unused-parameter \
  -I"$node_inc" -I"$repo/include" \
  -o "$out/libreceipt_napi.node.tmp" "$shim" \
  -L"$out" -lreceipt_ffi -Wl,-rpath,'$ORIGIN' -Wl,-soname,libreceipt_napi.so
mv -f "$out/libreceipt_napi.node.tmp" "$out/libreceipt_napi.node"
echo "build-napi: $out/libreceipt_napi.node" >&2

node "$here/build-napi-js.js" --out "$out"
