"""Batched sampling from a chat model: the hot path shared by evaluation, training rollouts and the
context engine's reflect/curate calls.

Prompts are chat-templated, sorted by length (so a batch wastes little compute on padding),
left-padded, generated in batches with `model.generate`, then put back in the caller's order.
Prompt tokens that rows of a batch share are prefilled once and their KV cache copied to the
rows (`_prepare_batch`): the whole prompt for the n samples of one prompt, else a common prefix such
as the reflector's fixed instructions. It changes no sample; it is what vLLM's prefix caching does.
Sampling is plain temperature + nucleus (top-p) sampling as in the paper (§4.1: T=1.0, top-p 0.95),
done by one logits processor (`TemperedNucleus`: the same nucleus as transformers' warper, found
without sorting the vocabulary); transformers' own top-k=50 default is switched off.
"""

from __future__ import annotations

import bisect
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

Message = dict[str, str]
PromptLike = Union[str, Sequence[Message]]
GenerateFn = Callable[[list[PromptLike], int, float], list[str]]
"""generate(prompts, max_new_tokens, temperature) -> one completion per prompt (temperature 0 =
greedy): how the context engines call a model. `resd.generation.engines.generate_fn(engine)` builds one."""


@dataclass
class Rollout:
    """One sampled completion.

    text:           the completion decoded without special tokens.
    prompt_ids:     the chat-templated prompt's token ids (no padding).
    completion_ids: the generated token ids, no padding; ends with the EOS token when the model
                    produced one (a trainer needs it to learn to stop).
    truncated:      True when generation hit max_new_tokens without producing EOS.
    """

    text: str
    prompt_ids: list[int]
    completion_ids: list[int]
    truncated: bool


def render_prompt(tokenizer: Any, prompt: PromptLike) -> str:
    """The chat-templated text of one prompt, ending where the assistant's answer starts.

    A plain string is sent as a single user message.
    """
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        raise ValueError(f"a prompt must be a string or a non-empty list of {{'role', 'content'}} dicts, got {prompt!r}")
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode_prompts(tokenizer: Any, prompts: Sequence[PromptLike]) -> list[list[int]]:
    """Token ids of each chat-templated prompt.

    The template already writes any BOS/special tokens it wants, so the tokenizer must not add
    its own on top.
    """
    texts = [render_prompt(tokenizer, p) for p in prompts]
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token id that ends a completion (the tokenizer's EOS plus the model's configured ones)."""
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, configured):
        if value is None:
            continue
        for token in value if isinstance(value, (list, tuple)) else [value]:
            if int(token) not in ids:
                ids.append(int(token))
    if not ids:
        raise ValueError("neither the tokenizer nor the model defines an EOS token; generation could not stop")
    return ids


def _generation_config(
    *, max_new_tokens: int, temperature: float, top_p: float, eos_ids: list[int], pad_id: int
) -> Any:
    from transformers import GenerationConfig

    common: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens, eos_token_id=eos_ids, pad_token_id=pad_id, use_cache=True
    )
    if temperature <= 0:
        return GenerationConfig(do_sample=False, **common)
    # Temperature and top-p are applied by TemperedNucleus (passed as a logits processor), so that
    # transformers adds no warper of its own (top_k=0 also stops its default top-k of 50).
    return GenerationConfig(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, **common)


class TemperedNucleus:
    """Temperature, then nucleus (top-p) filtering, as one logits processor (paper §4.1: T=1.0,
    top-p 0.95).

    The nucleus is transformers' `TopPLogitsWarper`'s: a token is kept when the probability of the
    tokens ranked above it is below `top_p` (the smallest set whose mass reaches top_p; never empty).
    It is found with a partial `topk` of `width` tokens instead of a sort of the whole vocabulary:
    on a CPU, sorting SmolLM2's 49k logits for 16 rows took 42 ms of a ~200 ms decoding step, the
    top-256 2.5 ms. When some row's nucleus is wider than `width` (a flat distribution), the width
    doubles until it fits, up to the full vocabulary, so the result never depends on `width`.
    """

    def __init__(self, temperature: float, top_p: float, width: int = 256) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 for sampling, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.temperature, self.top_p, self.width = float(temperature), float(top_p), int(width)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self.temperature != 1.0:
            scores = scores / self.temperature
        if self.top_p >= 1.0:
            return scores
        vocab = scores.shape[-1]
        probs = scores.float().softmax(dim=-1)
        width = min(self.width, vocab)
        while True:
            top, index = probs.topk(width, dim=-1)  # sorted, most likely first
            if width == vocab or bool((top.sum(dim=-1) >= self.top_p).all()):
                break  # every row's nucleus lies inside the first `width` tokens
            width = min(2 * width, vocab)
        mass_above = top.cumsum(dim=-1) - top
        keep = mass_above < self.top_p
        keep[:, 0] = True
        kept = torch.where(keep, scores.gather(-1, index), torch.full_like(top, float("-inf"), dtype=scores.dtype))
        return torch.full_like(scores, float("-inf")).scatter_(-1, index, kept)


def _cut_at_eos(tokens: list[int], eos: set[int]) -> tuple[list[int], bool]:
    """Generated tokens up to and including the first EOS, and whether there was none.

    Everything after the first EOS is the padding `generate` adds to finished rows.
    """
    for i, token in enumerate(tokens):
        if token in eos:
            return tokens[: i + 1], False
    return tokens, True


def sample(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[PromptLike],
    *,
    n: int = 1,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float = 0.95,
    batch_size: int = 8,
    seed: int | None = None,
    progress: str | None = None,
    stop_when: Callable[[str], bool] | None = None,
    shared_prefix: bool = True,
) -> list[list[Rollout]]:
    """Sample `n` completions for each prompt; result[i][j] is sample j of prompt i.

    temperature 0 means greedy decoding (top_p is then ignored). With `seed`, the same inputs and
    batch size give the same outputs, and the caller's global torch RNG is left untouched.
    `progress` is a label for a tqdm bar (None = no bar).
    `stop_when(text_so_far)`: ends a row early once it returns True (checked every few tokens),
    e.g. a reflector answer that is already looping; such a row is marked truncated. Never use it
    for policy rollouts: cutting samples would change the distribution being trained on.
    `shared_prefix`: prompt tokens that rows of a batch share (the same prompt n times; otherwise
    a common system message and instructions) are run through the model once and their KV cache
    copied to the rows, instead of once per row; the samples are the same either way.
    """
    import torch

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature > 0 and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if not prompts:
        return []

    from transformers import LogitsProcessorList

    prompt_ids = encode_prompts(tokenizer, prompts)
    # One job per (prompt, sample). Stable sort by prompt length so the n copies of a prompt, and
    # prompts of similar length, share batches.
    jobs = [(i, j) for i in range(len(prompts)) for j in range(n)]
    jobs.sort(key=lambda job: len(prompt_ids[job[0]]), reverse=True)

    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    config = _generation_config(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, eos_ids=eos_ids, pad_id=pad_id
    )
    device = next(model.parameters()).device
    results: list[list[Rollout | None]] = [[None] * n for _ in prompts]

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=progress, unit="sample", dynamic_ncols=True)

    was_training = model.training
    model.eval()
    generated_tokens, started = 0, time.perf_counter()
    eos_set = set(eos_ids)
    try:
        # A seeded call runs under a forked RNG: reproducible, and the caller's stream is untouched.
        # An unseeded call must advance the global stream, or two calls would sample the same.
        rng = torch.random.fork_rng(devices=_rng_devices(device)) if seed is not None else nullcontext()
        with rng, torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            for start in range(0, len(jobs), batch_size):
                batch = jobs[start : start + batch_size]
                rows = [prompt_ids[i] for i, _ in batch]
                input_ids, attention_mask, prefix_cache = _prepare_batch(model, rows, pad_id, device, shared_prefix)
                criteria: list[Any] = [_StepTicker(bar, max_new_tokens)] if bar is not None else []
                text_stop = None
                if stop_when is not None:
                    text_stop = _TextStop(tokenizer, stop_when, input_ids.shape[1], eos_set)
                    criteria.append(text_stop)
                extra: dict[str, Any] = {"stopping_criteria": criteria} if criteria else {}
                if temperature > 0:
                    extra["logits_processor"] = LogitsProcessorList([TemperedNucleus(temperature, top_p)])
                if prefix_cache is not None:
                    extra["past_key_values"] = prefix_cache
                output = model.generate(
                    input_ids=input_ids, attention_mask=attention_mask, generation_config=config, **extra
                )
                new_tokens = output[:, input_ids.shape[1] :].tolist()
                for row, ((i, j), tokens) in enumerate(zip(batch, new_tokens)):
                    if text_stop is not None and row in text_stop.stopped_at:
                        tokens = tokens[: text_stop.stopped_at[row]]  # drop the padding after the stop
                    completion, truncated = _cut_at_eos(tokens, eos_set)
                    generated_tokens += len(completion)
                    results[i][j] = Rollout(
                        text=tokenizer.decode(completion, skip_special_tokens=True),
                        prompt_ids=list(prompt_ids[i]),
                        completion_ids=completion,
                        truncated=truncated,
                    )
                if bar is not None:
                    bar.update(len(batch))
                    elapsed = max(time.perf_counter() - started, 1e-9)
                    bar.set_postfix(tok_per_s=f"{generated_tokens / elapsed:.0f}", refresh=False)
    finally:
        if bar is not None:
            bar.close()
        if was_training:
            model.train()
    return [[r for r in row if r is not None] for row in results]


class _StepTicker:
    """A stopping criterion that never stops: it shows the decoding step of the current batch on
    the progress bar, so a slow batch (long prompts on a CPU) is visibly alive."""

    def __init__(self, bar: Any, max_new_tokens: int):
        self.bar, self.max_new_tokens, self.step, self.shown = bar, max_new_tokens, 0, 0.0

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        self.step += 1
        now = time.perf_counter()
        if now - self.shown >= 1.0:
            self.shown = now
            self.bar.set_postfix(batch_step=f"{self.step}/{self.max_new_tokens}", refresh=True)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


STOP_CHECK_EVERY = 8
"""Generated tokens between two checks of a `stop_when` criterion (decoding the text is cheap next
to a forward pass, but not free). The vLLM engine cuts its answers at the same checkpoints."""


class _TextStop:
    """Per-row stopping criterion from a predicate on the decoded text generated so far.

    Checked every `every` steps (decoding is cheap next to a forward pass, but not free); records
    how many tokens each stopped row had, so the caller can drop the padding `generate` appends."""

    def __init__(self, tokenizer: Any, predicate: Callable[[str], bool], prompt_width: int, eos: set[int],
                 every: int = STOP_CHECK_EVERY):
        self.tokenizer, self.predicate, self.prompt_width, self.eos, self.every = (
            tokenizer, predicate, prompt_width, eos, every)
        self.step = 0
        self.stopped_at: dict[int, int] = {}

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        self.step += 1
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for row in self.stopped_at:
            done[row] = True
        if self.step % self.every:
            return done
        generated = input_ids[:, self.prompt_width :].tolist()
        for row, tokens in enumerate(generated):
            if row in self.stopped_at or any(t in self.eos for t in tokens):
                continue
            if self.predicate(self.tokenizer.decode(tokens, skip_special_tokens=True)):
                self.stopped_at[row] = len(tokens)
                done[row] = True
        return done


# Below this many shared tokens the extra forward call costs more than the rows it saves.
MIN_SHARED_PREFIX = 16


def shared_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all rows share, leaving every row at least one token of its own
    (generate needs one uncached token to start from); 0 when not worth sharing."""
    if len(rows) < 2:
        return 0
    shortest = min(len(r) for r in rows)
    length = 0
    while length < shortest - 1 and all(r[length] == rows[0][length] for r in rows):
        length += 1
    return length if length >= MIN_SHARED_PREFIX else 0


def _prepare_batch(model: Any, rows: list[list[int]], pad_id: int, device: Any, share: bool) -> tuple[Any, Any, Any]:
    """input_ids, attention_mask and a pre-filled KV cache (or None) for one generate call.

    Work the rows have in common is done once: when the batch holds the same prompt several times
    (n samples per prompt: GRPO groups, SDPO groups, k samples in evaluation) each distinct prompt
    is prefilled once and its cache copied to its samples; otherwise, when all prompts start with
    the same tokens (a shared system message and instructions), that prefix is prefilled once.
    vLLM's prefix caching does the same on a GPU, so baselines with groups are not charged for
    prefilling one prompt eight times."""
    if share:
        distinct = [k for k, row in enumerate(rows) if k == 0 or row != rows[k - 1]]
        if len(distinct) < len(rows) and max(len(r) for r in rows) > 1:  # a 1-token prompt has nothing to cache
            cache = _prefill_distinct(model, rows, distinct, pad_id, device)
            if cache is not None:
                return (*_left_pad(rows, pad_id, device), cache)
        shared = shared_prefix_length(rows)
        cache = _prefill_shared(model, rows[0][:shared], len(rows), device) if shared else None
        if cache is not None:
            return (*_left_pad(rows, pad_id, device, shared), cache)
    return (*_left_pad(rows, pad_id, device), None)


def _prefill_distinct(model: Any, rows: list[list[int]], distinct: list[int], pad_id: int, device: Any) -> Any:
    """The KV cache of every row's prompt but its last token (generate feeds that one), computed
    once per run of identical rows (`distinct`: where each run starts) in the left-padded layout
    the full batch will have; None when the model's cache cannot be re-indexed."""
    import torch

    ids, mask = _left_pad([rows[k] for k in distinct], pad_id, device)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as generate derives them
    out = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1], use_cache=True)
    cache = getattr(out, "past_key_values", None)
    if cache is None or not hasattr(cache, "batch_select_indices"):
        return None
    run_of_row = [bisect.bisect_right(distinct, k) - 1 for k in range(len(rows))]
    cache.batch_select_indices(torch.tensor(run_of_row, device=device))
    return cache


def _prefill_shared(model: Any, prefix: list[int], rows: int, device: Any) -> Any:
    """The KV cache of `prefix`, computed once and repeated for `rows` rows; None when the model's
    cache cannot be repeated (then the batch is prefilled row by row as usual)."""
    import torch

    out = model(input_ids=torch.tensor([prefix], dtype=torch.long, device=device), use_cache=True)
    cache = getattr(out, "past_key_values", None)
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return None
    cache.batch_repeat_interleave(rows)
    return cache


def _rng_devices(device: Any) -> list[Any]:
    # fork_rng saves/restores the CPU generator always; list the accelerator only when used.
    return [device] if getattr(device, "type", "cpu") == "cuda" else []


def _left_pad(rows: list[list[int]], pad_id: int, device: Any, shared: int = 0) -> tuple[Any, Any]:
    """input_ids and attention_mask with each row's tokens right-aligned and padding masked out.

    With `shared` > 0 the rows are laid out as [shared prefix, padding, own tokens]: the prefix sits
    at the same columns in every row (so one cached copy fits all), and position ids (generate
    derives them from the mask) run on from the prefix into each row's own tokens."""
    import torch

    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, row in enumerate(rows):
        input_ids[k, :shared] = torch.tensor(row[:shared], dtype=torch.long)
        attention_mask[k, :shared] = 1
        own = row[shared:]
        if own:
            input_ids[k, width - len(own):] = torch.tensor(own, dtype=torch.long)
            attention_mask[k, width - len(own):] = 1
    return input_ids.to(device), attention_mask.to(device)
