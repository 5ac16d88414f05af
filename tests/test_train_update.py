"""One policy update through the public seam (`resd.policy.update.PolicyUpdate.apply`), checked
against the paper's formulas: Eq. 3 with success-rate weights (App. B), ROSD's first-error mask,
and GRPO's on-policy surrogate."""

from __future__ import annotations

import pytest
import torch

from resd.distill import divergence_per_token, error_suffix_mask, success_rate_weights
from resd.models import tiny_model
from resd.train import load_config
from resd.train.build import build_accelerator, build_policy, build_update
from resd.policy.packing import pack, response_logits
from resd.train.ranks import Ranks
from resd.policy.update import UpdateItem

PROMPT = "<|im_start|>user\nWrite a word with a ({i}).<|im_end|>\n<|im_start|>assistant\n"
TEACHER = "<|im_start|>user\nWrite a word with a ({i}). Hint: use the letter a.<|im_end|>\n<|im_start|>assistant\n"


def _update(tmp_path, method, **values):
    cfg = load_config(method=method, env="letters", model="tiny-random", learning_rate=1e-3, warmup_steps=0,
                      micro_batch_size=2, progress=False, output_dir=str(tmp_path), **values)
    model, tokenizer = tiny_model(seed=11)
    accelerator = build_accelerator(cfg, None)
    policy = build_policy(cfg, accelerator, model=model, tokenizer=tokenizer)
    if policy.teacher is not None:  # a teacher that differs from the student, so the loss is not ~0
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in policy.teacher.model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return policy, build_update(cfg, policy, accelerator, Ranks(accelerator))


def _completions(n: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randint(3, 500, (3 + 2 * i,), generator=gen).tolist() for i in range(n)]


def _divergence(policy, items, alpha, topk):
    """[B, T] per-token divergence of the items, computed outside the update."""
    tok = policy.tokenizer
    student_in = pack([it.prompt_ids for it in items], [it.completion_ids for it in items], tok.pad_token_id)
    teacher_in = pack([it.teacher_prompt_ids for it in items], [it.completion_ids for it in items], tok.pad_token_id)
    with torch.no_grad():
        s = response_logits(policy.student, student_in)
        t = response_logits(policy.teacher.model, teacher_in)
    return divergence_per_token(s, t, student_in.completion_mask, alpha=alpha, topk=topk, ratio_min=0.2)


def test_rebalanced_and_rosd_masked_update_is_eq3_token_mean(tmp_path):
    policy, update = _update(tmp_path, "resd", distillation_alpha=0.5)
    tok = policy.tokenizer
    rewards = [1.0, 0.0, 0.0, 0.0, 1.0]
    weights = success_rate_weights([r >= 1.0 for r in rewards]).tolist()  # s = 0.4: successes 0.6, failures 0.4, mean 1
    assert weights[0] == pytest.approx(0.6 / 0.48) and weights[1] == pytest.approx(0.4 / 0.48)
    starts = [0, 2, 0, 4, 1]  # ROSD: distil from the quoted first error on
    items = [UpdateItem(tok(PROMPT.format(i=i))["input_ids"], c,
                        [float(m) for m in error_suffix_mask(len(c), starts[i])], weight=weights[i],
                        teacher_prompt_ids=tok(TEACHER.format(i=i))["input_ids"])
             for i, c in enumerate(_completions(5))]
    per_token = _divergence(policy, items, alpha=0.5, topk=100)
    width = per_token.shape[1]
    mask = torch.tensor([it.mask + [0.0] * (width - len(it.mask)) for it in items])
    w = torch.tensor(weights)
    expected = float((w[:, None] * mask * per_token).sum() / mask.sum())  # Eq. 3, token mean
    assert expected > 0
    before = [p.detach().clone() for p in policy.student.parameters()]

    result = update.apply(items)

    assert result.updated and result.loss_tokens == int(mask.sum())
    assert result.loss == pytest.approx(expected, rel=1e-5)
    assert any(not torch.equal(b, p) for b, p in zip(before, policy.student.parameters()))


def test_tokens_before_the_first_error_get_no_gradient(tmp_path):
    """ROSD's mask: the student's distributions at the tokens before the first error receive
    exactly zero gradient from the update, those after it a non-zero one; the loss is the token
    mean over the suffix."""
    policy, update = _update(tmp_path, "resd")
    tok = policy.tokenizer
    (c,) = _completions(1)
    item = UpdateItem(tok(PROMPT.format(i=0))["input_ids"], c, [0.0, 0.0] + [1.0] * (len(c) - 2),
                      teacher_prompt_ids=tok(TEACHER.format(i=0))["input_ids"])
    per_token = _divergence(policy, [item], alpha=1.0, topk=100)
    assert float(per_token[0, :2].sum()) > 0  # the prefix would have contributed
    student_logits = []

    def keep_grad(module, inputs, output):
        if output.logits.requires_grad:  # the student's forward (the teacher's runs without grad)
            output.logits.retain_grad()
            student_logits.append(output.logits)

    hook = policy.student.register_forward_hook(keep_grad)
    try:
        result = update.apply([item])
    finally:
        hook.remove()
    (logits,) = student_logits
    grad = logits.grad[0, :len(c)].abs().sum(-1)  # row t: the distribution of response token t
    assert torch.all(grad[:2] == 0) and torch.all(grad[2:] > 0)
    assert result.loss == pytest.approx(float(per_token[0, 2:].sum() / (len(c) - 2)), rel=1e-5)


def test_grpo_update_is_the_on_policy_surrogate_with_group_advantages(tmp_path):
    """At the step the ratio is 1, so the loss is -sum_i A_i * T_i / sum_i T_i (token mean)."""
    from resd.distill import group_advantages

    policy, update = _update(tmp_path, "grpo", num_generations=2)
    prompt = policy.tokenizer(PROMPT.format(i=0))["input_ids"]
    lengths, rewards = [3, 5, 4, 2], [1.0, 0.0, 0.0, 0.0]
    advantages = group_advantages(rewards, 2).tolist()
    assert advantages == [0.5, -0.5, 0.0, 0.0]  # Dr. GRPO: reward minus group mean, no std scaling
    items = [UpdateItem(prompt, list(range(10, 10 + n)), [1.0] * n, advantage=a) for n, a in zip(lengths, advantages)]
    before = [p.detach().clone() for p in policy.student.parameters()]

    result = update.apply(items, response_tokens=sum(lengths))

    assert result.loss == pytest.approx(-sum(a * n for a, n in zip(advantages, lengths)) / sum(lengths), abs=1e-6)
    assert result.loss_tokens == sum(lengths)
    assert any(not torch.equal(b, p) for b, p in zip(before, policy.student.parameters()))


def test_an_update_without_tokens_takes_no_step(tmp_path):
    policy, update = _update(tmp_path, "sdpo")
    before = [p.detach().clone() for p in policy.student.parameters()]
    result = update.apply([])
    assert not result.updated and result.loss == 0.0 and result.loss_tokens == 0
    assert all(torch.equal(b, p) for b, p in zip(before, policy.student.parameters()))


def test_a_policy_gradient_term_adds_to_the_distillation_loss(tmp_path):
    """pg_coef (dGRPO-style): per token D_t on distilled tokens + c * (-A_i) on every response token,
    averaged over all response tokens; a sample without a teacher still learns from its advantage."""
    policy, update = _update(tmp_path, "sdpo", pg_coef=0.5)
    tok = policy.tokenizer
    c0, c1 = _completions(2)
    prompt = tok(PROMPT.format(i=0))["input_ids"]
    distilled = UpdateItem(prompt, c0, [1.0] * len(c0), teacher_prompt_ids=tok(TEACHER.format(i=0))["input_ids"],
                           advantage=0.25)
    reward_only = UpdateItem(prompt, c1, [0.0] * len(c1), teacher_prompt_ids=prompt, advantage=-0.5)
    divergence = _divergence(policy, [distilled], alpha=1.0, topk=100)
    n = len(c0) + len(c1)
    expected = (float(divergence.sum()) + 0.5 * (-0.25 * len(c0) + 0.5 * len(c1))) / n
    assert update.apply([distilled, reward_only], response_tokens=n).loss == pytest.approx(expected, rel=1e-5)


def test_pg_coef_needs_groups():
    from resd.errors import UserError
    from resd.train import load_config

    with pytest.raises(UserError, match="pg_coef"):
        load_config(method="resd", pg_coef=1.0)  # RESD samples one answer per prompt


def test_identical_distilled_answers_to_one_prompt_are_two_terms():
    """Items are matched to samples by index: two samples with the same tokens (a small model
    often repeats itself) each keep their distillation term when the policy-gradient term joins."""
    from resd.context import TeacherContext
    from resd.envs.base import Outcome, Task
    from resd.rollout import Sample
    from resd.policy.update import ItemSettings, update_items

    _, tokenizer = tiny_model(seed=11)
    task = Task(id="t", prompt=[{"role": "user", "content": "q"}])
    same = dict(group=0, task=task, text="a", prompt_ids=[1, 2], completion_ids=[3, 4], truncated=False,
                outcome=Outcome(0.0, 0.0, "no"), succeeded=False)
    samples = [Sample(0, **same), Sample(1, **same),
               Sample(2, 0, task, "b", [1, 2], [5], False, Outcome(1.0, 1.0, ""), succeeded=True)]
    contexts = [TeacherContext(distill=True, feedback="no")] * 2 + [TeacherContext(distill=False)]
    batch = update_items(samples, contexts, ItemSettings(advantages=True), tokenizer)
    distilled = [it for it in batch.items if any(it.mask)]
    assert len(distilled) == 2 and batch.stats["signal_samples"] == 2
    assert [it.sample for it in batch.items] == [0, 1, 2]
    assert [it.advantage for it in batch.items] == pytest.approx([-1 / 3, -1 / 3, 2 / 3])
    assert batch.response_tokens == 5
