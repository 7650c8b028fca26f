#!/bin/bash
# CI check that the CUDA backend compiles and links (against ../shared/cuda-sdk's headers and
# link-time stubs when the real libraries are absent) and that every kiln symbol it needs is
# defined. Builds in a scratch copy so the CPU build in build/ stays as it is. Nothing is run.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SDK="$ROOT/../shared/cuda-sdk"
[ -f "$SDK/env.sh" ] && source "$SDK/env.sh"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
(cd "$ROOT" && git ls-files -z | xargs -0 -I{} cp --parents {} "$WORK")
ln -s "$ROOT/node_modules" "$WORK/node_modules"
(cd "$WORK" && KILN_CUDA=ON KILN_CUDA_ARCHS="${KILN_CUDA_ARCHS:-90}" node scripts/build-native.js >"$WORK/cuda-build.log" 2>&1) || {
  grep -E "error|Error" "$WORK/cuda-build.log" | head -30
  exit 1
}
missing=$(nm -D --undefined-only "$WORK/build/Release/kiln.node" | grep -c 'kiln' || true)
if [ "$missing" != "0" ]; then
  echo "check-cuda-build: undefined kiln symbols in the CUDA build:"
  nm -D --undefined-only "$WORK/build/Release/kiln.node" | grep kiln | c++filt
  exit 1
fi
echo "check-cuda-build: $(tail -1 "$WORK/cuda-build.log" | sed 's/^kiln: //')"
