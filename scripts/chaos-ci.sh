#!/usr/bin/env bash
# The chaos tier of CI: the short version of every chaos scenario (RELIABILITY.md), one
# seed for the whole run (printed; CHAOS_SEED=N replays it), each scenario printing one
# line of figures. Exits non-zero if any goal is missed or a scenario errors.
#
# Runs as root on a fresh clone: installs what it needs where missing (iproute2 for the
# network namespaces, iptables for the netns loss rule, gzip for the gzip bombs of the
# content-encoding scenario, curl/b3sum like the other tests),
# builds the runner and the node in release mode with --locked, then runs them. Budget: the
# whole tier in <= 20 minutes on a 2-core CI machine (RELIABILITY.md has the measured time).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
start=$(date +%s)
step() { echo "== $* (t+$(( $(date +%s) - start ))s)"; }

step "tools"
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v gzip >/dev/null 2>&1 || need+=(gzip)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ "$(id -u)" != 0 ]; then
  echo "warning: not root: the partition scenario runs through the UDP proxy instead of" \
       "network namespaces" >&2
fi

# CHAOS_PROFILE=dev reuses the debug build the test step made (quicker to build, slower to
# run, and its figures are not the ones RELIABILITY.md publishes).
profile=${CHAOS_PROFILE:-release}
target=${CARGO_TARGET_DIR:-target}
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
step "build ($profile, --locked)"
# One invocation, so the node is built once, with the features both packages unify to
# (two builds compiled it twice: 6 min, then 1 min 47 s more).
cargo build --profile "$profile" --locked -p node -p testing --bin macronode --bin chaos

seed=${CHAOS_SEED:-$(date +%s)}
step "chaos all (short), seed $seed"
MACRONODE_BIN="$target/$dir/macronode" "$target/$dir/chaos" all --seed "$seed"
step "done"
