#!/usr/bin/env bash
# GPT training throughput on the CPU, kiln against PyTorch on the same model and machine (run after
# `npm run build`): bench/train_gpt.mjs, then bench/train_gpt_torch.py when python3 can import
# torch, then the ratio kiln / PyTorch of their tokens/s. Options (--threads, --steps, --warmup,
# --batch, --block, --layers, --embd, --heads, --vocab) go to both; both write bench/results/.
#   bash bench/train_gpt.sh [--threads 2] [--steps 10]
set -euo pipefail
cd "$(dirname "$0")/.."
node bench/train_gpt.mjs "$@"
if ! python3 -c 'import torch' >/dev/null 2>&1; then
  echo "python3 with torch not found: skipping the PyTorch side (pip install torch to compare)"
  exit 0
fi
python3 bench/train_gpt_torch.py "$@"
node -e '
const r = (f) => require(`./bench/results/train_gpt_${f}.json`);
const k = r("kiln"), p = r("torch");
const same = ["vocab", "block", "layers", "embd", "heads"].every((x) => k.model[x] === p.model[x]) && k.batch === p.batch && k.threads === p.threads;
if (!same) { console.error("kiln and PyTorch ran different settings; no ratio"); process.exit(1); }
console.log(`kiln / PyTorch tokens/s: ${(k.tokens_per_s / p.tokens_per_s).toFixed(2)} (${k.tokens_per_s.toFixed(0)} / ${p.tokens_per_s.toFixed(0)}, ${k.threads} threads)`);
'
