#!/usr/bin/env bash
# Every test of the project, as CI runs it. Needs: Rust (stable, with rust-src), gcc, valgrind,
# PostgreSQL's server binaries (Debian's `postgresql`; RECEIPT_SKIP_PG=1 skips those tests, loudly),
# Node.js 20 with npm; for the ohos targets clang, lld, llvm, musl-dev (amd64 and arm64) and
# qemu-user-static (scripts/test-ohos.sh installs them when missing, as root). Installs the
# pinned cbindgen and npm packages it needs on first use.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

step() { printf '\n==> %s\n' "$*"; }

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

step "Rust tests: core rules and properties, server rules and crash recovery, end to end, C programs under valgrind, demo"
cargo test --workspace --all-targets

step "server rule, persistence and hot-cache suites again on the PostgreSQL backend (a throwaway cluster per test binary; store contract and PostgreSQL fault tests ran above)"
RECEIPT_TEST_BACKEND=postgres cargo test -p receipt-server --test rules --test persistence --test cache --test unread_and_batches

step "end-to-end rule suites again on a 3-node cluster (RECEIPT_TEST_TOPOLOGY=cluster: a sequencer on PostgreSQL and two gateways over NATS, in process, behind a round-robin balancer, so one user's devices and their peers are on different nodes; 4 test threads: a cluster start mostly waits on its lease and heartbeats)"
RECEIPT_TEST_TOPOLOGY=cluster cargo test -p receipt-server --test rules --test unread_and_batches --test group_delivery --test private_reading --test authz -- --test-threads=4
RECEIPT_TEST_TOPOLOGY=cluster cargo test -p receipt-e2e --test rules --test unread_batches --test resilience --test large_groups -- --test-threads=4

step "C header matches a fresh cbindgen run"
scripts/check-header.sh

step "ohos targets (build-std, Debian's musl): every package's tests on x86_64-ohos natively (PostgreSQL and NATS tests skipped); engine, client, end to end and C ABI unit tests on aarch64-ohos under qemu; libreceipt_ffi.so checked"
scripts/test-ohos.sh

step "ArkTS lint"
scripts/check-arkts.sh

step "NAPI shim as a Node addon, allowlisted symbols, Node tests of the ArkTS API"
scripts/build-napi.sh --debug
scripts/check-napi-symbols.sh
RECEIPT_SERVER_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/receipt-server" node --test tests/napi/

step "fuzzing, short bounded run (the long runs are by hand: docs/reliability.md)"
scripts/fuzz-smoke.sh "${FUZZ_SECONDS:-10}"

step "all checks passed"
