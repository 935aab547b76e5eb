#!/usr/bin/env bash
# Short fuzzing run of every target in fuzz/ (docs/reliability.md): fails on any crash.
#   scripts/fuzz-smoke.sh [seconds per target, default 20]
# Works on the stable toolchain: cargo-fuzz's nightly-only flags are allowed by RUSTC_BOOTSTRAP=1,
# and `-s none` builds without a sanitizer (the crates are safe Rust; libFuzzer's coverage
# instrumentation needs no nightly runtime). Crash inputs land in fuzz/artifacts/<target>/.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo/fuzz"

seconds="${1:-20}"
case "$seconds" in '' | *[!0-9]*) echo "usage: $0 [seconds per target]" >&2; exit 2 ;; esac
CARGO_FUZZ_VERSION=0.13.2
targets=(frame_decoder engine_inbound engine_frames)

start=$SECONDS
if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  echo "==> installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --force
fi
export RUSTC_BOOTSTRAP=1

echo "==> building the fuzz targets"
cargo fuzz build -s none
echo "    ready after $((SECONDS - start)) s (install and build)"

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  seeds=()
  [ -d "seeds/$t" ] && seeds=("seeds/$t")
  t0=$SECONDS
  if cargo fuzz run -s none "$t" "corpus/$t" "${seeds[@]}" -- \
    -max_total_time="$seconds" -dict=seeds/json.dict -print_final_stats=1 >"$logs/$t.log" 2>&1; then
    status=ok
  else
    status=FAIL
    failed+=("$t")
  fi
  runs=$(grep -o 'Done [0-9]* runs' "$logs/$t.log" | grep -o '[0-9]*' || true)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$logs/$t.log" | grep -o '[0-9]*$' || true)
  cov=$(grep -E '^#[0-9]+' "$logs/$t.log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+' || true)
  printf '%-15s %-5s %10s execs  %7s exec/s  %-22s %3d s\n' "$t" "$status" "${runs:-?}" "${rate:-?}" "${cov:-}" $((SECONDS - t0))
  if [ "$status" = FAIL ]; then
    grep -E "panicked|assertion|Test unit written|cargo fuzz (run|tmin)" "$logs/$t.log" | head -20 >&2 || tail -30 "$logs/$t.log" >&2
  fi
done
echo "==> fuzz smoke: ${#targets[@]} targets, $seconds s each, $((SECONDS - start)) s in all"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz smoke FAILED in ${failed[*]}: crash inputs are in fuzz/artifacts/" >&2
  exit 1
fi
