"""Every recipe family runs: Qwen3-VL and Gemma 3 (MedGemma) beside Qwen2.5-VL.

- Grounding boxes come back to the original image through each family's own resize and coordinates: the real
  output text format of each family, the resize its real processor (through ms-swift's template) applies, our
  parser and mapping. Tiny random models never emit boxes, so the text is written here; the resize is the model's.
- Grounding training rows of the 0..1000 families come back to their source box through the same mapping.
- End to end (slow): the tiny model of each family goes through `make sft`, `make export` (merged == adapter),
  `make infer` (transformers), `make score`, `make submit-task1 DRY_RUN=1` and `make submit-task2 DRY_RUN=1`.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from common.io import read_jsonl
from common.model_family import family
from common.prompts import grounding_prompt
from common.qwen_vision import use_image_budget
from data_prep import grounding_data as gd
from explain import grounding
from submission.patch_check import check_script
from tests.conftest import REPO

ORIGINAL_WH = (1000, 800)
TRUTH = [200, 160, 500, 480]           # the polyp's box in original pixels
TRUTH_1000 = [200, 200, 500, 600]      # the same box in 0..1000 relative coordinates
MAX_PIXELS = 50176                     # Qwen: 64 tokens of 28 x 28 px (Qwen2.5-VL), 49 tokens of 32 x 32 px (Qwen3-VL)

STAGE_FACTS = """
import json, sys
from PIL import Image
from swift import InferRequest
from explain import stages
from explain.scoring import ScoreItem, answer_ids, end_of_turn, messages_for
model, frame, output = sys.argv[1:4]
s = stages.Settings(model=model, backend='transformers', attention='stock')
engines = stages.Engines(s)
family = stages.model_family(s)
width, height = Image.open(frame).size
row = {'val_id': 0, 'question': 'Where is the polyp?', 'answer': 'A polyp in the centre.', 'image': frame,
       'width': width, 'height': height}
resized = engines.resized_size(frame, (width, height))
record = stages.grounding_record(row, output, resized, family)   # the grounding stage's mapping of that output
backend = engines.generator()
backend.max_new_tokens, backend.logprobs = 1, True
gen = backend.answer([{'messages': messages_for(row['question'], None), 'images': [frame]}])[0]
scorer = engines.scorer()
scored = scorer.score([ScoreItem(frame, row['question'], gen['prediction'])])[0]
single = len(answer_ids(scorer.tokenizer, gen['prediction'])) == 1
template = backend.engine.template   # VllmScorer's prompt: in vLLM mode it ends with the answer and the turn's end
template.set_mode('vllm')
ids = answer_ids(scorer.tokenizer, 'A polyp.') + [scorer.eos_id]
messages = messages_for(row['question'], None) + [{'role': 'assistant',
                                                     'content': 'A polyp.' + end_of_turn(template)}]
try:
    tail = list(template.encode(InferRequest(messages=messages, images=[frame]))['input_ids'][-len(ids):]) == ids
except Exception as e:   # a template that cannot encode in vLLM mode without vLLM: say so
    tail = repr(e)
print(json.dumps({'family': family, 'resized': resized, 'record': record,
                  'prompt': stages._grounding_prompt(row, family),
                  'eos': scorer.tokenizer.convert_ids_to_tokens(scorer.eos_id), 'generated': gen['token_logprobs'],
                  'scored': scored.token_logprobs[:1] if single else None, 'vllm_tail': tail}))
"""


def model_output(family_name: str, resized_wh: tuple[int, int]) -> str:
    """What a model of this family answers to the grounding prompt when it finds TRUTH, in its own format."""
    if family_name == 'qwen2_5_vl':   # Qwen2.5-VL cookbook: fenced JSON list, absolute pixels of the resized image
        rw, rh = resized_wh
        ow, oh = ORIGINAL_WH
        x1, y1, x2, y2 = TRUTH
        coords = [round(x1 * rw / ow), round(y1 * rh / oh), round(x2 * rw / ow), round(y2 * rh / oh)]
        return f'```json\n[\n\t{{"bbox_2d": {coords}, "label": "polyp"}}\n]\n```'
    if family_name == 'qwen3_vl':     # Qwen3-VL: the same fenced JSON, 0..1000 relative coordinates
        return f'```json\n[\n\t{{"bbox_2d": {TRUTH_1000}, "label": "polyp"}}\n]\n```'
    return json.dumps({'bbox_2d': TRUTH_1000, 'label': 'polyp'})   # Gemma 3: what our prompt and rows teach it


@pytest.fixture(scope='module')
def frame(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('frame') / 'frame.jpg'
    image = Image.new('RGB', ORIGINAL_WH, (180, 70, 80))
    ImageDraw.Draw(image).ellipse(TRUTH, fill=(235, 200, 130))
    image.save(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize('family_name, resized_wh', [('qwen2_5_vl', (224, 196)), ('qwen3_vl', (224, 192)),
                                                     ('gemma3', (112, 112))])
def test_boxes_map_back_through_each_familys_resize(family_name, resized_wh, tiny_model_of, frame):
    """Subtask 2's grounding stage on each family's model: its real resize (the processor through ms-swift's
    template, in a fresh process under the image budget as Task 2 runs it) and the family's real output format give
    back the box in original pixels; the prompt states the family's convention; the scorers end an answer with the
    family's own turn token (also in vLLM mode) and score a generated token as ms-swift generated it."""
    env = dict(os.environ)
    use_image_budget(MAX_PIXELS, env)
    output = model_output(family_name, resized_wh)
    proc = subprocess.run([sys.executable, '-c', STAGE_FACTS, str(tiny_model_of(family_name)), str(frame), output],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert facts['family'] == family_name
    assert tuple(facts['resized']) == resized_wh                     # 28 px grid, 32 px grid, Gemma's fixed square
    assert facts['prompt'] == grounding_prompt('polyp', family_name)
    assert facts['eos'] == family(family_name).end_of_turn          # <|im_end|> for Qwen, <end_of_turn> for Gemma
    assert facts['vllm_tail'] is True, facts['vllm_tail']
    if facts['scored'] is not None:
        assert facts['scored'] == pytest.approx(facts['generated'], abs=1e-3)

    record = facts['record']
    assert record['box_stats'] == {'outputs': 1, 'kept': 1, 'unparseable': 0, 'out_of_bounds': 0}
    box = record['boxes'][0]['box']
    tolerance = 5 if family_name == 'qwen2_5_vl' else 1   # 1000 / 224 original pixels per resized pixel
    assert all(abs(a - b) <= tolerance for a, b in zip(box, TRUTH)), (box, TRUTH)
    if family_name != 'qwen2_5_vl':   # read as Qwen2.5-VL pixels, the same answer lands far off (the family matters)
        wrong, _ = grounding.boxes_from_output(output, resized_wh, ORIGINAL_WH, 'qwen2_5_vl')
        assert not wrong or grounding.iou(wrong[0]['box'], TRUTH) < 0.2


# ---------------------------------------------------------------- the H200 shapes (no weights allocated)
@pytest.mark.parametrize('arch, counts', [
    ('qwen2_5_vl', dict(total=8_292_166_656, llm_linear=7_070_285_824, vit_blocks_linear=629_964_800,
                        vit_patch_embed=1_505_280, vit_merger_linear=44_564_480)),
    ('qwen3_vl', dict(total=8_767_123_696, llm_linear=7_568_097_280, vit_blocks_linear=411_070_464,
                      vit_patch_embed=1_769_472, vit_merger_linear=160_432_128)),
    ('gemma3', dict(total=4_300_079_472, llm_linear=3_879_895_040, vit_blocks_linear=411_070_464,
                    vit_patch_embed=677_376, vit_merger_linear=2_949_120)),
])
def test_real_size_shapes_have_the_documented_parameter_counts(arch, counts):
    """The shapes bench.gpu.build_model builds for the H200 runs (Qwen2.5-VL-7B, Qwen3-VL-8B, MedGemma-4B), built on
    the meta device: the totals and the matmul weights of the MFU formula docs/benchmarks.md quotes."""
    import torch

    from bench.gpu.build_model import build, param_counts
    cls, cfg, _, _ = build(arch, False, False)
    with torch.device('meta'):
        model = cls._from_config(cfg, dtype=torch.bfloat16)
    got = param_counts(model, arch)
    assert {k: got[k] for k in counts} == counts
    assert got['merger_tokens_per_patch'] == (1 / 16 if arch == 'gemma3' else 1 / 4)


def test_relative_prompt_and_training_rows_round_trip(tmp_path):
    """`make grounding-data ARCH=gemma3|qwen3_vl` rows: the prompt states the 0..1000 convention, the answer is the
    mask's box in it, and explain.grounding maps that answer back to the mask's box."""
    seg = tmp_path / 'kvasir-seg'
    (seg / 'images').mkdir(parents=True)
    (seg / 'masks').mkdir()
    Image.new('RGB', ORIGINAL_WH, (150, 60, 70)).save(seg / 'images' / 'p1.jpg')
    mask = Image.new('L', ORIGINAL_WH, 0)
    ImageDraw.Draw(mask).rectangle([TRUTH[0], TRUTH[1], TRUTH[2] - 1, TRUTH[3] - 1], fill=255)
    mask.save(seg / 'masks' / 'p1.png')   # lossless: the mask's box is exactly TRUTH
    for family_name in ('qwen3_vl', 'gemma3'):
        out = tmp_path / f'{family_name}.jsonl'
        gd.build(seg, None, out, family_name=family_name)
        (row,) = read_jsonl(out)
        prompt = grounding_prompt('polyp', family_name)
        assert row['messages'][0]['content'] == '<image>' + prompt and 'from 0 to 1000' in prompt
        assert 'objects' not in row
        answer = json.loads(row['messages'][1]['content'])
        assert answer == {'bbox_2d': TRUTH_1000, 'label': 'polyp'}
        boxes, _ = grounding.boxes_from_output(row['messages'][1]['content'], (112, 112), ORIGINAL_WH, family_name)
        assert boxes == [{'box': TRUTH, 'label': 'polyp'}]
    # Qwen2.5-VL rows are unchanged: ms-swift's placeholders and original-pixel objects, the cookbook prompt
    gd.build(seg, None, tmp_path / 'q25.jsonl')
    (row,) = read_jsonl(tmp_path / 'q25.jsonl')
    assert row['objects']['bbox'] == [TRUTH] and '<bbox>' in row['messages'][1]['content']
    assert '1000' not in row['messages'][0]['content']


# ---------------------------------------------------------------- end to end, through the Makefile
def make(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """`make ARGS` on this interpreter (SETUP=none: no venv install), CPU only, the recipe's own image budget."""
    env = {**os.environ, 'CUDA_VISIBLE_DEVICES': ''}
    for name in ('MAX_PIXELS', 'IMAGE_MAX_TOKEN_NUM', 'IMAGE_MIN_TOKEN_NUM', 'NPROC_PER_NODE'):
        env.pop(name, None)
    proc = subprocess.run(['make', '--no-print-directory', 'SETUP=none', f'PY={sys.executable}', *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f'make {shlex.join(args)}:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}'
    return proc


@pytest.fixture(scope='module')
def small_dataset(tmp_path_factory) -> Path:
    """8 synthetic images: 33 train, 6 val, 9 test (= task 1 public) and 3 task 2 rows: quick on 2 cores."""
    out = tmp_path_factory.mktemp('families') / 'synthetic'
    make('synthetic', f'OUT={out}', 'IMAGES_N=8')
    return out


@pytest.fixture(scope='module')
def prepared(small_dataset) -> Path:
    data = small_dataset.parent / 'prepared'
    make('prepare', f'DATASET={small_dataset}', f'DATA={data}', 'AUG_K=1')
    return data


@pytest.mark.slow
@pytest.mark.parametrize('arch', ['qwen3_vl', 'gemma3'])
def test_whole_cpu_path(arch, tiny_model_of, prepared, small_dataset, tmp_path):
    fam = family(arch)
    run, preds, build = tmp_path / 'run', tmp_path / 'preds', tmp_path / 'submission'
    common = [f'DATA={prepared}', f'RUN={run}', 'NAME=fam', 'MAX_NEW_TOKENS=4', f'SUBMISSION_BUILD={build}']

    # sft: the family's CPU recipe, 2 LoRA steps; the vision-tower callbacks find no Qwen2.5-VL tower and say so
    sft = make('sft', f'RECIPE=recipes/tiny/{arch}_lora_cpu.args', f'MODEL={tiny_model_of(arch)}', *common,
               'SFT_ARGS=--max_steps 2 --eval_steps 2 --save_steps 2')
    log = sft.stdout + sft.stderr
    for callback, what in (('vit_packed', 'vision attention'), ('vit_mlp_pad', 'vision MLP'),
                           ('vit_rope_compiled', 'vision rotary embedding')):
        assert f'[training] {callback}: no Qwen2.5-VL vision tower in this {fam.config_model_type} model' in log
        assert f'{what} unchanged' in log
    assert '[training] lora_fused: 14 LoRA linears use the fused addmm forward' in log
    adapter = json.loads(next(run.glob('v0-*/checkpoint-2/adapter_config.json')).read_text())
    assert 'language_model' in adapter['target_modules']

    # export: merged, and the merged model answers like base + adapter on the check samples (up to 4 val rows)
    export = make('export', *common)
    checked = min(4, len(read_jsonl(prepared / 'swift' / 'val-original.jsonl')))
    assert export.stdout.count(': same (max log-prob gap') == checked and 'DIFFERENT' not in export.stdout
    merged = run / 'merged'
    assert json.loads((merged / 'config.json').read_text())['model_type'] == fam.config_model_type

    # infer (transformers) + score, on the Task 2 questions and the labelled val split (calibration)
    pred, val = preds / 'task2_val-original.jsonl', preds / 'val-original.jsonl'
    for split, out in (('task2_val-original', pred), ('val-original', val)):
        make('infer', *common, f'SPLIT={split}', f'PRED={out}', 'BACKEND=transformers', 'INFER_ARGS=--logprobs')
        rows = read_jsonl(out)
        assert len(rows) == len(read_jsonl(prepared / 'swift' / f'{split}.jsonl'))
        assert all(isinstance(r['prediction'], str) and len(r['token_logprobs']) <= 4 for r in rows)
    score = make('score', f'PRED={pred}', f'REPORT={tmp_path}/report')
    scores = json.loads(next(line for line in score.stdout.splitlines() if line.startswith('{"bleu"')))
    assert set(scores) == {'bleu', 'rouge1', 'rouge2', 'rougeL', 'meteor'}

    # submit-task1 (dry run): the generated script loads this model type, keeps the organizers' contract, ran offline
    make('submit-task1', *common, 'HUB_REPO=tester/medico-t1', 'TEAM=submission/team.demo.json',
         f'SUBMIT_DATASET={small_dataset}', 'DRY_RUN=1')
    t1 = build / 'task1' / 'fam'
    code = (t1 / 'submission_task1.py').read_text()
    assert f"MODEL_TYPE = '{fam.swift_model_type}'" in code and f"TEMPLATE_TYPE = '{fam.swift_template}'" in code
    check_script(code)
    predictions = json.loads((t1 / 'predictions_1.json').read_text())['predictions']
    assert len(predictions) == len(read_jsonl(prepared / 'swift' / 'task1_public-original.jsonl'))

    # submit-task2 (dry run): probes, the family's grounding prompt and boxes, occlusion heatmaps, confidence
    # calibrated on the val predictions, strict validation
    make('submit-task2', *common, 'HUB_REPO=tester/medico-t2', 'TEAM=submission/team.demo.json',
         f'SUBMIT_DATASET={small_dataset}', 'DRY_RUN=1', 'BACKEND=transformers', f'TASK1_PRED={pred}',
         f'CALIBRATION={val}', 'TASK2_ARGS=--grid 2 --probe-tokens 4 --grounding-tokens 8')
    t2 = build / 'task2' / 'fam'
    rows = read_jsonl(t2 / 'submission_task2.jsonl')
    assert [r['val_id'] for r in rows] == [0, 1, 2]
    for r in rows:
        assert r['textual_explanation'] and 0.0 <= r['confidence_score'] <= 1.0
        assert all((t2 / v['data']).is_file() for v in r['visual_explanation'] if v['type'] == 'heatmap')
