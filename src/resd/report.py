"""Comparison reports built from saved run directories (`resd report`, and the end of `resd compare`).

Pure over the run-directory format written by `resd train`:
  RUN/config.yaml     resolved config (method, seed, env, model, ...)
  RUN/metrics.jsonl   one line per policy update (step, rollouts, loss, time/<phase>, ...)
  RUN/eval.jsonl      one line per evaluation (step, rollouts, the four accuracy metrics, k)
  RUN/summary.json    written at the end (method, env, seed, model, selected_step, ...); optional
                      here so that an interrupted run can still be reported.

What the report shows (RESD paper, arXiv 2605.12741):
  * Table 2 layout: per method, per-task and per-test-case mean@k / best@k at the checkpoint
    chosen by the rank rule of §4.1 (rank each metric across steps, sum, highest total), mean ±
    std over seeds. The same table with ablation labels is Table 3.
  * Learning curves against training step (Figures 6/7) and against rollouts consumed (the
    interaction-efficiency view of §4.4), mean over seeds with a min..max band.
  * Average per-token distillation loss per step (Figure 5c/d).
  * Per-step latency, total per step and split by phase (Figure 8).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from resd.errors import UserError
from resd.eval.metrics import METRIC_KEYS
from resd.files import UnreadableFile, loads_bounded, read_jsonl, read_regular_text
from resd.train.methods import METHOD_NAMES

"""The four evaluation keys in eval.jsonl, in Table 2 column order."""

PHASES: tuple[str, ...] = (
    "time/rollout", "time/scoring", "time/reflection", "time/curation", "time/teacher_forward", "time/student_step",
)
"""Per-phase timings in metrics.jsonl; `time/step` is the total, the remainder is shown as 'other'."""



@dataclass
class Run:
    """One training run read back from disk."""

    path: Path
    label: str
    """Group name in the report (method display name, or an explicit label such as an ablation)."""
    method: str
    env: str
    seed: int | None
    model: str
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    summary: dict[str, Any] | None = None


@dataclass
class MethodRow:
    """One row of the Table-2-layout table: a method's selected checkpoints over its seeds."""

    label: str
    seeds: list[int | None]
    selected_steps: list[int]
    values: dict[str, list[float]] = field(default_factory=dict)
    """metric -> one value per seed, at that seed's selected step (fractions in [0, 1])."""

    def mean(self, metric: str) -> float:
        return statistics.fmean(self.values[metric])

    def std(self, metric: str) -> float:
        """Sample standard deviation over seeds (0 with a single seed)."""
        vals = self.values[metric]
        return statistics.stdev(vals) if len(vals) > 1 else 0.0


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------

def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path} should hold a mapping of config keys, got {type(data).__name__}")
    return data


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = loads_bounded(read_regular_text(path))
    except UnreadableFile as exc:
        raise UserError(f"{path} is not valid JSON ({str(exc)[:120]}); re-run or delete it") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} should hold a JSON object")
    return data


def _lookup(config: dict[str, Any], key: str) -> Any:
    """Find `key` at the top level of a config or one level down (configs may nest sections)."""
    if key in config:
        return config[key]
    for value in config.values():
        if isinstance(value, dict) and key in value:
            return value[key]
    return None


def _check_eval_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    for i, row in enumerate(rows, start=1):
        missing = [k for k in ("step", *METRIC_KEYS) if k not in row]
        if missing:
            raise UserError(f"{path} entry {i} lacks {', '.join(missing)}; eval.jsonl lines need "
                            f"step and {', '.join(METRIC_KEYS)}")
        for k in METRIC_KEYS:
            if not isinstance(row[k], (int, float)) or math.isnan(row[k]):
                raise UserError(f"{path} entry {i}: {k} should be a number, got {row[k]!r}")


def run_label(method: str, config: dict[str, Any]) -> str:
    """Display name: the method's, plus the ablations its config switched on ("RESD w/o playbook").

    Only RESD runs are named by ablation: the SDPO-family presets switch the solution buffer off
    by design, which is the method itself, not an ablation of it.
    """
    from resd.train.methods import ABLATIONS, ablations_of

    name = METHOD_NAMES.get(method, method)
    extras = []
    if _lookup(config, "teacher_slots") == "auto":
        extras.append("(auto slots)")
    if isinstance(_lookup(config, "pg_coef"), (int, float)) and _lookup(config, "pg_coef") > 0:
        extras.append("+ PG")
    if method != "resd":
        return " ".join([name, *extras])
    return " ".join([name, *extras, *(ABLATIONS[key][0] for key in ablations_of(config))])


def is_run_dir(path: Path) -> bool:
    """A directory `resd train` wrote into (as opposed to a folder holding several of them)."""
    return path.is_dir() and any((path / name).exists() for name in ("eval.jsonl", "metrics.jsonl", "summary.json"))


def load_run(path: str | Path, label: str | None = None) -> Run:
    """Read one run directory. Raises UserError naming the file when something is missing or corrupt."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"run directory {path} does not exist (pass directories written by `resd train`)")
    summary = _read_json(path / "summary.json") if (path / "summary.json").exists() else None
    config = _read_yaml(path / "config.yaml") if (path / "config.yaml").exists() else {}
    if summary is None and not config:
        raise UserError(f"{path} has neither config.yaml nor summary.json, so its method and seed are "
                        f"unknown: is it a run directory written by `resd train`?")
    info = {**{k: _lookup(config, k) for k in ("method", "env", "seed", "model")}, **(summary or {})}
    method = info.get("method")
    if not method:
        raise UserError(f"{path}: no 'method' in config.yaml or summary.json")
    metrics = read_jsonl(path / "metrics.jsonl")
    evals = read_jsonl(path / "eval.jsonl")
    _check_eval_rows(path / "eval.jsonl", evals)
    if not evals:
        raise UserError(f"{path / 'eval.jsonl'} is empty: the run never evaluated (set an evaluation "
                        f"schedule, e.g. eval_every, or let the run reach its first evaluation)")
    seed = info.get("seed")
    explicit = label or (summary or {}).get("label") or _lookup(config, "label")
    return Run(
        path=path,
        label=str(explicit or run_label(str(method), config)),
        method=str(method),
        env=str(info.get("env") or "?"),
        seed=int(seed) if seed is not None else None,
        model=str(info.get("model") or "?"),
        config=config,
        metrics=sorted(metrics, key=lambda r: r.get("step", 0)),
        evals=sorted(evals, key=lambda r: r["step"]),
        summary=summary,
    )


def expand_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Each argument is a run directory or a folder of run directories (e.g. a `resd compare` output)."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise UserError(f"{p} does not exist")
        if is_run_dir(p):
            found.append(p)
            continue
        children = sorted(c for c in p.rglob("eval.jsonl"))
        if not children:
            raise UserError(f"{p} holds no run directories (no eval.jsonl below it); pass run directories "
                            f"written by `resd train` or `resd compare`")
        found.extend(c.parent for c in children)
    return found


def group_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Label -> runs (seeds), in first-seen order. Runs on different environments are kept apart."""
    envs = {r.env for r in runs}
    groups: dict[str, list[Run]] = {}
    for run in runs:
        key = run.label if len(envs) == 1 else f"{run.label} [{run.env}]"
        groups.setdefault(key, []).append(run)
    return groups


# ----------------------------------------------------------------------------------------------
# Checkpoint selection and the table
# ----------------------------------------------------------------------------------------------

def select_step(evals: Sequence[dict[str, Any]]) -> int:
    """The checkpoint selection rule of RESD §4.1, applied to every method alike.

    Rank each of the four metrics across the evaluated steps, sum the ranks per step, and pick
    the step with the highest total; a tie goes to the later step. The rule itself lives in
    `resd.eval.metrics.select_checkpoint` (the trainer uses the same one for summary.json).
    """
    from resd.eval.metrics import select_checkpoint

    if not evals:
        raise UserError("no evaluations to select a checkpoint from")
    ordered = sorted(evals, key=lambda e: int(e["step"]))
    index = select_checkpoint([{m: float(e[m]) for m in METRIC_KEYS} for e in ordered], metrics=METRIC_KEYS)
    return int(ordered[index]["step"])


def eval_at(run: Run, step: int) -> dict[str, Any]:
    for row in run.evals:
        if int(row["step"]) == step:
            return row
    raise UserError(f"{run.path}: no evaluation at step {step}")


def method_rows(groups: dict[str, list[Run]]) -> list[MethodRow]:
    """Table 2 rows: per label, each seed's rank-selected evaluation."""
    rows = []
    for label, runs in groups.items():
        row = MethodRow(label=label, seeds=[r.seed for r in runs], selected_steps=[],
                        values={m: [] for m in METRIC_KEYS})
        for run in runs:
            step = select_step(run.evals)
            row.selected_steps.append(step)
            chosen = eval_at(run, step)
            for m in METRIC_KEYS:
                row.values[m].append(float(chosen[m]))
        rows.append(row)
    return rows


def base_row(runs: Sequence[Run]) -> MethodRow | None:
    """The 'Base model' row: step-0 evaluations (before any update), when the runs logged them.

    All methods start from the same weights, so every run's step-0 evaluation is a sample of the
    base model; seeds differ only in sampling.
    """
    zero = [(r, e) for r in runs for e in r.evals if int(e["step"]) == 0]
    if not zero:
        return None
    row = MethodRow(label="Base model", seeds=[r.seed for r, _ in zero], selected_steps=[0] * len(zero),
                    values={m: [float(e[m]) for _, e in zero] for m in METRIC_KEYS})
    return row


def _fmt(row: MethodRow, metric: str) -> str:
    mean = 100 * row.mean(metric)
    if len(row.values[metric]) > 1:
        return f"{mean:.2f} ± {100 * row.std(metric):.2f}"
    return f"{mean:.2f}"


def table_markdown(rows: Sequence[MethodRow], k: int) -> str:
    """Table 2 layout: per-task then per-test-case accuracy, mean@k and best@k, in percent."""
    head = (f"| Method | runs | selected step(s) | per-task m@{k} | per-task b@{k} | "
            f"per-case m@{k} | per-case b@{k} |")
    lines = [head, "|" + "---|" * 7]
    for row in rows:
        steps = ", ".join(str(s) for s in row.selected_steps)
        cells = " | ".join(_fmt(row, m) for m in METRIC_KEYS)
        lines.append(f"| {row.label} | {len(row.seeds)} | {steps} | {cells} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Curves (pure): mean over seeds with min..max band
# ----------------------------------------------------------------------------------------------

@dataclass
class Curve:
    x: list[float]
    mean: list[float]
    low: list[float]
    high: list[float]


def seed_curve(series: Sequence[Sequence[tuple[float, float]]]) -> Curve:
    """Combine per-seed (x, y) series into one curve over the x values all of them share order on.

    Points are aligned by position in the series (the i-th evaluation of each seed, which is the
    same step under one schedule); x is averaged across seeds (rollout counts can differ slightly).
    Seeds that stopped early simply contribute to fewer points.
    """
    length = max((len(s) for s in series), default=0)
    out = Curve([], [], [], [])
    for i in range(length):
        pts = [s[i] for s in series if i < len(s) and s[i][1] is not None and not math.isnan(s[i][1])]
        if not pts:
            continue
        ys = [p[1] for p in pts]
        out.x.append(statistics.fmean(p[0] for p in pts))
        out.mean.append(statistics.fmean(ys))
        out.low.append(min(ys))
        out.high.append(max(ys))
    return out


def eval_curve(runs: Sequence[Run], metric: str, x_key: str) -> Curve:
    return seed_curve([[(float(e.get(x_key, math.nan)), float(e[metric])) for e in r.evals
                        if x_key in e] for r in runs])


def metric_curve(runs: Sequence[Run], key: str) -> Curve:
    return seed_curve([[(float(m["step"]), _num(m.get(key))) for m in r.metrics if "step" in m and
                        _num(m.get(key)) is not None] for r in runs])


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return None if math.isnan(v) else float(v)


def latency_breakdown(runs: Sequence[Run]) -> dict[str, float]:
    """Mean seconds per policy update for each phase, plus 'other' (time/step minus the phases)."""
    rows = [m for r in runs for m in r.metrics]
    out: dict[str, float] = {}
    for phase in PHASES:
        vals = [v for m in rows if (v := _num(m.get(phase))) is not None]
        out[phase] = statistics.fmean(vals) if vals else 0.0
    totals = [v for m in rows if (v := _num(m.get("time/step"))) is not None]
    out["time/step"] = statistics.fmean(totals) if totals else sum(out[p] for p in PHASES)
    out["other"] = max(0.0, out["time/step"] - sum(out[p] for p in PHASES))
    return out


def latency_markdown(groups: dict[str, list[Run]]) -> str:
    names = [p.split("/", 1)[1] for p in PHASES] + ["other", "total"]
    lines = ["| Method | " + " | ".join(names) + " | context share |", "|" + "---|" * (len(names) + 2)]
    for label, runs in groups.items():
        b = latency_breakdown(runs)
        cells = [f"{b[p]:.2f}" for p in PHASES] + [f"{b['other']:.2f}", f"{b['time/step']:.2f}"]
        context = b["time/reflection"] + b["time/curation"]
        share = f"{100 * context / b['time/step']:.1f}%" if b["time/step"] > 0 else "n/a"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {share} |")
    return "\n".join(lines)


def stream_rewards(metrics: Sequence[dict[str, Any]]) -> dict[int, list[float]]:
    """Training reward per batch, one value per inner iteration: how the policy does on the same
    prompts as it re-generates after each update (the streaming inner loop of §3.1). A batch whose
    last value is above its first one was learned on the stream, whatever the held-out score did."""
    out: dict[int, list[float]] = {}
    for m in metrics:
        batch, reward = m.get("batch"), _num(m.get("reward_mean"))
        if isinstance(batch, int) and reward is not None:
            out.setdefault(batch, []).append(reward)
    return out


def stream_markdown(groups: dict[str, list[Run]]) -> str:
    """Mean training reward at the first and at the last inner iteration of each batch (mean over
    batches and seeds), and the share of batches that ended above where they started."""
    lines = ["| Method | batches | reward, first attempt | reward, last attempt | batches improved |",
             "|---|---|---|---|---|"]
    for label, runs in groups.items():
        rows = [r for run in runs for r in stream_rewards(run.metrics).values() if r]
        if not rows:
            continue
        first = statistics.fmean(r[0] for r in rows)
        last = statistics.fmean(r[-1] for r in rows)
        improved = sum(r[-1] > r[0] for r in rows)
        lines.append(f"| {label} | {len(rows)} | {first:.3f} | {last:.3f} | {improved}/{len(rows)} |")
    return "\n".join(lines)


def run_summary_text(run_dir: str | Path) -> str:
    """What `resd train` prints at the end: held-out evaluations and the reward on the stream
    (works on any run directory, also one without evaluations)."""
    root = Path(run_dir)
    metrics = read_jsonl(root / "metrics.jsonl", missing_ok=True)
    evals = read_jsonl(root / "eval.jsonl", missing_ok=True)
    lines = []
    if evals:
        ks = {int(e["k"]) for e in evals if isinstance(e.get("k"), (int, float))}
        lines.append(f"held-out evaluation (k={'/'.join(map(str, sorted(ks))) or '?'}):")
        lines.append(f"  {'step':>5} {'rollouts':>9} " + " ".join(f"{m:>16}" for m in METRIC_KEYS))
        for e in evals:
            lines.append(f"  {int(e['step']):>5} {int(e.get('rollouts', 0)):>9} "
                         + " ".join(f"{float(e[m]):>16.3f}" for m in METRIC_KEYS))
    summary = json.loads((root / "summary.json").read_text()) if (root / "summary.json").exists() else {}
    quality = summary.get("context_quality") or {}
    if quality.get("reflection_requests"):
        q = quality
        lines.append(f"context: {int(q['reflection_requests'])} reflections asked, "
                     f"{int(q.get('reflections', 0) + q.get('reflections_unrelated', 0))} parsed, "
                     f"{int(q.get('reflections', 0))} kept, {int(q.get('reflections_unrelated', 0))} dropped as "
                     f"unrelated to the attempt; {int(q.get('added', 0))} playbook entries added, "
                     f"{int(q.get('entries_unrelated', 0))} dropped as unrelated")
    for warning in summary.get("health_warnings", []):
        lines.append(f"health warning at step {warning.get('step')}: {warning.get('message')}")
    batches = stream_rewards(metrics)
    if batches:
        lines.append("training reward on each batch, by inner iteration (same prompts, re-generated):")
        for b, rewards in sorted(batches.items()):
            lines.append(f"  batch {b}: " + " -> ".join(f"{r:.3f}" for r in rewards))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Plots (matplotlib, Agg canvas: no display needed)
# ----------------------------------------------------------------------------------------------

def _figure(ncols: int, width: float = 5.2, height: float = 3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _integer_x(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _per_step(ax, ylabel: str) -> None:
    """A per-training-step panel's axes, grid and legend."""
    _integer_x(ax)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _draw(ax, curve: Curve, color, label: str, style: str = "-") -> None:
    if not curve.x:
        return
    ax.plot(curve.x, curve.mean, style, color=color, label=label, marker="o", markersize=2.5)
    if any(lo != hi for lo, hi in zip(curve.low, curve.high)):
        ax.fill_between(curve.x, curve.low, curve.high, color=color, alpha=0.15, linewidth=0)


def plot_curves(groups: dict[str, list[Run]], x_key: str, path: Path, k: int) -> Path:
    """Two panels (per-task, per-test-case accuracy); solid mean@k, dashed best@k (Figures 6/7)."""
    fig, (ax_task, ax_case) = _figure(2)
    for color, (label, runs) in zip(_colors(len(groups)), groups.items()):
        for ax, level in ((ax_task, "per_task"), (ax_case, "per_case")):
            _draw(ax, eval_curve(runs, f"{level}_mean@k", x_key), color, f"{label} / mean@{k}", "-")
            _draw(ax, eval_curve(runs, f"{level}_best@k", x_key), color, f"{label} / best@{k}", "--")
    xlabel = "training step" if x_key == "step" else "rollouts consumed"
    for ax, title in ((ax_task, "per-task accuracy"), (ax_case, "per-test-case accuracy")):
        _integer_x(ax)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    ax_case.legend(fontsize=7, loc="best")
    fig.savefig(path, dpi=110)
    return path


def plot_loss(groups: dict[str, list[Run]], path: Path) -> Path:
    """Average per-token distillation loss per step (Figure 5c/d). GRPO logs its policy loss."""
    fig, (ax,) = _figure(1, width=6.0)
    for color, (label, runs) in zip(_colors(len(groups)), groups.items()):
        _draw(ax, metric_curve(runs, "loss"), color, label)
    _per_step(ax, "loss (token mean)")
    fig.savefig(path, dpi=110)
    return path


HEALTH: tuple[tuple[str, str], ...] = (
    ("health/teacher_advantage", "teacher advantage (nats/token, > 0 is good)"),
    ("health/entropy", "student entropy on its samples (nats/token)"),
    ("grad_norm", "gradient norm"),
    ("signal_fraction", "share of samples with a learning signal"),
)
"""The training-health signals plotted per step (resd.train.health explains the warnings)."""


def plot_health(groups: dict[str, list[Run]], path: Path) -> Path:
    """One panel per health signal, per step; a method that does not log one has no line there."""
    fig, axes = _figure(len(HEALTH), width=3.9, height=3.2)
    for ax, (key, title) in zip(axes, HEALTH):
        for color, (label, runs) in zip(_colors(len(groups)), groups.items()):
            if any(isinstance(m.get(key), (int, float)) for r in runs for m in r.metrics):
                _draw(ax, metric_curve(runs, key), color, label)
        if key == "health/teacher_advantage":
            ax.axhline(0.0, color="grey", linewidth=0.8)
        _integer_x(ax)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("training step", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7)
    fig.savefig(path, dpi=110)
    return path


def health_markdown(runs: Sequence[Run]) -> str:
    """Every health warning of every run, or a line saying there were none."""
    lines = [f"- {r.label}, seed {r.seed}, step {w.get('step')}: {w.get('message')}"
             for r in runs for w in (r.summary or {}).get("health_warnings", [])]
    return "\n".join(lines) if lines else "No run raised a health warning."


def plot_latency(groups: dict[str, list[Run]], path: Path) -> Path:
    """Left: seconds per step over training (Figure 8). Right: mean per-phase split, stacked."""
    fig, (ax_line, ax_bar) = _figure(2)
    colors = _colors(len(groups))
    for color, (label, runs) in zip(colors, groups.items()):
        _draw(ax_line, metric_curve(runs, "time/step"), color, label)
    _per_step(ax_line, "time per step (s)")
    ax_line.set_ylim(bottom=0)

    parts = [*PHASES, "other"]
    part_colors = _colors(len(parts))
    labels = list(groups)
    bottoms = [0.0] * len(labels)
    breakdowns = [latency_breakdown(groups[l]) for l in labels]
    for part, color in zip(parts, part_colors):
        heights = [b[part] for b in breakdowns]
        ax_bar.bar(labels, heights, bottom=bottoms, color=color, label=part.split("/")[-1])
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    ax_bar.set_ylabel("mean seconds per step")
    ax_bar.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax_bar.tick_params(axis="x", labelrotation=20)
    fig.savefig(path, dpi=110)
    return path


# ----------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------

@dataclass
class Report:
    """What `build_report` wrote."""

    markdown: Path
    html: Path
    table_json: Path
    plots: dict[str, Path]
    rows: list[MethodRow]


def _k_of(runs: Sequence[Run]) -> int:
    ks = {int(e["k"]) for r in runs for e in r.evals if isinstance(e.get("k"), (int, float))}
    return ks.pop() if len(ks) == 1 else 4


def _describe(runs: Sequence[Run]) -> list[str]:
    envs = sorted({r.env for r in runs})
    models = sorted({r.model for r in runs})
    notes = [f"- environment: {', '.join(envs)}", f"- model: {', '.join(models)}",
             f"- runs: {len(runs)}"]
    for r in runs:
        done = "finished" if r.summary is not None else "no summary.json (interrupted or still running)"
        last = r.metrics[-1] if r.metrics else {}
        notes.append(f"  - `{r.path}`: {r.label}, seed {r.seed}, {len(r.evals)} evaluations, last step "
                     f"{last.get('step', '?')}, {last.get('rollouts', '?')} rollouts, {done}")
    return notes


def build_report(runs: Sequence[Run], out_dir: str | Path, title: str = "resd comparison") -> Report:
    """Write report.md, report.html (plots embedded as base64 PNG), table.json and the PNGs."""
    if not runs:
        raise UserError("no runs to report on")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    k = _k_of(runs)
    rows = method_rows(groups)
    base = base_row(runs)
    table_rows = ([base] if base else []) + rows

    plots = {
        "curves_step": plot_curves(groups, "step", out / "curves_step.png", k),
        "curves_rollouts": plot_curves(groups, "rollouts", out / "curves_rollouts.png", k),
        "loss": plot_loss(groups, out / "loss.png"),
        "latency": plot_latency(groups, out / "latency.png"),
        "health": plot_health(groups, out / "health.png"),
    }
    sections: list[tuple[str, str, str | None]] = [
        ("Runs", "\n".join(_describe(runs)), None),
        ("Selected checkpoints (Table 2 layout, %; mean ± std over seeds)",
         table_markdown(table_rows, k) + "\n\nEach seed's checkpoint is chosen by the same rule for every "
         "method: rank each of the four metrics across evaluated steps, sum the ranks, take the highest "
         "total (ties: the later step)." + ("\nThe base model row is the step-0 evaluation." if base else ""),
         None),
        ("Learning curves against training step", "Solid: mean@k, dashed: best@k; band: min..max over seeds.",
         "curves_step"),
        ("Learning curves against rollouts consumed",
         "Same curves against the cumulative number of sampled responses (interaction budget).",
         "curves_rollouts"),
        ("Distillation loss per step", "Token-mean loss of each policy update (GRPO: its policy loss).", "loss"),
        ("Training health", health_markdown(runs) + "\n\nTeacher advantage: token mean of log p_teacher - "
         "log p_student on the sampled tokens, signed + on accepted and - on rejected samples (> 0: the "
         "teacher prefers what the environment accepted). Entropy: -log p of the student's own samples.",
         "health"),
        ("Learning on the stream", stream_markdown(groups) + "\n\nTraining reward on the batch's own prompts at "
         "the first and the last inner iteration (each iteration re-generates after an update).", None),
        ("Per-step latency (Figure 8)", latency_markdown(groups) + "\n\nSeconds per policy update; context "
         "share = (reflection + curation) / total.", "latency"),
    ]
    md = [f"# {title}", ""]
    for heading, body, plot in sections:
        md += [f"## {heading}", "", body, ""]
        if plot:
            md += [f"![{heading}]({plots[plot].name})", ""]
    markdown = out / "report.md"
    markdown.write_text("\n".join(md), encoding="utf-8")

    html_path = out / "report.html"
    html_path.write_text(_html(title, sections, plots), encoding="utf-8")

    table_json = out / "table.json"
    table_json.write_text(json.dumps({
        "k": k,
        "rows": [{"label": r.label, "seeds": r.seeds, "selected_steps": r.selected_steps,
                  "values": r.values, "mean": {m: r.mean(m) for m in METRIC_KEYS},
                  "std": {m: r.std(m) for m in METRIC_KEYS}} for r in table_rows],
        "latency": {label: latency_breakdown(rs) for label, rs in groups.items()},
        "runs": [str(r.path) for r in runs],
    }, indent=2), encoding="utf-8")
    return Report(markdown=markdown, html=html_path, table_json=table_json, plots=plots, rows=table_rows)


def _md_table_to_html(text: str) -> str:
    """Render our own markdown (pipe tables, '- ' lists, paragraphs) as simple HTML."""
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            cells = [[html.escape(c.strip()) for c in row.strip("|").split("|")] for row in block]
            head, body = cells[0], cells[2:]
            out.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
                       + "</table>")
            continue
        if line.strip():
            item = html.escape(line.strip().lstrip("- ").replace("`", ""))
            indent = len(line) - len(line.lstrip())
            out.append(f"<div style='margin-left:{indent}em'>{item}</div>" if line.lstrip().startswith("- ")
                       else f"<p>{item}</p>")
        i += 1
    return "\n".join(out)


def _html(title: str, sections: list[tuple[str, str, str | None]], plots: dict[str, Path]) -> str:
    style = ("body{font-family:sans-serif;max-width:1150px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;"
             "text-align:right}th{background:#eee}td:first-child{text-align:left}img{max-width:100%}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"]
    for heading, body, plot in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{_md_table_to_html(body)}")
        if plot:
            data = base64.b64encode(plots[plot].read_bytes()).decode("ascii")
            parts.append(f"<img alt='{html.escape(heading)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def report_from_dirs(paths: Iterable[str | Path], out_dir: str | Path, title: str = "resd comparison",
                     labels: dict[str, str] | None = None) -> Report:
    """Load run directories (or folders of them) and build the report."""
    labels = labels or {}
    runs = [load_run(p, labels.get(str(p))) for p in expand_run_dirs(paths)]
    return build_report(runs, out_dir, title)


# ----------------------------------------------------------------------------------------------
# `resd report`
# ----------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="run directories written by `resd train` (or a folder of them, e.g. a "
                             "`resd compare` output)")
    parser.add_argument("--out", default=None,
                        help="where to write report.md/report.html/PNGs (default: <first RUN_DIR's parent>/report)")
    parser.add_argument("--title", default=None, help="report title (default: 'resd comparison on ENV')")


def run(args: argparse.Namespace) -> int:
    dirs = expand_run_dirs(args.runs)
    runs = [load_run(p) for p in dirs]
    first = Path(args.runs[0])
    # A folder of runs gets its report inside it; single run directories get a sibling folder.
    out = Path(args.out) if args.out else (first.parent if is_run_dir(first) else first) / "report"
    title = args.title or f"resd comparison on {', '.join(sorted({r.env for r in runs}))}"
    report = build_report(runs, out, title)
    k = _k_of(runs)
    print(table_markdown(report.rows, k))
    print(f"\nwrote {report.markdown} and {report.html} ({len(report.plots)} plots)")
    return 0
