#!/usr/bin/env bash
# What a scrub pass over 1 GiB costs (PERFORMANCE.md, "Scrub"): a release node is given 16
# objects of 64 MiB, then restarted with the scrub unpaced and a pass 20 s after start; its
# CPU is read from /proc around that pass, beside `b3sum --num-threads 1` over the same
# files, cold (after drop_caches, when allowed) and warm. Loopback only; stops by itself.
#
#   cargo build --release -p node && scripts/scrub-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/macronode}
WORK=$(mktemp -d /tmp/macronode-scrub-cost.XXXXXX)
D=$WORK/data
HTTP=127.0.0.1:28080
trap 'kill $P 2>/dev/null || true; rm -rf "$WORK"' EXIT

start() {
  "$BIN" run --data-dir "$D" --listen 127.0.0.1:24433 --http "$HTTP" --open-writes "$@" \
    > "$WORK/node.log" 2>&1 &
  P=$!
  for _ in $(seq 1 100); do curl -sf "http://$HTTP/healthz" > /dev/null && return; sleep 0.1; done
  echo "the node did not start"; exit 1
}
cpu() { awk '{print $14 + $15}' "/proc/$P/stat"; }

start --scrub-bytes-per-sec 0
for _ in $(seq 1 16); do
  head -c $((64 << 20)) /dev/urandom > "$WORK/obj"
  curl -sf -T "$WORK/obj" "http://$HTTP/o" > /dev/null
done
rm "$WORK/obj"
kill $P; wait $P || true

start --scrub-bytes-per-sec 2147483648 --scrub-every-secs 20
sleep 17
c0=$(cpu)
until grep -q "scrub pass done" "$WORK/node.log"; do sleep 0.05; done
c1=$(cpu)
grep -E "node started|scrub pass done" "$WORK/node.log" | cut -c1-40
echo "scrub pass: $(( c1 - c0 )) CPU ticks (1/100 s) for 1 GiB (the pass began 20 s after the start above)"
kill $P; wait $P || true

sync; echo 3 > /proc/sys/vm/drop_caches 2> /dev/null || echo "(no drop_caches: the cold run is warm)"
/usr/bin/time -f "b3sum, one thread, cold: %U user %S sys %e wall" \
  b3sum --num-threads 1 "$D"/objects/*/* 2>&1 > /dev/null | tail -1
/usr/bin/time -f "b3sum, one thread, warm: %U user %S sys %e wall" \
  b3sum --num-threads 1 "$D"/objects/*/* 2>&1 > /dev/null | tail -1
