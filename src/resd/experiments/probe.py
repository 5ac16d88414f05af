"""`resd probe`: does the teacher know more than the student? Measured per teacher-prompt slot,
before any training.

Self-distillation only teaches when the teacher (the same model with a richer prompt) puts more
probability than the student on what the environment accepts and less on what it rejects (paper
§3.1 argues it for feedback alone, token by token). For N training tasks:

1. the student samples k answers per task; the first rejected one is the task's *failure*;
2. the *good* answer is the environment's reference solution, else a sampled accepted answer;
3. the RESD context engine reflects on the failures and curates a playbook from them (what a
   teacher would read after one context update);
4. both answers are scored under the student's prompt and under teacher prompts built with the
   method's template from one slot alone, and from the slots added in order
   feedback -> previous trial -> reflection -> playbook -> solution;
5. teacher advantage = log p_teacher(answer) - log p_student(answer), in nats per answer and per
   token; the *margin* = advantage(good) - advantage(failed), per token, is what `auto` reads:
   > 0 means the slot makes the teacher prefer the accepted answer more than the student does.

Output: probe.json (every number, means with 95% CIs over tasks), probe.png (a bar chart), and a
one-line verdict naming the slots that help and those that hurt. `teacher_slots: auto` in a
training config runs this on the training split at the start and keeps only helpful slots.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from resd.context import (SLOT_NAMES, ContextConfig, ContextPolicy, ContextUpdater, PlaybookContext, TeacherSlots,
                          fit_teacher_prompt, teacher_messages)
from resd.context.reflect import is_degenerate
from resd.envs import Environment, Outcome
from resd.errors import UserError
from resd.eval.metrics import mean_ci
from resd.files import write_json_atomic
from resd.generation.engines import HFEngine, generate_fn
from resd.generation.sampling import encode_prompts, eos_token_ids
from resd.rollout import groups_of, score_samples
from resd.policy.packing import answer_logprobs



@dataclass(frozen=True)
class ProbeSettings:
    tasks: int = 8
    """Training tasks probed (a seeded random subset)."""
    samples: int = 8
    """Answers sampled per task to find a failure (and, without a reference solution, a success)."""
    max_new_tokens: int = 256
    """Token budget of those answers."""
    temperature: float = 1.0
    top_p: float = 0.95
    template: str = "resd"
    """The teacher template (the method's)."""
    max_teacher_prompt_length: int = 4096
    success_threshold: float = 1.0
    batch_size: int = 8
    seed: int = 0


@dataclass
class TaskEvidence:
    """What one task contributes: per variant, the advantage of the good and the failed answer."""

    task_id: str
    good_source: str
    """"reference" or "sampled"."""
    good_tokens: int
    failed_tokens: int
    shown: dict[str, bool]
    """Which slots had content for this task (an empty reflection or playbook cannot be probed)."""
    advantage: dict[str, tuple[float, float]] = field(default_factory=dict)
    """variant -> (advantage of the good answer, advantage of the failed answer), nats per answer."""


def _variants(template_slots: TeacherSlots) -> list[tuple[str, tuple[str, ...]]]:
    """(name, slots) of every variant: each slot alone, then the slots added in order."""
    usable = template_slots.on()  # SLOT_NAMES order: the order the cumulative variants add them
    alone = [(f"alone:{s}", (s,)) for s in usable]
    cumulative = [(f"cumulative:{s}", tuple(usable[:i + 1])) for i, s in enumerate(usable)]
    return alone + cumulative


def _stat(values: list[float]) -> dict[str, float | int]:
    mean, half = mean_ci(values)
    return {"n": len(values), "mean": mean, "ci95": half}


@dataclass
class ProbeResult:
    env: str
    model: str
    settings: ProbeSettings
    evidence: list[TaskEvidence]
    skipped: dict[str, int]
    template_slots: list[str]

    def stats(self, variant: str) -> dict[str, Any]:
        rows = [e for e in self.evidence if variant in e.advantage]
        good = [e.advantage[variant][0] for e in rows]
        bad = [e.advantage[variant][1] for e in rows]
        return {
            "good_answer": _stat(good), "failed_answer": _stat(bad),
            "good_per_token": _stat([g / e.good_tokens for g, e in zip(good, rows)]),
            "failed_per_token": _stat([b / e.failed_tokens for b, e in zip(bad, rows)]),
            "margin_per_token": _stat([g / e.good_tokens - b / e.failed_tokens for g, b, e in zip(good, bad, rows)]),
        }

    def margins(self, kind: str = "alone") -> dict[str, dict[str, float | int]]:
        """slot -> the per-token margin stats of its `alone` or `cumulative` variant."""
        return {s: self.stats(f"{kind}:{s}")["margin_per_token"] for s in self.template_slots}

    def helpful_slots(self) -> list[str]:
        """Slots whose margin alone is positive (`teacher_slots: auto` keeps these)."""
        return [s for s, m in self.margins().items() if m["n"] > 0 and m["mean"] > 0]

    def verdict(self) -> str:
        parts_help, parts_hurt, unknown = [], [], []
        for slot, m in self.margins().items():
            if m["n"] == 0:
                unknown.append(slot)
                continue
            half = m["ci95"] if m["ci95"] == m["ci95"] else float("inf")
            sure = abs(m["mean"]) > half
            text = f"{slot} {m['mean']:+.2f}{'' if sure else ' (n.s.)'}"
            (parts_help if m["mean"] > 0 else parts_hurt).append(text)
        n = len(self.evidence)
        line = f"teacher vs student on {n} task{'s' * (n != 1)} (margin, nats/token): "
        line += "helps: " + (", ".join(parts_help) or "none") + "; hurts: " + (", ".join(parts_hurt) or "none")
        if unknown:
            line += "; no evidence (empty for every task): " + ", ".join(unknown)
        all_slots = self.stats(f"cumulative:{self.template_slots[-1]}")["margin_per_token"] if self.template_slots else None
        if all_slots and all_slots["n"]:
            line += f"; all slots together {all_slots['mean']:+.2f}"
        return line

    def to_dict(self) -> dict[str, Any]:
        variants = [name for name, _ in _variants(TeacherSlots(**{s: s in self.template_slots for s in SLOT_NAMES}))]
        return {
            "env": self.env, "model": self.model, "settings": asdict(self.settings),
            "probed_tasks": len(self.evidence), "skipped": self.skipped, "template_slots": self.template_slots,
            "verdict": self.verdict(), "helpful_slots": self.helpful_slots(),
            "variants": {v: self.stats(v) for v in variants},
            "tasks": [asdict(e) for e in self.evidence],
        }

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "probe.json", self.to_dict())
        return out / "probe.json", plot_probe(self, out / "probe.png")


def plot_probe(result: ProbeResult, path: Path) -> Path:
    """Per-token margin per slot, alone and added in order, with 95% CI error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, kind, title in ((axes[0], "alone", "each slot alone"), (axes[1], "cumulative", "slots added in order")):
        margins = result.margins(kind)
        names = list(margins)
        means = [m["mean"] if m["n"] else 0.0 for m in margins.values()]
        errors = [m["ci95"] if m["n"] > 1 and m["ci95"] == m["ci95"] else 0.0 for m in margins.values()]
        colors = ["tab:green" if v > 0 else "tab:red" for v in means]
        ax.bar(range(len(names)), means, yerr=errors, color=colors, capsize=4)
        ax.set_xticks(range(len(names)), [("+ " if kind == "cumulative" and i else "") + n.replace("_", " ")
                                          for i, n in enumerate(names)], rotation=20, fontsize=8)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        for i, m in enumerate(margins.values()):
            ax.annotate(f"n={m['n']}", (i, 0), textcoords="offset points", xytext=(0, -14 if means[i] >= 0 else 6),
                        ha="center", fontsize=7)
    axes[0].set_ylabel("margin (nats/token): good - failed,\nteacher minus student")
    fig.suptitle(f"{result.env}, {result.model}: does the teacher know more than the student?", fontsize=10)
    fig.savefig(path, dpi=110)
    return path


# ----------------------------------------------------------------------------------------------
# The probe
# ----------------------------------------------------------------------------------------------

def probe_teacher(model: Any, tokenizer: Any, env: Environment, settings: ProbeSettings, *,
                  context: ContextConfig | None = None, model_name: str = "", progress: bool = True) -> ProbeResult:
    """Measure the teacher advantage per slot on `settings.tasks` training tasks of `env`.

    The answers are sampled through the HF engine and scored by `resd.rollout.score_samples`; the
    failures' teacher contexts come from RESD's context engine (`PlaybookContext`, every slot on,
    the good answer as the failure's successful peer); each variant's teacher prompt is rendered by
    `teacher_messages` with only its slots switched on, as in training; answers are scored by
    `resd.policy.packing.answer_logprobs`, the update's own forward."""
    import random

    from tqdm.auto import tqdm

    template_slots = TeacherSlots().restricted_to(settings.template)
    tasks = list(env.tasks("train"))
    if not tasks:
        raise UserError(f"{env.name} has no training tasks to probe")
    random.Random(settings.seed).shuffle(tasks)
    tasks = tasks[:settings.tasks]
    skipped = {"no_failure": 0, "no_good_answer": 0}

    engine = HFEngine(model, tokenizer, batch_size=settings.batch_size)
    with torch.random.fork_rng():  # the probe never shifts a training run's random stream
        rollouts = engine.sample([t.prompt for t in tasks], n=settings.samples, max_new_tokens=settings.max_new_tokens,
                                 temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed,
                                 progress="probe: sampling" if progress else None)
    eos = eos_token_ids(model, tokenizer)[0]
    picked, batch = [], []
    for group in groups_of(score_samples(env, tasks, rollouts, settings.success_threshold)):
        task = group.task
        failure = next((s for s in group.samples if not s.succeeded and s.completion_ids), None)
        success = next((s for s in group.successes() if s.completion_ids), None)
        reference = env.reference_solution(task)
        if failure is None:
            skipped["no_failure"] += 1
            continue
        if reference:
            good_ids, good_source = list(tokenizer(reference, add_special_tokens=False)["input_ids"]) + [eos], "reference"
        elif success is not None:
            good_ids, good_source = success.completion_ids, "sampled"
        else:
            skipped["no_good_answer"] += 1
            continue
        # The teacher's solution: a sampled success when there is one, else the reference.
        good = success or replace(failure, text=reference, completion_ids=good_ids, succeeded=True,
                                  outcome=Outcome(reward=1.0, acc=1.0, feedback=""))
        picked.append((task, failure, good_ids, good_source))
        batch += [replace(failure, index=len(batch)), replace(good, index=len(batch) + 1)]

    # One RESD context step over the failures: reflections and the playbook curated from them.
    updater = ContextUpdater(context or ContextConfig(), generate_fn(engine, stop_when=is_degenerate), seed=settings.seed)
    contexts = PlaybookContext(ContextPolicy(), updater).step(1, batch).contexts[::2] if picked else []

    variants = _variants(template_slots)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    evidence = []
    model.eval()
    bar = tqdm(total=len(picked), desc="probe: scoring", unit="task", disable=not progress, dynamic_ncols=True)
    for (task, failed, good_ids, good_source), context in zip(picked, contexts):
        content = context.slot_values()
        answers = [good_ids, failed.completion_ids]
        student = answer_logprobs(model, encode_prompts(tokenizer, [task.prompt])[0], answers, pad_id,
                                  settings.temperature)
        row = TaskEvidence(task.id, good_source, len(good_ids), len(failed.completion_ids),
                           shown={s: bool(content[s]) for s in SLOT_NAMES})
        cache: dict[tuple[str, ...], list[float]] = {}
        for name, slots in variants:
            present = tuple(s for s in slots if content[s])
            if not present or (name.startswith("alone:") and present != slots):
                continue  # that slot is empty for this task: no evidence either way
            if present not in cache:
                shown = TeacherSlots(**{s: s in present for s in SLOT_NAMES})
                ids, _ = fit_teacher_prompt(tokenizer, teacher_messages(settings.template, task.prompt, context, shown),
                                            settings.max_teacher_prompt_length)
                cache[present] = answer_logprobs(model, ids, answers, pad_id, settings.temperature)
            teacher = cache[present]
            row.advantage[name] = (teacher[0] - student[0], teacher[1] - student[1])
        evidence.append(row)
        bar.update(1)
    bar.close()
    return ProbeResult(env=env.name, model=model_name, settings=settings, evidence=evidence, skipped=skipped,
                       template_slots=template_slots.on())


# ----------------------------------------------------------------------------------------------
# `resd probe`
# ----------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default=None, help="environment name (`resd envs` lists them) or module:Class "
                        "(default: the config's)")
    parser.add_argument("--model", default=None, help="model spec (default: the config's, smollm2-135m)")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="training config: its method's template, sampling, budgets and context settings")
    parser.add_argument("--method", default=None, help="method whose teacher template is probed (default: the config's, resd)")
    parser.add_argument("--tasks", type=int, default=8, help="training tasks to probe (default 8)")
    parser.add_argument("--samples", type=int, default=8, help="answers sampled per task (default 8)")
    parser.add_argument("--update", action="store_true",
                        help="also take one real distillation update per slot variant on a copy of the model and "
                             "measure the held-out change (resd.experiments.update_probe)")
    parser.add_argument("--update-tasks", type=int, default=4, help="with --update: prompts the update is taken on")
    parser.add_argument("--heldout", type=int, default=16,
                        help="with --update: other training prompts the update is checked on (default 16)")
    parser.add_argument("--env-opt", action="append", default=[], metavar="KEY=VALUE", help="environment option")
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (default runs/probe-<env>)")


def run(args: argparse.Namespace) -> int:
    from resd.envs import get
    from resd.eval.evaluate import parse_env_options
    from resd.models import load
    from resd.train.config import load_config

    if min(args.tasks, args.samples, args.update_tasks, args.heldout) < 1:
        raise UserError("--tasks, --samples, --update-tasks and --heldout must be >= 1")
    if not args.env and not args.config:
        raise UserError("give --env NAME (or --config FILE naming one)")
    options = parse_env_options(args.env_opt)
    values: dict[str, Any] = {"env": args.env} if args.env else {}
    if options:
        values["env_options"] = options
    if args.model:
        values["model"] = args.model
    cfg = load_config(args.config, [], method=args.method, **values)
    env = get(cfg.env, **cfg.env_options)
    model, tokenizer = load(cfg.model, dtype=cfg.dtype)
    settings = probe_settings(cfg, tasks=args.tasks, samples=args.samples)
    result = probe_teacher(model, tokenizer, env, settings, context=cfg.context, model_name=cfg.model)
    out = Path(args.out or f"runs/probe-{cfg.env.replace(':', '_')}")
    json_path, png = result.write(out)
    print(result.verdict())
    print(f"details: {json_path}  chart: {png}")
    if args.update:
        from resd.experiments.update_probe import UpdateProbeSettings, probe_update
        from resd.train.build import build_accelerator

        accelerator = build_accelerator(cfg, None)
        updated = probe_update(cfg, model, tokenizer, env, UpdateProbeSettings(
            tasks=args.update_tasks, heldout=args.heldout, samples=args.samples, seed=cfg.seed), accelerator)
        json_path, png = updated.write(out)
        print(updated.verdict())
        print(f"details: {json_path}  chart: {png}")
    return 0


def probe_settings(cfg: Any, *, tasks: int, samples: int) -> ProbeSettings:
    """The probe of a training config: its template, sampling and budgets."""
    return ProbeSettings(tasks=tasks, samples=samples, max_new_tokens=cfg.max_completion_length,
                         temperature=cfg.temperature, top_p=cfg.top_p, template=cfg.template,
                         max_teacher_prompt_length=cfg.max_teacher_prompt_length,
                         success_threshold=cfg.success_reward_threshold, batch_size=cfg.generation_batch_size,
                         seed=cfg.seed)
