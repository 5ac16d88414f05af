"""The weights the vLLM push exports (resd.generation.engines.iter_export_weights): base-model names, LoRA
merged as PEFT merges it, cast to the engine's dtype; the model itself is left unchanged."""

from __future__ import annotations

import copy

import torch

from resd.generation.engines import export_weights, iter_export_weights
from resd.models import tiny_model


def _lora_model():
    from peft import LoraConfig, get_peft_model

    model, _ = tiny_model()
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:  # PEFT starts B at 0: make the adapter do something
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return peft_model


def test_lora_export_equals_peft_merge_and_leaves_the_model_alone():
    model = _lora_model()
    before = {n: t.clone() for n, t in model.state_dict().items()}
    ours = export_weights(model)
    reference = copy.deepcopy(model).merge_and_unload().state_dict()
    assert ours.keys() == reference.keys()
    assert all(torch.allclose(ours[k], reference[k], atol=1e-6) for k in ours)
    assert any(not torch.equal(ours[k], before[f"base_model.model.{k}".replace("proj.weight", "proj.base_layer.weight")])
               for k in ours if k.endswith("q_proj.weight"))  # the merge changed something
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items())


def test_export_casts_to_the_engine_dtype():
    model, _ = tiny_model()
    exported = dict(iter_export_weights(model, torch.bfloat16))
    assert {t.dtype for t in exported.values()} == {torch.bfloat16}
    assert exported.keys() == model.state_dict().keys()
