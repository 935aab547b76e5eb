#!/usr/bin/env bash
# Regenerates include/receipt.h from crates/receipt-ffi with the pinned cbindgen into a temp
# file and fails on any difference with the committed header; then checks that the header
# compiles on its own (C11 and C++).
#
#   scripts/check-header.sh          check (CI)
#   scripts/check-header.sh --write  regenerate include/receipt.h
set -euo pipefail

CBINDGEN_VERSION=0.29.2
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
header="$root/include/receipt.h"
crate="$root/crates/receipt-ffi"

if ! command -v cbindgen >/dev/null 2>&1 || [ "$(cbindgen --version 2>/dev/null)" != "cbindgen $CBINDGEN_VERSION" ]; then
    echo "installing cbindgen $CBINDGEN_VERSION (found: $(cbindgen --version 2>/dev/null || echo none))" >&2
    cargo install cbindgen --version "$CBINDGEN_VERSION" --locked >&2
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# cbindgen warns about the (deliberately unexported) VERSION static; keep other warnings.
(cd "$crate" && cbindgen --config cbindgen.toml --crate receipt-ffi --output "$tmp/receipt.h" 2> "$tmp/cbindgen.log") || {
    cat "$tmp/cbindgen.log" >&2
    exit 1
}
grep -v "Skip receipt-ffi::VERSION" "$tmp/cbindgen.log" >&2 || true

if [ "${1:-}" = "--write" ]; then
    mkdir -p "$(dirname "$header")"
    cp "$tmp/receipt.h" "$header"
    echo "wrote $header"
elif ! diff -u "$header" "$tmp/receipt.h"; then
    echo "include/receipt.h is out of date: run scripts/check-header.sh --write and commit it" >&2
    exit 1
fi

# Self-contained: compiles alone, as C11 and as C++ (cpp_compat).
cc="${CC:-cc}"
printf '#include "receipt.h"\n#include "receipt.h"\nint main(void) { return rcpt_version() == 0; }\n' > "$tmp/alone.c"
"$cc" -std=c11 -Wall -Wextra -Werror -pedantic -I"$root/include" -fsyntax-only "$tmp/alone.c"
if command -v c++ >/dev/null 2>&1; then
    cp "$tmp/alone.c" "$tmp/alone.cpp"
    c++ -std=c++11 -Wall -Wextra -Werror -I"$root/include" -fsyntax-only "$tmp/alone.cpp"
fi
echo "include/receipt.h: up to date (cbindgen $CBINDGEN_VERSION), compiles alone as C11 and C++11"
