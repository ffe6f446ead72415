#!/usr/bin/env bash
# Installs what building and testing Equipoise needs on Debian, when missing.
# protoc is vendored and SQLite is compiled in, so the embedded default needs
# only a C compiler. The tests also start their own redis-server and
# PostgreSQL (initdb, pg_ctl), and run PostgreSQL as the postgres user.
set -euo pipefail

missing=()
command -v cargo >/dev/null 2>&1 || { echo "cargo is missing: install the Rust toolchain (rustup) first" >&2; exit 1; }
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v runuser >/dev/null 2>&1 || missing+=(util-linux)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
  exit 1
fi
echo "installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
