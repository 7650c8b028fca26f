#!/usr/bin/env bash
# One GPU-host session in one call, at most BUDGET seconds (560): restores Node.js and the staged
# CUDA build (.gpu/, from `bash ../shared/gpu/stage.sh` after a KILN_CUDA=ON KILN_CUDA_ARCHS=90
# KILN_GLOO=0 build here), records nvidia-smi, runs `npm run test:cuda`, fused attention against
# PyTorch's SDPA (bench/sdpa/run.sh: errors and speed), the GPT-2 benchmark (bench/gpt2/run.sh
# --device cuda --profile 3: GPU ms per step by kernel family for each side; kiln's fused attention
# only if test/cuda/attention.test.ts passed), then kiln alone replaying a captured CUDA graph, and
# prints a short summary last. Every phase has its own timeout (seconds: TEST_TIMEOUT 100;
# SDPA_TIMEOUT 60; run.sh's KILN_TIMEOUT 140, TORCH_TIMEOUT 60, COMPILE_TIMEOUT 120; GRAPH_TIMEOUT
# 90), so one that hangs costs its limit and the rest still run, each cut to fit BUDGET. Everything
# goes under $OUT (./gpu-session without it), eight files (the most the device returns):
# session.log (nvidia-smi and every summary too), test-cuda.log, sdpa/sdpa.{md,json},
# gpt2/gpt2.{json,md,log}, graph.log. Options after the script's name go to bench/gpt2.
#   bash scripts/gpu-session.sh [--steps 20]
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-$PWD/gpu-session}"
mkdir -p "$OUT"
exec > >(tee "$OUT/session.log") 2>&1
start=$SECONDS
stamp() { echo "== [$((SECONDS - start)) s] $*"; }
# The whole session stays within BUDGET seconds (the device call's limit is 600): each phase's
# timeout is cut to what is left, keeping `reserve` seconds for what comes after it.
budget="${BUDGET:-560}"
limit() { # wanted seconds, reserve -> at most what is left after the reserve (at least 1)
  local l=$((budget - (SECONDS - start) - $2))
  [ "$l" -lt 1 ] && l=1
  [ "$1" -lt "$l" ] && echo "$1" || echo "$l"
}

stamp boot
# shellcheck disable=SC1091
source .gpu/boot.sh || { echo "gpu-session: .gpu/boot.sh failed (stage with ../shared/gpu/stage.sh first)"; exit 1; }
timeout 20 nvidia-smi 2>&1 | head -20
node -e 'const k = require("./dist/index.js"); console.log("kiln:", JSON.stringify(k.buildInfo()), "GPUs:", k.cuda.deviceCount())'
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'

test_limit=$(limit "${TEST_TIMEOUT:-100}" 300)
stamp "npm run test:cuda (timeout ${test_limit}s)"
timeout --kill-after=5 "$test_limit" npm run test:cuda > "$OUT/test-cuda.log" 2>&1
test_rc=$?
tail -25 "$OUT/test-cuda.log"
# The bench takes the fused attention only where its test passed against the CPU twin.
flash=0
grep -Eq '^ok [0-9]+ - test/cuda/attention.test.ts' "$OUT/test-cuda.log" && flash=1

# Fused attention against PyTorch's SDPA: errors against a float64 reference, and speed.
sdpa_limit=$(limit "${SDPA_TIMEOUT:-60}" 250)
stamp "bench/sdpa/run.sh (timeout ${sdpa_limit}s)"
timeout --kill-after=5 "$sdpa_limit" bash bench/sdpa/run.sh
sdpa_rc=$?

stamp "bench/gpt2/run.sh --device cuda --profile 3 --flash $flash $*"
KILN_TIMEOUT="${KILN_TIMEOUT:-140}" TORCH_TIMEOUT="${TORCH_TIMEOUT:-60}" COMPILE_TIMEOUT="${COMPILE_TIMEOUT:-120}" \
  RUN_BUDGET="$(limit 100000 70)" bash bench/gpt2/run.sh --device cuda --profile 3 --flash "$flash" "$@"
bench_rc=$?

# kiln again with the timed steps replayed from one captured CUDA graph (kiln only; 3 check steps).
graph_limit=$(limit "${GRAPH_TIMEOUT:-90}" 10)
stamp "kiln with a CUDA graph (timeout ${graph_limit}s)"
graph_work="$(mktemp -d)"
timeout --kill-after=5 "$graph_limit" node bench/gpt2/kiln.mjs --device cuda --graph 1 --flash "$flash" \
  --check 3 --warmup 2 --work "$graph_work" "$@" > "$OUT/graph.log" 2>&1
graph_rc=$?
tail -3 "$OUT/graph.log"
node -e 'const r = require(process.argv[1]); console.log(`kiln CUDA graph: ${r.ms_per_step.toFixed(1)} ms/step, host ${r.host_ms_per_step.toFixed(1)} ms/step, capture ${r.graph_capture_ms.toFixed(0)} ms, peak ${(r.peak_memory_bytes / 2 ** 30).toFixed(2)} GiB`)' \
  "$graph_work/kiln.json" 2>/dev/null
rm -rf "$graph_work"

stamp summary
case "$test_rc" in
  0) echo "test:cuda: passed" ;;
  124|137) echo "test:cuda: TIMED OUT after ${test_limit}s (see test-cuda.log)" ;;
  *) echo "test:cuda: FAILED, exit $test_rc (see test-cuda.log)" ;;
esac
echo "fused attention in the bench: $([ "$flash" = 1 ] && echo on || echo 'OFF (test/cuda/attention.test.ts did not pass)')"
echo "bench/sdpa: exit $sdpa_rc; bench/gpt2: exit $bench_rc; kiln with a CUDA graph: exit $graph_rc"
[ -f "$OUT/sdpa/sdpa.md" ] && cat "$OUT/sdpa/sdpa.md"
[ -f "$OUT/gpt2/gpt2.md" ] && cat "$OUT/gpt2/gpt2.md"
