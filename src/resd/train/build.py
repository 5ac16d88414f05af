"""Everything a training run is built from, one function each: accelerator, run directory, the
one-pass stream, the policy (model, LoRA, EMA teacher, optimiser, schedule), the context engine
and the policy update. `RESDTrainer` calls them in this order; benchmarks and tests call them to
get one piece without the loop.
"""

from __future__ import annotations

import copy
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resd.context import (SLOT_NAMES, ContextEngine, ContextPolicy, ContextUpdater, FirstErrorContext, PeerContext,
                          PlaybookContext, TeacherSlots)
from resd.context.reflect import is_degenerate
from resd.distill.losses import LossSettings
from resd.envs import Environment, Task
from resd.errors import UserError
from resd.generation.engines import Engine, generate_fn, make_engine
from resd.generation.sampling import GenerateFn
from resd.train.config import RESDConfig, save_config
from resd.train.ranks import Ranks
from resd.policy.teacher import EMATeacher, trainable_parameters
from resd.policy.update import ItemSettings, PolicyUpdate
from resd.run.rundir import RunDir
from resd.train import sharding
from resd.train.precision import load_dtype, run_precision

_TRACKER_PACKAGES = {"tensorboard": "tensorboard==2.21.0", "wandb": "wandb", "trackio": "trackio"}


def build_accelerator(cfg: RESDConfig, run_root: Path | None) -> Any:
    """An `accelerate.Accelerator`: CPU, one GPU, or one of several processes (resd.train.sharding)."""

    _check_trackers(cfg.report_to)
    return sharding.build_accelerator(cfg, run_root)  # single, DDP or FSDP2, as launched


def _check_trackers(report_to: list[str]) -> None:
    """accelerate only warns about a tracker that is not installed and then logs nothing; a user
    who asked for one would rather hear it at once."""
    import importlib.util

    for name in report_to:
        package = _TRACKER_PACKAGES.get(name)
        if package and importlib.util.find_spec(name) is None:
            raise UserError(f"report_to names {name!r} but it is not installed: pip install {package}")


def build_run_dir(cfg: RESDConfig, ranks: Ranks, *, resuming: bool) -> RunDir:
    """One run directory for all ranks (named with rank 0's clock), created with the resolved
    config; a fresh run starts with empty logs."""
    root = Path(cfg.output_dir) if cfg.output_dir else None
    if root is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        root = Path("runs") / f"{cfg.method}-{cfg.env.replace(':', '_')}-seed{cfg.seed}-{stamp}"
    run = RunDir(ranks.from_main(str(root)))
    cfg.output_dir = str(run.root)
    if ranks.main:
        run.create()
        if not resuming:
            for stale in (run.metrics, run.evals):
                if stale.exists():
                    stale.unlink()
        save_config(cfg, run.config)
    ranks.barrier()
    return run


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_environment(cfg: RESDConfig) -> Environment:
    from resd.envs import get

    return get(cfg.env, **cfg.env_options)


def stream_order(task_ids: list[str], *, seed: int, shuffle: bool) -> list[int]:
    """Indices of the training tasks in the order of the single pass."""
    order = list(range(len(task_ids)))
    if shuffle:
        random.Random(seed).shuffle(order)
    return order


def build_stream(env: Environment, cfg: RESDConfig) -> tuple[list[Task], list[list[Task]]]:
    """The training tasks in pass order, and that order cut into batches (paper §3.3: one
    streaming pass, each prompt seen in one batch)."""
    tasks = env.tasks("train")
    if not tasks:
        raise UserError(f"environment {cfg.env!r} has no training tasks")
    order = stream_order([t.id for t in tasks], seed=cfg.seed, shuffle=cfg.shuffle)
    stream = [tasks[i] for i in order]
    batches = [stream[i:i + cfg.batch_size] for i in range(0, len(stream), cfg.batch_size)]
    if cfg.max_batches is not None:
        batches = batches[:cfg.max_batches]
    return stream, batches


@dataclass
class Policy:
    """The model being trained and everything that changes its weights."""

    model: torch.nn.Module
    """The module that takes gradients (DDP-wrapped with several processes)."""
    student: torch.nn.Module
    """The plain module (generation, saving, the teacher's reference)."""
    tokenizer: Any
    teacher: EMATeacher | None
    """The EMA self-teacher (None for GRPO)."""
    optimizer: torch.optim.Optimizer
    scheduler: Any
    pad_id: int
    local_model: torch.nn.Module | None = None
    """Under FSDP2, an unsharded copy of the student in the compute dtype for rank-local work
    (generation, evaluation, the probe), kept in sync by the generation engine; None otherwise."""

    @property
    def local(self) -> torch.nn.Module:
        """The module one rank can run forward on its own."""
        return self.local_model if self.local_model is not None else self.student


def build_policy(cfg: RESDConfig, accelerator: Any, *, model: Any = None, tokenizer: Any = None) -> Policy:
    """Load (or take) the model, add LoRA adapters, make the EMA teacher, the optimiser and the
    learning-rate schedule, and hand model and optimiser to accelerate."""
    precision = run_precision(cfg)  # float32 masters with half-precision compute (resd.train.precision)
    if model is not None:
        model.to(accelerator.device, dtype=load_dtype(precision, lora=cfg.lora is not None))
    else:
        from resd.models import load

        model, tokenizer = load(cfg.model, dtype=load_dtype(precision, lora=cfg.lora is not None),
                                device=accelerator.device)
    if cfg.lora is not None:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
            target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM"))
    from trl.trainer.utils import disable_dropout_in_model

    disable_dropout_in_model(model)  # student and teacher must score tokens deterministically
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        if cfg.lora is not None:
            model.enable_input_require_grads()
    model.train()
    teacher = (EMATeacher(model, cfg.teacher_update_rate, adapter_only=cfg.lora is not None, precision=precision)
               if cfg.distills else None)
    local_model = sharding.local_replica(model, precision) if sharding.sharded(accelerator) else None
    optimizer = torch.optim.AdamW(list(trainable_parameters(model).values()), lr=cfg.learning_rate,
                                  betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay)
    # Linear warm-up over `warmup_steps` updates, then constant (paper App. G). Unlike
    # transformers' schedule the first update already gets lr/warmup, not 0: with few updates
    # per run (CPU demos) a wasted first step shows. Not passed through accelerator.prepare,
    # which would step it once per process.
    warmup = cfg.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: min(1.0, (k + 1) / warmup) if warmup > 0 else 1.0)
    prepared, optimizer = accelerator.prepare(model, optimizer)
    if local_model is not None:
        sharding.shard_teacher(accelerator, teacher, accelerator.unwrap_model(prepared))  # sharded like the student
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return Policy(model=prepared, student=accelerator.unwrap_model(prepared), tokenizer=tokenizer, teacher=teacher,
                  optimizer=optimizer, scheduler=scheduler, pad_id=pad_id, local_model=local_model)


def build_generator(cfg: RESDConfig, policy: Policy) -> Engine:
    """The generation engine for rollouts, evaluation and the context engine's model calls."""
    budget = max(cfg.max_prompt_length, cfg.max_teacher_prompt_length) + max(
        cfg.max_completion_length, cfg.eval_max_new_tokens or 0, cfg.context.reflection_max_new_tokens,
        cfg.context.curation_max_new_tokens)
    return make_engine(cfg.generation, policy.student, policy.tokenizer, max_model_len=budget,
                       batch_size=cfg.generation_batch_size, seed=cfg.seed, local_model=policy.local_model,
                       dtype=run_precision(cfg).compute_dtype)


def context_generate(cfg: RESDConfig, generator: Engine) -> GenerateFn:
    """How the context engine calls the model (reflect, curate, first error): through `generator`,
    the run's generation engine, stopping an answer once it loops (the parsers would reject it)."""
    return generate_fn(generator, top_p=cfg.top_p, stop_when=is_degenerate)


def build_context_engine(cfg: RESDConfig, tokenizer: Any, generate: GenerateFn,
                         slots: TeacherSlots | None = None) -> ContextEngine | None:
    """The engine that builds each sample's teacher context (None for GRPO, which has no teacher),
    its model calls going through `generate` (`context_generate`). `slots` overrides the config's
    (the outcome of `teacher_slots: auto`)."""
    if not cfg.distills:
        return None
    slots = (slots or cfg.teacher_slots).restricted_to(cfg.template)
    rules = ContextPolicy(slots=slots, dont_reprompt_on_self_success=cfg.dont_reprompt_on_self_success,
                          feedback_only_without_solution=cfg.environment_feedback_only_without_solution)
    if cfg.context_engine == "peers":
        return PeerContext(rules)
    if cfg.context_engine == "rosd":
        return FirstErrorContext(rules, generate, tokenizer, max_new_tokens=cfg.context.reflection_max_new_tokens)
    # Reflections feed both the reflection slot and the curator; the curator feeds the playbook.
    updater = ContextUpdater(cfg.context, generate, seed=cfg.seed, reflect=slots.reflection or slots.playbook,
                             curate=slots.playbook, keep_solutions=slots.solution)
    return PlaybookContext(rules, updater)


def item_settings(cfg: RESDConfig) -> ItemSettings:
    """How the run turns samples and contexts into update items (`resd.policy.update.update_items`)."""
    return ItemSettings(template=cfg.template, max_teacher_prompt_length=cfg.max_teacher_prompt_length,
                        rebalance=(cfg.rebalance_a, cfg.rebalance_b) if cfg.rebalance and cfg.distills else None,
                        advantages=cfg.rewards_advantages, advantage_scale=cfg.grpo_scale_rewards)


def build_update(cfg: RESDConfig, policy: Policy, accelerator: Any, ranks: Ranks) -> PolicyUpdate:
    loss = LossSettings(mode=cfg.distillation_mode if cfg.distills else "policy_gradient",
                        alpha=cfg.distillation_alpha, topk=cfg.distillation_topk, add_tail=cfg.distillation_add_tail,
                        ratio_min=cfg.ratio_min, ratio_max=cfg.ratio_max, pg_coef=cfg.pg_coef if cfg.distills else 0.0,
                        token_mean="sampled" if cfg.rewards_advantages else "distilled",
                        teacher_temperature=cfg.distillation_teacher_temperature,
                        teacher_topk=cfg.distillation_teacher_topk, token_gate=cfg.distillation_token_gate,
                        teacher_entropy_cap=cfg.distillation_teacher_entropy_cap,
                        distill_outcomes=cfg.distill_outcomes)
    return PolicyUpdate(model=policy.model, student=policy.student, teacher=policy.teacher,
                        optimizer=policy.optimizer, scheduler=policy.scheduler, accelerator=accelerator, ranks=ranks,
                        loss=loss, pad_id=policy.pad_id, micro_batch_size=cfg.micro_batch_size,
                        max_grad_norm=cfg.max_grad_norm, temperature=cfg.temperature)


def start_probe(cfg: RESDConfig, policy: Policy, env: Environment, run: RunDir, ranks: Ranks,
                accelerator: Any) -> list[str] | None:
    """Before any update, on the training split (never the test split). `probe_at_start`: the
    teacher probe (`resd probe`: does the teacher rank accepted answers higher?) writes RUN/probe.json
    and .png and prints its verdict. `teacher_slots: auto`: the update probe (`resd probe --update`:
    does one update move held-out answers the right way?) writes RUN/update_probe.json and .png and
    returns the slots it found helpful (None without auto). A resumed run reads both back."""
    from resd.experiments.probe import probe_settings, probe_teacher
    from resd.experiments.update_probe import UpdateProbeSettings, probe_update

    if cfg.probe_at_start and ranks.main and not (run.root / "probe.json").exists():
        settings = probe_settings(cfg, tasks=cfg.probe_tasks, samples=cfg.probe_samples)
        result = probe_teacher(policy.local, policy.tokenizer, env, settings, context=cfg.context,
                               model_name=cfg.model, progress=cfg.progress)
        result.write(run.root)
        print(f"resd: probe ({cfg.template} teacher prompt): {result.verdict()}", file=sys.stderr)
    keep = None
    if cfg.distills and cfg.teacher_slots == "auto":
        saved = run.root / "update_probe.json"
        if ranks.main and saved.exists():
            keep = list(json.loads(saved.read_text())["helpful_slots"])
        keep = ranks.from_main(keep)
        if keep is None:
            # A quarter of the probed tasks are updated on, all of them are checked on.
            settings = UpdateProbeSettings(tasks=max(1, cfg.probe_tasks // 4), heldout=cfg.probe_tasks,
                                           samples=cfg.probe_samples, seed=cfg.seed)
            updated = probe_update(cfg, plain_float32_copy(policy), policy.tokenizer, env, settings, accelerator,
                                   progress=cfg.progress)
            keep = updated.helpful_slots()
            if ranks.main:
                updated.write(run.root)
                print(f"resd: update probe: {updated.verdict()}", file=sys.stderr)
                print(f"resd: teacher_slots: auto -> {', '.join(keep) or 'none: no sample will be distilled'} "
                      f"(details: {saved})", file=sys.stderr)
    policy.model.train()
    return keep


def plain_float32_copy(policy: Policy) -> torch.nn.Module:
    """The student's current weights as a plain float32 model, as if freshly loaded: every parameter
    trainable, LoRA adapters merged in, FSDP2 shards gathered (under FSDP2 every rank calls this
    together), accelerate's autocast wrapper off, sharing no storage with the run. The update probe
    starts its throw-away copies from it (`policy.local` is a frozen compute-dtype replica under FSDP2
    and already LoRA-wrapped with LoRA) and, in half precision, scores with it: one update at the
    paper's lr moves log-probabilities by ~1e-4 nats, below what a bfloat16 forward resolves."""
    from accelerate.utils import extract_model_from_parallel

    from resd.policy.tensors import full

    plain = extract_model_from_parallel(copy.deepcopy(policy.local), keep_fp32_wrapper=False).to(torch.float32)
    plain.load_state_dict({name: full(t.detach()) for name, t in policy.student.state_dict().items()})
    if hasattr(plain, "merge_and_unload"):  # a PEFT model
        plain = plain.merge_and_unload()
    plain.requires_grad_(True)
    return plain


def automatic_slots(helpful: list[str]) -> TeacherSlots:
    """`teacher_slots: auto`: the slots the probe found helpful, the others off."""
    return TeacherSlots(**{s: s in helpful for s in SLOT_NAMES})
