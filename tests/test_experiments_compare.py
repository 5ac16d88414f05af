"""`resd compare`: arms, per-run configs on one data stream, and the error paths users hit."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from resd.errors import UserError
from resd.experiments import compare


def test_methods_are_parsed_and_checked():
    assert compare.parse_methods("resd, sdpo,grpo") == ["resd", "sdpo", "grpo"]
    with pytest.raises(UserError, match="unknown method 'ppo'"):
        compare.parse_methods("resd,ppo")
    with pytest.raises(UserError, match="twice"):
        compare.parse_methods("resd,resd")
    with pytest.raises(UserError, match="empty"):
        compare.parse_methods(" , ")


def test_ablations_are_resd_with_one_component_off():
    arms = compare.build_arms(["sdpo"], ablations=True)
    assert [a.name for a in arms] == ["resd", "resd-no_reflection", "resd-no_playbook", "resd-no_solution_buffer"]
    assert all(a.method == "resd" for a in arms)
    assert [a.values for a in arms[1:]] == [{"teacher_slots": {"reflection": False}},
                                            {"teacher_slots": {"playbook": False}},
                                            {"teacher_slots": {"solution": False}}]


def test_every_method_gets_its_preset_on_the_same_stream(tmp_path: Path):
    cfg_file = tmp_path / "demo.yaml"
    cfg_file.write_text(yaml.safe_dump({"env": "constraints", "batch_size": 4, "max_batches": 2,
                                        "eval_every": 2, "learning_rate": 1e-5}))
    planned = compare.plan(compare.build_arms(["resd", "sdpo", "grpo"], False), [0, 1], tmp_path / "cmp")
    assert [(p.arm.name, p.seed) for p in planned][:3] == [("resd", 0), ("sdpo", 0), ("grpo", 0)]
    configs = [compare.make_config(p, config_path=str(cfg_file), overrides=["eval_k=2"], env=None,
                                   model="tiny-random") for p in planned]
    compare.check_same_stream(configs)
    by_name = {(c.method, c.seed): c for c in configs}
    assert by_name[("resd", 0)].num_generations == 1
    assert by_name[("grpo", 1)].num_generations == 8
    assert by_name[("sdpo", 0)].teacher_update_rate == 0.05
    for c in configs:
        assert (c.batch_size, c.eval_every, c.eval_k, c.learning_rate, c.model) == (4, 2, 2, 1e-5, "tiny-random")
        assert c.output_dir == str(tmp_path / "cmp" / f"{c.method}-seed{c.seed}")


def test_a_stream_setting_that_differs_between_methods_is_refused(tmp_path: Path):
    planned = compare.plan(compare.build_arms(["resd", "sdpo"], False), [0], tmp_path)
    configs = [compare.make_config(p, config_path=None, overrides=[], env=None, model="tiny-random") for p in planned]
    configs[1].batch_size = 7
    with pytest.raises(UserError, match="differ in batch_size"):
        compare.check_same_stream(configs)


def test_cli_rejects_bad_arguments(capsys):
    from resd.cli import main

    assert main(["compare", "--methods", "resd,nope"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert main(["compare", "--seeds", "0"]) == 2


def test_a_finished_run_is_reused_only_with_the_same_config(tmp_path: Path):
    from resd.train.config import save_config

    planned = compare.plan(compare.build_arms(["resd"], False), [0], tmp_path)[0]
    cfg = compare.make_config(planned, config_path=None, overrides=[], env=None, model="tiny-random")
    planned.output_dir.mkdir(parents=True)
    save_config(cfg, planned.output_dir / "config.yaml")
    compare.check_reusable(planned.output_dir, cfg)  # same config: fine
    # a finished run records the strategy its launch gave; a comparison that names none reuses it
    cfg.strategy = "single"
    save_config(cfg, planned.output_dir / "config.yaml")
    compare.check_reusable(planned.output_dir, compare.make_config(planned, config_path=None, overrides=[], env=None,
                                                                   model="tiny-random"))
    # a run made before a knob existed is reused when the comparison asks for that knob's default
    saved = yaml.safe_load((planned.output_dir / "config.yaml").read_text())
    del saved["distillation_teacher_entropy_cap"]
    (planned.output_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    compare.check_reusable(planned.output_dir, cfg)
    with pytest.raises(UserError, match="was run with distillation_teacher_entropy_cap=None"):
        compare.check_reusable(planned.output_dir, compare.make_config(
            planned, config_path=None, overrides=["distillation_teacher_entropy_cap=true"], env=None,
            model="tiny-random"))
    with pytest.raises(UserError, match="was run with strategy='single'"):
        compare.check_reusable(planned.output_dir, compare.make_config(
            planned, config_path=None, overrides=["strategy=fsdp2"], env=None, model="tiny-random"))
    other = compare.make_config(planned, config_path=None, overrides=["batch_size=3"], env=None, model="tiny-random")
    with pytest.raises(UserError, match="was run with batch_size=32.*new --out"):
        compare.check_reusable(planned.output_dir, other)


def test_the_base_model_is_evaluated_once_per_seed_and_shared(tmp_path: Path, monkeypatch):
    import json

    import resd.train.evaluation as evaluate_module  # where the trainer's evaluations go through

    calls = []
    real = evaluate_module.evaluate

    def counting(*args, **kwargs):
        calls.append(kwargs.get("seed"))
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "evaluate", counting)
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump({"env": "constraints", "model": "tiny-random", "batch_size": 2,
                                        "max_batches": 1, "inner_updates": 1, "max_completion_length": 6,
                                        "eval_limit": 2, "eval_k": 2, "progress": False,
                                        "context": {"reflection_max_new_tokens": 4, "curation_max_new_tokens": 4}}))
    out = tmp_path / "cmp"
    compare.compare_methods(methods=["resd", "grpo"], seeds=[0], out_dir=out, config_path=str(cfg_file))
    rows = {m: [json.loads(l) for l in (out / f"{m}-seed0" / "eval.jsonl").read_text().splitlines()]
            for m in ("resd", "grpo")}
    assert rows["resd"][0] == rows["grpo"][0] and rows["resd"][0]["step"] == 0
    assert len(calls) == len(rows["resd"]) + len(rows["grpo"]) - 1  # step 0 once, not once per method
    assert (out / "base_eval" / "seed0.json").exists()


def test_a_cached_base_evaluation_is_ignored_when_the_settings_differ(tmp_path: Path):
    from resd.train.evaluation import base_eval_identity, read_base_eval, write_base_eval
    from resd.train.config import load_config

    cache = tmp_path / "base.json"
    cfg = load_config(None, [], method="resd", model="tiny-random", eval_k=2)
    result = {"per_task_mean@k": 0.5, "per_task_best@k": 1.0, "per_case_mean@k": 0.5, "per_case_best@k": 1.0,
              "k": 2, "n_tasks": 3}
    write_base_eval(str(cache), base_eval_identity(cfg), result)
    assert read_base_eval(str(cache), base_eval_identity(cfg)) == result
    other = load_config(None, [], method="sdpo", model="tiny-random", eval_k=2)  # method is not part of it
    assert read_base_eval(str(cache), base_eval_identity(other)) == result
    for change in ({"eval_k": 4}, {"seed": 1}, {"temperature": 0.7}, {"model": "smollm2-135m"}):
        changed = load_config(None, [], method="resd", **{"model": "tiny-random", "eval_k": 2, **change})
        assert read_base_eval(str(cache), base_eval_identity(changed)) is None, change
    cache.write_text("{not json")
    assert read_base_eval(str(cache), base_eval_identity(cfg)) is None
