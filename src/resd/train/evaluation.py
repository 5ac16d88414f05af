"""Held-out evaluation during training (paper §4.1): mean@k / best@k on the test split at logged
steps, with the base model's (step 0) result shareable between runs of one seed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from resd.eval.evaluate import evaluate
from resd.eval.metrics import METRIC_KEYS
from resd.files import write_json_atomic
from resd.train.config import RESDConfig


BASE_EVAL_KEYS = ("model", "dtype", "mixed_precision", "lora", "env", "env_options", "seed", "eval_k", "eval_limit",
                  "eval_max_new_tokens", "max_completion_length", "max_prompt_length", "temperature", "top_p",
                  "generation_batch_size", "generation")
"""Everything the step-0 evaluation depends on: the initial weights (model, dtype and mixed precision, LoRA: a fresh
adapter is a no-op but changes the module), the test tasks and the sampling (seed, batching, the
generation engine)."""


def base_eval_identity(cfg: RESDConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    return {k: d.get(k) for k in BASE_EVAL_KEYS}


def read_base_eval(path: str | None, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The cached step-0 result when `path` holds one made with the same identity, else None."""
    if not path or not Path(path).exists():
        return None
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None  # unreadable cache: evaluate again and overwrite it
    if not isinstance(saved, dict) or saved.get("identity") != json.loads(json.dumps(identity)):
        return None
    result = saved.get("result")
    return result if isinstance(result, dict) and all(k in result for k in METRIC_KEYS) else None


def write_base_eval(path: str, identity: dict[str, Any], result: dict[str, Any]) -> None:
    keep = {k: result[k] for k in (*METRIC_KEYS, "k", "n_tasks") if k in result}
    write_json_atomic(Path(path), {"identity": identity, "result": keep})


def evaluate_at(cfg: RESDConfig, step: int, model: Any, tokenizer: Any, env: Any, engine: Any = None) -> dict[str, Any]:
    """The four test metrics (fractions), `k` and `n_tasks` of the model at `step`; at step 0 the
    shared base-model result is used (and written) when `cfg.base_eval_cache` names one."""
    identity = base_eval_identity(cfg)
    result = read_base_eval(cfg.base_eval_cache, identity) if step == 0 else None
    if result is None:
        result = evaluate(model, tokenizer, env, k=cfg.eval_k, limit=cfg.eval_limit,
                          batch_size=cfg.generation_batch_size,
                          max_new_tokens=cfg.eval_max_new_tokens or cfg.max_completion_length,
                          temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed, engine=engine)
        if step == 0 and cfg.base_eval_cache:
            write_base_eval(cfg.base_eval_cache, identity, result)
    return result
