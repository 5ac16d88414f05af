"""`resd probe --update`: what one self-distillation update does to answers the update never saw.

The teacher probe (`resd.experiments.probe`) asks whether the teacher *ranks* the accepted answer
above the failed one better than the student does (its margin). That is a property of the teacher's
prompt, not of the update: the same margin comes with a plain, a sharpened or a gated loss, and a
teacher that ranks well but is broader than the student spreads the student's mass when the
student is pulled towards it. This probe measures the update itself, on a copy of the model:

1. `tasks` training prompts form the update set, `heldout` other training prompts (never the test
   split) the check set; the student samples `samples` answers for each and the environment
   scores them;
2. the method's own context engine (`resd.train.build.build_context_engine`, every slot on so that
   each note exists) observes the update set once, and picks each sample's teacher context under
   each slot variant: the template's slots together ("all") and each informing slot alone;
3. per variant, on a deep copy of the model, ONE real update: the run's `PolicyUpdate` with its
   loss, items (`resd.policy.update.update_items`) and learning rate;
4. on each check prompt with a known-good answer (the environment's reference solution, else a
   sampled accepted answer) and a sampled failed one: the change in log-probability per token of
   the good answer (Δ good) and of the failed answer (Δ failed), and their difference, the
   *update margin* (> 0: the update moved the student towards what the environment accepts); and
   the change of the student's entropy over those answers' positions (> 0: the update spread the
   student's mass).

Before the update, on the update set's distilled tokens (the "all" variant): the student's and the
teacher's entropy at each sampled token, by outcome and response position. A teacher broader than
the student (higher entropy) where it ranks the good answer higher is the failure the diagnosis
found on the default model (benchmarks/distill_diagnosis.py has the full token-level version).

Means come with 95% CIs over check prompts. `teacher_slots: auto` keeps the slots whose update
alone `helps`: update margin above 0 and entropy not raised, both beyond noise; benchmarks/README.md
("Which predictor") gives the evidence for preferring these to the ranking margin.
"""

from __future__ import annotations

import copy
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from resd.context.slots import INFORMING_SLOTS, SLOT_NAMES, TeacherSlots
from resd.envs import Environment, Task
from resd.errors import UserError
from resd.experiments.probe import _stat  # the teacher probe's {n, mean, ci95}
from resd.files import write_json_atomic
from resd.generation.sampling import eos_token_ids
from resd.policy.packing import pack, response_logits
from resd.rollout import Sample, score_samples


@dataclass(frozen=True)
class UpdateProbeSettings:
    tasks: int = 4
    """Training prompts the update is taken on."""
    heldout: int = 16
    """Other training prompts whose good and failed answers the update is checked on."""
    samples: int = 8
    """Answers sampled per prompt (the update set's group; the check set's source of answers)."""
    seed: int = 0


@dataclass(frozen=True)
class CheckPair:
    """One check prompt: a known-good and a failed answer (token ids, EOS included when sampled so)."""

    task_id: str
    prompt_ids: list[int]
    good: list[int]
    failed: list[int]
    good_source: str
    """"reference" or "sampled"."""


@dataclass
class Scores:
    """log p of the good and failed answers, and the student's summed entropy over their positions."""

    good: float
    failed: float
    entropy_sum: float
    positions: int


@dataclass
class VariantEffect:
    """What one update with one slot variant changed on the check prompts."""

    name: str
    slots: list[str]
    distilled_samples: int
    loss_tokens: int
    good: list[float] = field(default_factory=list)
    """Per check prompt: Δ log p(good answer) per token."""
    failed: list[float] = field(default_factory=list)
    """Per check prompt: Δ log p(failed answer) per token."""
    entropy: list[float] = field(default_factory=list)
    """Per check prompt: Δ mean student entropy over the two answers' positions (nats)."""

    def stats(self) -> dict[str, Any]:
        return {"good_per_token": _stat(self.good), "failed_per_token": _stat(self.failed),
                "update_margin": _stat([g - b for g, b in zip(self.good, self.failed)]),
                "entropy": _stat(self.entropy)}


@dataclass
class EntropyProfile:
    """Teacher minus student entropy (nats) at each distilled token, before any update."""

    gap: dict[str, list[float]] = field(default_factory=lambda: {"accepted": [], "rejected": []})
    by_position: dict[str, dict[int, list[tuple[float, float]]]] = field(
        default_factory=lambda: {"accepted": {}, "rejected": {}})
    """outcome -> position -> [(student entropy, teacher entropy)]."""

    def stats(self) -> dict[str, Any]:
        every = self.gap["accepted"] + self.gap["rejected"]
        return {"gap": _stat(every), "gap_accepted": _stat(self.gap["accepted"]),
                "gap_rejected": _stat(self.gap["rejected"]),
                "teacher_broader_fraction": sum(g > 0 for g in every) / len(every) if every else float("nan")}


@torch.no_grad()
def entropy_profile(model: torch.nn.Module, items: Sequence[Any], pad_id: int, temperature: float,
                    chunk: int = 8) -> EntropyProfile:
    """Student (student prompt) and teacher (teacher prompt; the EMA teacher equals the student
    before the first update) entropy over the vocabulary at every distilled response token."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    profile = EntropyProfile()
    taught = [it for it in items if it.teacher_prompt_ids is not None and any(m > 0 for m in it.mask)]
    for start in range(0, len(taught), chunk):
        part = taught[start:start + chunk]
        entropies = []
        for prompts in ([it.prompt_ids for it in part], [it.teacher_prompt_ids for it in part]):
            packed = pack(prompts, [it.completion_ids for it in part], pad_id, device)
            log_probs = torch.log_softmax(response_logits(model, packed, temperature).float(), -1)
            entropies.append(-(log_probs.exp() * log_probs).sum(-1))
        student, teacher = entropies
        for b, it in enumerate(part):
            outcome = "accepted" if it.succeeded else "rejected"
            for t, m in enumerate(it.mask):
                if m > 0:
                    h_s, h_t = float(student[b, t]), float(teacher[b, t])
                    profile.gap[outcome].append(h_t - h_s)
                    profile.by_position[outcome].setdefault(t, []).append((h_s, h_t))
    model.train(was_training)
    return profile


def _above_zero(s: dict[str, Any]) -> bool:
    """The 95% CI lies above 0 (one check prompt has no CI: not enough to act on)."""
    return s["n"] > 1 and s["ci95"] == s["ci95"] and s["mean"] - s["ci95"] > 0


def helps(stats: dict[str, Any]) -> bool:
    """An update helps when it moved held-out answers the right way beyond noise (update margin's
    95% CI above 0) without spreading the student (held-out entropy change's CI not above 0).

    Both, because the diagnosis found two ways to fail: a teacher broader than the student ranks
    the good answer higher (positive margin) yet spreads the student until it fails (SDPO on the
    default model: +0.23 ± 0.10 update margin, +0.19 ± 0.07 nats of entropy, -12.5 points after 40
    updates), and a teacher narrower than the student because it copies the failed attempt (RESD's
    previous trial) sharpens the student towards the failure."""
    return _above_zero(stats["update_margin"]) and not _above_zero(stats["entropy"])


def _fmt(s: dict[str, Any], digits: int = 3) -> str:
    if not s["n"]:
        return "n/a"
    half = "" if s["ci95"] != s["ci95"] else f" ± {s['ci95']:.{digits}f}"
    return f"{s['mean']:+.{digits}f}{half}"


@dataclass
class UpdateProbeResult:
    env: str
    model: str
    method: str
    settings: UpdateProbeSettings
    template_slots: list[str]
    check_pairs: int
    update_samples: int
    update_success_rate: float
    effects: list[VariantEffect]
    check_tasks: list[str] = field(default_factory=list)
    """The held-out training tasks the update was checked on (ids)."""
    entropy: EntropyProfile = field(default_factory=EntropyProfile)
    """Teacher vs student entropy on the "all" variant's distilled tokens, before the update."""

    def effect(self, name: str) -> VariantEffect | None:
        return next((e for e in self.effects if e.name == name), None)

    def helpful_slots(self) -> list[str]:
        """Slots whose update alone helps (`helps`): what `teacher_slots: auto` keeps. The student's
        previous trial, which informs nothing alone, is kept beside a helpful slot when the
        template's slots together help (it only ever adds to another slot)."""
        keep = [slot for slot in self.template_slots
                if (e := self.effect(f"alone:{slot}")) is not None and helps(e.stats())]
        together = self.effect("all")
        if "previous_trial" in self.template_slots and keep and together is not None and helps(together.stats()):
            keep.append("previous_trial")
        return [s for s in SLOT_NAMES if s in keep]

    def verdict(self) -> str:
        parts = []
        for e in self.effects:
            s = e.stats()
            if not e.distilled_samples:
                parts.append(f"{e.name}: nothing distilled")
                continue
            parts.append(f"{e.name}: update margin {_fmt(s['update_margin'])} (Δ good {_fmt(s['good_per_token'])}, "
                         f"Δ failed {_fmt(s['failed_per_token'])}, Δ entropy {_fmt(s['entropy'])})")
        h = self.entropy.stats()
        if h["gap"]["n"]:
            parts.append(f"before it, the teacher's entropy minus the student's {_fmt(h['gap'])} nats on "
                         f"{h['gap']['n']} distilled tokens (broader on {100 * h['teacher_broader_fraction']:.0f}%)")
        head = (f"one update on {self.update_samples} samples of {self.settings.tasks} prompts, checked on "
                f"{self.check_pairs} held-out training prompts (nats/token, 95% CI)")
        return head + ": " + "; ".join(parts) + f"; helpful: {', '.join(self.helpful_slots()) or 'none'}"

    def to_dict(self) -> dict[str, Any]:
        return {"env": self.env, "model": self.model, "method": self.method, "settings": asdict(self.settings),
                "template_slots": self.template_slots, "check_pairs": self.check_pairs,
                "update_samples": self.update_samples, "update_success_rate": self.update_success_rate,
                "check_tasks": self.check_tasks,
                "helpful_slots": self.helpful_slots(), "verdict": self.verdict(),
                "variants": {e.name: {"slots": e.slots, "distilled_samples": e.distilled_samples,
                                      "loss_tokens": e.loss_tokens, **e.stats()} for e in self.effects},
                "per_pair": {e.name: {"good": e.good, "failed": e.failed, "entropy": e.entropy} for e in self.effects},
                "teacher_vs_student_entropy": {
                    **self.entropy.stats(),
                    "by_position": {o: {str(t): {"student": sum(x for x, _ in v) / len(v),
                                                 "teacher": sum(y for _, y in v) / len(v), "n": len(v)}
                                        for t, v in sorted(rows.items())}
                                    for o, rows in self.entropy.by_position.items()}}}

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "update_probe.json", self.to_dict())
        return out / "update_probe.json", plot_update_probe(self, out / "update_probe.png")


def plot_update_probe(result: UpdateProbeResult, path: Path) -> Path:
    """Per variant: Δ log p of the held-out good and failed answers, and Δ entropy, with 95% CIs."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax_p, ax_h, ax_e = fig.subplots(1, 3, width_ratios=[2, 1, 1.5])
    for outcome, style in (("accepted", "-"), ("rejected", "--")):
        rows = sorted(result.entropy.by_position[outcome].items())
        xs = [t for t, _ in rows]
        ax_e.plot(xs, [sum(a for a, _ in v) / len(v) for _, v in rows], style, color="tab:blue",
                  label=f"student, {outcome}")
        ax_e.plot(xs, [sum(b for _, b in v) / len(v) for _, v in rows], style, color="tab:orange",
                  label=f"teacher, {outcome}")
    ax_e.set(title="before the update: entropy at the distilled tokens (nats)", xlabel="response position")
    ax_e.title.set_fontsize(9)
    ax_e.grid(alpha=0.3)
    if result.entropy.gap["accepted"] or result.entropy.gap["rejected"]:
        ax_e.legend(fontsize=7)
    names = [e.name for e in result.effects]
    stats = [e.stats() for e in result.effects]

    def bars(ax: Any, key: str, offset: float, width: float, color: str, label: str) -> None:
        means = [s[key]["mean"] if s[key]["n"] else 0.0 for s in stats]
        errs = [s[key]["ci95"] if s[key]["n"] > 1 and s[key]["ci95"] == s[key]["ci95"] else 0.0 for s in stats]
        ax.bar([i + offset for i in range(len(names))], means, width=width, yerr=errs, color=color, capsize=3,
               label=label)

    bars(ax_p, "good_per_token", -0.2, 0.4, "tab:green", "good answer")
    bars(ax_p, "failed_per_token", 0.2, 0.4, "tab:red", "failed answer")
    bars(ax_h, "entropy", 0.0, 0.6, "tab:purple", "student entropy")
    for ax, title in ((ax_p, "one update: held-out Δ log p (nats/token)"),
                      (ax_h, "one update: held-out Δ entropy (nats)")):
        ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{result.env}, {result.model}, {result.method}: what one distillation update does "
                 f"({result.check_pairs} held-out prompts)", fontsize=10)
    fig.savefig(path, dpi=110)
    return path


# ----------------------------------------------------------------------------------------------
# measurements
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def score_pairs(model: torch.nn.Module, pairs: Sequence[CheckPair], pad_id: int, temperature: float) -> list[Scores]:
    """log p of each pair's two answers (as the update scores a response: `pack`, `response_logits`)
    and the student's entropy summed over their positions."""
    from resd.distill.losses import sequence_logprobs

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for pair in pairs:
        packed = pack([pair.prompt_ids] * 2, [pair.good, pair.failed], pad_id, device)
        logits = response_logits(model, packed, temperature).float()
        mask = packed.completion_mask
        logp = (sequence_logprobs(logits, packed.completion_ids) * mask).sum(-1)
        log_probs = torch.log_softmax(logits, -1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        out.append(Scores(float(logp[0]), float(logp[1]), float((entropy * mask).sum()), int(mask.sum())))
    model.train(was_training)
    return out


def check_pairs(env: Environment, tokenizer: Any, model: Any, samples: Sequence[Sample]) -> list[CheckPair]:
    """Per check prompt, a known-good answer (the reference solution, else the first sampled
    success) and the first sampled failure; prompts with either missing are left out."""
    eos = eos_token_ids(model, tokenizer)[0]
    by_task: dict[str, list[Sample]] = {}
    for s in samples:
        by_task.setdefault(s.task.id, []).append(s)
    pairs = []
    for group in by_task.values():
        task = group[0].task
        failed = next((s.completion_ids for s in group if not s.succeeded and s.completion_ids), None)
        reference = env.reference_solution(task)
        if reference:
            good, source = list(tokenizer(reference, add_special_tokens=False)["input_ids"]) + [eos], "reference"
        else:
            good = next((s.completion_ids for s in group if s.succeeded and s.completion_ids), None)
            source = "sampled"
        if failed and good:
            pairs.append(CheckPair(task.id, list(group[0].prompt_ids), list(good), list(failed), source))
    return pairs


def slot_variants(template_slots: Sequence[str]) -> list[tuple[str, TeacherSlots]]:
    """("all", the template's slots) and ("alone:<slot>", that slot) for each informing slot."""
    variants = [("all", TeacherSlots(**{s: s in template_slots for s in SLOT_NAMES}))]
    variants += [(f"alone:{s}", TeacherSlots(**{n: n == s for n in SLOT_NAMES}))
                 for s in template_slots if s in INFORMING_SLOTS]
    return variants


def _split_tasks(env: Environment, settings: UpdateProbeSettings) -> tuple[list[Task], list[Task]]:
    tasks = list(env.tasks("train"))
    if len(tasks) < settings.tasks + 1:
        raise UserError(f"{env.name} has {len(tasks)} training tasks; the update probe needs more than "
                        f"--tasks ({settings.tasks}) to keep some aside")
    random.Random(settings.seed).shuffle(tasks)
    return tasks[:settings.tasks], tasks[settings.tasks:settings.tasks + settings.heldout]


@dataclass
class _Plan:
    """What the main process prepares and every process updates on (broadcast as one object)."""

    template_slots: list[str]
    variants: list[tuple[str, list[str], int, Any]]
    """(name, slots, distilled samples, `UpdateBatch`) per variant."""
    pairs: list[CheckPair]
    update_samples: int
    update_success_rate: float


def plan_updates(cfg: Any, model: Any, tokenizer: Any, env: Environment, settings: UpdateProbeSettings,
                 progress: bool = True) -> _Plan:
    """Sample and score the update and check prompts, build each variant's teacher contexts with the
    method's own context engine, and turn them into update items as the trainer does."""
    from resd.generation.engines import HFEngine
    from resd.policy.update import update_items
    from resd.train.build import build_context_engine, context_generate, item_settings

    update_tasks, check_tasks = _split_tasks(env, settings)
    engine = HFEngine(model, tokenizer, batch_size=cfg.generation_batch_size)
    with torch.random.fork_rng():  # the probe never shifts a training run's random stream
        rollouts = engine.sample([t.prompt for t in update_tasks + check_tasks], n=settings.samples,
                                 max_new_tokens=cfg.max_completion_length, temperature=cfg.temperature,
                                 top_p=cfg.top_p, seed=settings.seed,
                                 progress="update probe: sampling" if progress else None)
    n_up = len(update_tasks)
    update_samples = score_samples(env, update_tasks, rollouts[:n_up], cfg.success_reward_threshold)
    if cfg.num_generations == 1:
        # RESD samples one answer per prompt: each sample is its own group, as in a run (no peer's
        # success is shown); SDPO's groups are the N answers of one prompt.
        update_samples = [replace(s, group=s.index) for s in update_samples]
    pairs = check_pairs(env, tokenizer, model,
                        score_samples(env, check_tasks, rollouts[n_up:], cfg.success_reward_threshold))
    template_slots = cfg_slots(cfg)
    variants = slot_variants(template_slots)
    # Every slot on, so that each variant's notes (reflections, playbook, buffered solutions) exist.
    all_on = replace(cfg, teacher_slots=TeacherSlots())
    with torch.random.fork_rng():
        engine_all = build_context_engine(all_on, tokenizer, context_generate(cfg, engine))
        per_variant = engine_all.step_per_slots(0, update_samples,
                                                [slots.restricted_to(cfg.template) for _, slots in variants])
    planned = []
    for (name, slots), contexts in zip(variants, per_variant):
        batch = update_items(update_samples, contexts, item_settings(cfg), tokenizer)
        planned.append((name, slots.restricted_to(cfg.template).on(), sum(c.distill for c in contexts), batch))
    rate = sum(s.succeeded for s in update_samples) / max(1, len(update_samples))
    return _Plan(template_slots, planned, pairs, len(update_samples), rate)


def probe_update(cfg: Any, model: Any, tokenizer: Any, env: Environment, settings: UpdateProbeSettings,
                 accelerator: Any, *, progress: bool = True) -> UpdateProbeResult:
    """One real update per slot variant on a copy of `model`, measured on held-out training prompts.

    `cfg` is the run's `RESDConfig` (method, template, loss, learning rate, sampling); `model` (one
    process can run it alone, e.g. `Policy.local`) is not changed. In a run of several processes
    every one calls this: the main process samples and builds the items, and all of them take
    each update together, as the run would."""
    from tqdm.auto import tqdm

    from resd.train import sharding
    from resd.train.build import build_policy, build_update, plain_float32_copy
    from resd.train.precision import run_precision
    from resd.train.ranks import Ranks
    from resd.train.sharding import prepared_for_a_moment

    if not cfg.distills:
        raise UserError(f"{cfg.method} has no teacher: there is no distillation update to probe")
    ranks = Ranks(accelerator)
    # The same float32 numbers on every rank: the copy itself when it is plain float32, else its
    # weights gathered into a plain float32 model (a bfloat16 forward cannot resolve one small step).
    exact = not sharding.sharded(accelerator) and run_precision(cfg).compute_dtype == torch.float32
    scorer = (lambda policy: policy.student) if exact else plain_float32_copy  # noqa: E731
    plan = ranks.from_main(plan_updates(cfg, model, tokenizer, env, settings, progress) if ranks.main else None)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_token_ids(model, tokenizer)[0]
    effects = []
    bar = tqdm(total=len(plan.variants), desc="update probe: updates", unit="variant",
               disable=not (progress and ranks.main), dynamic_ncols=True)
    # On the "all" variant's items, before any update (`model` runs alone on each process).
    profile = (entropy_profile(model, plan.variants[0][3].items, pad_id, cfg.temperature, cfg.micro_batch_size)
               if plan.variants else EntropyProfile())
    before = None
    for name, slots, distilled, batch in plan.variants:
        effect = VariantEffect(name, slots, distilled, 0)
        if batch.items:
            with torch.random.fork_rng(), prepared_for_a_moment(accelerator):
                policy = build_policy(cfg, accelerator, model=copy.deepcopy(model), tokenizer=tokenizer)
                if before is None:
                    before = score_pairs(scorer(policy), plan.pairs, pad_id, cfg.temperature)
                result = build_update(cfg, policy, accelerator, ranks).apply(batch.items, batch.response_tokens)
                after = score_pairs(scorer(policy), plan.pairs, pad_id, cfg.temperature)
                del policy
            effect.loss_tokens = result.loss_tokens
            for pair, b, a in zip(plan.pairs, before, after):
                effect.good.append((a.good - b.good) / len(pair.good))
                effect.failed.append((a.failed - b.failed) / len(pair.failed))
                effect.entropy.append((a.entropy_sum - b.entropy_sum) / max(1, b.positions))
        effects.append(effect)
        bar.update(1)
    bar.close()
    return UpdateProbeResult(env=env.name, model=str(cfg.model), method=cfg.method, settings=settings,
                             template_slots=plan.template_slots, check_pairs=len(plan.pairs),
                             update_samples=plan.update_samples, update_success_rate=plan.update_success_rate,
                             effects=effects, check_tasks=[p.task_id for p in plan.pairs], entropy=profile)


def cfg_slots(cfg: Any) -> list[str]:
    """The slots the run's template reads (all of them when `teacher_slots` is "auto")."""
    slots = TeacherSlots() if cfg.teacher_slots == "auto" else cfg.teacher_slots
    return slots.restricted_to(cfg.template).on()
