"""Where does a self-distillation update push the student, and does one update help on held-out prompts?

Issue 21: on the start-word task SDPO's teacher prefers the accepted answer (probe margin > 0) yet
SDPO makes SmolLM2-135M worse. Hypothesis under test: the teacher's distribution is *broader* than
the student's even where it ranks the accepted answer higher, so pulling the student towards it
spreads the student's mass. This script measures it, for each method's teacher template (default
SDPO and RESD), on the config's task (default configs/demo.yaml: constraints, start word):

1. Samples `--samples` answers for `--tasks` training prompts (the update set) and `--heldout`
   other training prompts (never the test split), scores them, and builds every sample's teacher
   context with the method's real context engine (resd.train.build.build_context_engine) and
   teacher prompt, exactly as the trainer does.
2. Token diagnosis on the update set, before any update: at each sampled token, the student's and
   the teacher's entropy over the full vocabulary, the teacher advantage log p_t(y) - log p_s(y),
   the full-vocabulary KL both ways, and |d loss_t / d logits_t| of the method's real per-token loss,
   by outcome (accepted / rejected), token kind (first token / format: no letter or digit /
   content) and position.
3. Update probe: for each loss variant (`--variant`, default: the trainer's loss, failures only,
   sharpened teacher, top-k teacher, token gate, failures + sharpened), on a deepcopy of the model,
   ONE update through the real `resd.policy.update.PolicyUpdate` (built by
   `resd.train.build.build_update` from the config) on the update set; then the change in held-out
   log-probability of the known-good answer (the environment's reference solution, else a sampled
   accepted one) and of a sampled failed answer, nats/token, mean and 95% CI over held-out prompts,
   printed next to the probe margin of the same teacher prompts; the change of the student's entropy
   at the update's own positions; and the tokens whose probability the update raised and lowered
   most (summed over those positions).

Output: OUT/diagnosis.json (every number), OUT/diagnosis-<method>.png (plots), a table on stdout.

    python benchmarks/distill_diagnosis.py                       # ~15 min on 2 CPU cores
    python benchmarks/distill_diagnosis.py --quick               # tiny-random model, seconds
    python benchmarks/distill_diagnosis.py --methods sdpo --variant sharp=distillation_teacher_temperature=0.5
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_VARIANTS = [
    "trainer=",
    "failures=distill_outcomes=failures",
    "sharp0.5=distillation_teacher_temperature=0.5",
    "teacher_top5=distillation_teacher_topk=5",
    "gate=distillation_token_gate=true",
    "failures+sharp0.5=distill_outcomes=failures,distillation_teacher_temperature=0.5",
]
"""NAME=KEY=VALUE[,KEY=VALUE...]: config overrides of one update-probe variant ("trainer" = none)."""

KINDS = ("first", "format", "content")
OUTCOMES = ("accepted", "rejected")


class Progress:
    """One line per finished unit on stderr: done/total, elapsed, rate and ETA."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.perf_counter()

    def step(self, label: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else float("nan")
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        print(f"[{self.done}/{self.total}] {label}  elapsed {elapsed / 60:.1f} min, {60 * rate:.2f} units/min, "
              f"ETA {eta / 60:.1f} min", file=sys.stderr, flush=True)


def stat(values: list[float]) -> dict[str, float]:
    from resd.eval.metrics import mean_ci

    mean, half = mean_ci(values)
    return {"n": len(values), "mean": mean, "ci95": half}


def fmt(s: dict[str, float], digits: int = 3) -> str:
    if not s["n"]:
        return "-"
    half = "" if math.isnan(s["ci95"]) else f" ± {s['ci95']:.{digits}f}"
    return f"{s['mean']:+.{digits}f}{half}"


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, rest = text.partition("=")
    if not name:
        raise SystemExit(f"--variant {text!r}: write NAME=KEY=VALUE[,KEY=VALUE] (or NAME= for the trainer's loss)")
    return name, [kv for kv in rest.split(",") if kv]


def token_kind(tokenizer: Any, token_id: int, position: int, special: set[int]) -> str:
    """first: the response's first token; format: special tokens and tokens with no letter or
    digit (spaces, punctuation, newlines, EOS); content: the rest."""
    if position == 0:
        return "first"
    if token_id in special:
        return "format"
    text = tokenizer.decode([token_id])
    return "content" if any(ch.isalnum() for ch in text) else "format"


@dataclass
class MethodSetup:
    method: str
    cfg: Any
    samples: list[Any]
    items: list[Any]
    margin: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# measurements
# ----------------------------------------------------------------------------------------------

def token_diagnosis(model: Any, tokenizer: Any, update: Any, items: list[Any], chunk: int) -> list[dict[str, Any]]:
    """One record per distilled token of `items` (before any update): entropies, KLs, teacher
    advantage and the norm of the real per-token loss's gradient at that position."""
    import torch
    import torch.nn.functional as F

    from resd.distill.losses import per_token_loss, sequence_logprobs
    from resd.policy.packing import pack, response_logits

    special = set(tokenizer.all_special_ids)
    temperature = update.temperature
    rows: list[dict[str, Any]] = []
    model.eval()
    for start in range(0, len(items), chunk):
        part = items[start:start + chunk]
        student_in = pack([it.prompt_ids for it in part], [it.completion_ids for it in part], update.pad_id)
        teacher_in = pack([it.teacher_prompt_ids for it in part], [it.completion_ids for it in part], update.pad_id)
        with torch.no_grad():
            s_logits = response_logits(model, student_in, temperature).float()
            t_logits = response_logits(model, teacher_in, temperature).float()  # EMA teacher = student at step 0
        width = s_logits.shape[1]
        mask = torch.tensor([it.mask + [0.0] * (width - len(it.mask)) for it in part])
        ids = student_in.completion_ids
        leaf = s_logits.clone().requires_grad_(True)
        per_token = per_token_loss(update.loss, leaf, ids, mask, teacher_logits=t_logits,
                                   advantages=torch.tensor([it.advantage for it in part]),
                                   pg_mask=student_in.completion_mask,
                                   succeeded=torch.tensor([it.succeeded for it in part]))
        (grad,) = torch.autograd.grad(per_token.sum(), leaf)
        per_token = per_token.detach()
        with torch.no_grad():
            ls, lt = F.log_softmax(s_logits, -1), F.log_softmax(t_logits, -1)
            h_s, h_t = -(ls.exp() * ls).sum(-1), -(lt.exp() * lt).sum(-1)
            kl_rev = (ls.exp() * (ls - lt)).sum(-1)
            kl_fwd = (lt.exp() * (lt - ls)).sum(-1)
            adv = sequence_logprobs(t_logits, ids) - sequence_logprobs(s_logits, ids)
            gnorm = grad.norm(dim=-1)
        for b, it in enumerate(part):
            for t in range(len(it.completion_ids)):
                if it.mask[t] <= 0:
                    continue
                rows.append({
                    "outcome": "accepted" if it.succeeded else "rejected", "position": t,
                    "kind": token_kind(tokenizer, it.completion_ids[t], t, special),
                    "student_entropy": float(h_s[b, t]), "teacher_entropy": float(h_t[b, t]),
                    "teacher_advantage": float(adv[b, t]), "kl_student_teacher": float(kl_rev[b, t]),
                    "kl_teacher_student": float(kl_fwd[b, t]), "loss": float(per_token[b, t]),
                    "grad_norm": float(gnorm[b, t]),
                })
    return rows


def summarise_tokens(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("student_entropy", "teacher_entropy", "teacher_advantage", "kl_student_teacher", "kl_teacher_student",
            "loss", "grad_norm")

    def block(sel: list[dict[str, Any]]) -> dict[str, Any]:
        out = {k: stat([r[k] for r in sel]) for k in keys}
        out["entropy_gap"] = stat([r["teacher_entropy"] - r["student_entropy"] for r in sel])
        out["teacher_broader_fraction"] = (sum(r["teacher_entropy"] > r["student_entropy"] for r in sel) / len(sel)
                                           if sel else float("nan"))
        out["grad_share"] = (sum(r["grad_norm"] for r in sel) / max(1e-30, sum(r["grad_norm"] for r in rows))
                             if sel else 0.0)
        return out

    by_group = {f"{o}/{k}": block([r for r in rows if r["outcome"] == o and r["kind"] == k])
                for o in OUTCOMES for k in KINDS}
    by_outcome = {o: block([r for r in rows if r["outcome"] == o]) for o in OUTCOMES}
    # The hypothesis' own condition: tokens where the teacher agrees with the outcome (raises an
    # accepted token, lowers a rejected one). Is the teacher broader there too?
    agrees = [r for r in rows if (r["teacher_advantage"] > 0) == (r["outcome"] == "accepted")]
    disagrees = [r for r in rows if (r["teacher_advantage"] > 0) != (r["outcome"] == "accepted")]
    positions = sorted({r["position"] for r in rows})
    by_position = {o: {str(p): block([r for r in rows if r["outcome"] == o and r["position"] == p]) for p in positions}
                   for o in OUTCOMES}
    return {"tokens": len(rows), "all": block(rows), "by_outcome": by_outcome, "by_outcome_kind": by_group,
            "teacher_agrees_with_outcome": block(agrees), "teacher_disagrees_with_outcome": block(disagrees),
            "by_position": by_position}


def position_distributions(model: Any, items: list[Any], pad_id: int, temperature: float, chunk: int) -> Any:
    """Student probabilities ``[positions, V]`` at every response token of `items` (student prompts)."""
    import torch

    from resd.policy.packing import pack, response_logits

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(items), chunk):
            part = items[start:start + chunk]
            packed = pack([it.prompt_ids for it in part], [it.completion_ids for it in part], pad_id)
            probs = torch.softmax(response_logits(model, packed, temperature).float(), -1)
            for b, it in enumerate(part):
                out.append(probs[b, :len(it.completion_ids)])
    return torch.cat(out)


def probe_margin(model: Any, tokenizer: Any, setup: MethodSetup, env: Any, temperature: float) -> dict[str, float]:
    """The probe's margin on the update set with these teacher prompts: for each prompt with a
    distilled failure and a known-good answer, [teacher - student log-prob of the good answer]
    per token minus the same for the failure, with the failure's own teacher prompt."""
    from resd.generation.sampling import eos_token_ids
    from resd.policy.packing import answer_logprobs

    eos = eos_token_ids(model, tokenizer)[0]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    margins, seen = [], set()
    accepted_by_task: dict[str, list[int]] = {}
    for s in setup.samples:
        if s.outcome.reward >= setup.cfg.success_reward_threshold and s.completion_ids:
            accepted_by_task.setdefault(s.task.id, s.completion_ids)
    for it, s in ((it, s) for it in setup.items for s in setup.samples
                  if s.completion_ids == it.completion_ids and s.prompt_ids == it.prompt_ids):
        if it.succeeded or s.task.id in seen:
            continue
        reference = env.reference_solution(s.task)
        good = (list(tokenizer(reference, add_special_tokens=False)["input_ids"]) + [eos] if reference
                else accepted_by_task.get(s.task.id))
        if not good:
            continue
        seen.add(s.task.id)
        answers = [good, it.completion_ids]
        st = answer_logprobs(model, it.prompt_ids, answers, pad_id, temperature)
        te = answer_logprobs(model, it.teacher_prompt_ids, answers, pad_id, temperature)
        margins.append((te[0] - st[0]) / len(good) - (te[1] - st[1]) / len(it.completion_ids))
    return stat(margins)


def update_probe(base_model: Any, tokenizer: Any, acc: Any, setup: MethodSetup, variant: list[str],
                 held: list[Any], before_held: list[Any], before_probs: Any,
                 chunk: int) -> dict[str, Any]:
    """ONE real PolicyUpdate on a deepcopy of the model with the variant's loss; what it changed."""
    import torch

    from resd.experiments.update_probe import score_pairs
    from resd.train.build import build_policy, build_update
    from resd.train.config import config_from_dict, deep_merge, parse_overrides
    from resd.train.ranks import Ranks

    cfg = config_from_dict(deep_merge(setup.cfg.to_dict(), parse_overrides(variant)))
    policy = build_policy(cfg, acc, model=copy.deepcopy(base_model), tokenizer=tokenizer)
    update = build_update(cfg, policy, acc, Ranks(acc))
    result = update.apply(setup.items)
    student = policy.student
    after_held = score_pairs(student, held, policy.pad_id, cfg.temperature)
    d_good = [(a.good - b.good) / len(h.good) for a, b, h in zip(after_held, before_held, held)]
    d_failed = [(a.failed - b.failed) / len(h.failed) for a, b, h in zip(after_held, before_held, held)]
    after_probs = position_distributions(student, setup.items, policy.pad_id, cfg.temperature, chunk)
    entropy = lambda p: -(p * p.clamp_min(1e-30).log()).sum(-1)  # noqa: E731
    shift = (after_probs - before_probs).sum(0)
    up, down = torch.topk(shift, 8), torch.topk(-shift, 8)
    # Own samples: did the update raise the accepted answers' tokens and lower the rejected ones'?
    own = {"accepted": [], "rejected": []}
    row = 0
    for it in setup.items:
        n = len(it.completion_ids)
        ids = torch.tensor(it.completion_ids)
        delta = (after_probs[row:row + n].gather(-1, ids[:, None]).clamp_min(1e-30).log()
                 - before_probs[row:row + n].gather(-1, ids[:, None]).clamp_min(1e-30).log()).mean()
        own["accepted" if it.succeeded else "rejected"].append(float(delta))
        row += n
    acc.free_memory()
    return {
        "overrides": variant, "updated": result.updated, "loss": result.loss, "grad_norm": result.grad_norm,
        "distilled_tokens": result.loss_tokens,
        "heldout_good_dlogp_per_token": stat(d_good), "heldout_failed_dlogp_per_token": stat(d_failed),
        "heldout_update_margin": stat([g - f for g, f in zip(d_good, d_failed)]),
        "own_accepted_dlogp_per_token": stat(own["accepted"]), "own_rejected_dlogp_per_token": stat(own["rejected"]),
        "entropy_before": float(entropy(before_probs).mean()), "entropy_after": float(entropy(after_probs).mean()),
        "raised_most": [(tokenizer.decode([int(i)]), float(v)) for v, i in zip(up.values, up.indices)],
        "lowered_most": [(tokenizer.decode([int(i)]), -float(v)) for v, i in zip(down.values, down.indices)],
    }


# ----------------------------------------------------------------------------------------------
# set-up
# ----------------------------------------------------------------------------------------------

def method_setup(method: str, args: argparse.Namespace, model: Any, tokenizer: Any, acc: Any, env: Any,
                 update_tasks: list[Any], rows: list[Any], outcomes: list[Any]) -> MethodSetup:
    """The method's config, its context engine's teacher contexts and the trainer's update items."""
    import torch

    from resd.policy.update import ItemSettings, update_items
    from resd.rollout import Sample
    from resd.train.build import build_context_engine, build_generator, build_policy, context_generate
    from resd.train.config import load_config

    cfg = load_config(args.config, args.overrides, method=method, **({"model": args.model} if args.model else {}))
    torch.manual_seed(args.seed)
    policy = build_policy(cfg, acc, model=copy.deepcopy(model), tokenizer=tokenizer)
    engine = build_context_engine(cfg, tokenizer, context_generate(cfg, build_generator(cfg, policy)))
    # RESD samples one answer per prompt (N = 1): each sample is its own group, so no peer's success
    # is shown; SDPO's groups are the N answers of one prompt.
    flat = [(i * len(row) + j if cfg.num_generations == 1 else i, task, r, o)
            for i, (task, row, scored) in enumerate(zip(update_tasks, rows, outcomes))
            for j, (r, o) in enumerate(zip(row, scored))]
    samples = [Sample(index=k, group=g, task=task, text=r.text, prompt_ids=list(r.prompt_ids),
                      completion_ids=list(r.completion_ids), truncated=r.truncated, outcome=o,
                      succeeded=o.reward >= cfg.success_reward_threshold)
               for k, (g, task, r, o) in enumerate(flat)]
    contexts = engine.step(0, samples).contexts
    # Unit weights and no advantages: the update probe isolates the distillation term.
    settings = ItemSettings(template=cfg.template, max_teacher_prompt_length=cfg.max_teacher_prompt_length)
    items = update_items(samples, contexts, settings, tokenizer).items
    acc.free_memory()
    return MethodSetup(method, cfg, samples, items)


# ----------------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------------

def plot(method: str, result: dict[str, Any], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tokens = result["tokens"]
    fig = Figure(figsize=(14, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax_h, ax_g, ax_u = fig.subplots(1, 3)
    for outcome, style in (("accepted", "-"), ("rejected", "--")):
        pos = tokens["by_position"][outcome]
        xs = sorted(int(p) for p in pos)
        ax_h.plot(xs, [pos[str(x)]["student_entropy"]["mean"] for x in xs], style, color="tab:blue",
                  label=f"student, {outcome}")
        ax_h.plot(xs, [pos[str(x)]["teacher_entropy"]["mean"] for x in xs], style, color="tab:orange",
                  label=f"teacher, {outcome}")
        ax_g.plot(xs, [pos[str(x)]["grad_norm"]["mean"] for x in xs], style, color="tab:red", label=f"|grad|, {outcome}")
        ax_g.plot(xs, [pos[str(x)]["kl_student_teacher"]["mean"] for x in xs], style, color="tab:purple",
                  label=f"KL(s||t), {outcome}")
    ax_h.set(title="entropy (nats) at the student's sampled tokens", xlabel="response position")
    ax_g.set(title="per-token loss gradient norm and divergence", xlabel="response position")
    ax_h.legend(fontsize=7)
    ax_g.legend(fontsize=7)
    names = list(result["update_probe"])
    for k, (key, color) in enumerate((("heldout_good_dlogp_per_token", "tab:green"),
                                      ("heldout_failed_dlogp_per_token", "tab:red"))):
        vals = [result["update_probe"][n][key] for n in names]
        ax_u.bar([i + 0.4 * k for i in range(len(names))], [v["mean"] for v in vals], width=0.4, color=color,
                 yerr=[0 if math.isnan(v["ci95"]) else v["ci95"] for v in vals], capsize=3,
                 label="good answer" if k == 0 else "failed answer")
    ax_u.set_xticks([i + 0.2 for i in range(len(names))], names, rotation=25, fontsize=7)
    ax_u.axhline(0, color="black", linewidth=0.8)
    ax_u.legend(fontsize=7)
    ax_u.set_title(f"one update: held-out Δ log p (nats/token); probe margin {fmt(result['probe_margin'], 2)}",
                   fontsize=8)
    fig.suptitle(f"{method}: where the distillation loss pushes ({result['model']})", fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def print_summary(method: str, result: dict[str, Any]) -> None:
    t = result["tokens"]
    print(f"\n== {method} (template {result['template']}): {t['tokens']} distilled tokens, "
          f"{result['distilled_samples']}/{result['samples']} samples distilled ==")
    print(f"{'tokens':<22} {'n':>5} {'H student':>9} {'H teacher':>9} {'H_t - H_s':>16} {'t broader':>9} "
          f"{'adv t-s':>8} {'KL(s||t)':>8} {'|grad|':>8} {'grad share':>10}")
    groups = [(k, t["by_outcome_kind"][k]) for k in t["by_outcome_kind"]]
    groups += [("teacher agrees", t["teacher_agrees_with_outcome"]),
               ("teacher disagrees", t["teacher_disagrees_with_outcome"]), ("all", t["all"])]
    for name, b in groups:
        if not b["student_entropy"]["n"]:
            continue
        print(f"{name:<22} {b['student_entropy']['n']:>5} {b['student_entropy']['mean']:>9.3f} "
              f"{b['teacher_entropy']['mean']:>9.3f} {fmt(b['entropy_gap']):>16} {b['teacher_broader_fraction']:>9.2f} "
              f"{b['teacher_advantage']['mean']:>+8.3f} {b['kl_student_teacher']['mean']:>8.3f} "
              f"{b['grad_norm']['mean']:>8.4f} {b['grad_share']:>10.2f}")
    print(f"probe margin (these teacher prompts, update set): {fmt(result['probe_margin'], 2)} nats/token")
    print(f"{'one update: variant':<22} {'Δ good (held-out)':>20} {'Δ failed (held-out)':>20} {'Δ good - Δ failed':>20} "
          f"{'Δ own acc':>9} {'Δ own rej':>9} {'H before→after':>15}")
    for name, u in result["update_probe"].items():
        print(f"{name:<22} {fmt(u['heldout_good_dlogp_per_token'], 4):>20} "
              f"{fmt(u['heldout_failed_dlogp_per_token'], 4):>20} {fmt(u['heldout_update_margin'], 4):>20} "
              f"{u['own_accepted_dlogp_per_token']['mean']:>+9.4f} {u['own_rejected_dlogp_per_token']['mean']:>+9.4f} "
              f"{u['entropy_before']:>7.3f}→{u['entropy_after']:<7.3f}")
        print(f"{'':<22} raised most: {', '.join(f'{s!r} {v:+.3f}' for s, v in u['raised_most'][:5])}")
        print(f"{'':<22} lowered most: {', '.join(f'{s!r} {-v:+.3f}' for s, v in u['lowered_most'][:5])}")


# ----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.yaml", help="training config (task, model, sampling, lr)")
    parser.add_argument("--model", default=None, help="model spec (default: the config's)")
    parser.add_argument("--methods", default="sdpo,resd", help="methods whose teacher template and loss are diagnosed")
    parser.add_argument("--tasks", type=int, default=8, help="training prompts of the update set")
    parser.add_argument("--heldout", type=int, default=24, help="other training prompts for the held-out change")
    parser.add_argument("--samples", type=int, default=8, help="answers sampled per prompt")
    parser.add_argument("--variant", action="append", default=None, metavar="NAME=KEY=VALUE[,KEY=VALUE]",
                        help="update-probe loss variant (repeatable; default: " + "; ".join(DEFAULT_VARIANTS) + ")")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every method, e.g. teacher_slots.feedback=false (the slot set)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny-random model, 2+4 prompts, 2 variants (smoke run)")
    parser.add_argument("--out", default=None, help="output folder (default runs/distill-diagnosis-<time>)")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # the tables show up as each method finishes

    import torch

    from resd.eval.scoring import score_rollouts
    from resd.experiments.update_probe import check_pairs, score_pairs
    from resd.rollout import score_samples
    from resd.generation.engines import HFEngine
    from resd.models import load
    from resd.train.build import build_accelerator, build_environment
    from resd.train.config import load_config

    if args.quick:
        args.model, args.tasks, args.heldout, args.samples = "tiny-random", 2, 4, 4
        args.variant = args.variant or DEFAULT_VARIANTS[:2]
    variants = [parse_variant(v) for v in (args.variant or DEFAULT_VARIANTS)]
    methods = [m for m in args.methods.split(",") if m]
    out = Path(args.out) if args.out else Path("runs") / f"distill-diagnosis-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    progress = Progress(total=2 + len(methods) * (3 + len(variants)))

    base_cfg = load_config(args.config, args.overrides, method=methods[0], **({"model": args.model} if args.model else {}))
    torch.manual_seed(args.seed)
    model, tokenizer = load(base_cfg.model, dtype=base_cfg.dtype, device="cpu")
    acc = build_accelerator(base_cfg, None)
    env = build_environment(base_cfg)
    tasks = list(env.tasks("train"))
    random.Random(args.seed).shuffle(tasks)
    update_tasks, heldout_tasks = tasks[:args.tasks], tasks[args.tasks:args.tasks + args.heldout]
    progress.step("model and tasks loaded")
    chunk = base_cfg.micro_batch_size
    generator = HFEngine(model, tokenizer, batch_size=base_cfg.generation_batch_size)
    with torch.no_grad():
        rows = generator.sample([t.prompt for t in update_tasks + heldout_tasks], n=args.samples,
                                max_new_tokens=base_cfg.max_completion_length, temperature=base_cfg.temperature,
                                top_p=base_cfg.top_p, seed=args.seed)
    outcomes = score_rollouts(env, update_tasks + heldout_tasks, rows)
    n_up = len(update_tasks)
    threshold = base_cfg.success_reward_threshold
    # The held-out good/failed pairs and their scorer are the update probe's (resd probe --update).
    held = check_pairs(env, tokenizer, model, score_samples(env, heldout_tasks, rows[n_up:], threshold))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    before_held = score_pairs(model, held, pad_id, base_cfg.temperature)
    base_rate = sum(o.reward >= threshold for row in outcomes for o in row) / max(1, sum(len(r) for r in outcomes))
    progress.step(f"sampled {args.samples} answers for {len(update_tasks) + len(heldout_tasks)} prompts "
                  f"(success rate {base_rate:.2f}); {len(held)} held-out good/failed pairs")

    report: dict[str, Any] = {"config": args.config, "model": base_cfg.model, "env": base_cfg.env,
                              "seed": args.seed, "update_prompts": n_up, "heldout_pairs": len(held),
                              "samples_per_prompt": args.samples, "base_success_rate": base_rate, "methods": {}}
    for method in methods:
        setup = method_setup(method, args, model, tokenizer, acc, env, update_tasks, rows[:n_up], outcomes[:n_up])
        progress.step(f"{method}: context engine built {len(setup.items)} teacher prompts")
        if not setup.items:
            print(f"{method}: no sample was distilled (nothing to diagnose)", file=sys.stderr)
            for _ in range(2 + len(variants)):
                progress.step(f"{method}: skipped")
            continue
        from resd.train.build import build_policy, build_update
        from resd.train.ranks import Ranks

        policy = build_policy(setup.cfg, acc, model=copy.deepcopy(model), tokenizer=tokenizer)
        trainer_update = build_update(setup.cfg, policy, acc, Ranks(acc))
        tokens = summarise_tokens(token_diagnosis(model, tokenizer, trainer_update, setup.items, chunk))
        del policy
        acc.free_memory()
        progress.step(f"{method}: token diagnosis ({tokens['tokens']} tokens)")
        margin = probe_margin(model, tokenizer, setup, env, setup.cfg.temperature)
        before_probs = position_distributions(model, setup.items, trainer_update.pad_id, setup.cfg.temperature, chunk)
        progress.step(f"{method}: probe margin {fmt(margin, 2)}")
        probes = {}
        for name, overrides in variants:
            probes[name] = update_probe(model, tokenizer, acc, setup, overrides, held, before_held, before_probs, chunk)
            progress.step(f"{method}: one update, {name}: Δ good {fmt(probes[name]['heldout_good_dlogp_per_token'], 4)}, "
                          f"Δ failed {fmt(probes[name]['heldout_failed_dlogp_per_token'], 4)}")
        result = {"template": setup.cfg.template, "model": setup.cfg.model, "samples": len(setup.samples),
                  "distilled_samples": len(setup.items),
                  "distilled_accepted": sum(it.succeeded for it in setup.items), "tokens": tokens,
                  "probe_margin": margin, "update_probe": probes}
        report["methods"][method] = result
        result["plot"] = str(plot(method, result, out / f"diagnosis-{method}.png"))
        print_summary(method, result)
        report["wall_s"] = time.perf_counter() - started  # written per method: a cut-short run keeps what it measured
        (out / "diagnosis.json").write_text(json.dumps(report, indent=1, default=float))
    print(f"\n{report['wall_s'] / 60:.1f} min; details: {out / 'diagnosis.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
