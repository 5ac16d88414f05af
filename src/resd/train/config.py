"""`RESDConfig`: every knob of a training run, with the paper's defaults (paper §4.1, App. G).

Field names follow TRL's `SDPOConfig` where the two overlap (`learning_rate`, `num_generations`,
`distillation_alpha`, `teacher_update_rate`, ...), so users coming from TRL read them at once.

A config is built in layers, later layers win:
    dataclass defaults < method preset (`methods.py`) < YAML file(s) < `key=value` overrides.
YAML files may name another file under `base:` (resolved relative to the including file), which is
how the paper presets in `configs/<task>/<method>.yaml` stay a few lines each.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from resd.context import ContextConfig, TeacherSlots
from resd.generation.engines import EngineSettings
from resd.errors import UserError
from resd.files import json_safe
from resd.train.methods import CONTEXT_ENGINES, METHODS, method_defaults


@dataclass
class LoraSettings:
    """LoRA adapters through PEFT; the EMA teacher then tracks the adapter weights only."""

    r: int = 16
    """Adapter rank."""
    alpha: int = 32
    """LoRA scaling numerator (effective scale alpha / r)."""
    dropout: float = 0.0
    """Dropout on the adapter input (0 keeps student and teacher forwards deterministic)."""
    target_modules: list[str] | str = "all-linear"
    """Module names to adapt, or "all-linear" (PEFT's shortcut for every linear layer but the head)."""


@dataclass
class RESDConfig:
    """One training run: method, task, model, data stream, optimiser, distillation and context."""

    # --- what to train -----------------------------------------------------------------------
    method: str = "resd"
    """Training method: resd, sdpo, sdpo_ss, rosd or grpo; its preset (methods.py) sets the
    defaults that tell the methods apart."""
    env: str = "constraints"
    """Environment name (`resd envs` lists them) or 'module:Class'."""
    env_options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments passed to the environment's constructor."""
    model: str = "smollm2-135m"
    """Model spec: Hugging Face id, local directory, .gguf file, or alias (smollm2-135m, tiny-random)."""
    dtype: str | None = None
    """Compute dtype ("float32", "bfloat16", "float16", "auto" = the checkpoint's); None = float32
    on a CPU, the checkpoint's own dtype on a GPU. See `mixed_precision` for what a half-precision
    dtype stores the weights in (resd.train.precision)."""
    mixed_precision: bool = True
    """With a half-precision dtype: keep float32 master weights, gradients, AdamW state and EMA
    teacher and compute forward/backward in that dtype (the paper's runs: verl's FSDP
    MixedPrecision). False stores the weights themselves in half precision (at lr 1e-6 most updates
    round away)."""
    strategy: str | None = None
    """How the run is spread over processes, as the launcher set it up: "single", "ddp" or "fsdp2"
    (`accelerate launch --config_file accelerate/fsdp2.yaml`). None: whatever the launch
    gives; the run writes what it got into its config.yaml, and a value here must match the launch
    (so a run resumes under the strategy its checkpoints were written by). resd.train.sharding."""
    seed: int = 0
    """Seed for data order, sampling, context-engine randomness and initialisation."""
    output_dir: str | None = None
    """Run directory; None = runs/<method>-<env>-seed<seed>-<timestamp>."""

    # --- data stream (paper §3.3: one pass, each prompt seen in one batch) -----------------------
    batch_size: int = 32
    """Prompts per batch (paper: 32)."""
    shuffle: bool = True
    """Shuffle the training prompts once (seeded) before the single pass."""
    max_batches: int | None = None
    """How much of the pass to use: its first N batches (after shuffling); None = the whole pass."""
    max_steps: int | None = None
    """A budget of policy updates in total (a run stops mid-batch when it is spent); None = no limit.
    Unlike `max_batches` it counts updates, which early stopping makes vary per batch."""

    # --- inner loop ------------------------------------------------------------------------------
    inner_updates: int = 4
    """K: update iterations per batch on the same prompts, each re-generating (paper: 4)."""
    min_updates: int = 1
    """With early_stop, always run at least this many iterations per batch."""
    early_stop: bool = False
    """Leave the inner loop early when every sample succeeded or the batch reward did not improve."""

    # --- rollout -------------------------------------------------------------------------------
    num_generations: int = 1
    """N: samples per prompt (RESD 1; SDPO, ROSD and GRPO groups of 8)."""
    temperature: float = 1.0
    """Sampling temperature for rollouts; the student and teacher log-probs use the same."""
    top_p: float = 0.95
    """Nucleus sampling for rollouts."""
    max_completion_length: int = 256
    """Maximum new tokens per rollout."""
    max_prompt_length: int = 1024
    """Longest student prompt in tokens; longer prompts are an error naming the task."""
    generation_batch_size: int | None = None
    """Sequences generated together (memory vs speed), by either engine; for vLLM it also bounds
    the KV cache a batch needs. None: 8 with the HF engine, 64 with vLLM."""
    generation: EngineSettings = field(default_factory=EngineSettings)
    """The generation engine: `generation.backend: hf | vllm` and its settings (resd.generation.engines)."""

    # --- optimiser -----------------------------------------------------------------------------
    learning_rate: float = 1e-6
    """AdamW learning rate (paper: 1e-6)."""
    warmup_steps: int = 10
    """Linear warm-up steps, then constant (paper: 10)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.999
    """AdamW beta2."""
    max_grad_norm: float | None = 1.0
    """Gradient-norm clip; None disables it."""
    micro_batch_size: int = 4
    """Sequences per forward/backward (gradient accumulation within one optimiser step)."""
    gradient_checkpointing: bool = False
    """Trade compute for memory in the student forward."""

    # --- self-distillation loss (paper §2 Eq. 1, App. A-B) -------------------------------------------
    distillation_mode: Literal["topk_logits", "full_logits", "sampled_token"] = "topk_logits"
    """Support of the divergence: student's top-k + tail, full vocabulary, or the sampled token only."""
    distillation_alpha: float = 1.0
    """0 forward KL(teacher||student), 1 reverse KL (paper default), otherwise generalised JSD."""
    distillation_topk: int = 100
    """k of the top-k support (paper: 100)."""
    distillation_add_tail: bool = True
    """Add the tail bucket log(1 - sum top-k p); False renormalises the top-k."""
    ratio_min: float | None = 0.2
    """eps_min: teacher log-probs clamped to >= log p_s + log eps_min (paper: 0.2)."""
    ratio_max: float | None = None
    """eps_max: teacher log-probs clamped to <= log p_s + log eps_max (paper: none; Manufactoria 5)."""
    distillation_teacher_temperature: float = 1.0
    """Sharpened teacher: teacher logits divided by this before the divergence (< 1 sharpens;
    paper: 1). See resd.distill.losses.LossSettings.teacher_temperature for the rationale."""
    distillation_teacher_topk: int | None = None
    """Top-k renormalised teacher: keep only the teacher's k most likely tokens (paper: null, the
    whole distribution)."""
    distillation_teacher_entropy_cap: bool = False
    """Entropy-capped teacher: where the teacher is broader than the student, sharpen it token by
    token just enough to match the student's entropy (paper: false). See
    resd.distill.losses.LossSettings.teacher_entropy_cap for the rationale."""
    distillation_token_gate: bool = False
    """Distil a token only where the teacher moves it the way the sample's outcome says (up on
    accepted, down on rejected samples; paper: false)."""
    distill_outcomes: Literal["all", "failures"] = "all"
    """Which samples are distilled: all (paper) or failures only."""
    rebalance: bool = False
    """Success-rate rebalancing of sample weights (App. B; paper: BouncingSim-Easy and FiNER)."""
    rebalance_a: float = 1.0
    """Exponent a: successes weigh (1 - s)^a."""
    rebalance_b: float = 1.0
    """Exponent b: failures weigh s^b."""
    success_reward_threshold: float = 1.0
    """tau: a sample succeeded when its reward >= this (rebalancing, solutions, the context engine)."""

    # --- teacher (paper §3.3, Alg. 1 lines 13-19) -----------------------------------------------------
    teacher_update_rate: float = 1e-4
    """eta: teacher <- (1 - eta) teacher + eta student after each update (RESD 1e-4, SDPO 0.05, 0 frozen)."""
    template: str = "resd"
    """Teacher-prompt template name (resd, resd-manufactoria, resd-bouncingsim, resd-finer, sdpo, rosd) or a .txt path."""
    max_teacher_prompt_length: int = 4096
    """Teacher prompts longer than this are shortened (longest slot first, never the instruction)."""
    teacher_slots: TeacherSlots | Literal["auto"] = field(default_factory=TeacherSlots)
    """What the teacher may read besides the task: playbook, previous_trial, feedback, reflection,
    solution (each true/false; slots the template has no place for stay empty). The paper's
    ablations (Table 3) switch one off, e.g. `teacher_slots: {reflection: false}`. "auto": measure
    first with the update probe (`resd probe --update`: on a copy of the model, one real update per
    slot, then the change in held-out log-probability of known-good vs failed answers and in the
    student's entropy) and keep only the slots whose update moved held-out answers the right way
    without spreading the student, beyond noise (95% CIs); a sample left with no helpful slot is not
    distilled."""
    probe_at_start: bool = False
    """Run `resd probe` (the teacher's ranking margin, per slot) on `probe_tasks` training tasks
    before training and print its verdict, whatever the method. The numbers go to RUN/probe.json
    and RUN/probe.png."""
    probe_tasks: int = 16
    """Training tasks a start-of-run probe measures (`probe_at_start`; with `teacher_slots: auto`
    a quarter of them are updated on and all of them are checked on)."""
    probe_samples: int = 8
    """Answers sampled per probed task."""
    dont_reprompt_on_self_success: bool = False
    """Never show a sample its own success as the solution, nor distil a success without one (SDPO)."""
    environment_feedback_only_without_solution: bool = False
    """Drop the feedback when a solution is shown (SDPO's behaviour)."""

    # --- GRPO baseline ------------------------------------------------------------------------------
    pg_coef: float = 0.0
    """Weight of a GRPO policy-gradient term added to the self-distillation loss (dGRPO-style): the
    reward teaches where the teacher cannot. Needs num_generations >= 2; 0 = pure
    self-distillation, as in the paper."""
    grpo_scale_rewards: Literal["none", "group"] = "none"
    """Advantage scaling: "none" (Dr. GRPO, as in the SDPO repo's baseline) or divide by group std."""

    # --- context engine (paper §3.2-3.3, App. D) -----------------------------------------------------
    context: ContextConfig = field(default_factory=ContextConfig)
    """Reflector, curator, playbook and solution-buffer settings (resd.context.ContextConfig);
    `context.reflection_max_new_tokens` is also the budget of ROSD's first-error reflector."""

    # --- evaluation, logging, checkpoints -------------------------------------------------------------
    eval_every: int | None = 4
    """Evaluate on the test split every N policy updates and after the last (and before the first,
    see `eval_at_start`); None = after the last only; 0 = never (train only, no checkpoint selection)."""
    eval_k: int = 4
    """Samples per test task (mean@k / best@k; paper: 4)."""
    eval_limit: int | None = None
    """Evaluate on the first N test tasks; None = all."""
    eval_max_new_tokens: int | None = None
    """Token budget for evaluation samples; None = max_completion_length."""
    eval_at_start: bool = True
    """Also evaluate the initial model (step 0), which then competes in checkpoint selection."""
    base_eval_cache: str | None = None
    """JSON file holding a step-0 evaluation to reuse when it was made with the same model and
    evaluation settings (`resd compare` points every method of a seed at one file, so the base
    model is evaluated once per seed, not once per method); None = always evaluate."""
    checkpoint_every: int = 1
    """Write RUN/checkpoints/latest every N policy updates (resume granularity)."""
    keep_eval_checkpoints: bool = False
    """Keep the weights saved at every evaluation (otherwise only the rank-selected one survives)."""
    report_to: list[str] = field(default_factory=list)
    """Trackers for metrics besides metrics.jsonl: tensorboard, wandb, trackio, ... (accelerate)."""
    progress: bool = True
    """Show progress bars."""

    # --- parameter-efficient fine-tuning -----------------------------------------------------------
    lora: LoraSettings | None = None
    """LoRA settings; None = full fine-tuning."""

    def __post_init__(self) -> None:
        if self.generation_batch_size is None:
            self.generation_batch_size = 64 if self.generation.backend == "vllm" else 8
        validate(self)

    @property
    def context_engine(self) -> str | None:
        """Who builds the teacher's context, decided by the method (`methods.CONTEXT_ENGINES`):
        "resd" reflects, curates a playbook and buffers solutions (paper §3.3); "rosd" quotes each
        failure's first error and distils from there (ROSD); "peers" shows successful group peers
        and feedback only (SDPO); None for GRPO."""
        return CONTEXT_ENGINES[self.method]

    @property
    def evaluates(self) -> bool:
        """The run evaluates on the test split at all (`eval_every` is not 0)."""
        return self.eval_every != 0

    @property
    def distills(self) -> bool:
        """All methods but GRPO learn by self-distillation."""
        return self.method != "grpo"

    @property
    def rewards_advantages(self) -> bool:
        """Every sample carries its group-relative advantage: GRPO, or distillation with pg_coef > 0."""
        return not self.distills or self.pg_coef > 0

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-safe values (tuples become lists)."""
        return json_safe(dataclasses.asdict(self))


def _finite(*values: float | None) -> bool:
    return all(v is None or math.isfinite(v) for v in values)


MAX_GENERATIONS = 1024
"""Most samples per prompt (num_generations, eval_k): far above the paper's group sizes (8-16, k=4),
and what one prompt's group can still hold in memory and time on one machine."""
MAX_SAMPLES_PER_BATCH = 1 << 16
"""Most samples generated for one batch (batch_size x num_generations)."""
_SYSTEM_TREES = ("/proc", "/sys", "/dev")


def _output_dir_problem(output_dir: str | None) -> str:
    """Why `output_dir` cannot hold a run directory ("" when it can)."""
    if not output_dir:
        return ""
    path = Path(output_dir).expanduser().absolute()
    if any(path == Path(tree) or Path(tree) in path.parents for tree in _SYSTEM_TREES):
        return f"output_dir={output_dir!r} is inside {', '.join(_SYSTEM_TREES)} (kernel file systems); pick a folder on disk"
    for place in (path, *path.parents):
        if place.exists():
            if not place.is_dir():
                return f"output_dir={output_dir!r}: {str(place)!r} is a file, not a folder"
            return ""
    return ""


def _unknown_trackers(report_to: list[str]) -> list[str]:
    if not report_to:
        return []
    from accelerate.utils import LoggerType

    known = {t.value for t in LoggerType}
    return [str(t) for t in report_to if str(t) not in known]


def validate(cfg: RESDConfig) -> None:
    """Value checks that types alone cannot express; each names the key and a valid value."""
    sizes = ("batch_size", "inner_updates", "min_updates", "num_generations", "max_completion_length",
             "max_prompt_length", "generation_batch_size", "micro_batch_size", "distillation_topk",
             "max_teacher_prompt_length", "eval_k", "probe_tasks", "probe_samples", "checkpoint_every")
    optional_sizes = ("max_batches", "max_steps", "eval_limit", "eval_max_new_tokens")
    numbers = ("temperature", "top_p", "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "max_grad_norm",
               "distillation_alpha", "distillation_teacher_temperature", "ratio_min", "ratio_max", "rebalance_a",
               "rebalance_b", "success_reward_threshold", "teacher_update_rate", "pg_coef")
    checks: list[tuple[bool, str]] = [
        (cfg.method in METHODS, f"method={cfg.method!r}: choose one of {', '.join(METHODS)}"),
        (cfg.eval_every is None or cfg.eval_every >= 0, f"eval_every must be >= 0 or null (got {cfg.eval_every})"),
        (cfg.strategy in (None, "single", "ddp", "fsdp2"),
         f"strategy={cfg.strategy!r}: choose single, ddp or fsdp2 (or leave it out)"),
        *((getattr(cfg, k) >= 1, f"{k} must be >= 1 (got {getattr(cfg, k)})") for k in sizes),
        *((getattr(cfg, k) is None or getattr(cfg, k) >= 1, f"{k} must be >= 1 or null (got {getattr(cfg, k)})")
          for k in optional_sizes),
        *((_finite(getattr(cfg, k)), f"{k} must be a finite number (got {getattr(cfg, k)})") for k in numbers),
        (0 <= cfg.seed < 2**32, f"seed must be in [0, 2^32) (got {cfg.seed})"),
        (cfg.temperature >= 0, "temperature must be >= 0"),
        (0 < cfg.top_p <= 1, "top_p must be in (0, 1]"),
        (cfg.learning_rate > 0, "learning_rate must be > 0"),
        (cfg.warmup_steps >= 0, "warmup_steps must be >= 0"),
        (cfg.weight_decay >= 0, "weight_decay must be >= 0"),
        (0 <= cfg.adam_beta1 < 1 and 0 <= cfg.adam_beta2 < 1, "adam_beta1 and adam_beta2 must be in [0, 1)"),
        (cfg.max_grad_norm is None or cfg.max_grad_norm > 0,
         f"max_grad_norm must be > 0 or null (got {cfg.max_grad_norm}; a negative clip would flip the gradients)"),
        (0 <= cfg.distillation_alpha <= 1, "distillation_alpha must be in [0, 1]"),
        (cfg.distillation_teacher_temperature > 0, "distillation_teacher_temperature must be > 0 (1 = the paper's teacher)"),
        (cfg.distillation_teacher_topk is None or cfg.distillation_teacher_topk >= 1,
         "distillation_teacher_topk must be >= 1 or null"),
        (cfg.distillation_teacher_topk is None or cfg.distillation_mode != "sampled_token",
         "distillation_teacher_topk needs distillation_mode topk_logits or full_logits, not sampled_token"),
        (cfg.ratio_min is None or cfg.ratio_min > 0, "ratio_min must be > 0 or null"),
        (cfg.ratio_max is None or cfg.ratio_max > 0, "ratio_max must be > 0 or null"),
        (cfg.rebalance_a >= 0 and cfg.rebalance_b >= 0, "rebalance_a and rebalance_b must be >= 0"),
        (0 <= cfg.teacher_update_rate <= 1, "teacher_update_rate (eta) must be in [0, 1]"),
        (cfg.distillation_mode != "sampled_token" or cfg.distillation_alpha == 1.0,
         "distillation_mode=sampled_token estimates the reverse KL only: set distillation_alpha=1"),
        (cfg.method != "grpo" or cfg.num_generations >= 2,
         "method=grpo needs num_generations >= 2 (group-relative advantages)"),
        (cfg.pg_coef >= 0 and (cfg.pg_coef == 0 or cfg.num_generations >= 2),
         "pg_coef must be >= 0, and a policy-gradient term needs num_generations >= 2"),
        (cfg.num_generations <= MAX_GENERATIONS, f"num_generations must be <= {MAX_GENERATIONS} (got {cfg.num_generations})"),
        (cfg.eval_k <= MAX_GENERATIONS, f"eval_k must be <= {MAX_GENERATIONS} (got {cfg.eval_k})"),
        (cfg.batch_size * cfg.num_generations <= MAX_SAMPLES_PER_BATCH,
         f"batch_size x num_generations must be <= {MAX_SAMPLES_PER_BATCH} samples per batch "
         f"(got {cfg.batch_size} x {cfg.num_generations})"),
    ]
    output_problem = _output_dir_problem(cfg.output_dir)
    if output_problem:
        checks.append((False, output_problem))
    unknown = _unknown_trackers(cfg.report_to)
    if unknown:
        checks.append((False, f"report_to names unknown trackers {unknown}: use any of tensorboard, wandb, "
                              f"trackio, comet_ml, mlflow, clearml, dvclive, aim, swanlab, all"))
    for ok, message in checks:
        if not ok:
            raise UserError(f"bad config: {message}")


# ----------------------------------------------------------------------------------------------
# Loading: YAML (+ base includes) and key=value overrides, with typed validation.
# ----------------------------------------------------------------------------------------------


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a config file, merging the file named by its `base:` key underneath it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} not found (see configs/ for presets)")
    resolved = path.resolve()
    if resolved in _seen:
        raise UserError(f"config {str(path)!r} includes itself through `base:`")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"config {str(path)!r} cannot be read: {exc}") from exc
    if not text.strip():
        raise UserError(f"config {str(path)!r} is empty; write key: value lines (see configs/smoke.yaml)")
    data = parse_yaml(text, str(path))
    if not isinstance(data, dict):
        raise UserError(f"config {str(path)!r} must be a mapping of key: value")
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = (path.parent / str(base)) if not Path(str(base)).is_absolute() else Path(str(base))
    return deep_merge(read_yaml(base_path, (*_seen, resolved)), data)


class _StrictLoader(yaml.SafeLoader):
    """YAML without aliases (a few lines of anchors can expand to gigabytes) and without
    duplicate keys (YAML keeps the last one silently)."""

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise UserError(f"YAML aliases (*{event.anchor}) are not allowed in resd configs "
                            f"(line {event.start_mark.line + 1}); use `base:` to share settings")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise UserError(f"config key {key!r} appears twice (line {key_node.start_mark.line + 1}); "
                                f"keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, where: str = "config") -> Any:
    """YAML text -> data; bad YAML, aliases and duplicate keys are one UserError naming `where`."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except UserError as exc:
        raise UserError(f"config {where!r}: {exc}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"config {where!r} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    except RecursionError:
        raise UserError(f"config {where!r} is nested too deeply") from None


def deep_merge(low: dict[str, Any], high: dict[str, Any]) -> dict[str, Any]:
    """`high` wins; nested mappings merge key by key (so `context: {max_entries: 5}` keeps the rest)."""
    out = dict(low)
    for key, value in high.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "env_options":
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["a.b=3", "c=[x, y]"]` -> `{"a": {"b": 3}, "c": ["x", "y"]}` with YAML-typed values."""
    out: dict[str, Any] = {}
    from resd.keyvalue import parse_key_value

    for item in overrides:
        key, value = parse_key_value(item, what=f"override {item!r}",
                                     example="learning_rate=1e-5 or context.max_entries=50", form="key=value")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"override {item!r} conflicts with another override of {part!r}")
        node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, *,
                method: str | None = None, **values: Any) -> RESDConfig:
    """Build a RESDConfig from a YAML file, `key=value` overrides and keyword values.

    The method is decided first (keyword > override > YAML > "resd") so that its preset can sit
    underneath everything the user wrote. Deprecated keys are converted (one warning line each).
    """
    data: dict[str, Any] = read_yaml(path) if path is not None else {}
    data = deep_merge(data, parse_overrides(list(overrides or [])))
    data = deep_merge(data, values)
    if method is not None:
        data["method"] = method
    chosen = data.get("method", "resd")
    if chosen not in METHODS:
        raise UserError(f"bad config: method={chosen!r}: choose one of {', '.join(METHODS)}")
    data = migrate_deprecated(data, warn=_warn)
    merged = deep_merge(method_defaults(chosen), data)
    return build_dataclass(RESDConfig, merged, prefix="")


def config_from_dict(data: dict[str, Any]) -> RESDConfig:
    """Rebuild a config saved with `to_dict` (RUN/config.yaml) exactly, with no preset applied.
    A run directory written by an older resd is converted silently: its config lists every key."""
    return build_dataclass(RESDConfig, migrate_deprecated(data, warn=None), prefix="")


# ----------------------------------------------------------------------------------------------
# Keys renamed or merged in resd 0.2: they keep working until 0.3, with one warning line each.
# ----------------------------------------------------------------------------------------------

def _warn(message: str) -> None:
    print(f"resd: warning: {message}", file=sys.stderr)


def _set(data: dict[str, Any], dotted: str, value: Any, *, keep_existing: bool = False) -> None:
    node = data
    *parents, last = dotted.split(".")
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    if not (keep_existing and last in node):
        node[last] = value


_RENAMED: dict[str, tuple[str, Any]] = {
    # old key: (new key, how the old value maps to the new one)
    "include_environment_feedback": ("teacher_slots.feedback", lambda v: v),
    "include_previous_trial": ("teacher_slots.previous_trial", lambda v: v),
    "no_reflection": ("teacher_slots.reflection", lambda v: not v),
    "no_playbook": ("teacher_slots.playbook", lambda v: not v),
    "no_solution_buffer": ("teacher_slots.solution", lambda v: not v),
    "use_peer_solution": ("teacher_slots.solution", lambda v: v),
    "do_eval": ("eval_every", lambda v: None if v else 0),
}


_ONLY_WHEN_FALSE = {"use_peer_solution", "do_eval"}
"""Renamed switches whose `true` is now simply what resd does (only `false` maps to a new value)."""


def migrate_deprecated(data: dict[str, Any], *, warn: Any = None) -> dict[str, Any]:
    """`data` with the keys of resd 0.1 rewritten to their one home (a new dict; `warn(line)` is
    called once per deprecated key found, when given)."""
    if not isinstance(data, dict):
        return data
    data = copy.deepcopy(data)
    context = data.get("context") if isinstance(data.get("context"), dict) else {}
    say = warn or (lambda message: None)
    for old, (new, convert) in _RENAMED.items():
        if old in data:
            value = data.pop(old)
            if old in _ONLY_WHEN_FALSE and value is True:
                say(f"config key {old!r} is deprecated and true is what resd always does (the old key goes in resd 0.3)")
                continue
            shown = f"{new}={str(convert(value)).lower()}" if isinstance(value, bool) else new
            say(f"config key {old!r} is deprecated: use {shown} (the old key goes in resd 0.3)")
            if isinstance(value, bool):
                _set(data, new, convert(value), keep_existing=True)
    for old in ("is_clip", "grpo_epsilon_low", "grpo_epsilon_high"):
        if old in data:
            data.pop(old)
            say(f"config key {old!r} is deprecated and has no effect: every update is on-policy, so the "
                "policy ratio is 1 and nothing is clipped (the old key goes in resd 0.3)")
    if "use_context" in data or "error_suffix_mask" in data:
        use_context, suffix = data.pop("use_context", None), data.pop("error_suffix_mask", None)
        engine = "resd" if use_context is True else ("rosd" if suffix is True else "peers")
        say("config keys 'use_context'/'error_suffix_mask' are deprecated: the method decides the context "
            "engine (the old keys go in resd 0.3)")
        data.setdefault("context_engine", engine)
    if "context_engine" in data:
        engine = data.pop("context_engine")
        method = data.get("method", "resd")
        say("config key 'context_engine' is deprecated: the method decides it (resd: resd, sdpo/sdpo_ss: "
            "peers, rosd: rosd; the old key goes in resd 0.3)")
        if method in CONTEXT_ENGINES and CONTEXT_ENGINES[method] not in (None, engine):
            raise UserError(f"bad config: context_engine={engine!r} is not method={method}'s "
                            f"({CONTEXT_ENGINES[method]}); choose the method whose context engine you want")
    if "train_limit" in data:
        limit = data.pop("train_limit")
        say("config key 'train_limit' is deprecated: use max_batches (the pass is cut at whole batches; "
            "the old key goes in resd 0.3)")
        if limit is not None:
            batches = -(-int(limit) // int(data.get("batch_size", RESDConfig.batch_size)))
            data["max_batches"] = min(batches, data.get("max_batches") or batches)
    generation = data.get("generation") if isinstance(data.get("generation"), dict) else {}
    if "max_num_seqs" in generation:
        value = data["generation"].pop("max_num_seqs")
        say("config key 'generation.max_num_seqs' is deprecated: use generation_batch_size (one batch size "
            "for both engines; the old key goes in resd 0.3)")
        if generation.get("backend") == "vllm":
            data["generation_batch_size"] = value
    if "reflection_max_new_tokens" in data:
        value = data.pop("reflection_max_new_tokens")
        say("config key 'reflection_max_new_tokens' is deprecated: use context.reflection_max_new_tokens "
            "(one budget for every reflector; the old key goes in resd 0.3)")
        # It used to budget ROSD's reflector only (RESD's came from the context section).
        if data.get("method") == "rosd":
            _set(data, "context.reflection_max_new_tokens", value)
    if "use_solution_buffer" in context:
        value = data["context"].pop("use_solution_buffer")
        say("config key 'context.use_solution_buffer' is deprecated: use teacher_slots.solution (the buffer "
            "is kept when the teacher reads solutions; the old key goes in resd 0.3)")
        if value is False:
            _set(data, "teacher_slots.solution", False)
    if "success_threshold" in context:
        value = data["context"].pop("success_threshold")
        say("config key 'context.success_threshold' is deprecated: use success_reward_threshold "
            "(one threshold for the whole run; the old key goes in resd 0.3)")
        data.setdefault("success_reward_threshold", value)
    for old, slots in (("reflect", ("reflection", "playbook")), ("curate", ("playbook",))):
        if old in context:
            value = data["context"].pop(old)
            say(f"config key 'context.{old}' is deprecated: use "
                + " and ".join(f"teacher_slots.{slot}=false" for slot in slots)
                + " (the context engine then skips it; the old key goes in resd 0.3)")
            if value is False:
                for slot in slots:
                    _set(data, f"teacher_slots.{slot}", False)
    return data


def build_dataclass(cls: type, data: dict[str, Any], *, prefix: str) -> Any:
    """Instantiate `cls` from a mapping, checking names and types; errors name the dotted key."""
    if not isinstance(data, dict):
        raise UserError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise UserError(f"unknown config key {prefix + str(unknown[0])!r}; valid keys: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], prefix + name)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a nested dataclass rejecting something we could not foresee
        raise UserError(f"bad config under {prefix.rstrip('.') or 'top level'}: {exc}") from exc


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against annotation `tp`; ints are accepted for floats, nested dicts built."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(f"config key {key!r}: {value!r} is not a valid {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise UserError(f"config key {key!r}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return build_dataclass(tp, value if value is not None else {}, prefix=key + ".")
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise UserError(f"config key {key!r}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"config key {key!r}: expected a mapping, got {value!r}")
        return dict(value)
    if tp in _EXACT:
        what, ok = _EXACT[tp]
        if not ok(value):
            raise UserError(f"config key {key!r}: expected {what}, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML reads "1e-6" (no dot) as a string; accept numeric strings for floats.
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise UserError(f"config key {key!r}: expected a number, got {value!r}")
        return float(value)
    return value


_EXACT: dict[type, tuple[str, Any]] = {
    bool: ("true/false", lambda v: isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    str: ("a string", lambda v: isinstance(v, str)),
}
"""Types a config value must have as written (a bool is not an int here, as in YAML)."""


def save_config(cfg: RESDConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
