#!/usr/bin/env bash
# Installs the tools `make lint` runs, at pinned versions, when missing:
# cargo-deny and cargo-machete from crates.io, buf from the npm registry
# (into target/lint-tools, so nothing is installed system-wide but Node.js).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2
CARGO_MACHETE_VERSION=0.9.2
BUF_VERSION=1.75.0

installed_version() { "$@" --version 2>/dev/null | awk '{print $NF}'; }

if [ "$(installed_version cargo-deny)" != "$CARGO_DENY_VERSION" ]; then
  cargo install --locked --quiet cargo-deny --version "$CARGO_DENY_VERSION"
fi
if [ "$(installed_version cargo-machete)" != "$CARGO_MACHETE_VERSION" ]; then
  cargo install --locked --quiet cargo-machete --version "$CARGO_MACHETE_VERSION"
fi

if ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "npm is missing: install Node.js and npm (needed for buf)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi
buf=target/lint-tools/node_modules/.bin/buf
if [ "$("$buf" --version 2>/dev/null)" != "$BUF_VERSION" ]; then
  mkdir -p target/lint-tools
  npm install --silent --no-save --no-audit --no-fund --prefix target/lint-tools \
    "@bufbuild/buf@$BUF_VERSION"
fi
