#!/usr/bin/env bash
# Makes the toolchain rust-toolchain.toml pins usable on this machine, without a network.
#
# rustup reads rust-toolchain.toml and refuses to run cargo in this repository until the
# pinned toolchain is installed, and these machines cannot download one. When it is missing
# but the installed stable toolchain is exactly the pinned release (its `rustc -V` says so),
# the pinned name is linked to stable's directory, which is what an install would have put
# there. Otherwise it tries `rustup toolchain install` and, failing that, stops with the
# reason. Safe to run twice; run by .ci/run, scripts/test.sh and benches/gate.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
channel=$(sed -n 's/^channel *= *"\([^"]*\)".*/\1/p' "$root/rust-toolchain.toml")
[ -n "$channel" ] || { echo "pin-toolchain: no channel in rust-toolchain.toml" >&2; exit 1; }
# From outside the repository, so the toolchain file does not pick the toolchain for us.
cd /
host=$(rustc +stable -vV | sed -n 's/^host: //p')
name="$channel-$host"
if rustup toolchain list | awk '{print $1}' | grep -qx "$name"; then
  exit 0
fi
stable_version=$(rustc +stable -V)
case "$stable_version" in
  "rustc $channel "*)
    home="${RUSTUP_HOME:-$HOME/.rustup}"
    stable_dir="$home/toolchains/stable-$host"
    [ -d "$stable_dir" ] || { echo "pin-toolchain: $stable_dir missing" >&2; exit 1; }
    # `rustup toolchain link` refuses official channel names, so link the directory itself.
    ln -s "$stable_dir" "$home/toolchains/$name"
    echo "pin-toolchain: $name -> $stable_dir ($stable_version)"
    ;;
  *)
    echo "pin-toolchain: $name is not installed and stable is '$stable_version'; trying rustup"
    if ! rustup toolchain install "$channel" --profile minimal --component rustfmt,clippy; then
      echo "pin-toolchain: cannot install $channel here. Either install it, or move the pin" \
           "(rust-toolchain.toml) to the installed stable and re-bless the gate" \
           "(PERFORMANCE.md, \"The regression gate\")." >&2
      exit 1
    fi
    ;;
esac
