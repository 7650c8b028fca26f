#!/usr/bin/env bash
# GPT-2 124M training, kiln against PyTorch eager and torch.compile, in one invocation (after
# `npm run build`): bench/gpt2/kiln.mjs builds the model, writes its initial weights and batches and
# trains; bench/gpt2/torch_gpt2.py loads them and trains the same way, eager then compiled;
# bench/gpt2/report.mjs prints ms/step, tokens/s, MFU, peak memory, kiln's ratios and the loss check,
# and writes gpt2.json (with each side's own results), gpt2.md and gpt2.log (everything printed). Each
# side runs under its own timeout, so a hang costs at most that. Results go to $OUT/gpt2 when OUT is
# set (the GPU host, which returns at most 8 files), else bench/results/gpt2.
#   bash bench/gpt2/run.sh [--device cuda] [--steps 20] [--warmup 3] [--batch 16] [--block 1024] [--profile N] [--quick]
# --profile N (CUDA): N more steps per side with the GPU time split by kernel family. --flash 0:
# kiln's CUDA attention unfused (kiln.cuda.setFlashAttention(false)). --graph 1: kiln's timed steps
# replay one captured CUDA graph.
# --quick: a tiny model (2 layers, 64 wide, 2 heads, context 64, vocab 512, batch 4, 5 timed steps)
# to check the script end to end on the CPU. Timeouts (seconds): KILN_TIMEOUT, TORCH_TIMEOUT (eager),
# COMPILE_TIMEOUT, each cut to what is left of RUN_BUDGET when set; PYTHON picks the interpreter
# (default python3).
set -uo pipefail
cd "$(dirname "$0")/../.."
device=cpu
args=()
kiln_args=()
quick=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --steps|--warmup|--check|--batch|--block|--layers|--embd|--heads|--vocab|--threads|--profile) args+=("$1" "$2"); shift 2 ;;
    --flash|--graph) kiln_args+=("$1" "$2"); shift 2 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
# Later options win in both parsers, so --quick's sizes come first and explicit ones override them.
[ "$quick" = 1 ] && args=(--layers 2 --embd 64 --heads 2 --block 64 --vocab 512 --batch 4 --steps 5 --warmup 1 "${args[@]}")
out="${OUT:+$OUT/gpt2}"
out="${out:-bench/results/gpt2}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
rm -f "$out"/gpt2.json "$out"/gpt2.md "$out"/gpt2.log
py="${PYTHON:-python3}"
notes=()
peak=()
case "$device" in cuda*) peak=(--peak-tflops 989) ;; esac

# RUN_BUDGET (seconds, default none): every phase's timeout is cut to what is left of it.
run_end=$((SECONDS + ${RUN_BUDGET:-1000000}))
phase() { # name, timeout, command...: runs it, logs to $out/gpt2.log, notes a failure
  local name="$1" limit="$2"; shift 2
  local left=$((run_end - SECONDS - 5))
  if [ "$left" -lt 10 ]; then notes+=("$name skipped: RUN_BUDGET spent"); return 124; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (timeout ${limit}s): $*"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$out/gpt2.log"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then notes+=("$name timed out after ${limit}s"); elif [ "$rc" != 0 ]; then notes+=("$name failed (exit $rc, see gpt2.log)"); fi
  return "$rc"
}

phase kiln "${KILN_TIMEOUT:-240}" node bench/gpt2/kiln.mjs --device "$device" --work "$work" "${args[@]}" "${kiln_args[@]}" || {
  echo "run.sh: the kiln side failed; nothing to compare against" >&2
  exit 1
}
if ! "$py" -c 'import torch' >/dev/null 2>&1; then
  notes+=("$py cannot import torch: no PyTorch columns")
else
  phase torch_eager "${TORCH_TIMEOUT:-120}" "$py" bench/gpt2/torch_gpt2.py --device "$device" --work "$work" "${args[@]}"
  if "$py" -c 'import torch, sys; sys.exit(0 if hasattr(torch, "compile") else 1)'; then
    phase torch_compile "${COMPILE_TIMEOUT:-240}" "$py" bench/gpt2/torch_gpt2.py --compile --device "$device" --work "$work" "${args[@]}"
  else
    notes+=("PyTorch $("$py" -c 'import torch; print(torch.__version__)') has no torch.compile: no compiled column")
  fi
fi
note_args=()
for n in "${notes[@]}"; do note_args+=(--note "$n"); done
node bench/gpt2/report.mjs --work "$work" --out "$out" "${peak[@]}" "${note_args[@]}"
