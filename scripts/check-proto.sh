#!/usr/bin/env bash
# buf lint on every API, and buf breaking against the previous commit's
# proto/, so a change that would break a site's EDC client fails CI.
set -euo pipefail
cd "$(dirname "$0")/../proto"
buf=../target/lint-tools/node_modules/.bin/buf

"$buf" lint
# Uncommitted work is compared with HEAD; a commit with its parent.
if [ -n "$(git status --porcelain -- .)" ]; then
  against=HEAD
else
  against=HEAD~1
fi
if ! git rev-parse --verify --quiet "$against^{commit}" >/dev/null; then
  echo "proto: no $against to compare with (shallow clone?); buf breaking skipped" >&2
  exit 0
fi
"$buf" breaking --against "../.git#ref=$against,subdir=proto"
echo "proto: buf lint and buf breaking against $against: ok"
