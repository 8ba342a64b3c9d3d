"""inference.fast_attention: the folded-GQA decode attention is the same attention as transformers' sdpa path.

Checked on random tensors against transformers' own `sdpa_attention_forward` (which repeats the KV heads), and on
the tiny real Qwen2.5-VL: greedy generation of a left-padded batch gives the same tokens and scores, and the decode
steps really went through the folded branch.
"""
import pytest
import torch

from inference import fast_attention


class Attention(torch.nn.Module):
    """What transformers' attention functions read from the calling layer."""
    def __init__(self, groups):
        super().__init__()
        self.num_key_value_groups, self.is_causal = groups, True


def padding_mask(batch, q_len, kv_len, pads):
    """Left padding: row b ignores its first pads[b] keys; causal within the last q_len positions."""
    keys = torch.arange(kv_len)
    rows = kv_len - q_len + torch.arange(q_len)
    mask = (keys[None, :] <= rows[:, None])[None, None].repeat(batch, 1, 1, 1)
    for b, p in enumerate(pads):
        mask[b, ..., :p] = False
    return mask


@pytest.mark.parametrize('q_len', [1, 3])
def test_folded_equals_sdpa_with_repeated_kv(q_len):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    torch.manual_seed(0)
    batch, kv_heads, groups, dim, kv_len = 3, 2, 4, 8, 9
    q = torch.randn(batch, kv_heads * groups, q_len, dim)
    k, v = torch.randn(batch, kv_heads, kv_len, dim), torch.randn(batch, kv_heads, kv_len, dim)
    mask = padding_mask(batch, q_len, kv_len, pads=[0, 2, 5])
    module = Attention(groups)
    want, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=dim ** -0.5)
    got, _ = fast_attention.gqa_folded_attention(module, q, k, v, mask, scaling=dim ** -0.5)
    assert got.shape == want.shape == (batch, q_len, kv_heads * groups, dim)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    # the mask matters: padded keys must not leak in
    k2 = k.clone()
    k2[2, :, :5] = 100.0
    again, _ = fast_attention.gqa_folded_attention(module, q, k2, v, mask, scaling=dim ** -0.5)
    torch.testing.assert_close(again, got)


def test_wants_fast():
    assert fast_attention.wants_fast('fast') and not fast_attention.wants_fast('stock')
    assert fast_attention.wants_fast('auto') == torch.cuda.is_available()
    with pytest.raises(ValueError, match='attention must be one of'):
        fast_attention.wants_fast('flash')


@pytest.mark.parametrize('arch', ['qwen2_5_vl', 'qwen3_vl', 'gemma3'])
def test_generation_unchanged_on_the_tiny_models(arch, tiny_model_of):
    """`make infer` uses the fast attention on GPUs for every family: same tokens and scores as stock sdpa."""
    import numpy as np
    from PIL import Image
    from transformers import AttentionInterface, AutoModelForImageTextToText, AutoProcessor
    processor = AutoProcessor.from_pretrained(tiny_model_of(arch))
    processor.tokenizer.padding_side = 'left'
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_of(arch), dtype=torch.float32,
                                                        attn_implementation='sdpa').eval()
    images = [Image.fromarray((np.random.RandomState(i).rand(120, 150, 3) * 255).astype('uint8')) for i in range(2)]
    questions = ['What is this?', 'Is there a polyp in the upper left part of this image, and how large is it?']
    texts = [processor.apply_chat_template([{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text',
                                                                                              'text': q}]}],
                                           add_generation_prompt=True, tokenize=False) for q in questions]
    batch = processor(text=texts, images=[[im] for im in images], padding=True, return_tensors='pt')
    assert (batch['attention_mask'] == 0).any(), 'the batch must be padded for the test to mean something'

    def generate():
        with torch.no_grad():
            return model.generate(**batch, max_new_tokens=10, do_sample=False, output_scores=True,
                                  return_dict_in_generate=True)

    stock = generate()
    query_lengths = []

    def counting(module, query, *args, **kwargs):
        query_lengths.append(query.shape[2])
        return fast_attention.gqa_folded_attention(module, query, *args, **kwargs)

    assert fast_attention.use_fast_attention(model).endswith(fast_attention.NAME)
    AttentionInterface.register(fast_attention.NAME, counting)
    try:
        fast = generate()
    finally:
        fast_attention.register()
    layers = model.config.text_config.num_hidden_layers
    assert query_lengths.count(1) == layers * 9   # every decode step of every layer took the folded branch
    assert torch.equal(fast.sequences, stock.sequences)
    for a, b in zip(fast.scores, stock.scores):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert model.config.vision_config._attn_implementation != fast_attention.NAME  # the ViT has its own


def test_backend_switches_attention(tiny_model_dir):
    from inference.backends import load_backend
    for choice, want in (('fast', fast_attention.NAME), ('stock', 'sdpa')):
        backend = load_backend('transformers', str(tiny_model_dir), [], max_new_tokens=4, logprobs=False,
                               attention=choice)
        models = fast_attention.text_models(backend.engine.model)
        assert [m.config._attn_implementation for m in models] == [want]
