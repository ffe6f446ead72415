#!/usr/bin/env bash
# Installs what `make k8s-check` runs, at a pinned version, when missing:
# kubernetes-validate from PyPI (it bundles the Kubernetes JSON schemas, so
# validation works offline) into a virtualenv under target/k8s-tools, so
# nothing is installed system-wide but Python's venv module. PyYAML, which
# the NetworkPolicy edge test uses, comes with it.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE_VERSION=1.37.0
venv=target/k8s-tools/venv

if [ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null)" = "$KUBERNETES_VALIDATE_VERSION" ]; then
  exit 0
fi
if ! command -v python3 >/dev/null 2>&1; then
  echo "python3 is missing: install Python 3.11 or newer (needed for kubernetes-validate)" >&2
  exit 1
fi
rm -rf "$venv"
mkdir -p target/k8s-tools
if ! python3 -m venv "$venv" 2>/dev/null; then
  # Debian's python3 keeps venv (and ensurepip) in a separate package.
  if [ "$(id -u)" -ne 0 ]; then
    echo "python3 cannot create a virtualenv: install python3-venv" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  rm -rf "$venv"
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
