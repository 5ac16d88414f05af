"""`RESDTrainer`: the training loop of SPEC §1 (paper Algorithm 1), for every method.

    for each batch of the one-pass stream:
        for k in range(K):                      # inner loop on the same prompts
            rollout   N samples per prompt       (resd.generation.sample)
            score     reward, acc, feedback      (env.score_many)
            context   concise / reflect / curate / buffer, before the update (resd.context)
            teacher   prompts from the context, forward of the EMA teacher (no grad)
            update    self-distillation loss (or GRPO's policy gradient), one AdamW step
            EMA       theta_T <- (1 - eta) theta_T + eta theta
            log       metrics.jsonl, playbook snapshot, periodic eval, checkpoint

It runs on `accelerate.Accelerator` (CPU, one GPU, or several processes). With several processes
the rollouts are sharded over ranks and gathered, rank 0 runs the context engine and broadcasts its
state (so the playbook is identical everywhere), and the distilled samples are split over ranks
for the update; the loss is normalised by the global token count, so the gradient equals a single
process's on the same data.

GRPO runs in this same engine (same stream, K, lr, batch): group-relative advantages without std
scaling (Dr. GRPO, as the SDPO repository's baseline) and the clipped surrogate with clip-higher
(eps 0.2 / 0.28), token mean. Each inner iteration re-generates, so every update is on-policy and
the ratio is 1 at the step (the objective then equals TRL GRPOTrainer's with num_iterations=1,
loss_type="dapo", beta=0). We chose this over driving `trl.GRPOTrainer` because TRL's trainer owns
its data loader and cannot follow our one-pass stream with K re-generations per batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resd.errors import UserError
from resd.train.checkpoint import (find_checkpoint, load_checkpoint, rng_state, save_checkpoint,
                                   set_rng_state)
from resd.train.config import RESDConfig, config_from_dict, save_config
from resd.train.packing import pack, response_logits
from resd.train.rundir import RunDir
from resd.train.targets import ScoredSample, TeacherChoice, TeacherSettings, choose_teachers
from resd.train.teacher import EMATeacher, trainable_parameters

EVAL_KEYS = ("per_task_mean@k", "per_task_best@k", "per_case_mean@k", "per_case_best@k")


def _now() -> float:
    return time.perf_counter()


def derive_seed(*parts: int) -> int:
    """A stable 31-bit seed from integers (run seed, step, rank): rollouts do not depend on how
    much randomness anything else consumed, which keeps resumed runs identical."""
    h = 0x345678
    for p in parts:
        h = (h * 1_000_003 + int(p) + 0x9E3779B9) % (2**61 - 1)
    return h % (2**31 - 1)


def stream_order(task_ids: list[str], *, seed: int, shuffle: bool, limit: int | None) -> list[int]:
    """Indices of the training tasks in the order of the single pass."""
    order = list(range(len(task_ids)))
    if shuffle:
        random.Random(seed).shuffle(order)
    return order[:limit] if limit is not None else order


_TRACKER_PACKAGES = {"tensorboard": "tensorboard==2.21.0", "wandb": "wandb", "trackio": "trackio"}


BASE_EVAL_KEYS = ("model", "dtype", "lora", "env", "env_options", "seed", "eval_k", "eval_limit",
                  "eval_max_new_tokens", "max_completion_length", "max_prompt_length", "temperature", "top_p",
                  "generation_batch_size")
"""Everything the step-0 evaluation depends on: the initial weights (model, dtype, LoRA: a fresh
adapter is a no-op but changes the module), the test tasks and the sampling (seed, batching)."""


def base_eval_identity(cfg: RESDConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    return {k: d.get(k) for k in BASE_EVAL_KEYS}


def read_base_eval(path: str | None, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The cached step-0 result when `path` holds one made with the same identity, else None."""
    import json

    if not path or not Path(path).exists():
        return None
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None  # unreadable cache: evaluate again and overwrite it
    if not isinstance(saved, dict) or saved.get("identity") != json.loads(json.dumps(identity)):
        return None
    result = saved.get("result")
    return result if isinstance(result, dict) and all(k in result for k in EVAL_KEYS) else None


def write_base_eval(path: str, identity: dict[str, Any], result: dict[str, Any]) -> None:
    from resd.train.rundir import write_json_atomic

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    keep = {k: result[k] for k in (*EVAL_KEYS, "k", "n_tasks") if k in result}
    write_json_atomic(Path(path), {"identity": identity, "result": keep})


def finish_distributed() -> None:
    """Wait for every rank, then tear the process group down before the interpreter exits: a gloo
    group left alive can abort a rank at exit ("terminate called without an active exception")
    after all the work is done. A no-op in a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _check_trackers(report_to: list[str]) -> None:
    """accelerate only warns about a tracker that is not installed and then logs nothing; a user
    who asked for one would rather hear it at once."""
    import importlib.util

    for name in report_to:
        package = _TRACKER_PACKAGES.get(name)
        if package and importlib.util.find_spec(name) is None:
            raise UserError(f"report_to names {name!r} but it is not installed: pip install {package}")


class RESDTrainer:
    """Train with RESD, SDPO, SDPO+ss, ROSD or GRPO. `train()` returns the run directory.

    model / tokenizer / env may be passed in (tests, notebooks); otherwise they are built from
    the config. `resume_from` continues a run from its RUN/checkpoints/latest.
    """

    def __init__(self, config: RESDConfig, *, model: Any = None, tokenizer: Any = None, env: Any = None,
                 resume_from: str | Path | None = None) -> None:
        self.cfg = config
        self._model_in, self._tokenizer_in, self._env_in = model, tokenizer, env
        self.resume_from = Path(resume_from) if resume_from is not None else None

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, **kwargs: Any) -> "RESDTrainer":
        """The trainer that continues the run saved in `run_dir` (`resd train --resume`)."""
        import yaml

        run = RunDir(run_dir)
        if not run.config.exists():
            raise UserError(f"{str(run_dir)!r} is not a run directory (no config.yaml); pass the RUN dir `resd train` printed")
        if find_checkpoint(run.latest) is None:
            raise UserError(f"{str(run_dir)!r} has no checkpoint yet (checkpoints/latest); start the run again instead")
        cfg = config_from_dict(yaml.safe_load(run.config.read_text()))
        cfg.output_dir = str(run.root)
        return cls(cfg, resume_from=run.root, **kwargs)

    # ==========================================================================================
    # setup
    # ==========================================================================================

    def _setup(self) -> None:
        from accelerate import Accelerator
        from accelerate.utils import broadcast_object_list

        cfg = self.cfg
        run_root = Path(cfg.output_dir) if cfg.output_dir else None
        # cpu=True on machines without a GPU: accelerate then forms a gloo process group when
        # launched with several processes (torchrun, `accelerate launch --multi_gpu`, or
        # `accelerate launch --cpu`, whose single process `resd train` turns into N ranks:
        # resd/train/launch.py).
        on_cpu = not torch.cuda.is_available() and not torch.backends.mps.is_available()
        _check_trackers(cfg.report_to)
        self.acc = Accelerator(cpu=on_cpu, log_with=cfg.report_to or None,
                               project_dir=str(run_root) if run_root else None)
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        self.main = self.acc.is_main_process

        # One run directory for all ranks (the timestamp is rank 0's).
        if run_root is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            run_root = Path("runs") / f"{cfg.method}-{cfg.env.replace(':', '_')}-seed{cfg.seed}-{stamp}"
        holder = [str(run_root)]
        if self.world > 1:
            broadcast_object_list(holder, from_process=0)
        self.run = RunDir(holder[0])
        cfg.output_dir = str(self.run.root)
        if self.main:
            self.run.create()
            if self.resume_from is None:
                for stale in (self.run.metrics, self.run.evals):
                    if stale.exists():
                        stale.unlink()
            save_config(cfg, self.run.config)
        self.acc.wait_for_everyone()

        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)

        # Environment and the one-pass stream.
        if self._env_in is not None:
            self.env = self._env_in
        else:
            from resd.envs import get

            self.env = get(cfg.env, **cfg.env_options)
        self.train_tasks = self.env.tasks("train")
        if not self.train_tasks:
            raise UserError(f"environment {cfg.env!r} has no training tasks")
        order = stream_order([t.id for t in self.train_tasks], seed=cfg.seed, shuffle=cfg.shuffle,
                             limit=cfg.train_limit)
        self.stream = [self.train_tasks[i] for i in order]
        self.batches = [self.stream[i:i + cfg.batch_size] for i in range(0, len(self.stream), cfg.batch_size)]
        if cfg.max_batches is not None:
            self.batches = self.batches[:cfg.max_batches]

        # Model, optional LoRA, teacher, optimiser, schedule.
        if self._model_in is not None:
            model, tokenizer = self._model_in, self._tokenizer_in
            model.to(self.acc.device)
        else:
            from resd.models import load

            model, tokenizer = load(cfg.model, dtype=cfg.dtype, device=self.acc.device)
        self.tokenizer = tokenizer
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
        self.teacher = (EMATeacher(model, cfg.teacher_update_rate, adapter_only=cfg.lora is not None)
                        if cfg.distills else None)
        params = list(trainable_parameters(model).values())
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                      weight_decay=cfg.weight_decay)
        # Linear warm-up over `warmup_steps` updates, then constant (paper App. G). Unlike
        # transformers' schedule the first update already gets lr/warmup, not 0: with few updates
        # per run (CPU demos) a wasted first step shows. Not passed through accelerator.prepare,
        # which would step it once per process.
        warmup = cfg.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda k: min(1.0, (k + 1) / warmup) if warmup > 0 else 1.0)
        self.model, self.optimizer = self.acc.prepare(model, optimizer)
        self.student = self.acc.unwrap_model(self.model)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

        # Context engine (RESD): rank 0 owns it; other ranks receive its state.
        self.context = None
        if cfg.distills and cfg.use_context:
            from resd.context import ContextUpdater
            from resd.generation import make_generate_fn

            # The context engine judges success with the run's threshold; the playbook ablation
            # also skips curation (nothing would read the entries).
            ctx_cfg = dataclasses.replace(cfg.context, success_threshold=cfg.success_reward_threshold,
                                          curate=cfg.context.curate and not cfg.no_playbook)
            from resd.context.reflect import is_degenerate

            # A looping answer is rejected by the parsers anyway, so stop decoding it early.
            self.context = ContextUpdater(ctx_cfg, make_generate_fn(self.student, tokenizer,
                                                                    batch_size=cfg.generation_batch_size,
                                                                    top_p=cfg.top_p, stop_when=is_degenerate),
                                          seed=cfg.seed)
        self.teacher_settings = TeacherSettings(
            template=cfg.template,
            success_threshold=cfg.success_reward_threshold,
            use_peer_solution=cfg.use_peer_solution,
            use_buffer=self.context is not None and not cfg.no_solution_buffer,
            dont_reprompt_on_self_success=cfg.dont_reprompt_on_self_success,
            feedback_only_without_solution=cfg.environment_feedback_only_without_solution,
            include_feedback=cfg.include_environment_feedback,
            include_previous_trial=cfg.include_previous_trial,
            include_reflection=not cfg.no_reflection,
            include_playbook=not cfg.no_playbook,
            require_group_success=cfg.error_suffix_mask,
        )

        # Position in the stream and bookkeeping (replaced by the checkpoint on resume).
        self.state: dict[str, Any] = {
            "step": 0, "batch": 0, "iteration": 0, "rollouts": 0, "batch_best_reward": None,
            "eval_history": [], "data_order": [t.id for t in self.stream], "finished": False,
        }
        if self.resume_from is not None:
            self._restore()

        if cfg.report_to:
            flat = {k: v for k, v in cfg.to_dict().items() if isinstance(v, (int, float, str, bool))}
            self.acc.init_trackers(self.run.root.name, config=flat)

    def _restore(self) -> None:
        ckpt = find_checkpoint(self.run.latest)
        if ckpt is None:
            raise UserError(f"no checkpoint in {self.run.latest}")
        state, context_state, rng = load_checkpoint(
            ckpt, model=self.student, teacher=self.teacher, optimizer=self.optimizer,
            scheduler=self.scheduler, rank=self.rank)
        if state["data_order"] != [t.id for t in self.stream]:
            raise UserError("the environment's training tasks differ from the checkpoint's data order; "
                            "resume with the same environment version and options")
        if self.context is not None and context_state is not None:
            self.context.load_state_dict(context_state)
        self.state = state
        self._resume_rng = rng
        if self.main:
            self.run.truncate_after(int(state["step"]))
        self.acc.wait_for_everyone()

    # ==========================================================================================
    # public pieces for other loops (test-time self-distillation, benchmarks)
    # ==========================================================================================

    def setup(self) -> None:
        """Build accelerator, environment, model, teacher, optimiser and context engine (once)."""
        if not getattr(self, "_ready", False):
            self._setup()
            self._ready = True

    def step(self, tasks: list) -> dict[str, Any]:
        """One full iteration on `tasks` outside the stream: rollout, score, context update,
        teacher, one optimiser step, EMA. Returns the metrics record (nothing is written)."""
        self.setup()
        record = self._iteration(list(tasks), -1, 0)
        self.state["step"] += 1
        self.state["rollouts"] += record.pop("rollouts_this_step")
        record["step"], record["rollouts"] = self.state["step"], self.state["rollouts"]
        return record

    # ==========================================================================================
    # the loop
    # ==========================================================================================

    def train(self) -> Path:
        self.setup()
        cfg, st = self.cfg, self.state
        if getattr(self, "_resume_rng", None) is not None:
            set_rng_state(self._resume_rng)
        planned = len(self.batches) * cfg.inner_updates
        if cfg.max_steps is not None:
            planned = min(planned, cfg.max_steps)
        from tqdm.auto import tqdm

        bar = tqdm(total=planned, initial=min(st["step"], planned), desc=f"{cfg.method} train",
                   unit="update", dynamic_ncols=True, disable=not (self.main and cfg.progress))
        started = time.time()
        try:
            if cfg.eval_at_start and not st["eval_history"] and st["step"] == 0:
                self._evaluate_and_keep(0)
                self._checkpoint()
            while not st["finished"]:
                if st["batch"] >= len(self.batches) or (cfg.max_steps is not None and st["step"] >= cfg.max_steps):
                    st["finished"] = True
                    break
                tasks = self.batches[st["batch"]]
                record = self._iteration(tasks, st["batch"], st["iteration"])
                st["step"] += 1
                st["rollouts"] += record["rollouts_this_step"]
                record["step"], record["rollouts"] = st["step"], st["rollouts"]
                del record["rollouts_this_step"]
                self._advance(record["reward_mean"])
                if self.main:
                    self.run.log_metrics(record)
                    if self.context is not None:
                        self.run.snapshot_playbook(st["step"], self.context.state_dict())
                        self.run.log_context_outputs(st["step"], self.context.last_outputs)
                if cfg.report_to:
                    self.acc.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=st["step"])
                done = st["finished"] or st["batch"] >= len(self.batches) or (
                    cfg.max_steps is not None and st["step"] >= cfg.max_steps)
                if (cfg.eval_every and st["step"] % cfg.eval_every == 0) or done:
                    self._evaluate_and_keep(st["step"])
                if done:
                    st["finished"] = True
                if st["step"] % cfg.checkpoint_every == 0 or done:
                    self._checkpoint()
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}", reward=f"{record['reward_mean']:.2f}",
                                playbook=record.get("playbook_size", 0), refresh=False)
        finally:
            bar.close()
        if self.main:
            self._finish(time.time() - started)
        self.acc.wait_for_everyone()
        if cfg.report_to:
            self.acc.end_training()
        return self.run.root

    def _advance(self, reward_mean: float) -> None:
        """Move the data position: next inner iteration, or the next batch (K reached, or an early
        stop: every sample solved or no improvement over the batch's best so far)."""
        cfg, st = self.cfg, self.state
        k = st["iteration"] + 1
        best = st["batch_best_reward"]
        stop = k >= cfg.inner_updates
        if cfg.early_stop and k >= cfg.min_updates:
            if reward_mean >= 1.0 or (best is not None and reward_mean <= best):
                stop = True
        st["batch_best_reward"] = reward_mean if best is None else max(best, reward_mean)
        if stop:
            st["batch"], st["iteration"], st["batch_best_reward"] = st["batch"] + 1, 0, None
        else:
            st["iteration"] = k

    # ==========================================================================================
    # one inner iteration
    # ==========================================================================================

    def _iteration(self, tasks: list, batch_index: int, iteration: int) -> dict[str, Any]:
        from accelerate.utils import broadcast_object_list, gather_object

        from resd.generation import sample

        cfg = self.cfg
        t_step = _now()
        times = {k: 0.0 for k in ("rollout", "scoring", "reflection", "curation", "teacher_forward",
                                   "student_step")}

        # 1. Rollout: this rank's share of the prompts, N samples each.
        t0 = _now()
        mine = list(range(self.rank, len(tasks), self.world))
        self._check_prompt_lengths([tasks[i] for i in mine])
        rollouts = sample(self.student, self.tokenizer, [tasks[i].prompt for i in mine],
                          n=cfg.num_generations, max_new_tokens=cfg.max_completion_length,
                          temperature=cfg.temperature, top_p=cfg.top_p,
                          batch_size=cfg.generation_batch_size,
                          seed=derive_seed(cfg.seed, self.state["step"], self.rank))
        times["rollout"] = _now() - t0

        # 2. Score.
        t0 = _now()
        flat_tasks = [tasks[i] for i, row in zip(mine, rollouts) for _ in row]
        flat = [r for row in rollouts for r in row]
        outcomes = self.env.score_many(flat_tasks, [r.text for r in flat])
        local = []
        pos = 0
        for i, row in zip(mine, rollouts):
            for r in row:
                local.append((i, ScoredSample(tasks[i], i, r.text, r.prompt_ids, r.completion_ids,
                                              r.truncated, outcomes[pos])))
                pos += 1
        times["scoring"] = _now() - t0
        gathered = gather_object(local) if self.world > 1 else local
        samples = [s for _, s in sorted(gathered, key=lambda pair: pair[0])]  # stable: group, then j

        # 3. Context update before the policy update (rank 0, then broadcast).
        context_stats: dict[str, float] = {}
        rosd_notes: dict[int, tuple[str | None, int | None]] = {}
        if self.context is not None:
            from resd.context import ContextSample

            t0 = _now()
            payload: list[Any] = [None]
            if self.main:
                stats = self.context.update(self.state["step"], [
                    ContextSample(example_id=s.task.id, prompt=s.task.prompt_text, response=s.text,
                                  outcome=s.outcome) for s in samples])
                payload = [(stats, self.context.state_dict() if self.world > 1 else None)]
            if self.world > 1:
                broadcast_object_list(payload, from_process=0)
                stats, ctx_state = payload[0]
                if not self.main:
                    self.context.load_state_dict(ctx_state)
            else:
                stats = payload[0][0]
            context_stats = {k: float(v) for k, v in (stats or {}).items() if isinstance(v, (int, float))}
            if self.world > 1:  # every rank must now hold the same playbook and buffer
                digests = gather_object([self._context_digest()])
                context_stats["context/ranks_identical"] = float(len(set(digests)) == 1)
            elapsed = _now() - t0
            # The updater reports its own phase times when it can; otherwise it is all reflection.
            times["curation"] = context_stats.pop("time/curation", 0.0)
            times["reflection"] = context_stats.pop("time/reflection", elapsed - times["curation"])
        elif cfg.error_suffix_mask and cfg.distills:
            t0 = _now()
            payload = [None]
            if self.main:
                payload = [self._rosd_reflect(samples)]
            if self.world > 1:
                broadcast_object_list(payload, from_process=0)
            rosd_notes = payload[0]
            times["reflection"] = _now() - t0
            found = [v[1] is not None for v in rosd_notes.values()]
            context_stats = {"rosd/reflections": float(len(rosd_notes)),
                             "rosd/quote_found_fraction": float(np.mean(found)) if found else 0.0}

        rewards = [s.outcome.reward for s in samples]
        record: dict[str, Any] = {
            "batch": batch_index, "iteration": iteration, "rollouts_this_step": len(samples),
            "reward_mean": float(np.mean(rewards)),
            "acc_mean": float(np.mean([s.outcome.acc for s in samples])),
            "success_rate": float(np.mean([r >= cfg.success_reward_threshold for r in rewards])),
            "truncated_fraction": float(np.mean([s.truncated for s in samples])),
            "completion_tokens_mean": float(np.mean([len(s.completion_ids) for s in samples])),
            "lr": float(self.scheduler.get_last_lr()[0]),
        }

        # 4-6. Teacher prompts, teacher forward, loss, optimiser step.
        if cfg.distills:
            update = self._distillation_update(samples, rosd_notes, times)
        else:
            update = self._grpo_update(samples, times)
        record.update(update)
        record["playbook_size"] = int(context_stats.get("context/playbook_size", 0))
        record.update(context_stats)

        # 7. EMA teacher.
        if self.teacher is not None and update.get("updated", False):
            self.teacher.update(self.student)
        record.pop("updated", None)
        for k, v in times.items():
            record[f"time/{k}"] = v
        record["time/step"] = _now() - t_step
        return record

    def _context_digest(self) -> str:
        import hashlib
        import json

        return hashlib.sha256(json.dumps(self.context.state_dict(), sort_keys=True).encode()).hexdigest()

    def _check_prompt_lengths(self, tasks: list) -> None:
        from resd.generation import encode_prompts

        for task, ids in zip(tasks, encode_prompts(self.tokenizer, [t.prompt for t in tasks])):
            if len(ids) > self.cfg.max_prompt_length:
                raise UserError(f"task {task.id!r} has a {len(ids)}-token prompt, over max_prompt_length="
                                f"{self.cfg.max_prompt_length}; raise max_prompt_length")

    # ------------------------------------------------------------------------------------------
    # ROSD
    # ------------------------------------------------------------------------------------------

    def _rosd_reflect(self, samples: list[ScoredSample]) -> dict[int, tuple[str | None, int | None]]:
        """Greedy first-error reflection for each failed sample with a successful peer:
        sample index -> (explanation, first distilled token or None)."""
        from resd.distill.masks import locate_error_token
        from resd.generation import make_generate_fn
        from resd.train.rosd import parse_reflection, reflector_prompt

        tau = self.cfg.success_reward_threshold
        jobs = []
        for i, s in enumerate(samples):
            if s.outcome.reward >= tau:
                continue
            peer = next((p for p in samples if p.group == s.group and p.outcome.reward >= tau), None)
            if peer is not None:
                jobs.append((i, reflector_prompt(s.task.prompt_text, peer.text, s.text, s.outcome.feedback)))
        if not jobs:
            return {}
        from resd.context.reflect import is_degenerate

        generate = make_generate_fn(self.student, self.tokenizer, batch_size=self.cfg.generation_batch_size,
                                    stop_when=is_degenerate)
        replies = generate([p for _, p in jobs], self.cfg.reflection_max_new_tokens, 0.0)
        notes = {}
        for (i, _), reply in zip(jobs, replies):
            parsed = parse_reflection(reply)
            start = locate_error_token(samples[i].text, parsed.quote, self.tokenizer, len(samples[i].completion_ids))
            notes[i] = (parsed.explanation, start)
        return notes

    # ------------------------------------------------------------------------------------------
    # self-distillation update
    # ------------------------------------------------------------------------------------------

    def _distillation_update(self, samples: list[ScoredSample], rosd_notes: dict, times: dict) -> dict[str, Any]:
        from resd.context import fit_teacher_prompt
        from resd.distill.losses import success_rate_weights

        cfg = self.cfg
        ctx = self.context
        choices: list[TeacherChoice] = choose_teachers(
            samples, self.teacher_settings,
            playbook_text=ctx.playbook_text if ctx is not None else None,
            reflection=(lambda i: ctx.reflection(samples[i].task.id)) if ctx is not None
            else (lambda i: rosd_notes.get(i, (None, None))[0]),
            buffered_solution=ctx.solution if ctx is not None else None,
        )
        weights = (success_rate_weights([s.outcome.reward for s in samples], cfg.success_reward_threshold,
                                        cfg.rebalance_a, cfg.rebalance_b).tolist()
                   if cfg.rebalance else [1.0] * len(samples))
        items = []
        truncated_teacher = 0
        teacher_tokens = []
        for i, (s, c) in enumerate(zip(samples, choices)):
            if not c.distilled or not s.completion_ids:
                continue
            ids, fit_stats = fit_teacher_prompt(self.tokenizer, c.messages, cfg.max_teacher_prompt_length)
            truncated_teacher += int(fit_stats.get("teacher/truncated", 0))
            teacher_tokens.append(len(ids))
            n = len(s.completion_ids)
            token_mask = [1.0] * n
            if i in rosd_notes and rosd_notes[i][1] is not None:
                start = rosd_notes[i][1]
                token_mask = [0.0] * start + [1.0] * (n - start)
            items.append({"prompt": s.prompt_ids, "completion": s.completion_ids, "teacher": list(ids),
                          "mask": token_mask, "weight": float(weights[i])})
        stats = {
            "distill_samples": len(items),
            "distill_fraction": len(items) / max(1, len(samples)),
            "teacher/solution_fraction": float(np.mean([c.solution_source != "" for c in choices])),
            "teacher/feedback_fraction": float(np.mean([c.used_feedback for c in choices])),
            "teacher/reflection_fraction": float(np.mean([c.used_reflection for c in choices])),
            "teacher/playbook_fraction": float(np.mean([c.used_playbook for c in choices])),
            "teacher/truncated": truncated_teacher,
            "teacher/prompt_tokens_mean": float(np.mean(teacher_tokens)) if teacher_tokens else 0.0,
        }
        stats.update(self._apply_update(items, times, kind="distill"))
        return stats

    def _grpo_update(self, samples: list[ScoredSample], times: dict) -> dict[str, Any]:
        from resd.distill.losses import group_advantages

        cfg = self.cfg
        # samples are ordered by prompt, N consecutive samples each.
        adv = group_advantages([s.outcome.reward for s in samples], cfg.num_generations,
                               scale=cfg.grpo_scale_rewards).tolist()
        items = [{"prompt": s.prompt_ids, "completion": s.completion_ids, "teacher": None,
                  "mask": [1.0] * len(s.completion_ids), "weight": float(a)}
                 for s, a in zip(samples, adv) if s.completion_ids]
        # Zero-advantage samples add nothing to the gradient but count in the token mean.
        total_tokens = sum(len(it["mask"]) for it in items)
        active = [it for it in items if it["weight"] != 0.0]
        stats = {"advantage_abs_mean": float(np.mean(np.abs(adv))) if adv else 0.0,
                 "distill_samples": len(active), "distill_fraction": len(active) / max(1, len(samples))}
        stats.update(self._apply_update(active, times, kind="grpo", total_tokens=total_tokens))
        return stats

    def _apply_update(self, items: list[dict], times: dict, *, kind: str,
                      total_tokens: int | None = None) -> dict[str, Any]:
        """Micro-batched forward/backward over this rank's share of `items`, one optimiser step.

        Loss normalisation: sum_i,t w_i m_it l_it / (global masked tokens); every rank divides
        by the same global count and scales by the number of processes because DDP averages.
        """
        cfg = self.cfg
        total = total_tokens if total_tokens is not None else int(sum(sum(it["mask"]) for it in items))
        if not items or total == 0:
            # Nothing to learn from (e.g. SDPO with no success and no feedback): no step, as in SDPO.
            return {"loss": 0.0, "distill_tokens": 0, "updated": False, "grad_norm": 0.0}
        mine = items[self.rank::self.world]
        per_rank = math.ceil(len(items) / self.world)
        n_micro = math.ceil(per_rank / cfg.micro_batch_size)
        loss_sum = torch.zeros((), dtype=torch.float64)
        self.model.train()
        for m in range(n_micro):
            chunk = mine[m * cfg.micro_batch_size:(m + 1) * cfg.micro_batch_size]
            dummy = not chunk
            if dummy:  # keep every rank's number of backward passes equal (DDP); contributes 0
                chunk = [{**items[0], "weight": 0.0}]
            sync = contextlib.nullcontext() if (m == n_micro - 1 or self.world == 1) else self.acc.no_sync(self.model)
            with sync:
                contrib = self._micro_step(chunk, times, kind=kind, dummy=dummy)
                loss = contrib * (self.world / total)
                t0 = _now()
                self.acc.backward(loss)
                times["student_step"] += _now() - t0
            loss_sum += contrib.detach().double().cpu()
        t0 = _now()
        grad_norm = 0.0
        if cfg.max_grad_norm is not None:
            grad_norm = float(self.acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        times["student_step"] += _now() - t0
        if self.world > 1:
            loss_sum = self.acc.reduce(loss_sum.to(self.acc.device), reduction="sum").cpu()
        return {"loss": float(loss_sum) / total, "distill_tokens": total, "updated": True,
                "grad_norm": grad_norm}

    def _micro_step(self, chunk: list[dict], times: dict, *, kind: str, dummy: bool) -> torch.Tensor:
        """Sum over the chunk of w_i * m_it * l_it (not yet normalised), with a graph."""
        from resd.distill.losses import (policy_gradient_loss, self_distillation_loss,
                                         sequence_logprobs, token_level_distillation_loss)

        cfg = self.cfg
        device = self.acc.device
        width = max(len(it["completion"]) for it in chunk)
        mask = torch.tensor([it["mask"] + [0.0] * (width - len(it["mask"])) for it in chunk],
                            dtype=torch.float32, device=device)
        w = torch.tensor([it["weight"] for it in chunk], dtype=torch.float32, device=device)
        student_in = pack([it["prompt"] for it in chunk], [it["completion"] for it in chunk], self.pad_id, device)

        teacher_logits = None
        if kind == "distill" and not dummy:
            t0 = _now()
            teacher_in = pack([it["teacher"] for it in chunk], [it["completion"] for it in chunk], self.pad_id, device)
            with torch.no_grad(), self.teacher.weights_in(self.student) as teacher_model:
                teacher_logits = response_logits(teacher_model, teacher_in, cfg.temperature)
            times["teacher_forward"] += _now() - t0

        t0 = _now()
        logits = response_logits(self.model, student_in, cfg.temperature)
        if kind == "grpo":
            logp = sequence_logprobs(logits, student_in.completion_ids)
            _, per_token = policy_gradient_loss(logp, logp.detach(), w, mask,
                                                eps_low=cfg.grpo_epsilon_low, eps_high=cfg.grpo_epsilon_high)
            contrib = per_token.sum()  # the advantage already carries the sample's sign and size
        else:
            if teacher_logits is None:  # dummy chunk: zero contribution that still touches every weight
                teacher_logits = logits.detach()
            if cfg.distillation_mode == "sampled_token":
                _, per_token = token_level_distillation_loss(
                    sequence_logprobs(logits, student_in.completion_ids),
                    sequence_logprobs(teacher_logits, student_in.completion_ids), mask)
            else:
                _, per_token = self_distillation_loss(
                    logits, teacher_logits, mask, alpha=cfg.distillation_alpha,
                    topk=cfg.distillation_topk if cfg.distillation_mode == "topk_logits" else None,
                    add_tail=cfg.distillation_add_tail, ratio_min=cfg.ratio_min, ratio_max=cfg.ratio_max)
            contrib = (per_token * w[:, None]).sum()
        if dummy:
            contrib = contrib * 0.0
        times["student_step"] += _now() - t0
        return contrib

    # ==========================================================================================
    # evaluation, selection, checkpoints
    # ==========================================================================================

    def _evaluate_and_keep(self, step: int) -> None:
        """Evaluate on the test split (main process), log it, and keep the weights for selection."""
        cfg = self.cfg
        if not cfg.do_eval or any(int(e["step"]) == step for e in self.state["eval_history"]):
            return
        if self.main:
            from resd.eval.evaluate import evaluate

            identity = base_eval_identity(cfg)
            result = read_base_eval(cfg.base_eval_cache, identity) if step == 0 else None
            if result is None:
                result = evaluate(self.student, self.tokenizer, self.env, k=cfg.eval_k, limit=cfg.eval_limit,
                                  batch_size=cfg.generation_batch_size,
                                  max_new_tokens=cfg.eval_max_new_tokens or cfg.max_completion_length,
                                  temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
                if step == 0 and cfg.base_eval_cache:
                    write_base_eval(cfg.base_eval_cache, identity, result)
            row = {"step": step, "rollouts": self.state["rollouts"], **{k: float(result[k]) for k in EVAL_KEYS},
                   "k": int(result.get("k", cfg.eval_k)), "n_tasks": int(result.get("n_tasks", 0))}
            self.run.log_eval(row)
            self._save_weights(self.run.eval_weights(step))
            if cfg.report_to:
                self.acc.log({f"eval/{k}": row[k] for k in EVAL_KEYS}, step=step)
            self.state["eval_history"].append(row)
            self.model.train()
        from accelerate.utils import broadcast_object_list

        if self.world > 1:
            holder = [self.state["eval_history"]]
            broadcast_object_list(holder, from_process=0)
            self.state["eval_history"] = holder[0]
        self.acc.wait_for_everyone()

    def _save_weights(self, directory: Path) -> None:
        """A loadable Hugging Face (or PEFT adapter) directory, written atomically."""
        tmp = directory.with_name(f".{directory.name}.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        self.student.save_pretrained(str(tmp))
        self.tokenizer.save_pretrained(str(tmp))
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)

    def _checkpoint(self) -> None:
        from accelerate.utils import gather_object

        rngs = gather_object([rng_state()]) if self.world > 1 else [rng_state()]
        if self.main:
            save_checkpoint(self.run.latest, model=self.student, teacher=self.teacher, optimizer=self.optimizer,
                            scheduler=self.scheduler,
                            context_state=self.context.state_dict() if self.context is not None else None,
                            state=self.state, rng_states=rngs)
        self.acc.wait_for_everyone()

    def _finish(self, wall_time: float) -> None:
        history = self.state["eval_history"]
        summary: dict[str, Any] = {"method": self.cfg.method, "env": self.cfg.env, "seed": self.cfg.seed,
                                   "model": self.cfg.model, "steps": self.state["step"],
                                   "rollouts": self.state["rollouts"], "run_dir": str(self.run.root),
                                   "selected_step": None, "selected": None, "final": None}
        if history:
            from resd.eval.metrics import select_checkpoint

            index = select_checkpoint([{k: e[k] for k in EVAL_KEYS} for e in history])
            chosen = history[index]
            summary.update(selected_step=int(chosen["step"]), selected=chosen, final=history[-1])
            source = self.run.eval_weights(int(chosen["step"]))
            if source.exists():
                tmp = self.run.selected.with_name(".selected.tmp")
                if tmp.exists():
                    shutil.rmtree(tmp)
                shutil.copytree(source, tmp)
                if self.run.selected.exists():
                    shutil.rmtree(self.run.selected)
                tmp.rename(self.run.selected)
            if not self.cfg.keep_eval_checkpoints:
                shutil.rmtree(self.run.checkpoints / "eval", ignore_errors=True)
        summary["wall_time_s"] = wall_time
        self.run.write_summary(summary)
