#!/usr/bin/env bash
# Checks, without the OpenHarmony NDK, that the Rust side builds for the ohos targets:
# receipt-core (rlib) and receipt-ffi as a staticlib for aarch64-unknown-linux-ohos (devices)
# and x86_64-unknown-linux-ohos (emulator). No linking happens, so no NDK sysroot is needed.
#
# rustup ships no prebuilt std for these targets, so std is built from source
# (-Zbuild-std, allowed on stable through RUSTC_BOOTSTRAP=1), which needs the rust-src
# component. panic_unwind is built too: the C ABI's panic boundary needs unwinding.
# The build goes to target/ohos so it does not invalidate the host build.
#
#   scripts/check-ohos.sh [target...]      default: both targets
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-unknown-linux-ohos x86_64-unknown-linux-ohos)
target_dir="${OHOS_TARGET_DIR:-$root/target/ohos}"

sysroot="$(rustc --print sysroot)"
if [ ! -f "$sysroot/lib/rustlib/src/rust/library/Cargo.lock" ]; then
    echo "rust-src is missing for $(rustc -V): rustup component add rust-src" >&2
    rustup component add rust-src
fi

export RUSTC_BOOTSTRAP=1
build_std=(-Zbuild-std=std,panic_unwind)

for t in "${targets[@]}"; do
    start=$(date +%s)
    echo "== $t: receipt-core, receipt-client (rlib)"
    cargo build -p receipt-core -p receipt-client --target "$t" --target-dir "$target_dir" "${build_std[@]}"
    echo "== $t: receipt-ffi (staticlib)"
    cargo rustc -p receipt-ffi --lib --crate-type staticlib --target "$t" --target-dir "$target_dir" "${build_std[@]}"
    lib="$target_dir/$t/debug/libreceipt_ffi.a"
    [ -f "$lib" ] || { echo "missing $lib" >&2; exit 1; }
    # The archive holds objects for the target's architecture and exports the C ABI.
    arch="$(case "$t" in aarch64-*) echo aarch64 ;; x86_64-*) echo x86-64 ;; esac)"
    obj_dir="$(mktemp -d)"
    member="$(ar t "$lib" | awk '/^receipt_ffi/ && !found { print; found = 1 }')"
    (cd "$obj_dir" && ar x "$lib" "$member")
    file_info="$(file "$obj_dir"/* 2>/dev/null || true)"
    rm -rf "$obj_dir"
    if command -v file >/dev/null 2>&1 && ! grep -qi "$arch" <<<"$file_info"; then
        echo "$lib: unexpected object format: $file_info" >&2
        exit 1
    fi
    symbols="$(nm -g --defined-only "$lib" 2>/dev/null || true)"
    for sym in rcpt_client_new rcpt_client_poll_event rcpt_last_error rcpt_version; do
        grep -q " T $sym\$" <<<"$symbols" || { echo "$lib does not export $sym" >&2; exit 1; }
    done
    echo "== $t: ok ($(du -h "$lib" | cut -f1) staticlib, $(( $(date +%s) - start )) s)"
done
echo "check-ohos: ok (${targets[*]})"
