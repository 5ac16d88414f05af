"""Mixed precision as the paper's runs train (resd.train.precision): with `dtype: bfloat16` the
weights, AdamW state and EMA teacher stay float32 and only the compute is bfloat16, so an lr 1e-6
update moves the weights as it does in float32 and the EMA teacher follows like a float32 EMA."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from resd.errors import UserError
from resd.train.precision import Precision, resolve_precision


def test_precision_from_the_config():
    cpu = torch.device("cpu")
    assert resolve_precision(None, True, "tiny-random", cpu) == Precision(torch.float32, torch.float32)
    assert resolve_precision("bfloat16", True, "tiny-random", cpu) == Precision(torch.float32, torch.bfloat16)
    assert resolve_precision("bfloat16", True, "tiny-random", cpu).accelerate_name == "bf16"
    assert resolve_precision("bfloat16", False, "tiny-random", cpu) == Precision(torch.bfloat16, torch.bfloat16)
    assert resolve_precision("float32", True, "tiny-random", cpu).accelerate_name == "no"
    # a GPU run without a dtype takes the checkpoint's own (float32 for the tiny model)
    assert resolve_precision(None, True, "tiny-random", torch.device("cuda")) == Precision(torch.float32, torch.float32)
    with pytest.raises(UserError, match="bfloat16"):
        resolve_precision("float16", True, "tiny-random", cpu)
    with pytest.raises(UserError, match="unknown dtype"):
        resolve_precision("int8", True, "tiny-random", cpu)


def _policy(dtype: str, mixed: bool, lora: dict | None = None):
    from accelerate.state import AcceleratorState, GradientState

    from resd.train.build import build_accelerator, build_policy, build_update, seed_everything
    from resd.train.config import config_from_dict
    from resd.train.ranks import Ranks
    from resd.policy.update import UpdateItem

    # accelerate keeps one process-wide state; each run here asks for its own precision.
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    cfg = config_from_dict({"method": "resd", "env": "toyenv:LetterEnv", "model": "tiny-random", "dtype": dtype,
                            "mixed_precision": mixed, "learning_rate": 1e-6, "warmup_steps": 0,
                            "micro_batch_size": 4, "teacher_update_rate": 1e-4, "max_grad_norm": None,
                            **({"lora": lora} if lora else {})})
    accelerator = build_accelerator(cfg, None)
    seed_everything(0)
    policy = build_policy(cfg, accelerator)
    update = build_update(cfg, policy, accelerator, Ranks(accelerator))
    tok = policy.tokenizer
    gen = torch.Generator().manual_seed(0)
    items = []
    for i in range(4):
        prompt = tok(f"<|im_start|>user\nWord {i}<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
        teacher = tok(f"<|im_start|>user\nWord {i}. Hint: a.<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
        completion = torch.randint(3, len(tok), (6,), generator=gen).tolist()
        items.append(UpdateItem(prompt, completion, [1.0] * 6, teacher_prompt_ids=teacher))
    return policy, update, items


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().float().flatten() for t in tensors])


def _moves(dtype: str, mixed: bool, steps: int = 6):
    """(student dtype, teacher dtype, student change, teacher change) after `steps` updates + EMA."""
    policy, update, items = _policy(dtype, mixed)
    student0 = _flat(policy.student.parameters())
    teacher0 = _flat(policy.teacher.model.parameters())
    for _ in range(steps):
        assert update.apply(items).updated
        policy.teacher.update(policy.student)
    return (next(policy.student.parameters()).dtype, next(policy.teacher.model.parameters()).dtype,
            _flat(policy.student.parameters()) - student0, _flat(policy.teacher.model.parameters()) - teacher0)


@pytest.mark.slow
def test_bf16_mixed_precision_moves_the_weights_and_the_teacher_as_float32_does():
    _, _, student32, teacher32 = _moves("float32", True)
    student_dtype, teacher_dtype, student, teacher = _moves("bfloat16", True)
    assert student_dtype == teacher_dtype == torch.float32  # masters and EMA state
    assert (student32 != 0).float().mean() == 1.0
    assert (student != 0).float().mean() == 1.0  # every weight moved, as in float32
    # the same updates up to bf16 compute noise in the gradients (Adam normalises their size)
    assert float((student - student32).norm() / student32.norm()) < 0.25
    # the float32 EMA teacher follows: as many elements moved, by the same amounts
    assert float((teacher != 0).float().mean()) == pytest.approx(float((teacher32 != 0).float().mean()), abs=0.03)
    assert float((teacher - teacher32).norm() / teacher32.norm()) < 0.25

    # the counterfactual the defaults avoid: bf16 weights updated directly lose nearly every step
    bf16_dtype, _, pure, _ = _moves("bfloat16", False)
    assert bf16_dtype == torch.bfloat16
    assert float((pure != 0).float().mean()) < 0.2


@pytest.mark.slow
def test_bf16_checkpoint_holds_float32_masters_and_resumes_exactly(tmp_path):
    from resd.run.checkpoint import load_checkpoint, save_checkpoint

    policy, update, items = _policy("bfloat16", True)
    for _ in range(2):
        update.apply(items)
        policy.teacher.update(policy.student)
    save_checkpoint(tmp_path / "latest", model=policy.student, teacher=policy.teacher, optimizer=policy.optimizer,
                    scheduler=policy.scheduler, context_state=None, state={"step": 2}, rng_states=[])
    saved = load_file(str(tmp_path / "latest/student.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.float32}
    assert {t.dtype for t in load_file(str(tmp_path / "latest/teacher.safetensors")).values()} == {torch.float32}
    update.apply(items)
    after = _flat(policy.student.parameters())

    fresh, fresh_update, _ = _policy("bfloat16", True)
    load_checkpoint(tmp_path / "latest", model=fresh.student, teacher=fresh.teacher, optimizer=fresh.optimizer,
                    scheduler=fresh.scheduler)
    assert torch.equal(_flat(fresh.teacher.model.parameters()), _flat(policy.teacher.model.parameters()))
    fresh_update.apply(items)
    assert torch.equal(_flat(fresh.student.parameters()), after)


@pytest.mark.slow
def test_bf16_lora_keeps_float32_adapters_and_a_float32_teacher_shadow():
    policy, update, items = _policy("bfloat16", True, lora={"r": 4, "alpha": 8})
    trainable = [p for p in policy.student.parameters() if p.requires_grad]
    frozen = [p for p in policy.student.parameters() if not p.requires_grad]
    assert {p.dtype for p in trainable} == {torch.float32}
    assert {p.dtype for p in frozen} == {torch.bfloat16}  # the frozen base stays in the compute dtype
    assert {t.dtype for t in policy.teacher.shadow.values()} == {torch.float32}
    lora_b = [p for n, p in policy.student.named_parameters() if "lora_B" in n]
    before = _flat(lora_b)
    assert update.apply(items).updated
    # lora_B starts at 0 (so lora_A gets no gradient yet); at lr 1e-6 every element of it moves
    assert (_flat(lora_b) != before).float().mean() == 1.0
