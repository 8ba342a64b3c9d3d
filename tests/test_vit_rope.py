"""The compiled vision rotary embedding (training/vit_rope.py) equals transformers' own, and falls back cleanly."""
import torch

from training import vit_rope


def rope_inputs(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(n, 4, 16, generator=g).to(torch.bfloat16) for _ in range(2))
    cos, sin = torch.randn(n, 16, generator=g), torch.randn(n, 16, generator=g)
    return q, k, cos, sin


def test_compiled_rope_equals_eager_for_changing_patch_counts(capsys):
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as qwen
    eager = vit_rope.eager_vision_rope()
    try:
        assert 'compiled' in vit_rope.use_compiled_vision_rope()
        assert vit_rope.use_compiled_vision_rope() == 'vision rotary embedding already compiled'
        for n in (300, 517):                       # a new image size must not need a new compile to be right
            inputs = rope_inputs(n, seed=n)
            got, want = qwen.apply_rotary_pos_emb_vision(*inputs), eager(*inputs)
            assert got[0].dtype == torch.bfloat16
            assert not torch.equal(want[0], inputs[0])              # the rotation does change q
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert 'compiling failed' not in capsys.readouterr().out   # it really ran compiled, not the fallback
    finally:
        qwen.apply_rotary_pos_emb_vision = eager


def test_a_function_that_cannot_compile_falls_back_to_eager(capsys):
    def not_traceable(q, k, cos, sin):          # fullgraph=True cannot trace data-dependent Python control flow
        if float(q.float().sum()) > 1e30:
            return k, q
        return q * 2, k * 3

    rope = vit_rope._compiled_with_fallback(not_traceable)
    q, k, cos, sin = rope_inputs(8)
    out = rope(q, k, cos, sin)
    assert torch.equal(out[0], q * 2) and torch.equal(out[1], k * 3)
    assert 'compiling failed' in capsys.readouterr().out
    assert torch.equal(rope(q, k, cos, sin)[1], k * 3)          # later calls go straight to eager
