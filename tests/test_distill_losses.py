"""Per-token losses against direct formulas on small tensors (paper Eq. 1, App. A-B)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from resd.distill import (
    LossSettings,
    clamp_teacher_logprobs,
    divergence_per_token,
    group_advantages,
    per_token_loss,
    policy_gradient_per_token,
    sampled_token_per_token,
    sequence_logprobs,
    success_rate_weights,
)
from resd.errors import UserError

B, T, V = 2, 3, 12


def self_distillation_loss(s, t, mask, **kw):
    """(token mean, per-token divergence): the reduction written out here so the tests can take
    gradients of a scalar; the trainer's own reduction is tested in test_train_update.py."""
    per_token = divergence_per_token(s, t, mask, **kw)
    return per_token.sum() / mask.sum().clamp(min=1), per_token


def token_level_distillation_loss(ls, lt, mask, weights=None):
    per_token = sampled_token_per_token(ls, lt, mask)
    if weights is not None:
        per_token = per_token * weights[:, None]
    return per_token.sum() / mask.sum().clamp(min=1), per_token


def policy_gradient_loss(logp, adv, mask):
    per_token = policy_gradient_per_token(logp, adv, mask)
    return per_token.sum() / mask.sum().clamp(min=1), per_token


def _logits(seed: int, dtype: torch.dtype = torch.float64, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, V, generator=g, dtype=torch.float64) * scale).to(dtype)


def _kl_direct(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) from probabilities, summed over the last dim, with 0 log 0 = 0."""
    terms = torch.where(p > 0, p * (p.log() - q.log()), torch.zeros_like(p))
    return terms.sum(-1)


def _divergence_direct(ps: torch.Tensor, pt: torch.Tensor, alpha: float) -> torch.Tensor:
    if alpha == 0:
        return _kl_direct(pt, ps)
    if alpha == 1:
        return _kl_direct(ps, pt)
    m = (1 - alpha) * ps + alpha * pt
    return (1 - alpha) * _kl_direct(ps, m) + alpha * _kl_direct(pt, m)


def _topk_support_direct(s: torch.Tensor, t: torch.Tensor, k: int, tail: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities on the student's top-k (plus tail, or renormalised), written out plainly."""
    ps_full, pt_full = s.softmax(-1), t.softmax(-1)
    idx = s.argsort(dim=-1, descending=True)[..., :k]
    ps, pt = ps_full.gather(-1, idx), pt_full.gather(-1, idx)
    if tail:
        ps = torch.cat([ps, 1 - ps.sum(-1, keepdim=True)], -1)
        pt = torch.cat([pt, 1 - pt.sum(-1, keepdim=True)], -1)
    else:
        ps = ps / ps.sum(-1, keepdim=True)
        pt = pt / pt.sum(-1, keepdim=True)
    return ps, pt


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_full_vocabulary_matches_direct_formula(alpha: float) -> None:
    s, t = _logits(0), _logits(1)
    mask = torch.ones(B, T)
    _, per_token = self_distillation_loss(s, t, mask, alpha=alpha, topk=None, ratio_min=None)
    expected = _divergence_direct(s.softmax(-1), t.softmax(-1), alpha)
    torch.testing.assert_close(per_token, expected, rtol=1e-9, atol=1e-12)


def test_kl_directions_follow_the_kl_div_convention() -> None:
    # F.kl_div(input, target) = KL(target || input): alpha=0 is KL(teacher || student).
    s, t = _logits(2), _logits(3)
    mask = torch.ones(B, T)
    ls, lt = s.log_softmax(-1), t.log_softmax(-1)
    forward = F.kl_div(ls, lt, log_target=True, reduction="none").sum(-1)
    reverse = F.kl_div(lt, ls, log_target=True, reduction="none").sum(-1)
    _, fwd = self_distillation_loss(s, t, mask, alpha=0.0, topk=None, ratio_min=None)
    _, rev = self_distillation_loss(s, t, mask, alpha=1.0, topk=None, ratio_min=None)
    torch.testing.assert_close(fwd, forward)
    torch.testing.assert_close(rev, reverse)
    assert not torch.allclose(fwd, rev)


@pytest.mark.parametrize("tail", [True, False])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_topk_support_matches_direct_formula(alpha: float, tail: bool) -> None:
    s, t = _logits(4), _logits(5)
    mask = torch.ones(B, T)
    _, per_token = self_distillation_loss(s, t, mask, alpha=alpha, topk=4, add_tail=tail, ratio_min=None)
    ps, pt = _topk_support_direct(s, t, 4, tail)
    torch.testing.assert_close(per_token, _divergence_direct(ps, pt, alpha), rtol=1e-9, atol=1e-12)


def test_topk_at_or_above_vocab_is_full_vocabulary() -> None:
    s, t = _logits(6), _logits(7)
    mask = torch.ones(B, T)
    full, _ = self_distillation_loss(s, t, mask, alpha=0.5, topk=None)
    at_v, _ = self_distillation_loss(s, t, mask, alpha=0.5, topk=V)
    above, _ = self_distillation_loss(s, t, mask, alpha=0.5, topk=10 * V)
    torch.testing.assert_close(full, at_v)
    torch.testing.assert_close(full, above)


def _grad(loss_fn, s: torch.Tensor) -> torch.Tensor:
    x = s.clone().requires_grad_(True)
    loss_fn(x).backward()
    return x.grad


@pytest.mark.parametrize("topk", [None, 5])
def test_jsd_limits_recover_forward_and_reverse_kl_gradients(topk: int | None) -> None:
    # Documented: D_alpha / alpha -> KL(t||s) as alpha -> 0, D_alpha / (1-alpha) -> KL(s||t) as alpha -> 1.
    s, t = _logits(8), _logits(9)
    mask = torch.ones(B, T)
    eps = 1e-8  # the gap shrinks linearly in eps (the O(alpha) term of the expansion)

    def loss(alpha: float, scale: float):
        return lambda x: self_distillation_loss(x, t, mask, alpha=alpha, topk=topk, ratio_min=None)[0] / scale

    torch.testing.assert_close(_grad(loss(eps, eps), s), _grad(loss(0.0, 1.0), s), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(_grad(loss(1 - eps, eps), s), _grad(loss(1.0, 1.0), s), rtol=1e-4, atol=1e-6)


def test_clamp_values_exactly_as_formula() -> None:
    student = torch.log(torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64))
    teacher = torch.log(torch.tensor([[0.05, 0.05, 0.9]], dtype=torch.float64))
    raised = clamp_teacher_logprobs(teacher, student, ratio_min=0.2)
    # 0.05 < 0.2 * 0.5 -> raised to 0.1; 0.05 < 0.2 * 0.3 -> 0.06; 0.9 untouched.
    torch.testing.assert_close(raised.exp(), torch.tensor([[0.1, 0.06, 0.9]], dtype=torch.float64))
    both = clamp_teacher_logprobs(teacher, student, ratio_min=0.2, ratio_max=2.0)
    # 0.9 > 2 * 0.2 -> lowered to 0.4. No renormalisation afterwards.
    torch.testing.assert_close(both.exp(), torch.tensor([[0.1, 0.06, 0.4]], dtype=torch.float64))
    assert abs(both.exp().sum().item() - 1.0) > 0.1
    untouched = clamp_teacher_logprobs(teacher, student, ratio_min=None, ratio_max=None)
    torch.testing.assert_close(untouched, teacher)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("topk", [None, 4])
def test_clamped_loss_uses_unnormalised_clamped_teacher(alpha: float, topk: int | None) -> None:
    s, t = _logits(10, scale=3.0), _logits(11, scale=3.0)
    mask = torch.ones(B, T)
    rmin, rmax = 0.2, 5.0
    _, per_token = self_distillation_loss(s, t, mask, alpha=alpha, topk=topk, ratio_min=rmin, ratio_max=rmax)
    if topk is None:
        ps, pt = s.softmax(-1), t.softmax(-1)
    else:
        ps, pt = _topk_support_direct(s, t, topk, tail=True)
    pt_clamped = torch.minimum(torch.maximum(pt, rmin * ps), rmax * ps)
    assert not torch.allclose(pt_clamped, pt), "the test data must exercise the clamp"
    torch.testing.assert_close(per_token, _divergence_direct(ps, pt_clamped, alpha), rtol=1e-9, atol=1e-12)


def test_gradients_reach_the_student_only() -> None:
    s = _logits(12).requires_grad_(True)
    t = _logits(13).requires_grad_(True)
    loss, _ = self_distillation_loss(s, t, torch.ones(B, T), alpha=0.5)
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_per_token_divergence_is_zero_outside_the_mask() -> None:
    s, t = _logits(14), _logits(15)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    _, per_token = self_distillation_loss(s, t, mask, alpha=0.5)
    unmasked = self_distillation_loss(s, t, torch.ones(B, T), alpha=0.5)[1]
    torch.testing.assert_close(per_token, unmasked * mask.double())


def test_all_zero_mask_gives_zero_loss_with_a_graph() -> None:
    s = _logits(16).requires_grad_(True)
    loss, per_token = self_distillation_loss(s, _logits(17), torch.zeros(B, T), alpha=1.0)
    assert loss.item() == 0.0 and per_token.abs().sum().item() == 0.0
    loss.backward()
    assert torch.equal(s.grad, torch.zeros_like(s))


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("topk", [None, 4, 8])
@pytest.mark.parametrize("ratio_min", [None, 0.2])
def test_minus_inf_logits_give_finite_loss_and_gradients(alpha: float, topk: int | None, ratio_min) -> None:
    s, t = _logits(18, torch.float32), _logits(19, torch.float32)
    # Masked vocabulary entries: 7 of 12 are -inf for the student (top-8 must include some),
    # and the teacher rules out tokens the student likes.
    s[..., 5:] = float("-inf")
    t[..., :2] = float("-inf")
    t[..., 9:] = float("-inf")
    s.requires_grad_(True)
    loss, per_token = self_distillation_loss(s, t, torch.ones(B, T), alpha=alpha, topk=topk, ratio_min=ratio_min)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(per_token).all()
    assert torch.isfinite(s.grad).all()
    assert (s.grad[..., 5:] == 0).all(), "impossible tokens get no gradient"


def test_minus_inf_matches_formula_where_it_is_finite() -> None:
    # Forward KL with a teacher that rules tokens out: 0 log 0 = 0, exactly the direct value.
    s, t = _logits(20), _logits(21)
    t[..., :3] = float("-inf")
    _, per_token = self_distillation_loss(s, t, torch.ones(B, T), alpha=0.0, topk=None, ratio_min=None)
    torch.testing.assert_close(per_token, _kl_direct(t.softmax(-1), s.softmax(-1)))


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_bf16_inputs_are_finite_and_close_to_fp32(alpha: float) -> None:
    s32, t32 = _logits(22, torch.float32), _logits(23, torch.float32)
    mask = torch.ones(B, T)
    s16 = s32.to(torch.bfloat16).requires_grad_(True)
    loss16, _ = self_distillation_loss(s16, t32.to(torch.bfloat16), mask, alpha=alpha, topk=6)
    loss16.backward()
    loss32, _ = self_distillation_loss(s32, t32, mask, alpha=alpha, topk=6)
    assert loss16.dtype == torch.float32
    assert torch.isfinite(s16.grad.float()).all() and s16.grad.dtype == torch.bfloat16
    torch.testing.assert_close(loss16, loss32, rtol=3e-2, atol=3e-3)


def test_bad_arguments_raise_user_errors() -> None:
    s, t, mask = _logits(0), _logits(1), torch.ones(B, T)
    with pytest.raises(UserError, match="alpha"):
        self_distillation_loss(s, t, mask, alpha=1.5)
    with pytest.raises(UserError, match="teacher logits"):
        self_distillation_loss(s, t[:, :2], mask, alpha=0.5)
    with pytest.raises(UserError, match="mask"):
        self_distillation_loss(s, t, mask[:, :2], alpha=0.5)
    with pytest.raises(UserError, match="topk"):
        self_distillation_loss(s, t, mask, alpha=0.5, topk=0)
    with pytest.raises(UserError, match="ratio_max"):
        self_distillation_loss(s, t, mask, alpha=0.5, ratio_min=0.5, ratio_max=0.2)
    with pytest.raises(UserError, match="teacher's logits"):
        per_token_loss(LossSettings(), s, torch.zeros(B, T, dtype=torch.long), mask)
    with pytest.raises(UserError, match="advantage"):
        per_token_loss(LossSettings(mode="policy_gradient"), s, torch.zeros(B, T, dtype=torch.long), mask)


def test_token_level_gradient_is_the_score_function_formula() -> None:
    g = torch.Generator().manual_seed(0)
    ls = (torch.randn(B, T, generator=g, dtype=torch.float64) - 2).requires_grad_(True)
    lt = torch.randn(B, T, generator=g, dtype=torch.float64) - 2
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    loss, _ = token_level_distillation_loss(ls, lt, mask)
    loss.backward()
    torch.testing.assert_close(ls.grad, (ls.detach() - lt) * mask / mask.sum())


def test_token_level_is_unbiased_for_the_reverse_kl_gradient() -> None:
    # Enumerate every token the student could sample at one position, weighting each by its
    # probability: the expected token-level gradient must equal the exact reverse-KL gradient.
    g = torch.Generator().manual_seed(1)
    s_logits = torch.randn(1, 1, V, generator=g, dtype=torch.float64)
    t_logits = torch.randn(1, 1, V, generator=g, dtype=torch.float64)

    x = s_logits.clone().requires_grad_(True)
    ids = torch.arange(V).reshape(V, 1)
    ls = sequence_logprobs(x.expand(V, 1, V), ids)
    lt = sequence_logprobs(t_logits.expand(V, 1, V), ids)
    probs = s_logits.softmax(-1).reshape(V)
    # Token mean divides by V samples; weights V * p(v) turn it into the expectation over v.
    loss, _ = token_level_distillation_loss(ls, lt, torch.ones(V, 1), weights=V * probs)
    loss.backward()

    exact = _grad(lambda y: self_distillation_loss(y, t_logits, torch.ones(1, 1), alpha=1.0, topk=None, ratio_min=None)[0], s_logits)
    torch.testing.assert_close(x.grad, exact)


def test_token_level_ignores_minus_inf_outside_the_mask() -> None:
    ls = torch.tensor([[-1.0, float("-inf")]], requires_grad=True)
    lt = torch.tensor([[-2.0, float("-inf")]])
    loss, _ = token_level_distillation_loss(ls, lt, torch.tensor([[1.0, 0.0]]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(ls.grad).all()


def test_success_rate_weights_app_b() -> None:
    w = success_rate_weights([True, False, False, False])  # s = 0.25
    # success (1-s)^1 = 0.75, failures s^1 = 0.25; mean of raw = 0.375.
    torch.testing.assert_close(w, torch.tensor([2.0, 2 / 3, 2 / 3, 2 / 3]))
    assert w.mean().item() == pytest.approx(1.0)
    assert torch.equal(success_rate_weights([False, False, False]), torch.ones(3))  # s = 0
    assert torch.equal(success_rate_weights([True, True]), torch.ones(2))  # s = 1
    w_exp = success_rate_weights([True, False], a=2.0, b=1.0)  # s = 0.5
    torch.testing.assert_close(w_exp, torch.tensor([0.25, 0.5]) / 0.375)
    assert success_rate_weights([]).numel() == 0


def test_sequence_logprobs_match_log_softmax_gather() -> None:
    logits = _logits(24)
    ids = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(0))
    expected = logits.log_softmax(-1).gather(-1, ids[..., None]).squeeze(-1)
    torch.testing.assert_close(sequence_logprobs(logits, ids), expected)


def test_group_advantages() -> None:
    rewards = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    adv = group_advantages(rewards, group_size=4)
    torch.testing.assert_close(adv, torch.tensor([0.75, -0.25, -0.25, -0.25, 0.25, 0.25, -0.75, 0.25]))
    scaled = group_advantages(rewards, group_size=4, scale="group")
    torch.testing.assert_close(scaled[:4], adv[:4] / (math.sqrt(0.1875) + 1e-6))
    assert torch.equal(group_advantages([1.0, 1.0], 2, scale="group"), torch.zeros(2))
    with pytest.raises(UserError, match="groups of 3"):
        group_advantages(rewards, group_size=3)


def test_policy_gradient_loss_is_reinforce_on_policy() -> None:
    logp = torch.log(torch.tensor([[0.5, 0.2], [0.3, 0.3]])).requires_grad_(True)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    adv = torch.tensor([1.0, -2.0])
    loss, per_token = policy_gradient_loss(logp, adv, mask)
    # On-policy: ratio 1, loss = -mean over masked tokens of A, gradient -A / N.
    assert loss.item() == pytest.approx(-(1.0 + 1.0 - 2.0) / 3)
    assert torch.equal(per_token, torch.tensor([[-1.0, -1.0], [2.0, 0.0]]))
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-1 / 3, -1 / 3], [2 / 3, 0.0]]))
    # A padded token's -inf log-prob stays out of the loss and its gradient.
    padded = torch.tensor([[-0.5, float("-inf")]], requires_grad=True)
    out = policy_gradient_per_token(padded, torch.tensor([1.0]), torch.tensor([[1.0, 0.0]]))
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.equal(padded.grad, torch.tensor([[-1.0, 0.0]]))


# --- cross-check against TRL's experimental SDPO loss (an independent implementation) -------------
# Without the ratio clamp (ours, paper §2; TRL has none) the per-token divergences must agree.

@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("topk, add_tail", [(5, True), (5, False), (None, True)])
def test_per_token_divergence_matches_trl_experimental_sdpo(alpha, topk, add_tail):
    from trl.experimental.sdpo import loss_utils as trl_sdpo

    g = torch.Generator().manual_seed(7)
    student = torch.randn(2, 4, 17, generator=g, dtype=torch.float64) * 3
    teacher = torch.randn(2, 4, 17, generator=g, dtype=torch.float64) * 3
    mask = torch.ones(2, 4, dtype=torch.float64)
    _, ours = self_distillation_loss(student, teacher, mask, alpha=alpha, topk=topk, add_tail=add_tail,
                                     ratio_min=None, ratio_max=None)
    if topk is None:
        theirs = trl_sdpo.compute_full_logit_self_distillation_loss(student, teacher, distillation_alpha=alpha)
    else:
        theirs = trl_sdpo.compute_topk_self_distillation_loss(student, teacher, distillation_topk=topk,
                                                              distillation_alpha=alpha, distillation_add_tail=add_tail)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-10)


def test_sampled_token_surrogate_matches_trl_experimental_sdpo():
    from trl.experimental.sdpo import loss_utils as trl_sdpo

    g = torch.Generator().manual_seed(3)
    student = torch.randn(2, 5, 11, generator=g, dtype=torch.float64)
    teacher = torch.randn(2, 5, 11, generator=g, dtype=torch.float64)
    ids = torch.randint(0, 11, (2, 5), generator=g)
    _, ours = token_level_distillation_loss(sequence_logprobs(student, ids), sequence_logprobs(teacher, ids),
                                            torch.ones(2, 5, dtype=torch.float64))
    theirs = trl_sdpo.compute_sampled_token_self_distillation_loss(student, teacher, ids, distillation_alpha=1.0)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("mode", ["topk_logits", "full_logits", "sampled_token", "policy_gradient"])
def test_the_dispatch_gives_each_modes_per_token_loss(mode) -> None:
    s, t = _logits(30), _logits(31)
    ids = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv = torch.tensor([0.5, -1.0])
    settings = LossSettings(mode=mode, alpha=0.5 if "logits" in mode else 1.0, topk=4)
    got = per_token_loss(settings, s, ids, mask, teacher_logits=t, advantages=adv)
    expected = {
        "topk_logits": lambda: divergence_per_token(s, t, mask, alpha=0.5, topk=4),
        "full_logits": lambda: divergence_per_token(s, t, mask, alpha=0.5, topk=None),
        "sampled_token": lambda: sampled_token_per_token(sequence_logprobs(s, ids), sequence_logprobs(t, ids), mask),
        "policy_gradient": lambda: policy_gradient_per_token(sequence_logprobs(s, ids), adv, mask),
    }[mode]()
    torch.testing.assert_close(got, expected)
    assert got.shape == (B, T) and (got[1, 2] == 0)


# ---------------------------------------------------------------------------------------------
# Remedies for a teacher that hurts (issue 21): sharpened / top-k teacher, token gating, failures only
# ---------------------------------------------------------------------------------------------

def _entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def test_sharpened_teacher_is_the_divergence_to_the_tempered_teacher() -> None:
    s, t, mask = _logits(0), _logits(1), torch.ones(B, T, dtype=torch.float64)
    settings = LossSettings(mode="full_logits", alpha=1.0, ratio_min=None, teacher_temperature=0.5)
    got = per_token_loss(settings, s, torch.zeros(B, T, dtype=torch.long), mask, teacher_logits=t)
    want = _divergence_direct(F.softmax(s, -1), F.softmax(t / 0.5, -1), 1.0)
    torch.testing.assert_close(got, want)
    plain = per_token_loss(LossSettings(mode="full_logits", alpha=1.0, ratio_min=None), s,
                           torch.zeros(B, T, dtype=torch.long), mask, teacher_logits=t)
    assert not torch.allclose(got, plain)


def test_a_step_towards_a_sharpened_teacher_spreads_less_mass() -> None:
    """The point of the remedy: one gradient step towards the T = 0.5 teacher leaves the student
    with less entropy than the same step towards the T = 1 teacher, when the teacher is broader."""
    g = torch.Generator().manual_seed(3)
    student = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 3.0
    teacher = student.detach() * 0.4 + torch.randn(B, T, V, generator=g, dtype=torch.float64) * 0.3  # broader
    assert (_entropy(teacher) > _entropy(student)).all()
    mask = torch.ones(B, T, dtype=torch.float64)
    ids = torch.zeros(B, T, dtype=torch.long)
    after = {}
    for temp in (1.0, 0.5):
        s = student.clone().requires_grad_(True)
        per_token_loss(LossSettings(mode="full_logits", alpha=0.0, ratio_min=None, teacher_temperature=temp),
                       s, ids, mask, teacher_logits=teacher).sum().backward()
        after[temp] = _entropy(student - 2.0 * s.grad).mean()
    assert after[0.5] < after[1.0]


def test_topk_teacher_is_renormalised_over_its_k_best_tokens() -> None:
    from resd.distill import shape_teacher_logits

    t = _logits(4)
    shaped = shape_teacher_logits(t, topk=3)
    p = F.softmax(shaped, -1)
    top = torch.topk(t, 3, dim=-1)
    assert ((p > 0).sum(-1) == 3).all()
    torch.testing.assert_close(p.gather(-1, top.indices), F.softmax(top.values, -1))
    torch.testing.assert_close(shape_teacher_logits(t), t)  # T = 1, no top-k: untouched
    # Through the dispatch: finite with the paper's ratio clip, and different from the full teacher.
    s, mask, ids = _logits(5), torch.ones(B, T), torch.zeros(B, T, dtype=torch.long)
    got = per_token_loss(LossSettings(mode="topk_logits", topk=5, teacher_topk=2), s, ids, mask, teacher_logits=t)
    full = per_token_loss(LossSettings(mode="topk_logits", topk=5), s, ids, mask, teacher_logits=t)
    assert torch.isfinite(got).all() and not torch.allclose(got, full)


def _gate_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student uniform; on the sampled token 0 the teacher is higher at t = 0, lower at t = 1, equal at t = 2."""
    s = torch.zeros(B, T, V, dtype=torch.float64)
    t = torch.zeros(B, T, V, dtype=torch.float64)
    t[:, 0, 0] = 2.0
    t[:, 1, 0] = -2.0
    t[:, 2, 1] = 1.0
    t[:, 2, 0] = 0.0
    return s, t, torch.zeros(B, T, dtype=torch.long)


def test_token_gate_keeps_tokens_the_teacher_moves_the_outcomes_way() -> None:
    from resd.distill import outcome_gate

    s, t, ids = _gate_case()
    ls, lt = sequence_logprobs(s, ids), sequence_logprobs(t, ids)
    lt[:, 2] = ls[:, 2]  # exactly equal at t = 2: no direction, no distillation
    gate = outcome_gate(ls, lt, torch.tensor([True, False]), token_gate=True, failures_only=False)
    torch.testing.assert_close(gate, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=gate.dtype))
    # Through the dispatch, per token: gated tokens are exactly 0, kept tokens equal the ungated loss.
    mask = torch.ones(B, T, dtype=torch.float64)
    succeeded = torch.tensor([True, False])
    settings = LossSettings(mode="full_logits", ratio_min=None)
    plain = per_token_loss(settings, s, ids, mask, teacher_logits=t)
    gated = per_token_loss(LossSettings(mode="full_logits", ratio_min=None, token_gate=True), s, ids, mask,
                           teacher_logits=t, succeeded=succeeded)
    assert gated[0, 0] == plain[0, 0] and gated[1, 1] == plain[1, 1] and plain[0, 1] > 0
    assert gated[0, 1] == 0 and gated[1, 0] == 0


def test_distilling_failures_only_zeroes_accepted_rows_and_keeps_the_rest() -> None:
    s, t, mask, ids = _logits(6), _logits(7), torch.ones(B, T), torch.zeros(B, T, dtype=torch.long)
    plain = per_token_loss(LossSettings(), s, ids, mask, teacher_logits=t)
    only = per_token_loss(LossSettings(distill_outcomes="failures"), s, ids, mask, teacher_logits=t,
                          succeeded=torch.tensor([True, False]))
    assert (only[0] == 0).all() and (plain[0] > 0).all()
    torch.testing.assert_close(only[1], plain[1])


def test_gating_narrows_the_distillation_term_not_the_policy_gradient() -> None:
    s, t, ids = _gate_case()
    s = s.clone().requires_grad_(True)
    mask = torch.ones(B, T, dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0])
    both = per_token_loss(LossSettings(mode="full_logits", pg_coef=1.0, distill_outcomes="failures"), s, ids, mask,
                          teacher_logits=t, advantages=adv, pg_mask=mask, succeeded=torch.tensor([True, False]))
    pg = per_token_loss(LossSettings(mode="policy_gradient"), s, ids, mask, advantages=adv)
    torch.testing.assert_close(both[0], pg[0])  # the accepted row: only the GRPO term is left


def test_remedy_settings_are_validated() -> None:
    s, t, mask, ids = _logits(0), _logits(1), torch.ones(B, T), torch.zeros(B, T, dtype=torch.long)
    with pytest.raises(UserError, match="teacher_temperature"):
        LossSettings(teacher_temperature=0.0)
    with pytest.raises(UserError, match="teacher_topk"):
        LossSettings(teacher_topk=0)
    with pytest.raises(UserError, match="logit-level"):
        LossSettings(mode="sampled_token", teacher_topk=5)
    with pytest.raises(UserError, match="distill_outcomes"):
        LossSettings(distill_outcomes="successes")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="outcome"):
        per_token_loss(LossSettings(token_gate=True), s, ids, mask, teacher_logits=t)


def test_the_config_carries_the_remedies_and_rejects_bad_values() -> None:
    from resd.train.config import load_config

    cfg = load_config(None, ["distillation_teacher_temperature=0.5", "distillation_teacher_topk=20",
                             "distillation_token_gate=true", "distill_outcomes=failures"], method="sdpo")
    assert (cfg.distillation_teacher_temperature, cfg.distillation_teacher_topk, cfg.distillation_token_gate,
            cfg.distill_outcomes) == (0.5, 20, True, "failures")
    for bad in (["distillation_teacher_temperature=0"], ["distillation_teacher_topk=0"], ["distill_outcomes=some"],
                ["distillation_teacher_topk=5", "distillation_mode=sampled_token"]):
        with pytest.raises(UserError):
            load_config(None, bad, method="sdpo")


def test_the_entropy_cap_sharpens_only_a_broader_teacher_down_to_the_students_entropy():
    from resd.distill.losses import LossSettings, cap_teacher_entropy, per_token_loss

    torch.manual_seed(0)
    student = torch.randn(2, 5, 50) * 3.0
    teacher = torch.randn(2, 5, 50)          # flatter: broader than the student at most tokens
    teacher[1, 4] = student[1, 4] * 2.0      # sharper than the student here: left alone

    def entropy(z):
        log_p = torch.log_softmax(z, -1)
        return -(log_p.exp() * log_p).sum(-1)

    capped = cap_teacher_entropy(teacher, student)
    broader = entropy(teacher) > entropy(student)
    assert broader.sum() >= 8 and not broader[1, 4]
    # where it was broader: now as broad as the student (within the bisection's tolerance), never
    # broader, unless even the floor temperature (0.05) cannot sharpen it that far: then at the floor
    reachable = broader & (entropy(teacher / 0.05) <= entropy(student))
    assert reachable.sum() >= 8 and (broader & ~reachable).sum() >= 1
    assert torch.all(entropy(capped)[reachable] <= entropy(student)[reachable] + 1e-6)
    assert torch.allclose(entropy(capped)[reachable], entropy(student)[reachable], atol=0.02)
    floor = broader & ~reachable
    assert torch.allclose(capped[floor], teacher[floor] / 0.05)
    assert torch.equal(capped[~broader], teacher[~broader])
    # a temperature keeps the teacher's ranking
    assert torch.equal(capped.argsort(-1), teacher.argsort(-1))
    # the loss uses it
    ids = torch.randint(0, 50, (2, 5))
    mask = torch.ones(2, 5)
    plain = per_token_loss(LossSettings(mode="full_logits"), student, ids, mask, teacher_logits=teacher)
    cap = per_token_loss(LossSettings(mode="full_logits", teacher_entropy_cap=True), student, ids, mask,
                         teacher_logits=teacher)
    assert torch.allclose(plain[1, 4], cap[1, 4]) and not torch.allclose(plain[0], cap[0])
