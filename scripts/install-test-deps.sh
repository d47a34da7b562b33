#!/usr/bin/env bash
# Installs what the test suite uses beyond the Rust toolchain, only where it is missing:
# Debian packages for the end-to-end tests (curl, b3sum, zstd; promtool from prometheus,
# which checks the node's /metrics; chromium, headless, which renders the status page).
# Safe to run twice.
set -euo pipefail
need=()
for pair in curl:curl b3sum:b3sum zstd:zstd promtool:prometheus chromium:chromium; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
