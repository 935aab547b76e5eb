#!/usr/bin/env bash
# Runs the Rust tests on the HarmonyOS targets without the OpenHarmony NDK:
#   x86_64-unknown-linux-ohos   natively,
#   aarch64-unknown-linux-ohos  under qemu-aarch64-static (user-mode emulation).
# OpenHarmony's libc is musl-based and the `libc` crate's ohos bindings match musl 1.2.3, the
# version Debian ships, so the test binaries link against Debian's musl through a small sysroot
# per target that this script makes under the target dir (nothing of it is committed). See
# docs/platforms.md for what this covers and what only a device can tell.
#
#   scripts/test-ohos.sh [--build-only] [target...]     default: both targets
#
# --build-only: no tests; build the libraries (rlib, staticlib, cdylib) and check the artifacts.
# Environment: OHOS_TARGET_DIR (default $CARGO_TARGET_DIR/ohos, else target/ohos);
# OHOS_AARCH64_ALL=1 runs the x86_64 package list on aarch64 too (slow, and the tests that spawn
# their crate's own binaries cannot run there).
#
# Needs (installed here when missing, with apt as root): clang, lld, llvm (llvm-ar), musl-dev,
# musl-dev:arm64 (after `dpkg --add-architecture arm64`), qemu-user-static; and the rust-src
# component. rustup ships no prebuilt std for the ohos targets, so std is built from source with
# -Zbuild-std, which stable cargo accepts only with RUSTC_BOOTSTRAP=1 (set below, for these builds
# only). panic_unwind is built too: the C ABI's panic boundary needs unwinding.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# ---------------------------------------------------------------------------------------------
# What runs where: the one place to edit when packages change.
#
# x86_64-ohos runs every workspace package's tests (`cargo test --tests`: unit tests of libs and
# bins, and integration tests), read from `cargo metadata`, so a new or renamed crate is picked up.
# aarch64-ohos runs under emulation (9-15x slower) and cannot spawn aarch64 child processes
# (qemu-user without binfmt_misc), so it runs what ships on a device: the engine, the client
# runtime, the C ABI's unit tests, and the end-to-end tests (real client runtimes against an
# embedded server over loopback). The server and the CLI run on servers and desktops; their
# PostgreSQL and NATS tests skip on both targets (RECEIPT_SKIP_PG/NATS below).
# A package named here that no longer exists makes cargo fail: keep the list in step with crates/.
aarch64_packages=(receipt-core receipt-client receipt-e2e receipt-ffi)
# Packages whose integration tests need the host by design: only their unit tests (`--lib`) run.
# receipt-ffi: tests/ drives C programs compiled for the host with gcc, run under valgrind.
lib_only_packages=(receipt-ffi)
lib_only_reason="they compile C programs for the host with gcc and run them under valgrind"
# The C ABI library whose cdylib is checked (SONAME, NEEDED) and smoke-tested on each target.
ffi_package=receipt-ffi
ffi_soname=libreceipt_ffi.so
# ---------------------------------------------------------------------------------------------

build_only=0
targets=()
for arg in "$@"; do
    case "$arg" in
        --build-only) build_only=1 ;;
        -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        aarch64-unknown-linux-ohos | x86_64-unknown-linux-ohos) targets+=("$arg") ;;
        *) echo "test-ohos.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(x86_64-unknown-linux-ohos aarch64-unknown-linux-ohos)
target_dir="${OHOS_TARGET_DIR:-${CARGO_TARGET_DIR:-$root/target}/ohos}"
toolchain_dir="$target_dir/toolchain"

say() { printf '== %s\n' "$*"; }
loud() { printf '!!!!!!!! %s !!!!!!!!\n' "$*"; }

# --- packages: install only what is missing ----------------------------------------------------
install_missing() {
    local need=() need_arm64=0
    command -v clang >/dev/null || need+=(clang)
    command -v ld.lld >/dev/null || need+=(lld)
    command -v llvm-ar >/dev/null || need+=(llvm)
    command -v readelf >/dev/null || need+=(binutils)
    [ -f /usr/lib/x86_64-linux-musl/crt1.o ] && [ -e /lib/ld-musl-x86_64.so.1 ] || need+=(musl-dev musl)
    if printf '%s\n' "${targets[@]}" | grep -q '^aarch64-'; then
        if ! [ -f /usr/lib/aarch64-linux-musl/crt1.o ] || ! [ -e /lib/ld-musl-aarch64.so.1 ]; then
            need+=(musl-dev:arm64 musl:arm64)
            need_arm64=1
        fi
        command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
    fi
    [ ${#need[@]} -gt 0 ] || return 0
    say "installing ${need[*]}"
    if [ "$(id -u)" != 0 ]; then
        echo "test-ohos.sh: missing packages: ${need[*]} (run as root, or install them;" >&2
        echo "  musl-dev:arm64 needs 'dpkg --add-architecture arm64' first)" >&2
        exit 2
    fi
    if [ $need_arm64 = 1 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
        dpkg --add-architecture arm64
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
}
install_missing

rust_sysroot="$(rustc --print sysroot)"
rust_src="$rust_sysroot/lib/rustlib/src/rust"
if [ ! -f "$rust_src/library/Cargo.lock" ]; then
    say "rust-src is missing for $(rustc -V): rustup component add rust-src"
    rustup component add rust-src
fi
libunwind_src="$rust_src/src/llvm-project/libunwind"
[ -d "$libunwind_src/src" ] || { echo "test-ohos.sh: $libunwind_src not found in rust-src" >&2; exit 1; }

# --- per-target sysroot, clang wrapper and libunwind --------------------------------------------
# Makes $toolchain_dir/<target>/{cc,sysroot/}. The wrapper is the linker (cargo) and the C
# compiler (cc-rs, for crates that build C such as mimalloc).
prepare_target() {
    local t="$1" arch
    arch="${t%%-*}"
    local musl_lib="/usr/lib/$arch-linux-musl" musl_inc="/usr/include/$arch-linux-musl"
    local dir="$toolchain_dir/$t"
    local sysroot="$dir/sysroot" cc="$dir/cc"
    local stamp="$dir/ready" inputs
    # Redo when this script, the toolchain or musl change.
    inputs="$(sha256sum "$0" | cut -c1-16) $(clang --version | head -1) $(rustc -V) $(stat -c %Y "$musl_lib/libc.a")"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs" ]; then
        return 0
    fi
    say "$t: sysroot and wrapper in ${dir#"$root"/}"
    rm -rf "$dir"
    mkdir -p "$sysroot/usr/lib" "$dir/obj"
    ln -s "$musl_inc" "$sysroot/usr/include"
    local f
    for f in "$musl_lib"/*; do ln -s "$f" "$sysroot/usr/lib/"; done
    # --gcc-toolchain=/nonexistent: otherwise clang picks up the host's GCC (crtbegin, libgcc_s.so.1).
    # Any --target from the caller (cc-rs passes the Rust triple, which clang 14 does not know) is
    # dropped in favour of the musl triple.
    cat >"$cc" <<EOF
#!/bin/sh
# Written by scripts/test-ohos.sh: clang for $t against Debian's musl.
for a; do shift; case "\$a" in --target=*) ;; *) set -- "\$@" "\$a" ;; esac; done
exec clang --target=$arch-linux-musl --sysroot="$sysroot" --gcc-toolchain=/nonexistent -fuse-ld=lld -Wno-unused-command-line-argument "\$@"
EOF
    chmod +x "$cc"
    # clang's link line names crtbegin*/crtend* (GCC's); musl needs none, so they are empty.
    for f in crtbegin.o crtbeginS.o crtbeginT.o crtend.o crtendS.o; do
        "$cc" -c -x c /dev/null -o "$sysroot/usr/lib/$f"
    done
    # std links -lunwind for target_env = "ohos"; Debian's libunwind is built against glibc, so
    # LLVM's libunwind is built from rust-src (flags as Rust's own build of it).
    local common=(-c -O2 -fPIC -funwind-tables -fstrict-aliasing -fvisibility=hidden
        -D_LIBUNWIND_DISABLE_VISIBILITY_ANNOTATIONS -D_LIBUNWIND_IS_NATIVE_ONLY -DNDEBUG
        -I "$libunwind_src/include")
    for f in UnwindLevel1.c UnwindLevel1-gcc-ext.c UnwindRegistersRestore.S UnwindRegistersSave.S; do
        "$cc" "${common[@]}" -std=c99 "$libunwind_src/src/$f" -o "$dir/obj/$f.o"
    done
    "$cc" "${common[@]}" -std=c++11 -nostdinc++ -fno-exceptions -fno-rtti \
        "$libunwind_src/src/libunwind.cpp" -o "$dir/obj/libunwind.cpp.o"
    llvm-ar rcs "$sysroot/usr/lib/libunwind.a" "$dir/obj"/*.o
    echo "$inputs" >"$stamp"
}

# --- environment for cargo on one target --------------------------------------------------------
use_target() {
    local t="$1" upper lower cc
    upper="$(echo "$t" | tr 'a-z-' 'A-Z_')"
    lower="$(echo "$t" | tr '-' '_')"
    cc="$toolchain_dir/$t/cc"
    export "CARGO_TARGET_${upper}_LINKER=$cc" "CC_${lower}=$cc" "CXX_${lower}=$cc" "AR_${lower}=llvm-ar"
    case "$t" in
        aarch64-*) export "CARGO_TARGET_${upper}_RUNNER=qemu-aarch64-static" ;;
    esac
}
export RUSTC_BOOTSTRAP=1
# The ohos runs test a single server: the cluster topology (scripts/test.sh) runs on the host.
unset RECEIPT_TEST_TOPOLOGY
# What runs on a phone is the client side and the C ABI; a server on PostgreSQL and a cluster
# over NATS run on Linux hosts, where scripts/test.sh tests them. Their tests skip here, each
# with a loud SKIPPED line (the target's own code paths are the same Rust as on the host).
export RECEIPT_SKIP_PG=1 RECEIPT_SKIP_NATS=1
cargo_common=(-Zbuild-std=std,panic_unwind --target-dir "$target_dir")

runner_for() { case "$1" in aarch64-*) echo qemu-aarch64-static ;; *) ;; esac; }

# The packages whose tests run on a target: the aarch64 list, or every workspace member.
packages_for() {
    if [ "$1" = aarch64-unknown-linux-ohos ] && [ "${OHOS_AARCH64_ALL:-0}" != 1 ]; then
        printf '%s\n' "${aarch64_packages[@]}"
    else
        cargo metadata --no-deps --format-version 1 \
            | grep -o '"name":"[^"]*","version"' | sed 's/"name":"\([^"]*\)".*/\1/'
    fi
}

# --- checks of the C ABI library on a target ----------------------------------------------------
check_ffi() {
    local t="$1" out="$target_dir/$t/debug"
    cargo build -p "$ffi_package" --lib --target "$t" "${cargo_common[@]}"
    local so="$out/$ffi_soname" a="$out/${ffi_soname%.so}.a"
    [ -f "$so" ] && [ -f "$a" ] || { echo "test-ohos.sh: $so or $a was not built" >&2; return 1; }
    local machine want
    machine="$(readelf -h "$so" | sed -n 's/^ *Machine: *//p')"
    case "$t" in aarch64-*) want=AArch64 ;; *) want=X86-64 ;; esac
    grep -q "$want" <<<"$machine" || { echo "test-ohos.sh: $so is for '$machine', want $want" >&2; return 1; }
    local dynamic soname needed
    dynamic="$(readelf -d "$so")"
    soname="$(sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p' <<<"$dynamic")"
    needed="$(sed -n 's/.*(NEEDED).*\[\(.*\)\].*/\1/p' <<<"$dynamic" | tr '\n' ' ')"
    echo "   $so: $machine, SONAME ${soname:-<none>}, NEEDED ${needed:-<none>}"
    [ "$soname" = "$ffi_soname" ] || { echo "test-ohos.sh: SONAME '$soname', want $ffi_soname" >&2; return 1; }
    # libc is all a HarmonyOS app's process gives a native library for free; anything else
    # (libgcc_s, a libunwind.so, a path) would fail to load on a device.
    [ "$needed" = "libc.so " ] || { echo "test-ohos.sh: NEEDED '$needed', want only libc.so" >&2; return 1; }
    local sym exports
    # Read once, then search: `nm | grep -q` can fail under pipefail when grep stops reading
    # early and nm dies of SIGPIPE (it did once the export list grew).
    exports="$(nm -D --defined-only "$so")"
    for sym in rcpt_client_new rcpt_client_poll_event rcpt_last_error rcpt_version; do
        grep -q " T $sym\$" <<<"$exports" || { echo "test-ohos.sh: $so does not export $sym" >&2; return 1; }
    done
    # A C program built for the target loads the library through musl's loader and calls it.
    local smoke="$toolchain_dir/$t/ffi_smoke"
    # -nodefaultlibs: clang would add GCC's -lgcc/-lgcc_s, which musl does not need (rustc too
    # links with -nodefaultlibs).
    "$toolchain_dir/$t/cc" -O1 -I "$root/include" "$root/scripts/ohos/ffi_smoke.c" -L "$out" -lreceipt_ffi \
        -nodefaultlibs -lc -Wl,-rpath,"$out" -o "$smoke"
    local runner smoke_dir rc=0
    runner="$(runner_for "$t")"
    smoke_dir="$(mktemp -d)"
    $runner "$smoke" "$smoke_dir" || rc=$?
    rm -rf "$smoke_dir"
    return $rc
}

status=0
summary=()
for t in "${targets[@]}"; do
    prepare_target "$t"
    use_target "$t"
    start=$(date +%s)
    say "$t: C ABI library (rlib, staticlib, cdylib) and its checks"
    if ! check_ffi "$t"; then status=1; summary+=("$t: C ABI library check FAILED"); continue; fi
    if [ $build_only = 1 ]; then
        summary+=("$t: built and checked in $(( $(date +%s) - start )) s")
        continue
    fi
    runner="$(runner_for "$t")"
    mapfile -t pkgs < <(packages_for "$t")
    [ ${#pkgs[@]} -gt 0 ] || { echo "test-ohos.sh: no packages to test on $t" >&2; exit 1; }
    all_tests=() lib_only=()
    for p in "${pkgs[@]}"; do
        if printf '%s\n' "${lib_only_packages[@]}" | grep -qx "$p"; then lib_only+=(-p "$p"); else all_tests+=(-p "$p"); fi
    done
    for p in "${lib_only_packages[@]}"; do
        printf '%s\n' "${pkgs[@]}" | grep -qx "$p" &&
            loud "SKIPPED on $t: $p's integration tests ($lib_only_reason); its unit tests run"
    done
    if [ "$t" = aarch64-unknown-linux-ohos ] && [ "${OHOS_AARCH64_ALL:-0}" != 1 ]; then
        loud "aarch64 runs ${pkgs[*]} only (emulated, 9-15x slower; the others' tests spawn their own binaries, which qemu-user cannot do); all packages run on x86_64-ohos"
        loud "SKIPPED on $t: receipt-core's kill test (tests/history.rs) checks nothing here: it restarts its own binary as the killed app, which qemu-user cannot; it runs on x86_64-ohos and the host"
    fi
    say "$t: cargo test ${all_tests[*]} --tests; ${lib_only[*]} --lib${runner:+ (runner: $runner)}"
    ok=1
    if [ ${#all_tests[@]} -gt 0 ]; then
        cargo test --target "$t" "${cargo_common[@]}" --no-fail-fast "${all_tests[@]}" --tests || ok=0
    fi
    if [ ${#lib_only[@]} -gt 0 ]; then
        cargo test --target "$t" "${cargo_common[@]}" --no-fail-fast "${lib_only[@]}" --lib || ok=0
    fi
    took=$(( $(date +%s) - start ))
    if [ $ok = 1 ]; then summary+=("$t: tests passed in $took s"); else status=1; summary+=("$t: tests FAILED ($took s)"); fi
done

printf '\n'
for line in "${summary[@]}"; do say "$line"; done
[ $status = 0 ] && say "test-ohos: ok (${targets[*]})" || say "test-ohos: FAILED"
exit $status
