#!/usr/bin/env bash
# Run HERE (with network), once, before the device run: puts what the lent GPU machine lacks into
# two folders (.gitignore) the device call carries (about 6 MiB together, limit 64 MiB):
#   .whl/        wheels of the pure-Python packages its image does not have (trl imports datasets,
#                which needs dill and multiprocess); versions are resd's pins
#   .gpu_check/  the default model's config and tokenizer (SmolLM2-135M-Instruct), no weights: the
#                check builds a random-weight model of that shape there
# Then, with the device tool:  run(command="bash benchmarks/gpu_check/run.sh", carry=[".whl", ".gpu_check"])
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
mkdir -p .whl .gpu_check
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
  trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
"$PY" - <<'PY'
from pathlib import Path
from resd.models import DEFAULT_MODEL, load
model, tokenizer = load(DEFAULT_MODEL, dtype="float32", device="cpu")
out = Path(".gpu_check")
model.config.save_pretrained(out)
tokenizer.save_pretrained(out)
print("wrote", sorted(p.name for p in out.iterdir()))
PY
du -sh .whl .gpu_check
