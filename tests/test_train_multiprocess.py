"""Several processes on a CPU: DDP (`accelerate launch --multi_gpu` / `--cpu --num_processes 2`) and
FSDP2 (`accelerate launch --config_file accelerate/fsdp2.yaml`, run over gloo). The smoke
loop runs, every rank holds the same playbook, one update gives the same loss, weights and EMA
teacher as one process (full fine-tuning and LoRA), and an FSDP2 run resumes exactly after a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]

# One policy update on fixed, hand-made samples (5 of them: with 2 ranks and micro-batches of 2,
# rank 1 runs one real and one zero-weight padding micro-batch), then print loss and weights.
UPDATE_SCRIPT = '''
import json, sys, torch
from resd.train import load_config
from resd.train.build import build_accelerator, build_policy, build_update, seed_everything
from resd.train.ranks import Ranks
from resd.policy.update import UpdateItem

cfg = load_config(sys.argv[1], [f"output_dir={sys.argv[2]}"])
accelerator = build_accelerator(cfg, None)
ranks = Ranks(accelerator)
seed_everything(cfg.seed)
policy = build_policy(cfg, accelerator)
update = build_update(cfg, policy, accelerator, ranks)
tok = policy.tokenizer
gen = torch.Generator().manual_seed(0)
items = []
for i in range(5):
    prompt = tok(f"<|im_start|>user\\nWrite a word with a ({i}).<|im_end|>\\n<|im_start|>assistant\\n")["input_ids"]
    teacher = tok(f"<|im_start|>user\\nWrite a word with a ({i}). Hint: use the letter a.<|im_end|>\\n<|im_start|>assistant\\n")["input_ids"]
    completion = torch.randint(3, len(tok), (3 + 2 * i,), generator=gen).tolist()
    items.append(UpdateItem(prompt, completion, [1.0] * len(completion), weight=[0.5, 1.5, 1.0, 0.8, 1.2][i],
                            teacher_prompt_ids=teacher))
# A teacher that differs from the student, so the loss is not ~0 (whole tensors: the same on
# every rank and for every strategy, sharded or not).
teacher = policy.teacher.state_tensors()
policy.teacher.load_state_tensors({n: t + 0.05 * torch.randn(t.shape, generator=gen) for n, t in sorted(teacher.items())})
out = update.apply(items)
policy.teacher.update(policy.student)
from resd.run.checkpoint import student_tensors
weights = torch.cat([t.flatten() for _, t in sorted(student_tensors(policy.student).items())])
teacher_after = torch.cat([t.flatten() for _, t in sorted(policy.teacher.state_tensors().items())])
# What generation sees after the engine's sync (under FSDP2: this rank's unsharded copy), and the
# whole weights the vLLM push exports (gathered; LoRA merged), on every rank.
from resd.generation.engines import export_weights
from resd.train.build import build_generator
build_generator(cfg, policy).sync(policy.student)
local = torch.cat([p.detach().flatten() for n, p in sorted(policy.local.named_parameters()) if n in
                   dict(policy.student.named_parameters()) and dict(policy.student.named_parameters())[n].requires_grad])
exported = torch.cat([t.flatten() for _, t in sorted(export_weights(policy.student).items())])
if ranks.main:
    print("RESULT " + json.dumps({"loss": out.loss, "tokens": out.loss_tokens, "grad_norm": out.grad_norm,
                                   "strategy": cfg.strategy, "weights": weights[:2000].tolist(),
                                   "teacher": teacher_after[-2000:].tolist(), "local": local[:2000].tolist(),
                                   "export": exported[-3000:].tolist(), "export_size": exported.numel()}), flush=True)
from resd.train.trainer import finish_distributed
finish_distributed()
'''


def _config(tmp_path: Path, **extra) -> Path:
    cfg = {"method": "resd", "env": "toyenv:LetterEnv", "env_options": {"train_size": 8, "test_size": 2},
           "model": "tiny-random", "batch_size": 4, "max_batches": 1,
           "inner_updates": 2, "max_completion_length": 8, "learning_rate": 1e-3, "warmup_steps": 0,
           "micro_batch_size": 2, "progress": False, "max_teacher_prompt_length": 1024, "eval_every": 0,
           "context": {"reflection_max_new_tokens": 8, "curation_max_new_tokens": 8}, **extra}
    path = tmp_path / "mp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _accelerate() -> list[str]:
    exe = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if exe is None:
        pytest.skip("accelerate launcher not installed")
    # On a CPU-only machine `--multi_gpu` is what makes accelerate start 2 processes (via torchrun);
    # `--cpu` alone runs one process unless given an MPI hostfile. The trainer asks accelerate
    # for a CPU (gloo) process group when there is no GPU.
    return [exe, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no"]


@pytest.mark.slow
def test_two_process_smoke_run_keeps_the_playbook_identical(tmp_path, subprocess_env):
    env = subprocess_env
    run = tmp_path / "run"
    proc = subprocess.run([*_accelerate(), "-m", "resd.cli", "train", "--config", str(_config(tmp_path)),
                           "--output-dir", str(run)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert [r["rollouts"] for r in rows] == [4, 8]  # 4 prompts sharded over 2 ranks, gathered
    assert all(r["context/ranks_identical"] == 1.0 for r in rows)
    assert (run / "checkpoints/latest/context.json").exists()


def _fsdp2(port: int = 29541) -> list[str]:
    """accelerate's launcher with the FSDP2 config a GPU cluster would use; on this CPU machine
    resd runs it as FSDP2 over gloo (resd.train.sharding)."""
    return [_accelerate()[0], "launch", "--config_file", str(ROOT / "accelerate/fsdp2.yaml"),
            "--main_process_port", str(port)]


@pytest.mark.slow
@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8}], ids=["full", "lora"])
def test_two_process_update_matches_one_process(tmp_path, subprocess_env, lora):
    """One update (and the EMA step after it) on fixed items: DDP and FSDP2 over 2 CPU processes
    give the one-process loss, gradient norm, weights and teacher within float32 tolerance."""
    env = subprocess_env
    config = _config(tmp_path, **({"lora": lora} if lora else {}))
    script = tmp_path / "update.py"
    script.write_text(UPDATE_SCRIPT)

    def result(cmd: list[str], out: Path) -> dict:
        proc = subprocess.run([*cmd, str(script), str(config), str(out)], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
        return json.loads(line[len("RESULT "):])

    single = result([sys.executable], tmp_path / "one")
    assert single["strategy"] == "single" and single["loss"] > 0
    for cmd, strategy in ((_accelerate(), "ddp"), (_fsdp2(), "fsdp2")):
        double = result(cmd, tmp_path / strategy)
        assert double["strategy"] == strategy
        assert single["tokens"] == double["tokens"] == sum(3 + 2 * i for i in range(5))
        assert double["loss"] == pytest.approx(single["loss"], rel=1e-5), strategy
        assert double["grad_norm"] == pytest.approx(single["grad_norm"], rel=1e-4), strategy
        assert double["weights"] == pytest.approx(single["weights"], abs=1e-6), strategy
        assert double["teacher"] == pytest.approx(single["teacher"], abs=1e-6), strategy
        assert double["local"] == pytest.approx(single["weights"], abs=1e-6), strategy
        assert double["export_size"] == single["export_size"]
        assert double["export"] == pytest.approx(single["export"], abs=1e-6), strategy


@pytest.mark.slow
def test_fsdp2_in_bf16_mixed_precision_matches_one_process(tmp_path, subprocess_env):
    """dtype bfloat16 under FSDP2 (float32 shards, bf16 all-gathered compute, float32 gradient
    reduction) against one process's autocast: the same update up to bf16 rounding."""
    config = _config(tmp_path, dtype="bfloat16")
    script = tmp_path / "update.py"
    script.write_text(UPDATE_SCRIPT)
    results = []
    for cmd, out in (([sys.executable], tmp_path / "one"), (_fsdp2(29549), tmp_path / "fsdp2")):
        proc = subprocess.run([*cmd, str(script), str(config), str(out)], env=subprocess_env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "float32 master / bfloat16 compute" in proc.stderr
        results.append(json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))[7:]))
    single, sharded = results
    assert sharded["strategy"] == "fsdp2"
    assert sharded["loss"] == pytest.approx(single["loss"], rel=2e-2)
    assert sharded["grad_norm"] == pytest.approx(single["grad_norm"], rel=2e-2)
    # Adam's first step is ~lr * sign(g): the float32 masters agree except where bf16 noise flips
    # the sign of a near-zero gradient (there they differ by 2 lr)
    close = [abs(a - b) <= 2e-4 for a, b in zip(sharded["weights"], single["weights"])]
    assert sum(close) / len(close) >= 0.95


def _lines(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


@pytest.mark.slow
def test_fsdp2_run_killed_and_resumed_matches_an_uninterrupted_fsdp2_run(tmp_path, subprocess_env):
    """FSDP2 over 2 CPU ranks end to end (rollouts, context engine, evaluation, checkpoints): a run
    whose ranks are SIGKILLed after a checkpoint and resumed ends exactly as one never stopped."""
    env = subprocess_env
    steps = 4
    config = _config(tmp_path, max_batches=2, eval_every=2, eval_limit=2, eval_k=1)
    full, killed = tmp_path / "full", tmp_path / "killed"

    def train(args: list[str], port: int) -> subprocess.Popen:
        return subprocess.Popen([*_fsdp2(port), "-m", "resd.cli", "train", *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)

    reference = train(["--config", str(config), "--output-dir", str(full)], 29543)
    ref_out, _ = reference.communicate(timeout=400)
    assert reference.returncode == 0, ref_out
    assert ref_out.splitlines()[0].startswith("resd: strategy: fsdp2 over 2 processes (gloo)"), ref_out[:500]
    summary = json.loads((full / "summary.json").read_text())
    assert summary["strategy"] == "fsdp2" and summary["steps"] == steps
    assert yaml.safe_load((full / "config.yaml").read_text())["strategy"] == "fsdp2"
    assert all(r["context/ranks_identical"] == 1.0 for r in _lines(full / "metrics.jsonl"))
    assert (full / "checkpoints/selected/config.json").exists()  # a from_pretrained folder

    victim = train(["--config", str(config), "--output-dir", str(killed)], 29545)
    deadline = time.time() + 300
    while not (killed / "checkpoints/latest/state.json").exists() or \
            json.loads((killed / "checkpoints/latest/state.json").read_text())["step"] < 2:
        assert victim.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)  # the launcher and both ranks at once
    victim.wait()
    assert not (killed / "summary.json").exists()

    resumed = train(["--resume", str(killed)], 29547)
    out, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, out
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]  # noqa: E731
    assert [r["step"] for r in _lines(killed / "metrics.jsonl")] == list(range(1, steps + 1))
    assert strip(_lines(full / "metrics.jsonl")) == strip(_lines(killed / "metrics.jsonl"))
    assert _lines(full / "eval.jsonl") == _lines(killed / "eval.jsonl")
    for name in ("student.safetensors", "teacher.safetensors"):
        a = load_file(str(full / "checkpoints/latest" / name))
        b = load_file(str(killed / "checkpoints/latest" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name



@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["ddp", "fsdp2"])
def test_auto_slots_on_two_ranks_probe_once_and_every_rank_distils_the_same_slots(tmp_path, subprocess_env, launcher):
    """`teacher_slots: auto` on 2 ranks: the update probe runs on every rank together (its update is
    a collective under DDP and FSDP2), the main rank writes what it found, every rank's context
    engine uses those slots and no other, and the run's own model is untouched by the probe."""
    run = tmp_path / "run"
    config = _config(tmp_path, teacher_slots="auto", probe_tasks=4, probe_samples=3)
    head = _accelerate() if launcher == "ddp" else _fsdp2(29551)
    proc = subprocess.run([*head, "-m", "resd.cli", "train", "--config", str(config), "--output-dir", str(run)],
                          env=subprocess_env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    probe = json.loads((run / "update_probe.json").read_text())
    assert set(probe["variants"]) == {"all", "alone:feedback", "alone:reflection", "alone:playbook", "alone:solution"}
    assert probe["check_pairs"] >= 1 and all(t.startswith("train-") for t in probe["check_tasks"])
    assert proc.stderr.count("teacher_slots: auto ->") == 1  # printed by the main rank only
    kept = set(probe["helpful_slots"])
    rows = _lines(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["context/ranks_identical"] == 1.0 for r in rows)
    # a slot the probe dropped reaches no teacher prompt on any rank
    used = {s for s in ("feedback", "reflection", "playbook", "solution") if any(r[f"teacher/{s}_fraction"] for r in rows)}
    assert used <= kept, (used, kept)
    # the probe updated a copy: the run's first rollouts come from the model it was given
    single = tmp_path / "single"
    plain = _config(tmp_path, probe_tasks=4, probe_samples=3)
    proc = subprocess.run([*head, "-m", "resd.cli", "train", "--config", str(plain), "--output-dir", str(single)],
                          env=subprocess_env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first = lambda path: {k: v for k, v in _lines(path)[0].items() if k in ("reward_mean", "success_rate",  # noqa: E731
                                                                              "completion_tokens_mean")}
    assert first(run / "metrics.jsonl") == first(single / "metrics.jsonl")


# ---- launcher settings resd does not honour: one error line each, never a silent fallback ----

def test_launcher_settings_resd_does_not_honour_are_one_error_each():
    from resd.errors import UserError
    from resd.train.precision import Precision
    from resd.train.sharding import check_launcher_precision, launcher_fsdp_version

    assert launcher_fsdp_version({}) is None
    assert launcher_fsdp_version({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}) == 2
    with pytest.raises(UserError, match="fsdp_version: 2"):
        launcher_fsdp_version({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"})
    with pytest.raises(UserError, match="DeepSpeed"):
        launcher_fsdp_version({"ACCELERATE_USE_DEEPSPEED": "true"})
    with pytest.raises(UserError, match="Megatron"):
        launcher_fsdp_version({"ACCELERATE_USE_MEGATRON_LM": "true"})
    fp32, mixed = Precision(torch.float32, torch.float32), Precision(torch.float32, torch.bfloat16)
    check_launcher_precision({"ACCELERATE_MIXED_PRECISION": "bf16"}, mixed)
    check_launcher_precision({"ACCELERATE_MIXED_PRECISION": "no"}, fp32)
    check_launcher_precision({"ACCELERATE_MIXED_PRECISION": "no"}, mixed)  # accelerate's default: the config decides
    with pytest.raises(UserError, match="dtype"):
        check_launcher_precision({"ACCELERATE_MIXED_PRECISION": "fp16"}, mixed)
    with pytest.raises(UserError, match="dtype: bfloat16"):
        check_launcher_precision({"ACCELERATE_MIXED_PRECISION": "bf16"}, fp32)


def test_accelerate_cpu_launch_of_a_sharding_config_is_an_error_not_ddp(tmp_path):
    from resd.errors import UserError
    from resd.train.launch import requested_processes

    head = ["/venv/bin/python", "/venv/bin/accelerate", "launch", "--cpu"]
    with pytest.raises(UserError, match="drop --cpu"):
        requested_processes([*head, "--config_file", str(ROOT / "accelerate/fsdp2.yaml"), "t.py"])
    with pytest.raises(UserError, match="DEEPSPEED"):
        requested_processes([*head, "--use_deepspeed", "--num_processes", "2", "t.py"])


# ---- `accelerate launch --cpu --num_processes N`: accelerate runs one process, resd starts N ----

def test_detects_accelerates_single_cpu_process_for_a_multi_process_request():
    from resd.train.launch import started_by_accelerate_cpu_without_ranks as detect

    assert detect({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"})
    assert not detect({"ACCELERATE_USE_CPU": "True"})  # --num_processes 1: no MASTER_ADDR
    assert not detect({"ACCELERATE_USE_CPU": "False", "MASTER_ADDR": "127.0.0.1"})  # a GPU launch
    # already one rank of a group (our own re-launch, torchrun, --multi_gpu, MPI)
    for rank_var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"):
        assert not detect({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", rank_var: "2"})


def test_reads_the_process_count_the_way_accelerate_parses_it(tmp_path):
    from resd.train.launch import requested_processes

    head = ["/venv/bin/python", "/venv/bin/accelerate", "launch"]
    assert requested_processes([*head, "--cpu", "--num_processes", "2", "-m", "resd.cli", "train"]) == (2, 1)
    assert requested_processes([*head, "--num_processes=3", "--cpu", "x.py", "--num_processes", "9"])[0] == 3
    config = tmp_path / "acc.yaml"
    config.write_text(yaml.safe_dump({"compute_environment": "LOCAL_MACHINE", "distributed_type": "MULTI_CPU",
                                      "num_processes": 4, "num_machines": 1, "use_cpu": True}))
    assert requested_processes([*head, "--config_file", str(config), "train.py"]) == (4, 1)
    assert requested_processes(["python", "train.py"]) == (None, 1)  # not accelerate


def test_unknown_process_count_is_a_clear_error_not_a_silent_single_process():
    from resd.errors import UserError
    from resd.train.launch import cpu_ranks_to_start

    env = {"ACCELERATE_USE_CPU": "true", "MASTER_ADDR": "127.0.0.1"}
    assert cpu_ranks_to_start(env, ["accelerate", "launch", "--cpu", "--num_processes", "2", "t.py"]) == 2
    assert cpu_ranks_to_start({}, ["accelerate", "launch", "--cpu", "--num_processes", "2", "t.py"]) == 0
    with pytest.raises(UserError, match="--multi_gpu"):
        cpu_ranks_to_start(env, ["python", "some-wrapper"])
    with pytest.raises(UserError, match="hostfile"):
        cpu_ranks_to_start(env, ["accelerate", "launch", "--cpu", "--num_processes", "4", "--num_machines", "2", "t.py"])


@pytest.mark.slow
def test_accelerate_launch_cpu_with_two_processes_trains_on_two_ranks(tmp_path, subprocess_env):
    exe = _accelerate()[0]
    env = subprocess_env
    run = tmp_path / "run"
    proc = subprocess.run([exe, "launch", "--cpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
                           "no", "--dynamo_backend", "no", "--main_process_port", "29533", "-m", "resd.cli", "train",
                           "--config", str(_config(tmp_path)), "--output-dir", str(run)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "starting 2 CPU ranks" in proc.stderr
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    # the rank-agreement check is only made (and logged) when there are several ranks
    assert all(r["context/ranks_identical"] == 1.0 for r in rows)
