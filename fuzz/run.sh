#!/usr/bin/env bash
# Builds the fuzz targets (stable Rust, no cargo-fuzz needed) and runs each
# for a time budget, then prints one line per target.
#
#   fuzz/run.sh [seconds-per-target] [target...]     (default: 60 s, every target)
#   fuzz/run.sh --build                               (build only)
#
# Inputs that grow coverage go to fuzz/work/corpus/<target> (ignored by git);
# the committed seeds in fuzz/corpus/<target> are only read. Crashes land in
# fuzz/artifacts/<target>/; replay one with
#   fuzz/target/<host>/debug/<target> fuzz/artifacts/<target>/crash-...
# (the http1_* targets inside `unshare -n`, see below).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
all=(policy_yaml policy_proto discovery_proto trace_context grpc_timeout retry_after authority http1_outbound http1_inbound)

build_only=false
secs=60
if [[ ${1:-} == --build ]]; then
    build_only=true
    shift
elif [[ ${1:-} =~ ^[0-9]+$ ]]; then
    secs=$1
    shift
fi
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${all[@]}")

host=$(rustc -vV | sed -n 's/^host: //p')
# What `cargo fuzz build --sanitizer none` passes, on stable: sanitizer
# coverage through LLVM passes (stable -C flags), `cfg(fuzzing)`, debug
# assertions and overflow checks. `--target` keeps these flags off build
# scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing -Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR="$here/target" CARGO_INCREMENTAL=0
cargo build --manifest-path "$here/Cargo.toml" --target "$host" --bins
$build_only && exit 0

bin="$here/target/$host/debug"
summary=()
status=0
for t in "${targets[@]}"; do
    corpus="$here/work/corpus/$t" artifacts="$here/artifacts/$t/" log="$here/work/logs/$t.log"
    mkdir -p "$corpus" "$artifacts" "$here/work/logs" "$here/corpus/$t"
    args=(-max_total_time="$secs" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1
        -artifact_prefix="$artifacts")
    case $t in
        policy_yaml | http1_*) args+=(-max_len=8192) ;;
        policy_proto | discovery_proto) args+=(-max_len=4096) ;;
    esac
    run=("$bin/$t" "${args[@]}" "$corpus" "$here/corpus/$t")
    if [[ $t == http1_* ]]; then
        # These forward to whatever host an input names: give them a network
        # namespace whose only interface is loopback (they refuse to run
        # anywhere else).
        run=(unshare -n sh -c 'ip link set lo up && exec "$@"' sh "${run[@]}")
    fi
    echo "== $t: ${secs}s" >&2
    rc=0
    "${run[@]}" >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    crashes=$(find "$artifacts" -type f | wc -l)
    summary+=("$(printf '%-16s %6ss %12s execs  exit %-3s  artifacts %s  corpus %s' \
        "$t" "$secs" "${execs:-?}" "$rc" "$crashes" "$(find "$corpus" -type f | wc -l)")")
    [[ $rc -eq 0 && $crashes -eq 0 ]] || status=1
done
printf '%s\n' "${summary[@]}"
exit $status
