"""RESDConfig loading: YAML + base includes + key=value overrides, method presets, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from resd.errors import UserError
from resd.train.config import METHODS, RESDConfig, config_from_dict, load_config, parse_overrides

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_match_the_paper():
    cfg = load_config()
    assert cfg.method == "resd"
    assert cfg.num_generations == 1 and cfg.teacher_update_rate == 1e-4
    assert cfg.learning_rate == 1e-6 and cfg.warmup_steps == 10
    assert cfg.batch_size == 32 and cfg.inner_updates == 4
    assert cfg.distillation_topk == 100 and cfg.distillation_add_tail
    assert cfg.distillation_alpha == 1.0 and cfg.ratio_min == 0.2 and cfg.ratio_max is None
    assert cfg.temperature == 1.0 and cfg.top_p == 0.95


@pytest.mark.parametrize("method,n,eta", [("resd", 1, 1e-4), ("sdpo", 8, 0.05), ("sdpo_ss", 8, 0.05),
                                          ("rosd", 8, 0.0), ("grpo", 8, 0.0)])
def test_method_presets(method, n, eta):
    cfg = load_config(method=method)
    assert cfg.method == method and cfg.num_generations == n and cfg.teacher_update_rate == eta
    assert cfg.distills == (method != "grpo")


def test_method_specific_switches():
    assert load_config(method="sdpo").dont_reprompt_on_self_success
    assert not load_config(method="sdpo_ss").dont_reprompt_on_self_success
    assert [load_config(method=m).context_engine for m in ("resd", "sdpo", "rosd")] == ["resd", "peers", "rosd"]
    assert load_config(method="rosd").context.reflection_max_new_tokens == 256
    assert not load_config(method="rosd").teacher_slots.feedback and load_config(method="sdpo").teacher_slots.feedback


def test_the_method_list_is_the_list_of_presets():
    from resd.train.methods import PRESETS

    assert METHODS == tuple(PRESETS) == ("resd", "sdpo", "sdpo_ss", "rosd", "grpo")


def test_deprecated_keys_keep_working_with_one_line_each(tmp_path, capsys):
    path = write(tmp_path / "old.yaml", {"no_reflection": True, "include_environment_feedback": False,
                                         "no_solution_buffer": True, "is_clip": 2.0,
                                         "context": {"success_threshold": 0.5, "curate": False}})
    cfg = load_config(path)
    assert not cfg.teacher_slots.reflection and not cfg.teacher_slots.feedback and not cfg.teacher_slots.playbook
    assert not cfg.teacher_slots.solution and cfg.success_reward_threshold == 0.5
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 6 and all(line.startswith("resd: warning: config key") for line in lines)
    for new in ("teacher_slots.reflection=false", "teacher_slots.feedback=false", "teacher_slots.solution=false",
                "success_reward_threshold", "teacher_slots.playbook=false", "no effect"):
        assert any(new in line for line in lines), new
    rosd = load_config(method="rosd", reflection_max_new_tokens=32, use_context=False, error_suffix_mask=True)
    assert rosd.context.reflection_max_new_tokens == 32 and rosd.context_engine == "rosd"
    with pytest.raises(UserError, match="context_engine='resd' is not method=sdpo's"):
        load_config(method="sdpo", context_engine="resd")
    # a run directory written by resd 0.1 still resumes (its config lists every old key)
    old_run = {k: v for k, v in load_config().to_dict().items() if k not in ("teacher_slots", "context_engine")}
    old_run.update(no_playbook=True, no_reflection=False, include_previous_trial=True, use_context=True,
                   error_suffix_mask=False, is_clip=2.0, reflection_max_new_tokens=256)
    resumed = config_from_dict(old_run)
    assert not resumed.teacher_slots.playbook and resumed.teacher_slots.reflection and resumed.context_engine == "resd"


def test_yaml_wins_over_preset_and_override_wins_over_yaml(tmp_path):
    path = write(tmp_path / "c.yaml", {"method": "sdpo", "num_generations": 4, "learning_rate": 1e-5})
    cfg = load_config(path, ["learning_rate=3e-5", "context.max_entries=7"])
    assert cfg.num_generations == 4  # the YAML beat SDPO's preset of 8
    assert cfg.teacher_update_rate == 0.05  # the preset filled what the YAML did not say
    assert cfg.learning_rate == 3e-5
    assert cfg.context.max_entries == 7 and cfg.context.concise_every == 4  # nested merge keeps the rest


def test_method_override_applies_its_preset(tmp_path):
    path = write(tmp_path / "c.yaml", {"batch_size": 2})
    cfg = load_config(path, ["method=grpo"])
    assert cfg.method == "grpo" and cfg.num_generations == 8 and cfg.batch_size == 2


def test_base_include_is_relative_to_the_including_file(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "base.yaml", {"env": "manufactoria-has", "batch_size": 5, "context": {"max_entries": 200}})
    child = write(tmp_path / "sub" / "child.yaml", {"base": "../base.yaml", "batch_size": 6,
                                                     "context": {"concise_method": "prioritized"}})
    cfg = load_config(child)
    assert cfg.env == "manufactoria-has" and cfg.batch_size == 6
    assert cfg.context.max_entries == 200 and cfg.context.concise_method == "prioritized"


def test_unknown_key_names_it_and_lists_valid_ones(tmp_path):
    with pytest.raises(UserError, match=r"unknown config key 'learnin_rate'.*learning_rate"):
        load_config(None, ["learnin_rate=1e-5"])
    with pytest.raises(UserError, match=r"context\.bogus"):
        load_config(None, ["context.bogus=1"])


@pytest.mark.parametrize("override,fragment", [
    ("batch_size=abc", "batch_size"),
    ("batch_size=1.5", "batch_size"),
    ("early_stop=maybe", "early_stop"),
    ("distillation_mode=dense", "distillation_mode"),
    ("method=ppo", "method"),
    ("distillation_alpha=2", "distillation_alpha"),
    ("report_to=tensorboard", "report_to"),
])
def test_bad_values_name_the_key(override, fragment):
    with pytest.raises(UserError, match=fragment):
        load_config(None, [override])


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="key=value"):
        load_config(None, ["learning_rate"])
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)


def test_floats_written_without_a_dot_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 1e-5\n")  # YAML 1.1 reads this as a string
    assert load_config(path).learning_rate == 1e-5


def test_parse_overrides_types_and_nesting():
    assert parse_overrides(["a.b=3", "c=[x, y]", "d=null", "e=true"]) == {
        "a": {"b": 3}, "c": ["x", "y"], "d": None, "e": True}


def test_lora_block_and_null():
    cfg = load_config(None, ["lora={r: 4, alpha: 8}"])
    assert cfg.lora is not None and cfg.lora.r == 4 and cfg.lora.target_modules == "all-linear"
    assert load_config(None, ["lora=null"]).lora is None


def test_saved_config_round_trips_without_presets():
    cfg = load_config(method="sdpo", num_generations=3)
    again = config_from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again == cfg


def test_grpo_needs_groups():
    with pytest.raises(UserError, match="num_generations"):
        load_config(method="grpo", num_generations=1)


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, RESDConfig) and cfg.method in METHODS


def test_merged_knobs_keep_their_old_keys_with_one_line_each(capsys):
    """One knob per decision; each old key of a merged group maps onto it with one warning line."""
    cfg = load_config(method="grpo", num_generations=2, batch_size=4, train_limit=10, do_eval=False,
                      grpo_epsilon_low=0.0, grpo_epsilon_high=5.0, generation={"backend": "hf", "max_num_seqs": 3})
    assert cfg.max_batches == 3 and cfg.eval_every == 0 and not cfg.evaluates and cfg.generation_batch_size == 8
    assert not hasattr(cfg, "grpo_epsilon_low") and not hasattr(cfg.generation, "max_num_seqs")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 5 and all(line.startswith("resd: warning: config key") for line in lines)
    assert load_config(method="sdpo", use_peer_solution=False).teacher_slots.solution is False
    assert load_config(context={"use_solution_buffer": False}).teacher_slots.solution is False
    assert load_config(max_batches=2, train_limit=100, batch_size=4).max_batches == 2  # the smaller cut wins
    assert load_config(generation={"backend": "vllm", "max_num_seqs": 16}).generation_batch_size == 16
    assert load_config(generation={"backend": "vllm"}).generation_batch_size == 64
    assert load_config().generation_batch_size == 8
    with pytest.raises(UserError, match="eval_every"):
        load_config(eval_every=-1)
