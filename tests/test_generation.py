"""Batched sampling: order, padding, EOS handling, seeds and the context engine's generate callable."""

from __future__ import annotations

import pytest
import torch

from resd.generation.engines import HFEngine, generate_fn
from resd.generation.sampling import Rollout, encode_prompts, sample
from resd.models import chain_model, tiny_model


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(seed=0)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_greedy_output_is_exact_with_mixed_lengths_eos_and_truncation():
    model, tokenizer = chain_model()
    eos = tokenizer.eos_token_id
    # Prompts of different lengths and different distances to EOS share one batch, so left
    # padding and the post-EOS padding of early finishers are both exercised.
    rows = sample(model, tokenizer, [user("xa"), user("f"), user("zzzzzzc"), user("h")],
                  max_new_tokens=20, temperature=0, batch_size=4)
    assert [r[0].text for r in rows] == ["bcdefgh", "gh", "defgh", ""]
    assert all(not r[0].truncated for r in rows)
    assert all(r[0].completion_ids[-1] == eos and r[0].completion_ids.count(eos) == 1 for r in rows)
    assert rows[3][0].completion_ids == [eos]
    assert rows[0][0].prompt_ids == tokenizer("xa", add_special_tokens=False)["input_ids"]

    short = sample(model, tokenizer, [user("a")], max_new_tokens=3, temperature=0)
    assert short[0][0].text == "bcd" and short[0][0].truncated and eos not in short[0][0].completion_ids


def test_batch_size_does_not_change_greedy_results():
    model, tokenizer = chain_model()
    prompts = [user(p) for p in ["a", "qqqqqqqqqqqqd", "ff", "b", "xyzc", "e"]]
    one = sample(model, tokenizer, prompts, max_new_tokens=10, temperature=0, batch_size=1)
    many = sample(model, tokenizer, prompts, max_new_tokens=10, temperature=0, batch_size=4)
    assert [r[0].completion_ids for r in one] == [r[0].completion_ids for r in many]


def test_left_padding_keeps_positions_right():
    # The random tiny model attends and uses rotary positions, so wrong padding or position ids
    # would change its greedy output when a short prompt is batched with a long one.
    model, tokenizer = tiny_model(seed=0)
    with torch.no_grad():  # sharpen the random weights: at init scale every prompt gets the same answer
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.mul_(5)
    prompts = [user("hi"), user("a considerably longer prompt that forces padding on the short one"), user("mid size")]
    alone = [sample(model, tokenizer, [p], max_new_tokens=12, temperature=0)[0][0].completion_ids for p in prompts]
    assert len({tuple(ids) for ids in alone}) == 3  # the prompt matters, so padding mistakes would show
    batched = sample(model, tokenizer, prompts, max_new_tokens=12, temperature=0, batch_size=3)
    assert [row[0].completion_ids for row in batched] == alone


def test_result_shape_and_order_with_n_samples(tiny):
    model, tokenizer = tiny
    prompts = [user("one"), user("a much longer prompt than the others, to move it in the sort"), "plain string"]
    rows = sample(model, tokenizer, prompts, n=3, max_new_tokens=5, batch_size=4, seed=0)
    assert len(rows) == 3 and all(len(row) == 3 for row in rows)
    expected_ids = encode_prompts(tokenizer, prompts)
    for row, ids in zip(rows, expected_ids):
        for rollout in row:
            assert isinstance(rollout, Rollout)
            assert rollout.prompt_ids == ids  # results come back in the caller's order
            assert 1 <= len(rollout.completion_ids) <= 5
            assert rollout.truncated == (tokenizer.eos_token_id not in rollout.completion_ids)
            assert rollout.text == tokenizer.decode(rollout.completion_ids, skip_special_tokens=True)


def test_prompts_are_chat_templated_without_extra_special_tokens(tiny):
    _, tokenizer = tiny
    ids = encode_prompts(tokenizer, [user("hi")])[0]
    assert tokenizer.decode(ids) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_seed_reproduces_and_does_not_touch_the_global_rng(tiny):
    model, tokenizer = tiny
    prompts = [user("hello"), user("world")]
    torch.manual_seed(7)
    expected_next = torch.rand(1)
    torch.manual_seed(7)
    a = sample(model, tokenizer, prompts, n=2, max_new_tokens=8, seed=11)
    assert torch.equal(torch.rand(1), expected_next)
    b = sample(model, tokenizer, prompts, n=2, max_new_tokens=8, seed=11)
    c = sample(model, tokenizer, prompts, n=2, max_new_tokens=8, seed=12)
    ids = lambda rows: [[r.completion_ids for r in row] for row in rows]  # noqa: E731
    assert ids(a) == ids(b)
    assert ids(a) != ids(c)


def test_unseeded_calls_advance_the_rng(tiny):
    model, tokenizer = tiny
    torch.manual_seed(0)
    first = sample(model, tokenizer, [user("x")], n=4, max_new_tokens=8)
    second = sample(model, tokenizer, [user("x")], n=4, max_new_tokens=8)
    assert [r.completion_ids for r in first[0]] != [r.completion_ids for r in second[0]]


def test_greedy_needs_no_seed_and_repeats(tiny):
    model, tokenizer = tiny
    a = sample(model, tokenizer, [user("x")], n=2, max_new_tokens=8, temperature=0)
    b = sample(model, tokenizer, [user("x")], n=2, max_new_tokens=8, temperature=0)
    assert a[0][0].completion_ids == a[0][1].completion_ids == b[0][0].completion_ids


def test_training_mode_is_restored(tiny):
    model, tokenizer = tiny
    model.train()
    try:
        sample(model, tokenizer, [user("x")], max_new_tokens=2)
        assert model.training
    finally:
        model.eval()


def test_progress_bar_uses_the_label(tiny, capsys):
    model, tokenizer = tiny
    sample(model, tokenizer, [user("x"), user("y")], max_new_tokens=2, progress="rollouts")
    assert "rollouts" in capsys.readouterr().err


def test_bad_arguments(tiny):
    model, tokenizer = tiny
    assert sample(model, tokenizer, []) == []
    with pytest.raises(ValueError, match="n must be"):
        sample(model, tokenizer, [user("x")], n=0)
    with pytest.raises(ValueError, match="batch_size"):
        sample(model, tokenizer, [user("x")], batch_size=0)
    with pytest.raises(ValueError, match="top_p"):
        sample(model, tokenizer, [user("x")], top_p=0)
    with pytest.raises(ValueError, match="prompt must be"):
        sample(model, tokenizer, [[{"text": "no role"}]])


def test_generate_fn_accepts_strings_and_messages():
    model, tokenizer = chain_model()
    generate = generate_fn(HFEngine(model, tokenizer, batch_size=2))
    assert generate(["e", user("zb"), "?"], 10, 0.0) == ["fgh", "cdefgh", ""]
    assert generate(["a"], 2, 0.0) == ["bc"]


def test_stop_when_ends_only_the_matching_row_and_keeps_its_prefix(tiny):
    model, tokenizer = tiny
    prompts = [user("first prompt"), user("a different second prompt")]
    kw = dict(max_new_tokens=32, temperature=1.0, top_p=1.0, batch_size=2, seed=3)
    full = sample(model, tokenizer, prompts, **kw)
    assert all(len(r[0].completion_ids) == 32 for r in full)  # the random model never stops by itself
    assert full[0][0].completion_ids[:8] != full[1][0].completion_ids[:8]
    stop_text = tokenizer.decode(full[0][0].completion_ids[:8], skip_special_tokens=True)
    seen: list[str] = []

    def looping(text: str) -> bool:
        seen.append(text)
        return text == stop_text

    cut = sample(model, tokenizer, prompts, **kw, stop_when=looping)
    assert cut[0][0].completion_ids == full[0][0].completion_ids[:8] and cut[0][0].truncated
    assert cut[1][0].completion_ids == full[1][0].completion_ids  # the other row ran to the end
    assert seen and not any("prompt" in t for t in seen)  # the predicate sees the answer, not the prompt
    greedy = sample(model, tokenizer, prompts[:1], max_new_tokens=32, temperature=0)[0][0]
    greedy_8 = tokenizer.decode(greedy.completion_ids[:8], skip_special_tokens=True)
    generate = generate_fn(HFEngine(model, tokenizer), stop_when=lambda text: text == greedy_8)
    assert generate(prompts[:1], 32, 0.0) == [greedy_8]


# ---- TemperedNucleus: transformers' temperature + top-p, without sorting the vocabulary ----

def _hf_tempered_nucleus(scores, temperature, top_p):
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    if temperature != 1.0:
        scores = TemperatureLogitsWarper(temperature)(None, scores)
    return TopPLogitsWarper(top_p)(None, scores) if top_p < 1.0 else scores


@pytest.mark.parametrize("temperature,top_p", [(1.0, 0.95), (0.7, 0.9), (1.3, 0.5), (1.0, 1.0), (2.0, 0.999)])
def test_tempered_nucleus_matches_transformers_warpers(temperature, top_p):
    from resd.generation.sampling import TemperedNucleus

    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 3000, generator=gen) * torch.tensor([[0.05], [0.5], [1.0], [3.0], [8.0], [20.0]])
    scores[2, :100] = float("-inf")  # tokens already banned by another processor stay banned
    ours = TemperedNucleus(temperature, top_p, width=32)(None, scores.clone())
    theirs = _hf_tempered_nucleus(scores.clone(), temperature, top_p)
    assert torch.equal(torch.isfinite(ours), torch.isfinite(theirs))
    assert torch.allclose(ours[torch.isfinite(ours)], theirs[torch.isfinite(theirs)])
    # rows range from nearly flat (nucleus of thousands: the width had to grow) to peaked (1 token)
    kept = torch.isfinite(ours).sum(dim=-1)
    if top_p < 1.0:
        assert kept[0] > 32 and kept[-1] < kept[0] / 10


def test_tempered_nucleus_keeps_at_least_the_top_token_and_works_in_bf16():
    from resd.generation.sampling import TemperedNucleus

    scores = torch.tensor([[10.0, 0.0, -1.0, -2.0], [0.0, 0.0, 0.0, 0.0]]).to(torch.bfloat16)
    out = TemperedNucleus(1.0, 0.01, width=2)(None, scores)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out).sum(dim=-1).tolist() == [1, 1]
    assert out[0, 0] == 10.0
    with pytest.raises(ValueError, match="top_p"):
        TemperedNucleus(1.0, 0.0)


def test_sampling_draws_from_the_nucleus_only(tiny):
    """With top_p tiny, sampling must equal greedy decoding: only the argmax survives the filter."""
    model, tok = tiny
    prompts = ["abc", "hello there"]
    greedy = sample(model, tok, prompts, max_new_tokens=6, temperature=0.0)
    nucleus = sample(model, tok, prompts, max_new_tokens=6, temperature=1.0, top_p=1e-6, seed=3)
    assert [r[0].completion_ids for r in nucleus] == [r[0].completion_ids for r in greedy]


# ---- shared prefix: the tokens every prompt of a batch starts with are prefilled once ----

def test_shared_prefix_length():
    from resd.generation.sampling import MIN_SHARED_PREFIX, shared_prefix_length

    base = list(range(100, 100 + MIN_SHARED_PREFIX + 5))
    assert shared_prefix_length([base + [1, 2], base + [3]]) == len(base)
    assert shared_prefix_length([base, base]) == len(base) - 1  # each row keeps one token of its own
    assert shared_prefix_length([base + [1]]) == 0  # one row: nothing to share
    assert shared_prefix_length([[1] + base, [2] + base]) == 0
    assert shared_prefix_length([base[: MIN_SHARED_PREFIX - 1] + [7, 8], base[: MIN_SHARED_PREFIX - 1] + [9]]) == 0


@pytest.mark.parametrize("n", [1, 3])
def test_shared_prompt_work_gives_the_same_samples_and_is_done_once(tiny, n):
    """n=1: distinct prompts with a common system message, prefilled once; n=3: each prompt's three
    samples share one prefill of that prompt. Either way the samples must not change."""
    model, tok = tiny
    system = {"role": "system", "content": "Follow the rules below with care. " * 6}
    prompts = [[system, *user(f"item {i}" + " more" * i)] for i in range(5)]
    seen: list[int] = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["input_ids"].numel()) if kwargs.get("input_ids") is not None
        else None, with_kwargs=True)
    try:
        for temperature in (0.0, 1.0):
            runs = {}
            for shared in (False, True):
                seen.clear()
                out = sample(model, tok, prompts, n=n, max_new_tokens=8, temperature=temperature, seed=5,
                             batch_size=15, shared_prefix=shared)
                # prompt tokens run through the model before the first new token is sampled: one
                # forward without sharing, the shared prefill plus the rest with it
                runs[shared] = ([[r.completion_ids for r in row] for row in out], seen[0] + seen[1] if shared else seen[0])
            assert runs[True][0] == runs[False][0]
            assert runs[True][1] < 0.6 * runs[False][1]
    finally:
        hook.remove()
