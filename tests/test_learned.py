"""The model trained from scratch on the GPU (bench/gpu/learned.sh): everything of it that runs without a GPU.

The small Qwen2.5-VL's shapes and a real forward pass, its recipe against the builder and the plugin, the training
deadline callback with transformers' own trainer state, the script's argument checks, its numbers on a hand-made work
folder where the thresholds are met, and (slow) the whole script end to end on CPU at toy size: a deadline stop, a
resumed run, every stage, the numbers and the packed results."""
from __future__ import annotations

import json
import math
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from bench.gpu.stage_times import read_stage_times
from common.errors import InputError
from tests.conftest import REPO, cpu_env, run_module
from training.recipe import load_recipe

SCRIPT = 'bench/gpu/learned.sh'
RECIPE = REPO / 'recipes/qwen2_5_vl/132M_full_scratch.args'
VARS = {'DATA': '/data', 'RUN': '/run', 'MODEL': '/model'}


# ---------------------------------------------------------------- the model
def test_small_model_shapes_and_a_real_forward_pass():
    import torch
    from PIL import Image

    from bench.gpu.build_model import build, param_counts
    cls, cfg, processor, ids = build('qwen2_5_vl', False, False, True, 100352)
    text, vision = cfg.text_config, cfg.vision_config
    assert (text.num_hidden_layers, text.hidden_size, text.intermediate_size) == (8, 512, 2048)
    assert (text.num_attention_heads, text.num_key_value_heads) == (8, 4)
    assert text.hidden_size // text.num_attention_heads == 64 == vision.hidden_size // vision.num_heads
    assert sum(text.rope_parameters['mrope_section']) == 64 // 2
    assert (vision.depth, vision.hidden_size, vision.intermediate_size, vision.out_hidden_size) == (8, 384, 1536, 512)
    assert vision.fullatt_block_indexes == [3, 7] and vision.patch_size == 14 and vision.spatial_merge_size == 2
    assert all(w % 64 == 0 for w in (text.hidden_size, text.intermediate_size, vision.hidden_size,
                                     vision.intermediate_size))   # Hopper GEMM kernels, no vit_mlp_pad
    assert text.vocab_size == 151936 and cfg.tie_word_embeddings
    assert processor.image_processor.size['longest_edge'] == 100352
    tok = processor.tokenizer   # the real Qwen tokenizer, ms-swift's hard-coded image token id
    assert tok.convert_tokens_to_ids('<|image_pad|>') == cfg.image_token_id == 151655 and len(tok) == 151665
    with torch.device('meta'):
        meta = cls._from_config(cfg, dtype=torch.float32)
    counts = param_counts(meta, 'qwen2_5_vl')
    assert counts['total'] == 131_785_600    # docs/benchmarks.md and the recipe's name say 132 M
    assert meta.lm_head.weight is meta.model.language_model.embed_tokens.weight

    torch.manual_seed(0)
    model = cls._from_config(cfg, dtype=torch.float32).eval()
    frame = Image.new('RGB', (600, 500), (205, 112, 104))
    prompt = processor.apply_chat_template([{'role': 'user', 'content': [
        {'type': 'image'}, {'type': 'text', 'text': 'How many polyps are in the image?'}]}], add_generation_prompt=True)
    enc = processor(text=[prompt], images=[frame], return_tensors='pt')
    assert enc['image_grid_thw'].tolist() == [[1, 20, 24]]   # 280 x 336 px: 120 merged image tokens
    with torch.no_grad():
        out = model(**enc, labels=enc['input_ids'])
    assert out.logits.shape[-1] == 151936
    assert abs(out.loss.item() - math.log(151936)) < 1.0   # random init: no token preferred


def test_build_model_refuses_a_small_model_of_another_family(tmp_path):
    for args, message in ((['--small', '--arch', 'qwen3_vl'], '--small is a Qwen2.5-VL size'),
                          (['--small', '--tiny'], 'not allowed with argument'),
                          (['--small', '--max-pixels', '100'], '--max-pixels')):
        proc = run_module('bench.gpu.build_model', tmp_path / 'm', *args, check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert not (tmp_path / 'm').exists()


# ---------------------------------------------------------------- the recipe
def test_the_recipe_trains_everything_from_scratch_with_the_plugin_callbacks():
    r = load_recipe(RECIPE, VARS)
    assert r.value('model') == '/model' and r.value('tuner_type') == 'full'
    assert [r.value(f'freeze_{part}') for part in ('vit', 'aligner', 'llm')] == ['false'] * 3
    assert (r.value('torch_dtype'), r.value('bf16'), r.value('fp16')) == ('float32', 'true', 'false')
    assert r.value('save_only_model') == 'false'    # a deadline stop resumes with its optimizer state
    assert r.get('dataset').values == ('/data/swift/train-original.jsonl', '/data/swift/grounding.jsonl')
    assert r.env()['QWENVL_BBOX_FORMAT'] == 'new' and r.env()['MAX_PIXELS'] == '100352'
    assert int(r.value('global_batch')) == int(r.value('per_device_train_batch_size'))   # one H200, no accumulation
    from swift.callbacks import callbacks_map
    import training.swift_plugin  # noqa: F401  (registers the callbacks, as --external_plugins does)
    callbacks = r.get('callbacks').values
    assert 'time_budget' in callbacks and all(c in callbacks_map for c in callbacks)
    assert 'vit_mlp_pad' not in callbacks and 'lora_fused' not in callbacks


# ---------------------------------------------------------------- the deadline callback
def test_time_budget_saves_and_stops_after_the_deadline_only(monkeypatch):
    from transformers import TrainerControl, TrainerState

    from training.time_budget import TimeBudget, deadline_from_env, finished
    now = [1000.0]
    callback = TimeBudget(deadline=1010.0, clock=lambda: now[0])
    state = TrainerState(global_step=5, max_steps=100)
    control = callback.on_step_end(None, state, TrainerControl())
    assert not control.should_save and not control.should_training_stop
    now[0] = 1010.0
    control = callback.on_step_end(None, state, TrainerControl())
    assert control.should_save and control.should_training_stop and callback.stopped_at == 5
    done = callback.on_step_end(None, TrainerState(global_step=100, max_steps=100), TrainerControl())
    assert not done.should_training_stop    # the last step ends the run by itself
    monkeypatch.delenv('MEDICO_TRAIN_DEADLINE', raising=False)
    unset = TimeBudget(None, None, clock=lambda: 1e12)   # as ms-swift builds it: (args, trainer)
    assert unset.deadline is None and not unset.on_step_end(None, state, TrainerControl()).should_training_stop
    monkeypatch.setenv('MEDICO_TRAIN_DEADLINE', '1500')
    assert TimeBudget(None, None).deadline == 1500.0
    assert deadline_from_env({'MEDICO_TRAIN_DEADLINE': ' 1796300000 '}) == 1796300000.0
    assert deadline_from_env({}) is None
    with pytest.raises(InputError, match='MEDICO_TRAIN_DEADLINE: must be a Unix time'):
        deadline_from_env({'MEDICO_TRAIN_DEADLINE': 'soon'})
    assert finished({'global_step': 1300, 'max_steps': 1300}) and not finished({'global_step': 7, 'max_steps': 1300})
    assert not finished({})


# ---------------------------------------------------------------- the script's argument checks
def run_script(*stages: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(['bash', SCRIPT, *stages], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize('variables, message', [
    ({'IMAGES_N': 'many'}, "IMAGES_N: must be an integer >= 2, got 'many'"),
    ({'IMAGES_N': '1'}, "IMAGES_N: must be an integer >= 2, got '1'"),
    ({'QA_PER_IMAGE': '2'}, 'QA_PER_IMAGE: must be an integer >= 3'),
    ({'BUDGET': '30'}, "BUDGET: must be an integer >= 60, got '30'"),
    ({'SFT_MAX_S': '0'}, 'SFT_MAX_S: must be an integer >= 1'),
    ({'WORKERS': '-2'}, 'WORKERS: must be an integer >= 1'),
    ({'MAX_NEW_TOKENS': '0'}, 'MAX_NEW_TOKENS: must be an integer >= 1'),
    ({'CALIBRATION_ROWS': 'all'}, 'CALIBRATION_ROWS: must be an integer >= 0'),
    ({'TEST_FRACTION': '1.5'}, "TEST_FRACTION: must be a number between 0 and 1, got '1.5'"),
    ({'TEST_FRACTION': '0'}, 'TEST_FRACTION: must be a number between 0 and 1'),
    ({'BACKEND': 'tensorrt'}, "BACKEND: must be transformers, vllm or auto, got 'tensorrt'"),
    ({'SIZE': '7B'}, "SIZE: must be small, micro or tiny, got '7B'"),
    ({'DEVICE': 'tpu'}, "DEVICE: must be cuda or cpu, got 'tpu'"),
    ({'RECIPE': 'recipes/qwen2_5_vl/nope.args'}, "RECIPE: no such recipe file: 'recipes/qwen2_5_vl/nope.args'"),
    ({'PY': '/no/such/python'}, "PY: no such Python: '/no/such/python'"),
    ({'STACK': '/no/such/wheels'}, "STACK: no such wheel folder: '/no/such/wheels'"),
    ({'MAX_PIXELS': '100'}, "MAX_PIXELS: must be an integer >= 3136, got '100'"),
])
def test_bad_variables_are_one_line_errors_before_anything_runs(variables, message, tmp_path):
    work = tmp_path / 'w'
    env = {**cpu_env(), 'W': str(work), 'PY': str(Path(os.sys.executable)), **variables}
    proc = run_script(env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'error: {SCRIPT}: {message}') and not proc.stdout, lines
    assert not work.exists()   # nothing made, nothing run


def test_unknown_stage_and_a_recipe_without_an_image_budget(tmp_path):
    env = {**cpu_env(), 'W': str(tmp_path / 'w'), 'PY': os.sys.executable}
    proc = run_script('data', 'trian', env=env)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {SCRIPT}: stage: unknown stage 'trian' (stages: ")
    recipe = tmp_path / 'r.args'
    recipe.write_text('# CPU\n--model ${MODEL}\n')
    proc = run_script(env={**env, 'RECIPE': str(recipe)})
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f'error: {SCRIPT}: RECIPE: sets no MAX_PIXELS (--env MAX_PIXELS=N): give MAX_PIXELS')
    recipe.write_text('# CPU\n--model ${NOT_SET_ANYWHERE}\n')
    proc = run_script(env={**env, 'RECIPE': str(recipe)})
    assert proc.returncode == 2 and 'NOT_SET_ANYWHERE' in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / 'w').exists()


def test_vllm_backend_is_refused_only_while_a_stage_needing_it_is_left(tmp_path):
    """vLLM is not installed on the CPU test machine (the GPU set only)."""
    pytest.importorskip('swift')
    try:
        import vllm  # noqa: F401
        pytest.skip('vLLM is installed here')
    except ImportError:
        pass
    work = tmp_path / 'w'
    env = {**cpu_env(), 'W': str(work), 'PY': os.sys.executable, 'BACKEND': 'vllm'}
    proc = run_script('untrained', env=env)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        f"error: {SCRIPT}: BACKEND: vllm is not importable by '{os.sys.executable}' (install the vLLM kit, or "
        'BACKEND=transformers)')
    (work / 'state' / 'untrained.done').touch()   # done already: nothing left that needs vLLM
    proc = run_script('untrained', env=env)
    assert proc.returncode == 0 and 'skip untrained (done)' in proc.stdout, proc.stderr


# ---------------------------------------------------------------- the numbers, from a hand-made work folder
# Test-subset rows as make infer / make baseline write them (data_prep.to_swift's sidecar + prediction): the learned
# model answers the count questions word for word and the instrument one wrongly, the class prior the reverse.
TEST_ROWS = [('how many polyps are visible?', 'polyp_count', 'three polyps'),
             ('how many polyps are there?', 'polyp_count', 'one polyp'),
             ('count the polyps', 'polyp_count', 'two polyps'),
             ('is an instrument present?', 'instrument_presence', 'yes instrument present')]
WRONG = 'zebra'   # shares no word with any reference


def _prediction_rows(predict) -> list[dict]:
    return [{'img_id': f'img{i}', 'question': q, 'question_class': [c], 'complexity': 1, 'split': 'task1_public',
             'setting': 'original', 'reference': ref, 'image': f'/data/images/original/img{i}.jpg', 'index': i,
             'prediction': predict(c, ref)} for i, (q, c, ref) in enumerate(TEST_ROWS)]


def _task2_build(work: Path, synthetic_dataset: Path, rows_with_an_extra_box: int) -> int:
    """submission/task2/learned as make submit-task2 leaves it (submission lines, report/report.json with the
    geometry evaluate_geometry computes on them): every polyp frame with its exact box, the first
    `rows_with_an_extra_box` of them also with a 2 x 2 px box in the corner, and one false-positive box on a frame
    without a polyp. Returns the number of polyp rows."""
    from common.io import read_jsonl, write_json, write_jsonl
    from explain.confidence import calibration_report
    from explain.pipeline import evaluate_geometry, true_boxes
    scenes = {g['img_id']: g for g in read_jsonl(synthetic_dataset / 'geometry.jsonl')}
    question = 'Where in the image is the polyp?'
    with_polyps = [g for g in scenes.values() if g['polyps']]
    without = next(g for g in scenes.values() if not g['polyps'])
    boxes = [true_boxes(g, question)[:1] + [[0, 0, 2, 2]] * (i < rows_with_an_extra_box)
             for i, g in enumerate(with_polyps)]
    lines = []
    for val_id, (g, data) in enumerate([*zip(with_polyps, boxes), (without, [[1, 1, 20, 20]])]):
        lines.append({'val_id': val_id, 'img_id': g['img_id'], 'question': question, 'answer': 'upper-left',
                      'textual_explanation': 'The polyp lies at the upper-left.', 'confidence_score': 0.5,
                      'visual_explanation': [{'type': 'bounding_box', 'data': data, 'description': 'Box(es).'}]})
    build = work / 'submission' / 'task2' / 'learned'
    write_jsonl(build / 'submission_task2.jsonl', lines)
    _, calibration, _ = calibration_report([0.9, 0.8, 0.3, 0.6], [1, 1, 0, 0])
    kept = sum(len(v['data']) for line in lines for v in line['visual_explanation'])
    write_json(build / 'report' / 'report.json', {
        'rows': len(lines), 'boxes': {'outputs': len(lines), 'kept': kept, 'unparseable': 0, 'out_of_bounds': 0},
        'calibration': calibration, 'geometry': evaluate_geometry(lines, scenes, lambda val_id: None)})
    return len(with_polyps)


def test_numbers_of_a_model_that_learned(tmp_path, synthetic_dataset):
    """learned_numbers on a work folder where the model beat the baselines: both thresholds met with their numbers,
    the per-class margins, and the parts that did not run reported as missing with the file looked for. The box
    threshold counts every emitted box: extra boxes and a box where nothing is pull it down, the per-row share not."""
    from bench.gpu import learned_numbers
    from common.io import write_jsonl
    work, out = tmp_path / 'w', tmp_path / 'results'
    preds = work / 'preds'
    write_jsonl(preds / 'learned' / 'task1_public-original.jsonl',
                _prediction_rows(lambda c, ref: ref if c == 'polyp_count' else WRONG))
    write_jsonl(preds / 'untrained' / 'task1_public-original.jsonl', _prediction_rows(lambda c, ref: WRONG))
    write_jsonl(preds / 'baseline' / 'nearest_question.jsonl', _prediction_rows(lambda c, ref: WRONG))
    write_jsonl(preds / 'baseline' / 'class_prior.jsonl',
                _prediction_rows(lambda c, ref: ref if c == 'instrument_presence' else WRONG))
    write_jsonl(work / 'prepared' / 'swift' / 'task1_public-original.jsonl', [{'messages': []}] * len(TEST_ROWS))
    n = _task2_build(work, synthetic_dataset, rows_with_an_extra_box=1)   # n exact boxes of n + 2 emitted
    assert n >= 2
    out.mkdir()
    (out / 'stage_times.tsv').write_text('stage\tseconds\texit_code\tinvocation\tstart\tend\tfresh\n'
                                         'data\t12\t0\t1700000000\t1700000001\t1700000013\t1\n'
                                         'sft\t300\t3\t1700000000\t1700000013\t1700000313\t1\n'
                                         'sft\t200\t0\t1700000600\t1700000601\t1700000801\t0\n')

    assert learned_numbers.main(['--work', str(work), '--out', str(out)]) == 0
    r = json.loads((out / 'learned.json').read_text())
    text = r['text']
    assert set(text['runs']) == {'learned', 'untrained', 'baseline nearest_question', 'baseline class_prior'}
    assert text['missing'] == {
        'learned (augmented images)': str(preds / 'learned' / 'task1_public-augmented.jsonl')}
    c = text['text_criterion']
    assert c['best_baseline'] == 'baseline class_prior' and c['threshold'] == 0.10
    assert c['rougeL_margin'] >= 0.10 and c['met'] is True
    assert text['classes'] == {
        'polyp_count': {'n': 3, 'learned': 1.0, 'best_baseline': 0.0, 'untrained': 0.0, 'margin': 1.0},
        'instrument_presence': {'n': 1, 'learned': 0.0, 'best_baseline': 1.0, 'untrained': 0.0, 'margin': -1.0}}
    assert text['learned_classes'] == ['polyp_count']

    s2 = r['subtask2']
    assert s2['rows'] == s2['rows_with_box'] == n + 1 and s2['share_with_box'] == 1.0
    assert s2['geometry']['iou_at_0_5'] == 1.0 and s2['geometry']['rows_without_truth_with_box'] == 1
    assert s2['box_criterion'] == {'emitted_box_iou_at_0_5': pytest.approx(n / (n + 2)),
                                   'emitted_boxes': n + 2, 'threshold': 0.5, 'met': True}
    assert 'reliability_diagram' not in s2 and not (out / 'reliability.png').exists()   # none was drawn
    assert s2['calibration']['before']['n'] == 4

    assert r['training'] == {'missing': f'{work / "run"}: no v*/logging.jsonl yet (train first: make sft)'}
    assert r['data'] == {'task1_public-original': len(TEST_ROWS)}   # the splits not written are left out
    assert r['stage_times']['stages'] == {'data': {'seconds': 12, 'runs': 1, 'last_exit': 0},
                                          'sft': {'seconds': 500, 'runs': 2, 'last_exit': 0}}
    assert r['stage_times']['invocations'] == 2
    md = (out / 'learned.md').read_text()
    assert f'Training: not run ({work / "run"}: no v*/logging.jsonl yet' in md
    assert f'| learned (augmented images) | not run ({preds / "learned" / "task1_public-augmented.jsonl"}) |' in md
    assert '**Text threshold (ROUGE-L >= best blind baseline + 0.1): met** — margin +' in md
    assert f'**Box threshold (>= 50% of emitted boxes at IoU >= 0.5): met** — {n / (n + 2):.4f} of {n + 2} ' \
           'emitted boxes.' in md
    assert '| polyp_count | 3 | 1.0000 | 0.0000 | 0.0000 | +1.0000 |' in md
    assert 'Classes at least 0.1 above the best baseline: polyp_count.' in md

    # a corner box on every row: each row still has its exact box (per-row share 1.0), the emitted boxes fall below half
    _task2_build(work, synthetic_dataset, rows_with_an_extra_box=n)
    s2 = learned_numbers.subtask2(work, out)
    assert s2['geometry']['iou_at_0_5'] == 1.0
    assert s2['box_criterion'] == {'emitted_box_iou_at_0_5': pytest.approx(n / (2 * n + 1)),
                                   'emitted_boxes': 2 * n + 1, 'threshold': 0.5, 'met': False}
    # nothing built: the part is missing, with the file looked for
    assert learned_numbers.subtask2(tmp_path / 'empty', out) == {
        'missing': str(tmp_path / 'empty' / 'submission' / 'task2' / 'learned' / 'report' / 'report.json')}


# ---------------------------------------------------------------- the whole script, toy size, on CPU
TOY_RECIPE = """# CPU: learned.sh's plumbing at toy size (the real recipe with CPU precision, tiny batches, a few steps)
@recipes/qwen2_5_vl/132M_full_scratch.args
@swift_args/precision/fp32_cpu.args
--bf16 false
--tf32 false
--use_liger_kernel false
--callbacks vit_packed time_budget
--env MAX_PIXELS=25088
--max_steps 3
--global_batch 2
--per_device_train_batch_size 2
--per_device_eval_batch_size 2
--eval_steps 3
--save_steps 3
--logging_steps 1
"""


@pytest.mark.slow
def test_the_whole_script_on_cpu_at_toy_size(tmp_path):
    """A micro model, 20 synthetic frames, 3 training steps, the transformers backend: the first invocation stops
    training at its deadline (exit 3, a checkpoint at step 1), the second resumes and runs every other stage, the
    third finds nothing left to do."""
    recipe = tmp_path / 'toy.args'
    recipe.write_text(TOY_RECIPE)
    work, out = tmp_path / 'w', tmp_path / 'out'
    out.mkdir()
    env = {**cpu_env(), 'W': str(work), 'OUT': str(out), 'PY': os.sys.executable, 'BUDGET': '100000',
           'SIZE': 'micro', 'DEVICE': 'cpu', 'RECIPE': str(recipe), 'IMAGES_N': '20', 'QA_PER_IMAGE': '3',
           'WORKERS': '2', 'MAX_NEW_TOKENS': '8', 'CALIBRATION_ROWS': '0',
           'TASK2_ARGS': '--limit 4 --grid 2 --probe-tokens 8 --grounding-tokens 16'}
    first = run_script(env={**env, 'SFT_MAX_S': '1'}, timeout=1200)
    assert first.returncode == 3, first.stdout[-3000:] + first.stderr[-3000:]
    assert 'sft stopped at the deadline' in first.stdout and 'deadline reached at step 1 of 3' in first.stdout
    assert not (work / 'state' / 'sft.done').exists() and (work / 'state' / 'untrained.done').exists()
    ck = sorted(work.glob('run/v*/checkpoint-1'))
    assert ck and (ck[0] / 'optimizer.pt').is_file()    # resumable with the optimizer's state

    second = run_script(env=env, timeout=1800)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    for stage in ('data', 'prepare', 'grounding', 'model', 'untrained'):   # baseline comes after inference
        assert f'skip {stage} (done)' in second.stdout
    assert 'at step 3 of 3' in second.stdout
    assert (work / 'run' / 'merged' / 'model.safetensors').is_file()

    results = json.loads((work / 'results' / 'learned.json').read_text())
    t = results['training']
    # eval before the first step; the resumed run evaluates again at its start (step 1), where the curve joins it
    assert t['steps'] == 3 and t['resumed_at'] == [1] and t['eval_loss'][0][0] == 0
    assert abs(t['eval_loss'][0][1] - math.log(151936)) < 1.0
    runs = results['text']['runs']
    assert set(runs) == {'learned', 'learned (augmented images)', 'untrained', 'baseline nearest_question',
                         'baseline class_prior'}
    assert all(r['overall']['n'] == runs['learned']['overall']['n'] > 0 and r['by_class'] for r in runs.values())
    criterion = results['text']['text_criterion']
    assert criterion['met'] is False and criterion['rougeL_margin'] < 0   # 3 steps teach nothing: said, not hidden
    s2 = results['subtask2']
    assert s2['rows'] == min(4, results['data']['task2_val-original']) > 0
    assert s2['geometry']['rows_with_truth'] >= 1 and s2['geometry']['mask_rows'] >= 1
    assert s2['calibration']['before']['ece'] is not None and s2['reliability_diagram'] == 'reliability.png'
    times = results['stage_times']['stages']
    assert set(times) >= {'data', 'prepare', 'grounding', 'model', 'baseline', 'untrained', 'sft', 'export',
                          'infer_test', 'infer_test_aug', 'infer_task2', 'infer_val', 'score', 'submit2'}
    assert times['sft']['runs'] == 2 and results['stage_times']['invocations'] == 2
    sft_runs = [t for t in read_stage_times(work / 'results' / 'stage_times.tsv') if t['stage'] == 'sft']
    assert [(t['rc'], t['fresh']) for t in sft_runs] == [(3, True), (0, False)]   # the second call continued it
    assert (work / 'logs' / 'sft.log').read_text().count('=== invocation ') == 2   # both calls' training, in order
    md = (work / 'results' / 'learned.md').read_text()
    assert '**Text threshold' in md and 'not met' in md and '| exact masks |' in md
    with tarfile.open(out / 'learned_results.tgz') as tar:
        names = set(tar.getnames())
    assert {'results/learned.md', 'results/learned.json', 'results/loss_curve.png', 'results/reliability.png',
            'results/stage_times.tsv', 'results/logs/sft.log'} <= names

    third = run_script(env=env, timeout=300)
    assert third.returncode == 0 and third.stdout.count('(done)') == 15, third.stdout


def test_scoring_stages_stop_with_one_line_without_nltk_data(tmp_path):
    """baseline, score and numbers score METEOR: without WordNet and punkt_tab the script says so in one line."""
    pytest.importorskip('swift')
    work = tmp_path / 'w'
    empty = tmp_path / 'no-nltk-data'
    empty.mkdir()
    env = {**cpu_env(), 'W': str(work), 'PY': os.sys.executable, 'NLTK_DATA': str(empty)}
    proc = run_script('baseline', env=env)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        f"error: {SCRIPT}: NLTK_DATA: METEOR's WordNet and punkt_tab are not found for stage baseline (carry "
        '.nltk_data: make setup writes it)')
    assert not (work / 'state' / 'baseline.done').exists()
