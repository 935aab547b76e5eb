#!/usr/bin/env bash
# Every test of the project, as CI runs it. Needs: Rust (stable), gcc, valgrind, Node.js 20, npm.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

step() { printf '\n==> %s\n' "$*"; }

step "format"
cargo fmt --all -- --check

step "Rust tests: core rules and properties, server rules and crash recovery, client end to end, demo"
cargo test --workspace --all-targets

step "ArkTS lint"
scripts/check-arkts.sh

step "all checks passed"
