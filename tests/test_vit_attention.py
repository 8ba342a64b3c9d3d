"""CPU checks of the packed ViT attention (tests/test_vit_attention.py).

The packed implementation must give the same vision features as transformers' per-window sdpa loop, on images
whose grids leave partial windows at the edges (unequal window lengths) and with several images per batch.
"""
import pytest
import torch

from training import vit_attention


def tiny_vision_tower():
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel
    cfg = Qwen2_5_VLConfig(vision_config=dict(depth=3, hidden_size=64, num_heads=2, intermediate_size=96,
                                              out_hidden_size=48, patch_size=14, spatial_merge_size=2,
                                              temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1]))
    vcfg = cfg.vision_config
    vcfg._attn_implementation_internal = 'sdpa'
    torch.manual_seed(0)
    return Qwen2_5_VisionTransformerPretrainedModel._from_config(vcfg, dtype=torch.float32).eval()


@pytest.mark.parametrize('grids', [[[1, 36, 44]], [[1, 36, 44], [1, 20, 26], [1, 8, 8]]])
def test_packed_matches_window_loop(grids, monkeypatch):
    vit = tiny_vision_tower()
    grid = torch.tensor(grids)
    pixels = torch.randn(int(grid.prod(-1).sum()), 3 * 2 * 14 * 14)
    with torch.no_grad():
        reference = vit(pixels, grid_thw=grid).pooler_output
        monkeypatch.setenv('MEDICO_VIT_KERNEL', 'padded')
        assert vit_attention.use_packed_vit_attention(vit) == 'padded'
        assert vit.config._attn_implementation == vit_attention.NAME
        packed = vit(pixels, grid_thw=grid).pooler_output
    err = float((packed - reference).norm() / reference.norm())
    assert err < 1e-5, err


def test_padded_kernel_keeps_windows_apart():
    """Each window attends only to itself: a window's output must not change when another window changes."""
    torch.manual_seed(1)
    q, k, v = (torch.randn(10, 2, 8) for _ in range(3))
    cu = torch.tensor([0, 4, 7, 10], dtype=torch.int32)
    out = vit_attention._padded(q, k, v, cu, 4, 8 ** -0.5)
    k2, v2 = k.clone(), v.clone()
    k2[7:], v2[7:] = torch.randn(3, 2, 8), torch.randn(3, 2, 8)
    out2 = vit_attention._padded(q, k2, v2, cu, 4, 8 ** -0.5)
    assert torch.allclose(out[:7], out2[:7]) and not torch.allclose(out[7:], out2[7:])
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):  # equals plain attention inside each window
        ref = torch.nn.functional.scaled_dot_product_attention(q[a:b].transpose(0, 1), k[a:b].transpose(0, 1),
                                                               v[a:b].transpose(0, 1)).transpose(0, 1)
        assert torch.allclose(out[a:b], ref, atol=1e-6)


def test_no_vision_tower_is_an_error():
    with pytest.raises(ValueError, match='no Qwen2.5-VL vision tower'):
        vit_attention.vision_tower(torch.nn.Linear(2, 2))


def test_plugin_leaves_other_models_alone(capsys):
    """The `vit_packed` callback is harmless on a model without a Qwen2.5-VL vision tower (e.g. Qwen3-VL)."""
    from types import SimpleNamespace

    from training.swift_plugin import PackedVitAttention
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    PackedVitAttention(None, SimpleNamespace(model=model)).on_train_begin(None, None, None)
    assert 'vision attention unchanged' in capsys.readouterr().out


def test_fp32_inputs_never_reach_the_half_precision_flash_kernel(monkeypatch):
    """An fp32 model (the one bench/gpu/learned.sh trains from scratch, served by make infer's transformers backend
    on a GPU) must not call varlen_attn, whose flash kernels take fp16/bf16 only: it takes the padded path."""
    monkeypatch.setenv('MEDICO_VIT_KERNEL', 'varlen')   # what a CUDA machine chooses
    vit = tiny_vision_tower()
    grid = torch.tensor([[1, 20, 26]])
    pixels = torch.randn(int(grid.prod(-1).sum()), 3 * 2 * 14 * 14)
    with torch.no_grad():
        reference = vit(pixels, grid_thw=grid).pooler_output
        vit_attention.use_packed_vit_attention(vit)
        packed = vit(pixels, grid_thw=grid).pooler_output   # on the old code: varlen_attn on fp32 CPU tensors, error
    assert float((packed - reference).norm() / reference.norm()) < 1e-5
