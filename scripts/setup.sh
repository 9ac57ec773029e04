#!/usr/bin/env bash
# The one setup step of `make run`, `make test` and `.ci/run`: checks what churnstream needs besides
# a Rust toolchain and installs what is missing. Idempotent; well under a second when all is there.
#
#   scripts/setup.sh           install what is missing: Debian packages with apt-get when run as
#                              root, otherwise print the `sudo apt-get install -y …` line and exit 1;
#                              rustup components with rustup
#   scripts/setup.sh --check   only report what is missing (exit 1 if anything is); installs nothing
#
# What it checks (and installs):
#   build-essential  C toolchain for the bundled librdkafka (never Debian's librdkafka 2.0.2, which
#                    fails tansu's ApiVersion handshake) and the broker's native dependencies
#   pkg-config       librdkafka's build (rdkafka-sys, feature libz) looks zlib up with it
#   zlib1g-dev       zlib headers and library for librdkafka
#   libssl-dev       OpenSSL for librdkafka's TLS and SASL/SCRAM (rdkafka feature `ssl`)
#   openssl, socat   tests/secure.rs: a self-signed certificate, and TLS in front of tansu (tansu
#                    0.6.0's CLI cannot enable its own TLS listener)
#   perl             build scripts of native dependencies (librdkafka's configure, the broker's)
#   python3          scripts/broker.sh picks a free port with it
#   curl             HTTP checks of /metrics
#   prometheus       /usr/bin/prometheus and promtool: tests/prometheus.rs scrapes the pipeline and
#                    checks deploy/prometheus/rules.yml with promtool
#   rustfmt, clippy  rustup components for `make lint` (cargo fmt --check, cargo clippy)
# Library packages are detected with `dpkg -s`; the others by their commands on PATH.
set -euo pipefail

check_only=0
case "${1:-}" in
  --check | -n | --dry-run) check_only=1 ;;
  "") ;;
  *) sed -n '2,9p' "$0"; exit 2 ;;
esac

say() { printf '[setup] %s\n' "$*"; }

# package:how — "dpkg" (a library or meta package) or "cmd=a,b" (commands it puts on PATH).
PACKAGES=(
  "build-essential:dpkg"
  "pkg-config:cmd=pkg-config"
  "zlib1g-dev:dpkg"
  "libssl-dev:dpkg"
  "openssl:cmd=openssl"
  "socat:cmd=socat"
  "perl:cmd=perl"
  "python3:cmd=python3"
  "curl:cmd=curl"
  "prometheus:cmd=prometheus,promtool"
)

present() {
  local how=$1 pkg=$2 c
  case "$how" in
    dpkg) dpkg -s "$pkg" >/dev/null 2>&1 ;;
    cmd=*)
      IFS=, read -ra cmds <<<"${how#cmd=}"
      for c in "${cmds[@]}"; do command -v "$c" >/dev/null 2>&1 || return 1; done
      ;;
  esac
}

missing_packages() {
  local spec
  for spec in "${PACKAGES[@]}"; do
    present "${spec#*:}" "${spec%%:*}" || echo "${spec%%:*}"
  done
}

missing_components() {
  local c
  if command -v rustup >/dev/null 2>&1; then
    local installed
    installed=$(rustup component list --installed 2>/dev/null || true)
    for c in rustfmt clippy; do grep -q "^$c" <<<"$installed" || echo "$c"; done
  else
    cargo fmt --version >/dev/null 2>&1 || echo rustfmt
    cargo clippy --version >/dev/null 2>&1 || echo clippy
  fi
}

if ! command -v cargo >/dev/null 2>&1; then
  say "cargo is not on PATH: install a Rust toolchain first (https://rustup.rs), then retry"
  exit 1
fi

mapfile -t need < <(missing_packages)
mapfile -t comps < <(missing_components)

if [ "$check_only" = 1 ]; then
  if [ ${#need[@]} -eq 0 ] && [ ${#comps[@]} -eq 0 ]; then
    say "nothing missing"
    exit 0
  fi
  [ ${#need[@]} -eq 0 ] || say "missing Debian packages: ${need[*]}; would run: apt-get install -y ${need[*]}"
  [ ${#comps[@]} -eq 0 ] || say "missing rustup components: ${comps[*]}; would run: rustup component add ${comps[*]}"
  exit 1
fi

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    say "missing Debian packages: ${need[*]}"
    say "install them once (as root), then retry:"
    printf '\n    sudo apt-get install -y %s\n\n' "${need[*]}"
    say "(if apt cannot find them, run \`sudo apt-get update\` first)"
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    say "missing: ${need[*]} (Debian package names); no apt-get here: install their equivalents"
    exit 1
  fi
  say "installing Debian packages: ${need[*]} (apt-get, about a minute)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  mapfile -t still < <(missing_packages)
  if [ ${#still[@]} -gt 0 ]; then
    say "still missing after apt-get install: ${still[*]} (installed but not on PATH=$PATH?)"
    exit 1
  fi
fi

if [ ${#comps[@]} -gt 0 ]; then
  if ! command -v rustup >/dev/null 2>&1; then
    say "missing Rust components: ${comps[*]}; this toolchain has no rustup: install them with it"
    exit 1
  fi
  say "installing rustup components: ${comps[*]}"
  rustup component add "${comps[@]}"
fi
[ ${#need[@]} -gt 0 ] || [ ${#comps[@]} -gt 0 ] ||
  say "all present: ${PACKAGES[*]%%:*} rustfmt clippy"
