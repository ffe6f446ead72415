#!/usr/bin/env bash
# The layering promise of docs/architecture.md, made mechanical:
# - gRPC types (tonic and the generated proto code) appear in a service or
#   shared crate only in its gRPC layer and server assembly;
# - the trial-definition crate links no storage, locks or gRPC, so every
#   service can depend on it.
# The binary (services/bin) assembles everything and is exempt.
set -euo pipefail
cd "$(dirname "$0")/.."

grpc_names='\b(tonic|tonic_types|tonic_health|tonic_reflection|equipoise_proto|prost_types)::'
# Paths inside a crate's src/ where gRPC types belong.
allowed='^src/(grpc/|server\.rs$|serve\.rs$|auth/layer\.rs$)'

failures=0
for crate in services/*/ services/shared/*/; do
  crate=${crate%/}
  case "$crate" in services/bin | services/shared) continue ;; esac
  [ -d "$crate/src" ] || continue
  while IFS= read -r hit; do
    file=${hit%%:*}
    relative=${file#"$crate/"}
    if ! [[ $relative =~ $allowed ]]; then
      echo "layering: $hit" >&2
      failures=$((failures + 1))
    fi
  done < <(grep -rnE --include='*.rs' "$grpc_names|^use (tonic|equipoise_proto|prost_types)\b" "$crate/src" || true)
done

# The definition crate must not pull in storage, locks or gRPC, even indirectly.
forbidden_deps='^(tonic|sqlx|redis|equipoise-proto|equipoise-common) '
if cargo tree --quiet -p equipoise-trial -e normal --prefix none --format '{p}' |
  grep -E "$forbidden_deps" >&2; then
  echo "layering: equipoise-trial depends on the crates listed above" >&2
  failures=$((failures + 1))
fi

if [ "$failures" -gt 0 ]; then
  echo "layering: $failures violation(s); gRPC types belong in src/grpc/ and src/server.rs" >&2
  exit 1
fi
echo "layering: ok"
