#!/usr/bin/env bash
# Installs what benches/gate needs beyond the Rust toolchain, only where it is missing:
# valgrind (Debian package) and gungraun-runner at exactly the version benches/Cargo.toml pins
# for the gungraun library (the two must match). Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null 2>&1; then
  echo "installing: valgrind"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi
version=$(sed -n 's/^gungraun *= *"=\([0-9.]*\)".*/\1/p' benches/Cargo.toml)
[ -n "$version" ] || { echo "benches/Cargo.toml does not pin gungraun exactly" >&2; exit 1; }
runner=$(command -v gungraun-runner || echo "$HOME/.cargo/bin/gungraun-runner")
if [ "$("$runner" --version 2>/dev/null | awk '{print $NF}')" != "$version" ]; then
  echo "installing: gungraun-runner $version"
  cargo install gungraun-runner --version "$version" --locked --force --quiet
fi
