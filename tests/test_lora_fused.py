"""The fused LoRA forward (training/lora_fused.py) is PEFT's LoRA math: same outputs, gradients and adapter files."""
import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from training.lora_fused import FusedAddmmLora, fuse_lora_linears


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = torch.nn.Linear(24, 32, bias=True)     # biased, like Qwen's q/k/v
        self.down_proj = torch.nn.Linear(32, 16, bias=False)

    def forward(self, x):
        return self.down_proj(torch.relu(self.q_proj(x)))


def lora_pair(dtype=torch.float32, **config):
    torch.manual_seed(0)
    # init_lora_weights=False: B is random too, so the adapters change the output from the first step
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=['q_proj', 'down_proj'], init_lora_weights=False, **config)
    vanilla = get_peft_model(Block().to(dtype), cfg)
    for n, p in vanilla.named_parameters():
        if 'lora_' in n:
            p.data = p.data.float()      # fp32 master adapters on a (possibly) bf16 base, as in training
    fused = copy.deepcopy(vanilla)
    return vanilla, fused


def loss_and_grads(model, x):
    model.zero_grad()
    out = model(x)
    out.float().square().mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_fused_equals_vanilla_in_fp32():
    vanilla, fused = lora_pair()
    assert fuse_lora_linears(fused) == 2
    x = torch.randn(3, 5, 24)
    out_v, grads_v = loss_and_grads(vanilla, x)
    out_f, grads_f = loss_and_grads(fused, x)
    assert (out_v - out_v.mean()).abs().max() > 0
    torch.testing.assert_close(out_f, out_v, rtol=1e-5, atol=1e-6)
    assert grads_f.keys() == grads_v.keys() and len(grads_f) == 4
    for name in grads_v:
        torch.testing.assert_close(grads_f[name], grads_v[name], rtol=1e-4, atol=1e-6)


def test_unbiased_layers_update_in_place_and_biased_ones_do_not_copy():
    """No autograd copy of the base output: in place (a batched GEMM node) where the output is not a view,
    out of place (an addmm node, not CopySlices/AsStrided) where it is (a biased linear's output)."""
    _, fused = lora_pair()
    fuse_lora_linears(fused)
    x = torch.randn(3, 5, 24, requires_grad=True)
    layers = fused.base_model.model
    assert layers.down_proj(torch.randn(3, 5, 32)).grad_fn.name() == 'BaddbmmBackward0'
    assert layers.q_proj(x).grad_fn.name() in ('ViewBackward0', 'UnsafeViewBackward0')
    assert layers.q_proj(x).grad_fn.next_functions[0][0].name() == 'AddmmBackward0'


def test_fused_changes_the_output_like_the_adapter_does():
    """The check above must be able to fail: without the adapter's update the output differs."""
    vanilla, fused = lora_pair()
    fuse_lora_linears(fused)
    x = torch.randn(2, 24)
    with fused.disable_adapter():
        base = fused(x)
    assert (fused(x) - base).abs().max() > 1e-3
    torch.testing.assert_close(fused(x), vanilla(x), rtol=1e-5, atol=1e-6)


def test_bf16_base_with_fp32_adapters_keeps_fp32_grads():
    """Mixed precision without autocast: PEFT casts the activations up, ours casts the adapter weights down."""
    vanilla, fused = lora_pair(torch.bfloat16)
    fuse_lora_linears(fused)
    x = torch.randn(4, 24, dtype=torch.bfloat16)
    out_v, grads_v = loss_and_grads(vanilla, x)
    out_f, grads_f = loss_and_grads(fused, x)
    assert out_f.dtype == torch.bfloat16
    torch.testing.assert_close(out_f.float(), out_v.float(), rtol=2e-2, atol=2e-2)
    for name, grad in grads_f.items():
        assert grad.dtype == torch.float32, name
        assert float((grad - grads_v[name]).norm() / grads_v[name].norm()) < 3e-2, name


def test_adapter_files_and_merge_are_plain_lora(tmp_path):
    vanilla, fused = lora_pair()
    fuse_lora_linears(fused)
    x = torch.randn(2, 24)
    expected = fused(x).detach()
    fused.save_pretrained(tmp_path / 'fused')
    vanilla.save_pretrained(tmp_path / 'vanilla')
    assert sorted(p.name for p in (tmp_path / 'fused').iterdir()) == sorted(p.name for p in (tmp_path / 'vanilla').iterdir())
    merged = copy.deepcopy(fused).merge_and_unload()           # through the variant's merge
    torch.testing.assert_close(merged(x), expected, rtol=1e-5, atol=1e-6)
    fused.merge_adapter()
    fused.unmerge_adapter()
    torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-6)


def test_other_variants_are_left_alone():
    _, dora = lora_pair(use_dora=True)
    assert fuse_lora_linears(dora) == 0
    assert not any(isinstance(v, FusedAddmmLora) for m in dora.modules() for v in getattr(m, 'lora_variant', {}).values())


def test_zero3_partitioned_adapters_keep_peft_forward():
    """DeepSpeed ZeRO-3 marks partitioned parameters with `ds_id` and gathers them only when their module runs."""
    _, model = lora_pair()
    layer = model.base_model.model.q_proj
    layer.lora_A['default'].weight.ds_id = 7          # the attribute ZeRO-3 sets; partitioning itself needs GPUs
    assert fuse_lora_linears(model) == 1              # only down_proj
    assert layer.lora_variant == {} and layer.cast_input_dtype_enabled


@pytest.mark.parametrize('times', [1, 2])
def test_idempotent(times):
    _, fused = lora_pair()
    counts = [fuse_lora_linears(fused) for _ in range(times)]
    assert counts == [2] * times
