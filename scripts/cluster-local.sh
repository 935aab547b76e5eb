#!/usr/bin/env bash
# A local 3-node cluster on loopback with one command (docs/deployment.md, "Several nodes"):
# nats-server, the sequencer (node 1, serving clients on :7878, its store in a temp dir) and two
# gateways (nodes 2 and 3 on :7879 and :7880). With --postgres: a throwaway PostgreSQL cluster
# (Debian's binaries, a temp dir, unix socket + 127.0.0.1:$PG_PORT, default 54329) holds the
# state, the sequencer is elected by its advisory lock, and a standby (node 4, no client port
# until it leads) waits to take over: kill node 1 and watch node 4 take over. Ctrl-C (or SIGTERM
# to the script: a background job of a non-interactive shell ignores SIGINT) stops them all.
#
#   scripts/cluster-local.sh [--release] [--postgres] [SERVE FLAGS...]
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
postgres=false
if [ "${1:-}" = --postgres ]; then
    postgres=true
    shift
fi
nats_bin="$(command -v nats-server || true)"
[ -n "$nats_bin" ] || { [ -x /usr/sbin/nats-server ] && nats_bin=/usr/sbin/nats-server; }
[ -n "$nats_bin" ] || { echo "cluster-local.sh: no nats-server (apt-get install nats-server)" >&2; exit 1; }

"${build[@]}"
bin="${CARGO_TARGET_DIR:-$repo/target}/$profile/receipt-server"
export RECEIPT_SERVER_SECRET="${SECRET:-local-cluster-secret}"
nats_port="${NATS_PORT:-4222}"
dir="$(mktemp -d)"
pids=()
as_pg=()
pg_up=false
stop() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if $pg_up; then "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$dir/pg" -m immediate stop >/dev/null 2>&1 || true; fi
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
store=(--data-dir "$dir/node1")
if $postgres; then
    pg_bin="${RECEIPT_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}"
    [ -x "$pg_bin/initdb" ] || { echo "cluster-local.sh: no PostgreSQL (apt-get install postgresql)" >&2; exit 1; }
    pg_port="${PG_PORT:-54329}"
    # initdb refuses root: as root, PostgreSQL runs as the postgres user, which owns its dir.
    if [ "$(id -u)" = 0 ]; then
        as_pg=(runuser -u postgres --)
        chmod 755 "$dir"
        mkdir "$dir/pg" && chown postgres "$dir/pg"
    fi
    "${as_pg[@]}" "$pg_bin/initdb" -D "$dir/pg" -U postgres --auth=trust >"$dir/initdb.log" 2>&1
    pg_up=true
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$dir/pg" -l "$dir/pg/log" -w \
        -o "-p $pg_port -k $dir/pg -c listen_addresses=127.0.0.1" start >/dev/null
    export RECEIPT_SERVER_PG="host=127.0.0.1 port=$pg_port user=postgres dbname=postgres"
    store=(--backend postgres)
fi
"$bin" serve --node-id 1 --role sequencer --nats "$nats" --addr 127.0.0.1:7878 "${store[@]}" "$@" &
pids+=($!)
if $postgres; then
    # The sequencer holds the lock before the standby asks (it waits one lease before it listens).
    sleep 1
    "$bin" serve --node-id 4 --role standby --nats "$nats" --addr 127.0.0.1:7881 --backend postgres "$@" &
    pids+=($!)
fi
for n in 2 3; do
    "$bin" serve --node-id "$n" --role gateway --nats "$nats" --addr "127.0.0.1:$((7877 + n))" --in-memory "$@" &
    pids+=($!)
done
extra=""
$postgres && extra=", PostgreSQL 127.0.0.1:$pg_port, standby node 4 (:7881 once it leads)"
echo "cluster up: sequencer 127.0.0.1:7878, gateways 127.0.0.1:7879 and :7880, NATS $nats$extra; secret \$RECEIPT_SERVER_SECRET. Ctrl-C stops."
if $postgres; then
    # A sequencer that dies is replaced by the standby: only nats-server ending stops the rest.
    wait "${pids[0]}" || true
    echo "cluster-local.sh: nats-server exited; stopping the others" >&2
else
    wait -n "${pids[@]}" || true
    echo "cluster-local.sh: a process exited; stopping the others" >&2
fi
