"""Zero-padding the frozen vision MLP (training/vit_mlp_pad.py) must leave the vision features unchanged."""
import torch
from peft import LoraConfig, get_peft_model

from training.vit_mlp_pad import pad_vision_mlp


class Wrapper(torch.nn.Module):
    """A vision tower under the attribute name Qwen2.5-VL uses (`visual`), next to a small language part."""

    def __init__(self, visual):
        super().__init__()
        self.visual = visual
        self.q_proj = torch.nn.Linear(8, 8)


def tiny_tower():
    from tests.test_vit_attention import tiny_vision_tower
    return tiny_vision_tower()          # vision MLP width 96


def peft_wrapped(visual):
    model = get_peft_model(Wrapper(visual), LoraConfig(r=2, target_modules=['q_proj']))
    for p in model.base_model.model.visual.parameters():
        p.requires_grad_(False)        # freeze_vit, as in the LoRA recipes
    return model


def features(visual):
    grid = torch.tensor([[1, 36, 44], [1, 8, 8]])
    torch.manual_seed(3)
    pixels = torch.randn(int(grid.prod(-1).sum()), 3 * 2 * 14 * 14)
    with torch.no_grad():
        return visual(pixels, grid_thw=grid).pooler_output


def test_padding_is_exact():
    model = peft_wrapped(tiny_tower())
    visual = model.base_model.model.visual
    before = features(visual)
    message = pad_vision_mlp(model, multiple=64)
    assert message.startswith('3 vision MLPs padded from 96 to 128'), message
    mlp = visual.blocks[0].mlp
    assert mlp.gate_proj.weight.shape == (128, 64) and mlp.up_proj.bias.shape == (128,)
    assert mlp.down_proj.weight.shape == (64, 128) and not mlp.down_proj.weight.requires_grad
    after = features(visual)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)


def test_padding_with_nonzero_values_would_show():
    """The exactness check can fail: the padded units matter as soon as they are not zero."""
    model = peft_wrapped(tiny_tower())
    visual = model.base_model.model.visual
    before = features(visual)
    pad_vision_mlp(model, multiple=64)
    for block in visual.blocks:
        block.mlp.gate_proj.bias.data[96:] = 1.0
        block.mlp.up_proj.bias.data[96:] = 1.0
        block.mlp.down_proj.weight.data[:, 96:] = 0.5
    assert (features(visual) - before).abs().max() > 1e-2


def test_trained_or_unwrapped_towers_are_not_padded():
    visual = tiny_tower()
    assert 'not a PEFT model' in pad_vision_mlp(Wrapper(visual))
    model = get_peft_model(Wrapper(tiny_tower()), LoraConfig(r=2, target_modules=['q_proj']))
    model.base_model.model.visual.blocks[1].mlp.up_proj.weight.requires_grad_(True)
    assert 'is trained or partitioned' in pad_vision_mlp(model)
    assert model.base_model.model.visual.blocks[0].mlp.gate_proj.out_features == 96


def test_aligned_width_is_left_alone():
    model = peft_wrapped(tiny_tower())
    assert pad_vision_mlp(model, multiple=32) == 'no vision MLP to pad'
