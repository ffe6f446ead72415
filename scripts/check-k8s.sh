#!/usr/bin/env bash
# `make k8s-check`: the Kubernetes manifests, offline, without a cluster.
#   1. Render every overlay under k8s/overlays with `kubectl kustomize`.
#   2. Validate each rendered document against the Kubernetes schemas of a
#      pinned release with `kubernetes-validate --strict` (unknown fields are
#      errors). A kind it has no schema for is a failure here too, not the
#      tool's mere warning.
#   3. Run k8s/tests: the NetworkPolicy edge test (allowed calls between
#      services equal DESIGN §2's list plus the one documented addition;
#      default deny; outside callers) and the workload checklist (security
#      context, resources, probes, settings), with its self-checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes release the manifests must be valid for.
KUBERNETES_VERSION=1.32.0

if ! command -v kubectl >/dev/null 2>&1; then
  echo "kubectl is missing: make k8s-check renders the overlays with 'kubectl kustomize'." >&2
  echo "Install kubectl (e.g. the kubectl package from the Kubernetes apt repository) and retry." >&2
  exit 1
fi
scripts/ensure-k8s-tools.sh
venv=target/k8s-tools/venv

out=target/k8s-check
rm -rf "$out"
mkdir -p "$out"
status=0
for dir in k8s/overlays/*/; do
  overlay=$(basename "$dir")
  rendered="$out/$overlay.yaml"
  if ! kubectl kustomize "$dir" >"$rendered"; then
    echo "k8s-check: kubectl kustomize $dir failed" >&2
    status=1
    continue
  fi
  report=$("$venv/bin/kubernetes-validate" --strict -k "$KUBERNETES_VERSION" --quiet "$rendered" 2>&1) || {
    echo "$report" >&2
    echo "k8s-check: $overlay does not validate against Kubernetes $KUBERNETES_VERSION" >&2
    status=1
    continue
  }
  if [ -n "$report" ]; then
    # --quiet prints only warnings and failures: a WARN is a document
    # without a schema (a CRD, a misspelt kind or apiVersion).
    echo "$report" >&2
    echo "k8s-check: $overlay has documents kubernetes-validate could not check" >&2
    status=1
    continue
  fi
  echo "k8s-check: $overlay: $(grep -c '^kind:' "$rendered") documents valid for Kubernetes $KUBERNETES_VERSION (strict)"
done
if [ "$status" -ne 0 ]; then
  exit "$status"
fi

K8S_RENDERED_DIR="$out" "$venv/bin/python" -B -m unittest discover -s k8s/tests -p 'test_*.py'
