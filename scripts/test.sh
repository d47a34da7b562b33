#!/usr/bin/env bash
# The project's test command (README, "Run the tests"): installs missing test tools, then
# runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/pin-toolchain.sh
bash scripts/install-test-deps.sh
cargo test --workspace --locked
