#!/usr/bin/env bash
# kiln.flashAttention against PyTorch's scaled_dot_product_attention on a GPU, in one invocation
# (after `npm run build` with CUDA): bench/sdpa/kiln.mjs writes the cases' inputs and kiln's results,
# bench/sdpa/torch_sdpa.py compares both sides with a float64 reference and times them. The table and
# sdpa.json go to $OUT/sdpa when OUT is set (the GPU host), else bench/results/sdpa.
# --cpu-check: tiny float32 cases on the CPU, to check the scripts without a GPU.
#   bash bench/sdpa/run.sh [--reps 20] [--cpu-check]
set -uo pipefail
cd "$(dirname "$0")/../.."
reps=20
kiln_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) reps="$2"; shift 2 ;;
    --cpu-check) kiln_args=(--device cpu --small); shift ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
out="${OUT:+$OUT/sdpa}"
out="${out:-bench/results/sdpa}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
node bench/sdpa/kiln.mjs --work "$work" --reps "$reps" "${kiln_args[@]}" || exit 1
"${PYTHON:-python3}" bench/sdpa/torch_sdpa.py --work "$work" --reps "$reps" | tee "$out/sdpa.md"
rc=${PIPESTATUS[0]}
cp "$work/sdpa.json" "$out/sdpa.json" 2>/dev/null
exit "$rc"
