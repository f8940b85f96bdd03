#!/bin/sh
# Convergence benchmark against a separately started release control plane,
# so that its own RSS can be read (docs/control-plane.md, "Benchmark").
#
#   cargo build --release -p levee-control-plane --bins --example convergence
#   control-plane/examples/convergence.sh STREAMS [ROUNDS]
#
# Starts target/release/levee-control-plane on 127.0.0.1 port 0 with a fresh
# data directory, runs target/release/examples/convergence with STREAMS
# simulated proxies against it, then stops it.
set -eu
streams=${1:?usage: convergence.sh STREAMS [ROUNDS]}
rounds=${2:-100}
bin=${CARGO_TARGET_DIR:-$(dirname "$0")/../../target}/release
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
"$bin/levee-control-plane" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
    --data-dir "$dir/data" --addr-file "$dir/addrs.json" \
    --max-watch-streams-per-peer 0 >"$dir/log" 2>&1 &
pid=$!
tries=0
until [ -s "$dir/addrs.json" ]; do
    tries=$((tries + 1))
    [ "$tries" -le 100 ] || { cat "$dir/log"; exit 1; }
    sleep 0.1
done
grpc=$(sed 's/.*"grpc":"\([^"]*\)".*/\1/' "$dir/addrs.json")
LEVEE_SERVER="http://$grpc" LEVEE_SERVER_PID=$pid \
    "$bin/examples/convergence" "$streams" "$rounds"
