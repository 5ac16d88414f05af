"""Bad input everywhere else: one clear line, nothing lost. Fuzzed model answers never make the
reflector, curator or first-error parsers raise; fuzzed YAML never makes the config loader raise
anything but a UserError; damaged checkpoints and logs are named, not tracebacks."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resd.context.first_error import parse_first_error
from resd.context.reflect import parse_curation, parse_reflection, parse_success_tags
from resd.errors import UserError
from resd.train.config import load_config, parse_yaml

answers = st.one_of(
    st.text(max_size=600),
    st.builds(lambda n: f"DIAGNOSIS: x\nTAGS:\nmist-{'9' * n} helpful", st.integers(1, 6000)),
    st.builds(lambda n: '{"tags": [{"id": "mist-' + "9" * n + '", "tag": "harmful"}]}', st.integers(1, 6000)),
    st.builds(lambda n: "[" * n, st.integers(0, 5000)),
    st.builds(lambda body: f"<first_error>{body}</first_error><why>{body}", st.text(max_size=200)),
    st.builds(lambda s: "ADD " + s, st.text(max_size=300)),
)


@settings(max_examples=150, deadline=None)
@given(text=answers)
def test_model_answer_parsers_never_raise(text):
    known = ["mist-00001", "rules-00002"]
    assert parse_reflection(text, known).ok in (True, False)
    parse_success_tags(text, known)
    parse_curation(text)
    parse_first_error(text)


def test_a_4301_digit_tag_id_is_just_unknown():
    parsed = parse_reflection("DIAGNOSIS: the loop is wrong.\nTAGS:\n" + '{"tags": [{"id": "mist-'
                              + "9" * 4301 + '", "tag": "helpful"}]}', ["mist-00001"])
    assert parsed.ok and parsed.tags == {} and parsed.unknown_ids == 1


yaml_text = st.one_of(
    st.text(max_size=300),
    st.builds(lambda k, v: f"{k}: {v}\n", st.sampled_from(["batch_size", "seed", "learning_rate", "top_p",
                                                           "max_grad_norm", "temperature", "context"]),
              st.sampled_from(["-1", "0", ".inf", ".nan", "1e400", "[1, 2]", "{a: 1}", "'x'", "99999999999999999999"])),
)


@settings(max_examples=150, deadline=None)
@given(text=yaml_text)
def test_the_config_loader_only_ever_raises_user_errors(text, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(text)
    try:
        load_config(path)
    except UserError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize("values, needle", [
    ({"max_grad_norm": -1.0}, "max_grad_norm"), ({"batch_size": 0}, "batch_size"), ({"max_batches": 0}, "max_batches"),
    ({"seed": -1}, "seed"), ({"seed": 2**40}, "seed"), ({"learning_rate": math.inf}, "learning_rate"),
    ({"temperature": math.nan}, "temperature"), ({"micro_batch_size": -3}, "micro_batch_size"),
    ({"eval_limit": 0}, "eval_limit"), ({"adam_beta2": 1.0}, "adam_beta2"),
])
def test_out_of_range_values_are_one_line_naming_the_key(values, needle):
    with pytest.raises(UserError, match=needle) as err:
        load_config(**values)
    assert "\n" not in str(err.value)


def test_empty_files_alias_bombs_and_duplicate_keys_are_refused(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("\n# nothing\n")
    with pytest.raises(UserError, match="empty"):
        load_config(empty)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b]\n"
    with pytest.raises(UserError, match="aliases"):
        parse_yaml(bomb)
    with pytest.raises(UserError, match="appears twice"):
        parse_yaml("seed: 1\nbatch_size: 2\nseed: 3\n")


def test_damaged_checkpoint_files_are_named(tmp_path):
    from resd.models import tiny_model
    from resd.train import RESDTrainer

    cfg = load_config(method="grpo", env="letters", model="tiny-random", batch_size=2, max_batches=1,
                      inner_updates=2, num_generations=2, max_completion_length=4, eval_every=0, progress=False,
                      output_dir=str(tmp_path / "run"))
    model, tok = tiny_model()
    run = RESDTrainer(cfg, model=model, tokenizer=tok).train()
    latest = run / "checkpoints" / "latest"
    assert sorted(p.name for p in latest.iterdir()) == ["optimizer.pt", "rng_rank0.json", "scheduler.pt",
                                                        "state.json", "student.safetensors"]
    for name, damage in (("student.safetensors", b"\x00" * 40), ("optimizer.pt", b"not a zip"),
                         ("state.json", b'{"step": ')):
        good = (latest / name).read_bytes()
        (latest / name).write_bytes(damage)
        with pytest.raises(UserError, match=f"{name}.*damaged"):
            RESDTrainer.from_run_dir(run).setup()
        (latest / name).write_bytes(good)
    # a pickle that would run code is never loaded: torch refuses it under weights_only=True
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (latest / "optimizer.pt").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(UserError, match="optimizer.pt"):
        RESDTrainer.from_run_dir(run).setup()


def test_a_bad_metrics_line_does_not_drop_the_lines_after_it(tmp_path):
    from resd.files import read_jsonl
    from resd.run.rundir import RunDir

    run = RunDir(tmp_path)
    run.create()
    run.metrics.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n[1, 2]\n{"step": 4}\n')
    assert [r["step"] for r in read_jsonl(run.metrics, skip_damaged=True)] == [1, 3, 4]
    with pytest.raises(UserError, match="metrics.jsonl:2"):
        read_jsonl(run.metrics)  # `resd report` names the damaged line instead
    run.truncate_after(3)
    assert [json.loads(line)["step"] for line in run.metrics.read_text().splitlines()] == [1, 3]


@pytest.mark.parametrize("values, needle", [
    ({"num_generations": 10**9}, "num_generations"), ({"eval_k": 10**9}, "eval_k"),
    ({"batch_size": 10**6, "num_generations": 8}, "batch_size x num_generations"),
    ({"report_to": ["wandbx"]}, "report_to"), ({"output_dir": "/proc/self/run"}, "output_dir"),
    ({"output_dir": "/sys"}, "output_dir"),
])
def test_configs_beyond_what_the_machine_holds_are_one_line(values, needle):
    """Red team: these ran until killed (num_generations, eval_k) or ended in a traceback."""
    with pytest.raises(UserError, match=needle) as err:
        load_config(**values)
    assert "\n" not in str(err.value)


def test_an_output_dir_that_is_a_file_is_one_line(tmp_path):
    afile = tmp_path / "taken"
    afile.write_text("x")
    for where in (afile, afile / "run"):
        with pytest.raises(UserError, match="is a file") as err:
            load_config(output_dir=str(where))
        assert "\n" not in str(err.value)
    from resd.cli import main

    assert main(["train", "--config", "configs/smoke.yaml", "--output-dir", str(afile)]) == 2


def test_an_environment_cannot_be_asked_for_a_trillion_tasks():
    from resd.envs import get

    with pytest.raises(UserError, match="train_size") as err:
        get("constraints", train_size=10**12)
    assert "\n" not in str(err.value)
