"""`RESDTrainer`: the training loop of the RESD paper's Algorithm 1, for every method.

    for batch in stream:                            one streaming pass (paper §3.3)
        for k in range(K):                          K updates on the same prompts, each re-generating
            rollout   N samples per prompt          Alg. 1 line 3    (resd.generation.sampling.sample)
            score     reward, acc, feedback         line 4           (env.score_many)
            context   concise / reflect / curate,   lines 5-15       (resd.context engine: one call)
                      buffer; a TeacherContext per sample
            items     teacher prompts, weights,     lines 15-16      (resd.policy.update.update_items)
                      masks, advantages
            update    teacher forward, loss,        lines 16-18      (resd.policy.update)
                      one AdamW step
            EMA       theta_T <- (1 - eta) theta_T + eta theta        line 19
            log       metrics.jsonl, playbook snapshot, eval, checkpoint
            early stop: leave the batch when everything succeeded or the reward stopped improving

Departures from the paper's text, each deliberate:
* Eq. 3 is reduced as a mean over distilled tokens, not a per-sample sum averaged over samples
  (as SDPO's and TRL's code do), so long responses do not outweigh short ones.
* Line 19 says "sync teacher weights"; we use the EMA of §3.3 (eta = 1e-4 for RESD, 0.05 for
  SDPO, 0 for ROSD's frozen teacher), applied only after an update actually happened.
* Every inner iteration re-generates before its single optimiser step, so updates are on-policy
  and no importance weight is needed.

GRPO runs in this same loop (same stream, K, lr, batch): group-relative advantages without std
scaling (Dr. GRPO, as the SDPO repository's baseline) and the on-policy policy gradient, token
mean over every sampled token. Each update is on-policy, so the PPO ratio is 1 and a clip range
would change nothing (`resd.distill.losses.policy_gradient_per_token`). With num_iterations=1 its
objective equals TRL GRPOTrainer's with loss_type="dapo", beta=0; we do not drive
`trl.GRPOTrainer` because it owns its data loader and cannot follow a one-pass stream with K
re-generations per batch.

With several processes the rollouts are sharded over ranks and gathered, rank 0 runs the context
engine and every rank takes its answer, and the update is split over ranks (resd.train.ranks).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

from resd.context import ContextStep
from resd.errors import UserError
from resd.eval.metrics import METRIC_KEYS, select_checkpoint
from resd.files import UnreadableFile, read_regular_text, replace_dir_atomic, write_json_atomic
from resd.generation.sampling import encode_prompts
from resd.train.build import (automatic_slots, build_accelerator, build_context_engine, build_environment,
                              build_generator, build_policy, build_run_dir, build_stream, build_update,
                              context_generate, item_settings, seed_everything, start_probe)
from resd.run.checkpoint import find_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from resd.train.config import RESDConfig, config_from_dict, parse_yaml
from resd.train.evaluation import evaluate_at
from resd.train.health import HealthMonitor
from resd.train.precision import run_precision
from resd.train.ranks import Ranks
from resd.run.rundir import RunDir
from resd.rollout import Sample, in_batch_order, score_samples
from resd.policy.update import PhaseTimes, update_items


CONTEXT_TOTALS = ("reflection_requests", "reflections", "reflections_unrelated", "reflection_parse_failures",
                  "curation_requests", "curation_parse_failures", "added", "entries_unrelated", "duplicates")
"""Context-engine counters summed over the run for summary.json: how many reflections parsed, were
kept, or were dropped as unrelated to their attempt; how many entries the curator added or lost."""


def _now() -> float:
    return time.perf_counter()


def derive_seed(*parts: int) -> int:
    """A stable 31-bit seed from integers (run seed, step, rank): rollouts do not depend on how
    much randomness anything else consumed, which keeps resumed runs identical."""
    h = 0x345678
    for p in parts:
        h = (h * 1_000_003 + int(p) + 0x9E3779B9) % (2**61 - 1)
    return h % (2**31 - 1)


def finish_distributed(close: Callable[[], None] | None = None) -> None:
    """Wait for every rank, run `close` (the generation engine's shutdown, which may leave the group
    itself: vLLM's does), then tear the process group down before the interpreter exits: a gloo
    group left alive can abort a rank at exit ("terminate called without an active exception")
    after all the work is done."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    if close is not None:
        close()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@dataclass
class RunState:
    """Where a run is and what it has seen; RUN/checkpoints/latest/state.json holds it."""

    step: int = 0
    """Policy updates done."""
    batch: int = 0
    """Index of the batch the next update works on."""
    iteration: int = 0
    """Inner iteration (0..K-1) of the next update on that batch."""
    rollouts: int = 0
    """Samples generated so far (all ranks)."""
    batch_best_reward: float | None = None
    """Best mean reward seen on the current batch (early stopping)."""
    eval_history: list[dict[str, Any]] = field(default_factory=list)
    data_order: list[str] = field(default_factory=list)
    """Task ids of the stream, to refuse resuming on different data."""
    finished: bool = False
    health: dict[str, Any] = field(default_factory=dict)
    """The health monitor's counters (resd.train.health)."""
    warnings: list[dict[str, Any]] = field(default_factory=list)
    """Every health warning raised so far: {"step", "message"}."""
    context_totals: dict[str, float] = field(default_factory=dict)
    """Sums over the run of the context engine's counters (what summary.json reports)."""


def resumed_env_options(saved: dict[str, Any], sandbox: str | None) -> dict[str, Any]:
    """The environment options a resumed run uses: the saved ones, except that the sandbox comes
    from the user (`sandbox`, else the default mode), never from the run directory, so a run
    directory cannot switch the isolation of model-written code off."""
    options = {key: value for key, value in saved.items() if key != "sandbox"}
    if sandbox is not None:
        options["sandbox"] = sandbox
    elif saved.get("sandbox") not in (None, "bwrap"):
        print(f"resd: the run directory asks for sandbox={saved['sandbox']}; a run directory cannot choose "
              f"the sandbox, so this run uses the default (pass --sandbox {saved['sandbox']} to accept it)",
              file=sys.stderr)
    return options


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
        self._ready = False
        self._resume_rng: dict[str, Any] | None = None

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, *, sandbox: str | None = None, **kwargs: Any) -> "RESDTrainer":
        """The trainer that continues the run saved in `run_dir` (`resd train --resume`).

        A run directory is not trusted input: the sandbox its config names is ignored, and
        model-written code runs under `sandbox` (the user's `--sandbox`), else RESD_SANDBOX, else
        bwrap (`resumed_env_options`)."""
        run = RunDir(run_dir)
        if not run.config.exists():
            raise UserError(f"{str(run_dir)!r} is not a run directory (no config.yaml); pass the RUN dir `resd train` printed")
        if find_checkpoint(run.latest) is None:
            raise UserError(f"{str(run_dir)!r} has no checkpoint yet (checkpoints/latest); start the run again instead")
        try:
            text = read_regular_text(run.config)
        except (OSError, UnreadableFile) as exc:
            raise UserError(f"cannot read {run.config}: {exc}") from None
        cfg = config_from_dict(parse_yaml(text, str(run.config)))
        cfg.output_dir = str(run.root)
        cfg.env_options = resumed_env_options(cfg.env_options, sandbox)
        return cls(cfg, resume_from=run.root, **kwargs)

    # ==========================================================================================
    # set-up (resd.train.build holds the builders)
    # ==========================================================================================

    def setup(self) -> None:
        """Build accelerator, run dir, environment, stream, policy, context engine and update (once)."""
        if self._ready:
            return
        cfg = self.cfg
        self.acc = build_accelerator(cfg, Path(cfg.output_dir) if cfg.output_dir else None)
        self.ranks = Ranks(self.acc)
        self.run = build_run_dir(cfg, self.ranks, resuming=self.resume_from is not None)
        seed_everything(cfg.seed)
        self.env = self._env_in if self._env_in is not None else build_environment(cfg)
        self.stream, self.batches = build_stream(self.env, cfg)
        if self.ranks.main and getattr(self.env, "sandbox", None):
            # Which isolation model-written code ran under is part of the result (unsafe-local shows).
            from resd.envs.sandbox import isolation

            write_json_atomic(self.run.root / "sandbox.json", dataclasses.asdict(isolation(self.env.sandbox)))
        self.policy = build_policy(cfg, self.acc, model=self._model_in, tokenizer=self._tokenizer_in)
        helpful = start_probe(cfg, self.policy, self.env, self.run, self.ranks, self.acc)
        self.generator = build_generator(cfg, self.policy)
        self.context_engine = build_context_engine(cfg, self.tokenizer, context_generate(cfg, self.generator),
                                                   automatic_slots(helpful) if helpful is not None else None)
        self.update = build_update(cfg, self.policy, self.acc, self.ranks)
        self.item_settings = item_settings(cfg)
        self.state = RunState(data_order=[t.id for t in self.stream])
        if self.resume_from is not None:
            self._restore()
        self.health = HealthMonitor.from_state_dict(self.state.health)
        if cfg.report_to:
            flat = {k: v for k, v in cfg.to_dict().items() if isinstance(v, (int, float, str, bool))}
            self.acc.init_trackers(self.run.root.name, config=flat)
        self._ready = True

    @property
    def main(self) -> bool:
        return self.ranks.main

    @property
    def student(self) -> Any:
        return self.policy.student

    @property
    def tokenizer(self) -> Any:
        return self.policy.tokenizer

    def _restore(self) -> None:
        ckpt = find_checkpoint(self.run.latest)
        if ckpt is None:
            raise UserError(f"no checkpoint in {self.run.latest}")
        p = self.policy
        state, context_state, self._resume_rng = load_checkpoint(
            ckpt, model=p.student, teacher=p.teacher, optimizer=p.optimizer, scheduler=p.scheduler,
            rank=self.ranks.rank)
        if state["data_order"] != self.state.data_order:
            raise UserError("the environment's training tasks differ from the checkpoint's data order; "
                            "resume with the same environment version and options")
        if self.context_engine is not None and context_state is not None:
            self.context_engine.load_state_dict(context_state)
        self.generator.sync(self.student)  # the engine was built from the weights before the restore
        self.state = RunState(**state)
        if self.main:
            self.run.truncate_after(self.state.step)
        self.ranks.barrier()

    # ==========================================================================================
    # the loop
    # ==========================================================================================

    def train(self) -> Path:
        self.setup()
        cfg, st = self.cfg, self.state
        if self._resume_rng is not None:
            set_rng_state(self._resume_rng)
        planned = len(self.batches) * cfg.inner_updates
        if cfg.max_steps is not None:
            planned = min(planned, cfg.max_steps)
        self._bar = tqdm(total=planned, initial=min(st.step, planned), desc=f"{cfg.method} train", unit="update",
                         dynamic_ncols=True, disable=not (self.main and cfg.progress))
        started = time.time()
        try:
            if cfg.eval_at_start and not st.eval_history and st.step == 0:
                self._evaluate_and_keep(0)
                self._checkpoint()
            for b in range(st.batch, len(self.batches)):
                for k in range(st.iteration, cfg.inner_updates):
                    if self._out_of_steps():
                        break
                    record = self._iteration(self.batches[b], b, k)
                    leave = k + 1 == cfg.inner_updates or self._no_more_gain(record, k)
                    self._after_update(record, position=(b + 1, 0) if leave else (b, k + 1))
                    if leave:
                        break
                if self._out_of_steps():
                    break
            st.finished = True
        finally:
            self._bar.close()
        if self.main:
            self._finish(time.time() - started)
        self.ranks.barrier()
        if cfg.report_to:
            self.acc.end_training()
        return self.run.root

    def close(self) -> None:
        """Shut the generation engine down: vLLM frees its memory and deletes the copy of the
        weights it was built from (a no-op for the HF engine). Call it once the run is over."""
        generator = getattr(self, "generator", None)
        if generator is not None:
            generator.close()

    def step(self, tasks: list) -> dict[str, Any]:
        """One full iteration on `tasks` outside the stream: rollout, score, context, one policy
        update, EMA. Returns the metrics record (nothing is written)."""
        self.setup()
        record = self._iteration(list(tasks), -1, 0)
        self._count(record)
        return record

    def _out_of_steps(self) -> bool:
        return self.cfg.max_steps is not None and self.state.step >= self.cfg.max_steps

    def _no_more_gain(self, record: dict[str, Any], k: int) -> bool:
        """Early stop (`early_stop`, after `min_updates`): every sample succeeded, or the batch's
        mean reward did not improve on its best so far."""
        cfg, st = self.cfg, self.state
        reward_mean, best = record["reward_mean"], st.batch_best_reward
        st.batch_best_reward = reward_mean if best is None else max(best, reward_mean)
        return cfg.early_stop and k + 1 >= cfg.min_updates and (
            record["success_rate"] == 1.0 or (best is not None and reward_mean <= best))

    def _count(self, record: dict[str, Any]) -> None:
        st = self.state
        st.step += 1
        st.rollouts += record.pop("rollouts_this_step")
        record["step"], record["rollouts"] = st.step, st.rollouts

    def _after_update(self, record: dict[str, Any], *, position: tuple[int, int]) -> None:
        """Count the update, move the stream position, log, evaluate and checkpoint as scheduled."""
        cfg, st = self.cfg, self.state
        self._count(record)
        warnings = self.health.observe(record)
        st.health = self.health.state_dict()
        if warnings:
            record["health/warnings"] = warnings
            st.warnings += [{"step": st.step, "message": line} for line in warnings]
            if self.main:
                for line in warnings:
                    tqdm.write(f"resd: warning: step {st.step}: {line}", file=sys.stderr)
        for key in CONTEXT_TOTALS:
            if isinstance(record.get(f"context/{key}"), (int, float)):
                st.context_totals[key] = st.context_totals.get(key, 0.0) + float(record[f"context/{key}"])
        if position[0] != st.batch:
            st.batch_best_reward = None
        st.batch, st.iteration = position
        if self.main:
            self.run.log_metrics(record)
            context_state = self.context_engine.state_dict() if self.context_engine is not None else None
            if context_state is not None:
                self.run.snapshot_playbook(st.step, context_state)
            self.run.log_context_outputs(st.step, self._context_outputs)
        if cfg.report_to:
            self.acc.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=st.step)
        done = st.batch >= len(self.batches) or self._out_of_steps()
        if (cfg.eval_every and st.step % cfg.eval_every == 0) or done:
            self._evaluate_and_keep(st.step)
        st.finished = done
        if st.step % cfg.checkpoint_every == 0 or done:
            self._checkpoint()
        self._bar.update(1)
        self._bar.set_postfix(loss=f"{record['loss']:.4f}", reward=f"{record['reward_mean']:.2f}",
                              playbook=record.get("playbook_size", 0), refresh=False)

    # ==========================================================================================
    # one inner iteration
    # ==========================================================================================

    def _iteration(self, tasks: list, batch_index: int, iteration: int) -> dict[str, Any]:
        t_step = _now()
        times = dict.fromkeys(("rollout", "scoring", "reflection", "curation", "teacher_forward", "student_step",
                               "weight_sync"), 0.0)

        samples = self._rollout_and_score(tasks, times)
        context = self._context_step(samples, times)
        record: dict[str, Any] = {
            "batch": batch_index, "iteration": iteration, "rollouts_this_step": len(samples),
            "reward_mean": float(np.mean([s.outcome.reward for s in samples])),
            "acc_mean": float(np.mean([s.outcome.acc for s in samples])),
            "success_rate": float(np.mean([s.succeeded for s in samples])),
            "truncated_fraction": float(np.mean([s.truncated for s in samples])),
            "completion_tokens_mean": float(np.mean([len(s.completion_ids) for s in samples])),
            "judge_errors": sum("judge_error" in s.outcome.details for s in samples),
            "lr": float(self.policy.scheduler.get_last_lr()[0]),
        }

        # Teacher prompts, teacher forward, loss, one optimiser step (Alg. 1 lines 16-18).
        self.generator.sleep()  # vLLM on a GPU frees its KV cache while the trainer needs the memory
        self.update.times = PhaseTimes()
        batch = update_items(samples, context.contexts if context is not None else None, self.item_settings,
                             self.tokenizer)
        result = self.update.apply(batch.items, batch.response_tokens)
        record.update(batch.stats)
        times["teacher_forward"] = self.update.times.teacher_forward
        times["student_step"] = self.update.times.student_step
        record.update(result.metrics())
        context_stats = context.stats if context is not None else {}
        record["playbook_size"] = int(context_stats.get("context/playbook_size", 0))
        record.update(context_stats)

        # The EMA teacher follows the student (Alg. 1 line 19); the generation engine gets the new weights.
        if self.policy.teacher is not None and result.updated:
            self.policy.teacher.update(self.student)
        if result.updated:
            times["weight_sync"] = self.generator.sync(self.student)
        for k, v in times.items():
            record[f"time/{k}"] = v
        record["time/step"] = _now() - t_step
        return record

    def _rollout_and_score(self, tasks: list, times: dict[str, float]) -> list[Sample]:
        """This rank's share of the prompts, N samples each, scored; then every rank's samples,
        ordered by prompt (the N samples of a prompt consecutive) and numbered."""
        cfg = self.cfg
        t0 = _now()
        mine = self.ranks.share(list(range(len(tasks))))
        self._check_prompt_lengths([tasks[i] for i in mine])
        rollouts = self.generator.sample([tasks[i].prompt for i in mine], n=cfg.num_generations,
                                         max_new_tokens=cfg.max_completion_length, temperature=cfg.temperature,
                                         top_p=cfg.top_p, seed=derive_seed(cfg.seed, self.state.step, self.ranks.rank))
        times["rollout"] = _now() - t0

        t0 = _now()
        local = score_samples(self.env, [tasks[i] for i in mine], rollouts, cfg.success_reward_threshold, groups=mine)
        times["scoring"] = _now() - t0
        return in_batch_order(self.ranks.gather(local))

    def _context_step(self, samples: list[Sample], times: dict[str, float]) -> ContextStep | None:
        """The context engine's step on rank 0 (before the policy update, Alg. 1 lines 5-15); every
        rank takes its contexts and, for engines with memory, its state."""
        self._context_outputs: list[dict[str, Any]] = []
        if self.context_engine is None:
            return None
        shared_state = self.ranks.world > 1  # other ranks mirror the playbook and buffer
        payload = None
        if self.main:
            result = self.context_engine.step(self.state.step, samples)
            payload = (result, self.context_engine.state_dict() if shared_state else None)
        result, state = self.ranks.from_main(payload)
        if state is not None:
            if not self.main:
                self.context_engine.load_state_dict(state)
            digests = self.ranks.gather([hashlib.sha256(json.dumps(self.context_engine.state_dict(), sort_keys=True)
                                                        .encode()).hexdigest()])
            result.stats["context/ranks_identical"] = float(len(set(digests)) == 1)
        times["curation"] = result.stats.pop("time/curation", 0.0)
        times["reflection"] = result.stats.pop("time/reflection", 0.0)
        self._context_outputs = result.outputs
        return result

    def _check_prompt_lengths(self, tasks: list) -> None:
        for task, ids in zip(tasks, encode_prompts(self.tokenizer, [t.prompt for t in tasks])):
            if len(ids) > self.cfg.max_prompt_length:
                raise UserError(f"task {task.id!r} has a {len(ids)}-token prompt, over max_prompt_length="
                                f"{self.cfg.max_prompt_length}; raise max_prompt_length")

    # ==========================================================================================
    # evaluation, selection, checkpoints
    # ==========================================================================================

    def _evaluate_and_keep(self, step: int) -> None:
        """Evaluate on the test split (main process), log it, and keep the weights for selection."""
        cfg, st = self.cfg, self.state
        if not cfg.evaluates or any(int(e["step"]) == step for e in st.eval_history):
            return
        if self.main:
            result = evaluate_at(cfg, step, self.student, self.tokenizer, self.env, self.generator)
            row = {"step": step, "rollouts": st.rollouts, **{k: float(result[k]) for k in METRIC_KEYS},
                   "k": int(result.get("k", cfg.eval_k)), "n_tasks": int(result.get("n_tasks", 0))}
            self.run.log_eval(row)
            self._save_weights(self.run.eval_weights(step))
            if cfg.report_to:
                self.acc.log({f"eval/{k}": row[k] for k in METRIC_KEYS}, step=step)
            st.eval_history.append(row)
            self.policy.model.train()
        st.eval_history = self.ranks.from_main(st.eval_history)
        self.ranks.barrier()

    def _save_weights(self, directory: Path) -> None:
        """A loadable Hugging Face (or PEFT adapter) directory, written atomically."""
        with replace_dir_atomic(directory) as tmp:
            self.policy.local.save_pretrained(str(tmp))  # the unsharded copy under FSDP2
            self.tokenizer.save_pretrained(str(tmp))

    def _checkpoint(self) -> None:
        p = self.policy
        rngs = self.ranks.gather([rng_state()])
        # Every rank takes part (a sharded model's tensors are gathered); the main process writes.
        save_checkpoint(self.run.latest, model=p.student, teacher=p.teacher, optimizer=p.optimizer,
                        scheduler=p.scheduler,
                        context_state=(self.context_engine.state_dict()
                                       if self.context_engine is not None and self.main else None),
                        state=dataclasses.asdict(self.state), rng_states=rngs, main=self.main)
        self.ranks.barrier()

    def _finish(self, wall_time: float) -> None:
        """summary.json, and the rank-sum selected checkpoint (paper §4.1) in checkpoints/selected."""
        history = self.state.eval_history
        summary: dict[str, Any] = {"method": self.cfg.method, "env": self.cfg.env, "seed": self.cfg.seed,
                                   "model": self.cfg.model, "strategy": self.cfg.strategy,
                                   "precision": run_precision(self.cfg).name, "steps": self.state.step,
                                   "rollouts": self.state.rollouts, "run_dir": str(self.run.root),
                                   "selected_step": None, "selected": None, "final": None}
        if history:
            index = select_checkpoint([{k: e[k] for k in METRIC_KEYS} for e in history])
            chosen = history[index]
            summary.update(selected_step=int(chosen["step"]), selected=chosen, final=history[-1])
            source = self.run.eval_weights(int(chosen["step"]))
            if source.exists():
                with replace_dir_atomic(self.run.selected) as tmp:
                    shutil.copytree(source, tmp, dirs_exist_ok=True)
            if not self.cfg.keep_eval_checkpoints:
                shutil.rmtree(self.run.checkpoints / "eval", ignore_errors=True)
        summary["health_warnings"] = self.state.warnings
        if self.state.context_totals:
            summary["context_quality"] = dict(self.state.context_totals)
        summary["wall_time_s"] = wall_time
        self.run.write_summary(summary)
