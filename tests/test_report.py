"""The report builder over saved run directories (the format `resd train` writes)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from resd import report
from resd.cli import main
from resd.errors import UserError

METRICS = report.METRIC_KEYS


def write_run(root: Path, name: str, method: str, seed: int, evals: list[tuple[int, float, float, float, float]],
              *, rollouts_per_step: int = 32, summary: bool = True, env: str = "constraints",
              loss: float = 0.5) -> Path:
    """A run directory as `resd train` leaves it: config, metrics per update, evals, summary."""
    run = root / name
    (run / "playbooks").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"method": method, "seed": seed, "env": env,
                                                     "model": "tiny-random", "batch_size": 32}))
    last_step = max(s for s, *_ in evals)
    with open(run / "metrics.jsonl", "w") as f:
        for step in range(1, last_step + 1):
            phases = {"time/rollout": 2.0, "time/scoring": 0.5, "time/reflection": 1.5 if method == "resd" else 0.0,
                      "time/curation": 1.0 if method == "resd" else 0.0, "time/teacher_forward": 0.7,
                      "time/student_step": 1.3}
            f.write(json.dumps({"step": step, "batch": (step - 1) // 4, "iteration": (step - 1) % 4,
                                "rollouts": step * rollouts_per_step, "loss": loss / step,
                                "reward_mean": 0.1, "success_rate": 0.1, "playbook_size": step,
                                "loss_tokens": 500, "signal_fraction": 1.0, "grad_norm": 0.5 / step,
                                "health/entropy": 2.0 - 0.1 * step,
                                **({"health/teacher_advantage": -0.1} if method != "grpo" else {}), **phases,
                                "time/step": sum(phases.values()) + 0.25}) + "\n")
    with open(run / "eval.jsonl", "w") as f:
        for step, tm, tb, cm, cb in evals:
            f.write(json.dumps({"step": step, "rollouts": step * rollouts_per_step, "per_task_mean@k": tm,
                                "per_task_best@k": tb, "per_case_mean@k": cm, "per_case_best@k": cb,
                                "k": 4, "n_tasks": 10}) + "\n")
    if summary:
        (run / "summary.json").write_text(json.dumps({"method": method, "env": env, "seed": seed,
                                                      "model": "tiny-random", "selected_step": None,
                                                      "selected": {}, "final": {},
                                                      "health_warnings": [{"step": 3, "message": "the teacher "
                                                                           "did not prefer accepted answers"}]
                                                      if method == "sdpo" else []}))
    return run


RESD_EVALS = [
    # step, task m@k, task b@k, case m@k, case b@k
    [(0, 0.00, 0.10, 0.30, 0.50), (4, 0.10, 0.30, 0.45, 0.70), (8, 0.20, 0.40, 0.50, 0.80), (12, 0.15, 0.40, 0.55, 0.75)],
    [(0, 0.05, 0.10, 0.30, 0.50), (4, 0.10, 0.20, 0.40, 0.60), (8, 0.30, 0.50, 0.60, 0.90), (12, 0.10, 0.30, 0.40, 0.60)],
]
SDPO_EVALS = [
    [(0, 0.00, 0.10, 0.30, 0.50), (4, 0.05, 0.10, 0.35, 0.55), (8, 0.05, 0.20, 0.35, 0.60), (12, 0.05, 0.20, 0.36, 0.60)],
    [(0, 0.05, 0.10, 0.30, 0.50), (4, 0.05, 0.10, 0.30, 0.50), (8, 0.05, 0.10, 0.30, 0.50), (12, 0.05, 0.10, 0.30, 0.50)],
]


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    root = tmp_path / "cmp"
    for seed, evals in enumerate(RESD_EVALS):
        write_run(root, f"resd-seed{seed}", "resd", seed, evals, rollouts_per_step=32, loss=0.8)
    for seed, evals in enumerate(SDPO_EVALS):
        write_run(root, f"sdpo-seed{seed}", "sdpo", seed, evals, rollouts_per_step=256, loss=0.3)
    return root


def test_selection_sums_ranks_of_the_four_metrics():
    evals = [dict(zip(("step", *METRICS), row)) for row in RESD_EVALS[0]]
    # Step 8 ranks 4+3.5+3+4 = 14.5, step 12 ranks 3+3.5+4+3 = 13.5: the rank sum, not any one metric.
    assert report.select_step(evals) == 8


def test_selection_tie_goes_to_the_later_step():
    flat = [{"step": s, **{m: 0.25 for m in METRICS}} for s in (0, 4, 8)]
    assert report.select_step(flat) == 8
    swapped = [{"step": 0, "per_task_mean@k": 0.5, "per_task_best@k": 0.1, "per_case_mean@k": 0.5, "per_case_best@k": 0.1},
               {"step": 4, "per_task_mean@k": 0.1, "per_task_best@k": 0.5, "per_case_mean@k": 0.1, "per_case_best@k": 0.5}]
    assert report.select_step(swapped) == 4


def test_table_values_are_mean_and_std_at_each_seeds_selected_step(runs_dir: Path, tmp_path: Path):
    result = report.report_from_dirs([runs_dir], tmp_path / "out")
    rows = {r.label: r for r in result.rows}
    assert list(rows) == ["Base model", "RESD", "SDPO"]
    resd = rows["RESD"]
    assert resd.selected_steps == [8, 8]
    assert resd.values["per_task_mean@k"] == [0.20, 0.30]
    assert resd.mean("per_task_mean@k") == pytest.approx(0.25)
    assert resd.std("per_task_mean@k") == pytest.approx(math.sqrt(0.005))
    # SDPO seed 1 is flat: every step ties, so the last evaluated step is chosen.
    assert rows["SDPO"].selected_steps == [12, 12]
    base = rows["Base model"]
    assert base.values["per_task_mean@k"] == [0.0, 0.05, 0.0, 0.05]

    md = result.markdown.read_text()
    assert "| RESD | 2 | 8, 8 | 25.00 ± 7.07 | 45.00 ± 7.07 | 55.00 ± 7.07 | 85.00 ± 7.07 |" in md
    table = json.loads(result.table_json.read_text())
    assert table["k"] == 4
    assert table["rows"][1]["mean"]["per_case_best@k"] == pytest.approx(0.85)


def test_report_writes_plots_and_self_contained_html(runs_dir: Path, tmp_path: Path):
    result = report.report_from_dirs([runs_dir], tmp_path / "out", title="demo")
    assert set(result.plots) == {"curves_step", "curves_rollouts", "loss", "latency", "health"}
    for png in result.plots.values():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = result.html.read_text()
    assert page.count("data:image/png;base64,") == 5
    assert "Training health" in page and "step 3: the teacher did not prefer accepted answers" in page
    assert "<table>" in page and "RESD" in page
    md = result.markdown.read_text()
    for png in result.plots.values():
        assert f"]({png.name})" in md


def test_latency_breakdown_and_context_share(runs_dir: Path):
    runs = [report.load_run(p) for p in report.expand_run_dirs([runs_dir])]
    groups = report.group_runs(runs)
    b = report.latency_breakdown(groups["RESD"])
    assert b["time/step"] == pytest.approx(7.25)
    assert b["other"] == pytest.approx(0.25)
    text = report.latency_markdown(groups)
    assert "34.5%" in text  # (1.5 + 1.0) / 7.25
    assert "| SDPO |" in text and "0.0%" in text


def test_curves_average_seeds_with_min_max_band(runs_dir: Path):
    runs = [report.load_run(p) for p in report.expand_run_dirs([runs_dir])]
    resd = report.group_runs(runs)["RESD"]
    by_step = report.eval_curve(resd, "per_task_mean@k", "step")
    assert by_step.x == [0, 4, 8, 12]
    assert by_step.mean[2] == pytest.approx(0.25)
    assert (by_step.low[2], by_step.high[2]) == (0.20, 0.30)
    by_rollouts = report.eval_curve(resd, "per_task_mean@k", "rollouts")
    assert by_rollouts.x == [0, 128, 256, 384]
    loss = report.metric_curve(resd, "loss")
    assert loss.x[:2] == [1, 2] and loss.mean[1] == pytest.approx(0.4)


def test_ablation_labels_and_environments_are_kept_apart(tmp_path: Path):
    a = write_run(tmp_path, "full", "resd", 0, RESD_EVALS[0])
    b = write_run(tmp_path, "noref", "resd", 0, RESD_EVALS[1])
    c = write_run(tmp_path, "other-env", "resd", 0, RESD_EVALS[1], env="finer")
    runs = [report.load_run(a), report.load_run(b, label="RESD w/o reflection")]
    assert list(report.group_runs(runs)) == ["RESD", "RESD w/o reflection"]
    mixed = report.group_runs([report.load_run(a), report.load_run(c)])
    assert list(mixed) == ["RESD [constraints]", "RESD [finer]"]


def test_interrupted_run_is_reported_and_cut_last_line_dropped(tmp_path: Path):
    run = write_run(tmp_path, "r", "grpo", 3, RESD_EVALS[0], summary=False)
    with open(run / "eval.jsonl", "a") as f:
        f.write('{"step": 16, "per_task')  # killed mid-write
    loaded = report.load_run(run)
    assert loaded.label == "GRPO" and loaded.seed == 3 and loaded.summary is None
    assert [e["step"] for e in loaded.evals] == [0, 4, 8, 12]


@pytest.mark.parametrize("damage, message", [
    (lambda r: (r / "eval.jsonl").unlink(), "eval.jsonl is missing"),
    (lambda r: (r / "eval.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n'), "eval.jsonl:2 is not valid JSON"),
    (lambda r: (r / "eval.jsonl").write_text('{"step": 1, "per_task_mean@k": 0.1}\n'), "lacks per_task_best@k"),
    (lambda r: (r / "eval.jsonl").write_text(""), "never evaluated"),
    (lambda r: (r / "summary.json").write_text("{oops"), "summary.json is not valid JSON"),
    (lambda r: ((r / "summary.json").unlink(), (r / "config.yaml").unlink()), "neither config.yaml nor summary.json"),
    (lambda r: (r / "config.yaml").write_text("- a\n- b\n"), "config.yaml should hold a mapping"),
])
def test_missing_or_corrupt_files_give_a_clear_error(tmp_path: Path, damage, message):
    run = write_run(tmp_path, "r", "resd", 0, RESD_EVALS[0])
    damage(run)
    with pytest.raises(UserError, match=message.replace(".", r"\.").replace("(", r"\(")):
        report.load_run(run)


def test_missing_paths_give_a_clear_error(tmp_path: Path):
    with pytest.raises(UserError, match="does not exist"):
        report.expand_run_dirs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no run directories"):
        report.expand_run_dirs([tmp_path / "empty"])


def test_cli_report_command(runs_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "cli-out"
    assert main(["report", str(runs_dir / "resd-seed0"), str(runs_dir / "sdpo-seed0"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| RESD | 1 | 8 |" in printed
    assert (out / "report.html").exists() and (out / "report.md").exists()
    # A folder of runs gets its report inside it by default.
    assert main(["report", str(runs_dir)]) == 0
    assert (runs_dir / "report" / "report.md").exists()
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_ablation_runs_are_named_from_their_config(tmp_path: Path):
    run = write_run(tmp_path, "abl", "resd", 0, RESD_EVALS[0])
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "teacher_slots": {"playbook": False, "reflection": True},
                                                     "context": {"use_solution_buffer": False}}))
    assert report.load_run(run).label == "RESD w/o playbook w/o solution buffer"
    # run directories written by resd 0.1 named the ablations with their own keys
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "no_playbook": True, "no_reflection": False}))
    assert report.load_run(run).label == "RESD w/o playbook"


def test_sdpo_is_not_named_an_ablation_for_its_preset_switches(tmp_path: Path):
    run = write_run(tmp_path, "sdpo", "sdpo", 0, RESD_EVALS[0])
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "no_solution_buffer": True}))
    assert report.load_run(run).label == "SDPO"


def test_stream_table_shows_reward_on_each_batch_by_inner_iteration(tmp_path: Path):
    run_dir = write_run(tmp_path, "resd-seed0", "resd", 0, [(0, 0.0, 0.1, 0.3, 0.5), (8, 0.1, 0.2, 0.4, 0.6)])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # batch 0 learns on the stream (0.0 -> 0.5), batch 1 does not (0.25 -> 0.25)
    for row, reward in zip(rows, [0.0, 0.25, 0.25, 0.5, 0.25, 0.0, 0.5, 0.25]):
        row["reward_mean"] = reward
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = report.load_run(run_dir)
    assert report.stream_rewards(run.metrics) == {0: [0.0, 0.25, 0.25, 0.5], 1: [0.25, 0.0, 0.5, 0.25]}
    table = report.stream_markdown({"RESD": [run]})
    assert "| RESD | 2 | 0.125 | 0.375 | 1/2 |" in table
    text = report.run_summary_text(run_dir)
    assert "batch 0: 0.000 -> 0.250 -> 0.250 -> 0.500" in text
    assert "    8 " in text and "0.100" in text  # the step-8 evaluation row


def test_train_command_prints_evaluations_and_stream_rewards(tmp_path: Path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", "configs/smoke.yaml", "--output-dir", str(out), "progress=false"]) == 0
    printed = capsys.readouterr().out
    assert "held-out evaluation" in printed and "batch 0:" in printed
    assert f"run directory: {out}" in printed
