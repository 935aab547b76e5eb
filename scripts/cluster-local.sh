#!/usr/bin/env bash
# A local 3-node cluster on loopback with one command (docs/deployment.md, "Several nodes"):
# nats-server, the sequencer (node 1, serving clients on :7878, its store in a temp dir) and two
# gateways (nodes 2 and 3 on :7879 and :7880). Ctrl-C (or SIGTERM to the script: a background
# job of a non-interactive shell ignores SIGINT) stops them all.
#
#   scripts/cluster-local.sh [--release] [SERVE FLAGS...]
#
# SERVE FLAGS go to every node (e.g. `--send-rate-per-sec 0 --request-rate-per-sec 0` for a bench).
# Needs Debian's nats-server (apt-get install nats-server). Clients use any of the three ports
# (a client-side address list); tokens: `receipt-server token --user alice --secret "$SECRET"`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

profile=debug
build=(cargo build -p receipt-server --bin receipt-server)
if [ "${1:-}" = --release ]; then
    profile=release
    build+=(--release)
    shift
fi
nats_bin="$(command -v nats-server || true)"
[ -n "$nats_bin" ] || { [ -x /usr/sbin/nats-server ] && nats_bin=/usr/sbin/nats-server; }
[ -n "$nats_bin" ] || { echo "cluster-local.sh: no nats-server (apt-get install nats-server)" >&2; exit 1; }

"${build[@]}"
bin="$repo/target/$profile/receipt-server"
export RECEIPT_SERVER_SECRET="${SECRET:-local-cluster-secret}"
nats_port="${NATS_PORT:-4222}"
dir="$(mktemp -d)"
pids=()
stop() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT TERM

printf 'host: 127.0.0.1\nport: %s\nmax_payload: 4MB\n' "$nats_port" >"$dir/nats.conf"
"$nats_bin" -c "$dir/nats.conf" >"$dir/nats.log" 2>&1 &
pids+=($!)
# Bounded wait until nats-server accepts.
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break
    sleep 0.1
done

nats="nats://127.0.0.1:$nats_port"
"$bin" serve --node-id 1 --role sequencer --nats "$nats" --addr 127.0.0.1:7878 --data-dir "$dir/node1" "$@" &
pids+=($!)
for n in 2 3; do
    "$bin" serve --node-id "$n" --role gateway --nats "$nats" --addr "127.0.0.1:$((7877 + n))" --in-memory "$@" &
    pids+=($!)
done
echo "cluster up: sequencer 127.0.0.1:7878, gateways 127.0.0.1:7879 and :7880, NATS $nats; secret \$RECEIPT_SERVER_SECRET. Ctrl-C stops."
wait -n "${pids[@]}" || true
echo "cluster-local.sh: a process exited; stopping the others" >&2
