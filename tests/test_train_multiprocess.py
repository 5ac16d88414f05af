"""Several processes (`accelerate launch --num_processes 2 --cpu`): the smoke loop runs, every
rank holds the same playbook, and one update gives the same loss and weights as one process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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
# A teacher that differs from the student, so the loss is not ~0.
with torch.no_grad():
    for p in policy.teacher.model.parameters():
        p.add_(0.05 * torch.randn(p.shape, generator=gen))
out = update.apply(items)
if ranks.main:
    weights = torch.cat([p.detach().flatten() for p in policy.student.parameters()])
    print("RESULT " + json.dumps({"loss": out.loss, "tokens": out.loss_tokens, "grad_norm": out.grad_norm,
                                   "weights": weights[:2000].tolist()}), flush=True)
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


@pytest.mark.slow
def test_two_process_update_matches_one_process(tmp_path, subprocess_env):
    env = subprocess_env
    config = _config(tmp_path)
    script = tmp_path / "update.py"
    script.write_text(UPDATE_SCRIPT)

    def result(cmd: list[str], out: Path) -> dict:
        proc = subprocess.run([*cmd, str(script), str(config), str(out)], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
        return json.loads(line[len("RESULT "):])

    single = result([sys.executable], tmp_path / "one")
    double = result(_accelerate(), tmp_path / "two")
    assert single["tokens"] == double["tokens"] == sum(3 + 2 * i for i in range(5))
    assert single["loss"] > 0
    assert double["loss"] == pytest.approx(single["loss"], rel=1e-5)
    assert double["grad_norm"] == pytest.approx(single["grad_norm"], rel=1e-4)
    assert double["weights"] == pytest.approx(single["weights"], abs=1e-6)


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
