#!/usr/bin/env bash
# Builds libreceipt_ffi.so (release) for OpenHarmony with the NDK and copies it into the HAR:
#   ohos/receipt/libs/arm64-v8a/libreceipt_ffi.so   (aarch64-unknown-linux-ohos, devices)
#   ohos/receipt/libs/x86_64/libreceipt_ffi.so      (x86_64-unknown-linux-ohos, emulator)
# then checks each with readelf: SONAME must be libreceipt_ffi.so, NEEDED entries are printed.
#
# Needs OHOS_NDK_HOME: the NDK folder that holds native/ (native/llvm/bin/clang,
# native/sysroot). Without a prebuilt rust-std for the ohos targets, std is built from source
# (rust-src component, RUSTC_BOOTSTRAP=1 -Zbuild-std=std,panic_unwind), as in check-ohos.sh.
#
#   OHOS_NDK_HOME=/path/to/ohos-sdk/linux scripts/build-ohos.sh [target...]
set -euo pipefail

if [ -z "${OHOS_NDK_HOME:-}" ]; then
    echo "build-ohos.sh: OHOS_NDK_HOME is not set. Point it at the OpenHarmony NDK folder that" >&2
    echo "holds native/ (for example \$HOME/ohos-sdk/linux). Without the NDK, use scripts/check-ohos.sh." >&2
    exit 2
fi
ndk="$OHOS_NDK_HOME/native"
clang="$ndk/llvm/bin/clang"
sysroot="$ndk/sysroot"
for f in "$clang" "$sysroot"; do
    [ -e "$f" ] || { echo "build-ohos.sh: $f not found: is OHOS_NDK_HOME ($OHOS_NDK_HOME) the folder holding native/?" >&2; exit 2; }
done
llvm_ar="$ndk/llvm/bin/llvm-ar"
readelf="$ndk/llvm/bin/llvm-readelf"
[ -x "$readelf" ] || readelf="readelf"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${OHOS_TARGET_DIR:-$root/target/ohos}"
wrappers="$target_dir/ndk-wrappers"
mkdir -p "$wrappers"

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-unknown-linux-ohos x86_64-unknown-linux-ohos)

installed_targets="$(rustup target list --installed 2>/dev/null || true)"

for t in "${targets[@]}"; do
    case "$t" in
        aarch64-unknown-linux-ohos) abi=arm64-v8a; clang_target=aarch64-linux-ohos ;;
        x86_64-unknown-linux-ohos) abi=x86_64; clang_target=x86_64-linux-ohos ;;
        *) echo "build-ohos.sh: unsupported target $t" >&2; exit 2 ;;
    esac
    # cargo's config does not expand environment variables, so the NDK paths go into a small
    # wrapper that cargo (linker) and cc-rs (CC) can call.
    wrapper="$wrappers/$clang_target-clang"
    printf '#!/bin/sh\nexec "%s" --target=%s --sysroot="%s" -D__MUSL__ "$@"\n' "$clang" "$clang_target" "$sysroot" > "$wrapper"
    chmod +x "$wrapper"
    upper="$(echo "$t" | tr 'a-z-' 'A-Z_')"
    lower="$(echo "$t" | tr '-' '_')"
    export "CARGO_TARGET_${upper}_LINKER=$wrapper"
    export "CC_${lower}=$wrapper"
    export "AR_${lower}=$llvm_ar"

    std_args=()
    if ! grep -qx "$t" <<<"$installed_targets"; then
        sysroot_rust="$(rustc --print sysroot)"
        [ -f "$sysroot_rust/lib/rustlib/src/rust/library/Cargo.lock" ] || rustup component add rust-src
        export RUSTC_BOOTSTRAP=1
        std_args=(-Zbuild-std=std,panic_unwind)
    fi

    echo "== $t ($abi)"
    cargo build -p receipt-ffi --lib --release --target "$t" --target-dir "$target_dir" "${std_args[@]}"
    so="$target_dir/$t/release/libreceipt_ffi.so"
    [ -f "$so" ] || { echo "build-ohos.sh: $so was not built" >&2; exit 1; }

    dynamic="$("$readelf" -d "$so")"
    soname="$(sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p' <<<"$dynamic")"
    echo "   SONAME: ${soname:-<missing>}"
    sed -n 's/.*(NEEDED).*\[\(.*\)\].*/   NEEDED: \1/p' <<<"$dynamic"
    if [ "$soname" != "libreceipt_ffi.so" ]; then
        echo "build-ohos.sh: $so has SONAME '${soname}', want libreceipt_ffi.so (crates/receipt-ffi/build.rs)" >&2
        exit 1
    fi
    if sed -n 's/.*(NEEDED).*\[\(.*\)\].*/\1/p' <<<"$dynamic" | grep -q /; then
        echo "build-ohos.sh: $so records a NEEDED entry with a path" >&2
        exit 1
    fi

    dest="$root/ohos/receipt/libs/$abi"
    mkdir -p "$dest"
    cp "$so" "$dest/libreceipt_ffi.so"
    echo "   -> ohos/receipt/libs/$abi/libreceipt_ffi.so ($(du -h "$dest/libreceipt_ffi.so" | cut -f1))"
done
