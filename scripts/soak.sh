#!/usr/bin/env bash
# Soak run (not part of CI): a control plane, a proxy in control-plane mode
# and an upstream on loopback; RATE req/s through the proxy for MINUTES with
# a policy change through the control plane every second; RSS, open fds and
# p99 sampled every 10 s into a CSV; prints whether they stayed flat and
# exits non-zero when not. See docs/reliability.md.
#
# Usage: scripts/soak.sh [MINUTES] [CSV]
#   MINUTES  default 30
#   CSV      default soak-<date>.csv
# Environment:
#   SOAK_PROFILE  cargo profile to build and run (default: release; the
#                 short validation run used debug)
#   SOAK_RATE     requests per second (default 2000)
#   SOAK_CONNECTIONS, SOAK_SAMPLE_SECS, SOAK_POLICY_EVERY_MS: see levee-soak --help
set -euo pipefail

minutes="${1:-30}"
csv="${2:-soak-$(date -u +%Y%m%dT%H%M%SZ).csv}"
profile="${SOAK_PROFILE:-release}"
[ "$profile" = "debug" ] && profile=dev
root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"

if [ "$profile" = "release" ]; then
  cargo build --manifest-path "$root/Cargo.toml" --workspace --bins --release
  bin="$target/release"
else
  cargo build --manifest-path "$root/Cargo.toml" --workspace --bins --profile "$profile"
  if [ "$profile" = "dev" ] || [ "$profile" = "debug" ]; then bin="$target/debug"; else bin="$target/$profile"; fi
fi

# The proxy and the control plane log at warn: 2,000 req/s of debug logs
# would measure the log file, not the proxy.
export RUST_LOG="${RUST_LOG:-warn}"
exec "$bin/levee-soak" \
  --minutes "$minutes" \
  --rate "${SOAK_RATE:-2000}" \
  --connections "${SOAK_CONNECTIONS:-32}" \
  --sample-secs "${SOAK_SAMPLE_SECS:-10}" \
  --policy-every-ms "${SOAK_POLICY_EVERY_MS:-1000}" \
  --csv "$csv"
