#!/usr/bin/env bash
# Checks that the NAPI shim imports only Node-API symbols that OpenHarmony exports to NDK modules
# (the vendored list ohos/receipt/napi-allowlist/libnapi.ndk.json; its README says where and when
# it was taken). Prints the imported symbols; fails on any symbol not in the list.
# Needs: nm (binutils) and a built shim (scripts/build-napi.sh).
#
# Usage: scripts/check-napi-symbols.sh [SHIM]   (default target/napi/libreceipt_napi.node)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
shim="${1:-$repo/target/napi/libreceipt_napi.node}"
allow="${NAPI_ALLOWLIST:-$repo/ohos/receipt/napi-allowlist/libnapi.ndk.json}"

command -v nm >/dev/null || { echo "check-napi-symbols: nm not found: install binutils (apt-get install binutils)" >&2; exit 1; }

[ -f "$shim" ] || { echo "check-napi-symbols: missing $shim (run scripts/build-napi.sh)" >&2; exit 1; }
[ -f "$allow" ] || { echo "check-napi-symbols: missing allowlist $allow" >&2; exit 1; }

allowed="$(grep -oE '"name"[[:space:]]*:[[:space:]]*"[^"]+"' "$allow" | sed -E 's/.*"([^"]+)"$/\1/' | sort -u)"
[ -n "$allowed" ] || { echo "check-napi-symbols: no names in $allow" >&2; exit 1; }

imported="$(nm -D --undefined-only "$shim" | awk '{print $NF}' | sed 's/@.*//' | grep -E '^(napi|node_api)_' | sort -u || true)"
if [ -z "$imported" ]; then
  echo "check-napi-symbols: $shim imports no Node-API symbols (wrong file?)" >&2
  exit 1
fi

bad="$(comm -23 <(printf '%s\n' "$imported") <(printf '%s\n' "$allowed"))"
echo "Node-API symbols imported by $(basename "$shim") ($(printf '%s\n' "$imported" | wc -l)):"
printf '  %s\n' $imported
if [ -n "$bad" ]; then
  echo "check-napi-symbols: NOT in $(basename "$allow") (OpenHarmony would fail to load the module):" >&2
  printf '  %s\n' $bad >&2
  exit 1
fi
echo "check-napi-symbols: OK, all in $(basename "$allow")"
