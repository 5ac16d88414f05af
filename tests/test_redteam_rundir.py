"""A run directory is not trusted input (it may come from someone else, or be damaged): resuming
or reporting on one never hangs, never tracebacks, never widens the sandbox, and leftovers of dead
writers go. Every attack is tried on a real run directory written by a short training run."""

from __future__ import annotations

import os
import shutil
import threading

import pytest
import yaml

from resd.cli import main
from resd.errors import UserError
from resd.train.config import load_config

HUGE = "9" * 5000


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from resd.models import tiny_model
    from resd.train import RESDTrainer

    root = tmp_path_factory.mktemp("runs")
    cfg = load_config(method="grpo", env="letters", model="tiny-random", batch_size=2, max_batches=1,
                      inner_updates=2, num_generations=2, max_completion_length=4, eval_every=0, progress=False,
                      output_dir=str(root / "run"))
    model, tok = tiny_model()
    return RESDTrainer(cfg, model=model, tokenizer=tok).train()


@pytest.fixture
def run(trained_run, tmp_path):
    """A fresh copy of the trained run for each attack."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy, symlinks=True)
    return copy


def _resume(run_dir, **kwargs):
    from resd.train import RESDTrainer

    trainer = RESDTrainer.from_run_dir(run_dir, **kwargs)
    trainer.setup()
    return trainer


def _finishes(fn, seconds=60):
    """Run fn in a thread; what it raised, or a failure when it is still running (a hang)."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "hung"
    return outcome


@pytest.mark.parametrize("name", ["state.json", "rng_rank0.json", "student.safetensors", "optimizer.pt"])
def test_a_fifo_in_place_of_a_checkpoint_file_is_named_not_waited_on(run, name):
    target = run / "checkpoints" / "latest" / name
    target.unlink()
    os.mkfifo(target)
    outcome = _finishes(lambda: _resume(run))
    assert isinstance(outcome.get("error"), UserError) and name in str(outcome["error"]), outcome


@pytest.mark.parametrize("name", ["config.yaml"])
def test_a_fifo_config_is_named_not_waited_on(run, name):
    (run / name).unlink()
    os.mkfifo(run / name)
    outcome = _finishes(lambda: _resume(run))
    assert isinstance(outcome.get("error"), UserError) and name in str(outcome["error"]), outcome


@pytest.mark.parametrize("field,value", [("step", "-5"), ("step", '"two"'), ("step", HUGE), ("batch", "true"),
                                         ("data_order", "[1, 2]"), ("rollouts", "1.5"), ("surprise", "1")])
def test_a_state_with_a_wrong_type_sign_or_size_is_one_error_naming_it(run, field, value):
    import json

    path = run / "checkpoints" / "latest" / "state.json"
    state = json.loads(path.read_text())
    state[field] = "@@"
    path.write_text(json.dumps(state).replace('"@@"', value))
    with pytest.raises(UserError, match="state.json") as err:
        _resume(run)
    assert "\n" not in str(err.value)


def test_huge_integers_and_odd_names_in_logs_and_snapshots_are_dropped(run, capsys):
    from resd.files import read_jsonl
    from resd.run.rundir import RunDir

    rundir = RunDir(run)
    with rundir.metrics.open("a") as f:
        f.write('{"step": ' + HUGE + '}\n{"step": -5}\n{"step": "two"}\n{"step": 1, "loss": ' + HUGE + '}\n')
    (rundir.playbooks / "step_latest.json").write_text('{"counter": ' + HUGE + '}')
    (rundir.playbooks / f"step_{HUGE[:200]}.json").write_text("{}")
    assert all(len(str(r.get("loss", ""))) < 100 for r in read_jsonl(rundir.metrics, skip_damaged=True))
    rundir.truncate_after(1)  # what resume does: no traceback, only steps <= 1 that resd could write
    assert [r["step"] for r in read_jsonl(rundir.metrics, skip_damaged=True)] == [1]
    assert (rundir.playbooks / "step_latest.json").exists()  # not a snapshot name: left alone
    # `resd playbook show` on the odd snapshot: one error line, no traceback
    assert main(["playbook", "show", str(rundir.playbooks / "step_latest.json")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_run_directory_cannot_switch_the_sandbox_off(run, monkeypatch, capsys):
    """Red team: a run dir whose config.yaml says sandbox: unsafe-local ran model-written code
    unsandboxed on resume. The sandbox comes from the user (--sandbox, RESD_SANDBOX) only."""
    from resd.train import RESDTrainer
    from resd.train.build import build_environment

    monkeypatch.delenv("RESD_SANDBOX", raising=False)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["env"], config["env_options"] = "code", {"sandbox": "unsafe-local"}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    trainer = RESDTrainer.from_run_dir(run)
    assert build_environment(trainer.cfg).sandbox == "bwrap"
    assert "cannot choose the sandbox" in capsys.readouterr().err
    chosen = RESDTrainer.from_run_dir(run, sandbox="unsafe-local")  # the user's own choice holds
    assert build_environment(chosen.cfg).sandbox == "unsafe-local"
    monkeypatch.setenv("RESD_SANDBOX", "unsafe-local")
    assert build_environment(RESDTrainer.from_run_dir(run).cfg).sandbox == "unsafe-local"


def test_sandbox_flag_belongs_to_resume():
    assert main(["train", "--config", "configs/smoke.yaml", "--sandbox", "unsafe-local"]) == 2


def test_leftover_temporary_checkpoints_go_on_the_next_checkpoint(run):
    from resd.files import replace_dir_atomic

    checkpoints = run / "checkpoints"
    leftovers = [checkpoints / ".latest.tmp1", checkpoints / ".latest.tmp999999999-1"]
    for path in leftovers:
        path.mkdir()
        (path / "state.json").write_text("{}")
    with replace_dir_atomic(checkpoints / "latest") as tmp:
        shutil.copytree(checkpoints / "latest", tmp, dirs_exist_ok=True)
    assert not any(path.exists() for path in leftovers)


def test_the_state_reader_checks_every_field_the_trainer_saves():
    """read_run_state refuses fields it does not know, so it must know every RunState field."""
    import dataclasses

    from resd.run.rundir import _STATE_FIELDS
    from resd.train.trainer import RunState

    assert set(_STATE_FIELDS) == {f.name for f in dataclasses.fields(RunState)}


@pytest.mark.parametrize("name,text", [("metrics.jsonl", '{"step": ' + HUGE + '}\n{"step": 1}\n'),
                                       ("summary.json", '{"selected_step": ' + HUGE + '}')])
def test_report_on_a_run_with_huge_integers_is_one_line(run, capsys, name, text):
    (run / name).write_text(text)
    assert main(["report", str(run), "--out", str(run.parent / "report")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and name in err


def test_report_on_a_fifo_log_is_one_line_not_a_hang(run, capsys):
    (run / "metrics.jsonl").unlink()
    os.mkfifo(run / "metrics.jsonl")
    outcome = _finishes(lambda: main(["report", str(run), "--out", str(run.parent / "report")]))
    assert outcome.get("value") == 2, outcome
