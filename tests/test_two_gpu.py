"""Two GPUs against one (bench/gpu/two_gpu.sh, issues 22-25): everything of it that runs without a GPU.

The script's argument checks and stage list, the commands its stages run (PLAN=1) with the sft ones composed by the
real launcher for 1 and 2 GPUs, compare_preds and the summary on real prediction files: the script's inference stages
on CPU with the tiny model (`make infer` through inference.predict, one process and two worker processes), then a
reordered, a truncated and a changed copy of the 2-worker file; the summary's arithmetic on files as the GPU runs
write them (run 6's recorded perf records); carried wheel kits installed over two calls."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bench.gpu import two_gpu_summary as summary
from bench.gpu.stage_times import COLUMNS
from tests.conftest import REPO, cpu_env, run_module

SCRIPT = 'bench/gpu/two_gpu.sh'
STAGES = ['model', 'data', 'infer_1gpu', 'infer_dp2', 'infer_tp2', 'infer_1gpu_warm', 'submit2_1gpu', 'submit2_2gpu',
          'sft_1gpu', 'sft_zero2', 'sft_ddp2', 'sft_1gpu_bf16', 'e2e_1gpu', 'e2e_2gpu']
N_ITEMS = 6


def run_script(*stages: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(['bash', SCRIPT, *stages], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def base_env(tmp_path: Path, **more: str) -> dict:
    return {**cpu_env(), 'W': str(tmp_path / 'w'), 'PY': sys.executable, 'DEVICE': 'cpu', **more}


# ---------------------------------------------------------------- the stage list and the docs' call plan
def test_stage_list_and_the_docs_plan():
    proc = run_script('--list', env=cpu_env())
    assert proc.returncode == 0, proc.stderr
    rows = [line.split('\t') for line in proc.stdout.strip().splitlines()]
    assert rows[0] == ['stage', 'issue', 'gpus', 'expected_s', 'resumable']
    listed = {r[0]: r for r in rows[1:]}
    assert list(listed) == STAGES
    for issue in ('22', '23', '24', '25'):   # each issue: a 1-GPU and a 2-GPU stage of the same machine
        gpus = {listed[s][2] for s in STAGES if listed[s][1] == issue}
        assert {'1', '2'} <= gpus, issue
    assert {s for s, r in listed.items() if r[4] == 'yes'} == {'submit2_1gpu', 'submit2_2gpu', 'e2e_1gpu', 'e2e_2gpu'}
    assert all(0 < int(r[3]) <= 540 for r in listed.values())   # each fits one call's budget
    doc = (REPO / 'docs' / 'benchmarks.md').read_text()
    section = doc[doc.index('## GPU: two H200s (issues 22–25) — to be run'):]
    section = section[:section.index('\n## ', 1)]
    for stage in STAGES:   # the call plan names every stage it runs
        assert f'`{stage}`' in section or f' {stage}' in section, stage
    for needed in ('NCCL_NVLS_ENABLE=0', 'TORCH_SYMM_MEM_DISABLE_MULTICAST=1', 'NVSHMEM_DISABLE_NVLS=1', '.kit/a',
                   '.kit/b', '.kit/c', '.kit/d', 'bench/gpu/fetch_deepspeed.sh', 'estimate'):
        assert needed in section, needed


@pytest.mark.parametrize('variables, stages, message', [
    ({'BUDGET': 'soon'}, [], "BUDGET: must be an integer >= 60, got 'soon'"),
    ({'BUDGET': '30'}, [], "BUDGET: must be an integer >= 60, got '30'"),
    ({'N_ITEMS': '0'}, [], "N_ITEMS: must be an integer >= 1, got '0'"),
    ({'SFT_STEPS': '4', 'SFT_WARMUP': '4'}, [], "SFT_WARMUP: must be below SFT_STEPS (4), got '4'"),
    ({'DEVICE': 'tpu'}, [], "DEVICE: must be cuda or cpu, got 'tpu'"),
    ({'BACKEND': 'tensorrt'}, [], "BACKEND: must be vllm or transformers, got 'tensorrt'"),
    ({'BACKEND': 'vllm'}, [], 'BACKEND: vllm needs DEVICE=cuda'),
    ({'RECIPE': 'recipes/nope.args'}, [], "RECIPE: no such recipe file: 'recipes/nope.args'"),
    ({'PY': '/no/such/python'}, [], "PY: no such Python: '/no/such/python'"),
    ({'STACK': '/no/such/wheels'}, [], "STACK: no such wheel folder: '/no/such/wheels'"),
    ({}, ['infer_1gpu', 'infer_dpp2'], "stage: unknown stage 'infer_dpp2' (stages: model data"),
    ({}, ['issue24'], 'stage: sft_1gpu needs DEVICE=cuda'),
    ({}, ['infer_tp2'], 'stage: infer_tp2 needs DEVICE=cuda'),
    ({'MAX_PIXELS': '100'}, ['data'], "MAX_PIXELS: must be an integer >= 3136, got '100'"),
])
def test_bad_variables_and_stages_are_one_line_errors_before_anything_runs(variables, stages, message, tmp_path):
    proc = run_script(*stages, env=base_env(tmp_path, **variables))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'error: {SCRIPT}: {message}') and not proc.stdout, lines
    assert not (tmp_path / 'w').exists()   # nothing made, nothing run


def test_gpu_stages_refuse_a_machine_without_two_gpus(tmp_path):
    listed = subprocess.run('nvidia-smi -L 2>/dev/null | grep -c ^GPU', shell=True, capture_output=True, text=True)
    if int(listed.stdout.strip() or 0) >= 2:
        pytest.skip('this machine has two GPUs')
    proc = run_script('infer_dp2', env=base_env(tmp_path, DEVICE='cuda', BACKEND='vllm'))
    assert proc.returncode == 2 and proc.stderr.startswith(
        f'error: {SCRIPT}: DEVICE: the stages named need 2 GPU(s), nvidia-smi lists'), proc.stderr
    assert not (tmp_path / 'w').exists()


# ---------------------------------------------------------------- the commands (PLAN=1), sft composed for 1 and 2 GPUs
def planned(tmp_path: Path, *stages: str) -> dict[str, list[list[str]]]:
    env = {**base_env(tmp_path, DEVICE='cuda', BACKEND='vllm'), 'PLAN': '1'}
    proc = run_script(*stages, env=env)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / 'w').exists()   # a plan runs and makes nothing
    commands: dict[str, list[list[str]]] = {}
    for line in proc.stdout.splitlines():
        if line.startswith('# '):
            current = commands.setdefault(line[2:], [])
        else:
            current.append(shlex.split(line))
    return commands


def make_vars(argv: list[str]) -> dict[str, str]:
    """VAR=value words of an `env ... make ... target VAR=value ...` command."""
    return dict(w.split('=', 1) for w in argv if '=' in w and not w.startswith('-'))


def test_plan_runs_the_make_targets_on_one_gpu_then_two(tmp_path):
    plan = planned(tmp_path, 'infer_1gpu', 'infer_dp2', 'infer_tp2', 'submit2_1gpu', 'submit2_2gpu', 'e2e_2gpu')
    for stage, devices in (('infer_1gpu', '0'), ('infer_dp2', '0,1'), ('infer_tp2', '0,1')):
        (argv,) = plan[stage]
        v = make_vars(argv)
        assert argv[0] == 'env' and 'infer' in argv and v['CUDA_VISIBLE_DEVICES'] == devices
        assert (v['BACKEND'], v['SPLIT'], v['PRED']) == ('vllm', 'test-original', f'{tmp_path}/w/preds/{stage}.jsonl')
        assert v['INFER_ARGS'] == ('--tensor-parallel 2' if stage == 'infer_tp2' else '')   # dp2: one engine a GPU
    for stage, devices in (('submit2_1gpu', '0'), ('submit2_2gpu', '0,1')):
        (argv,) = plan[stage]
        v = make_vars(argv)
        assert 'submit-task2' in argv and v['CUDA_VISIBLE_DEVICES'] == devices and v['DRY_RUN'] == '1'
        # the default prediction files: make submit-task2 makes them itself (make infer), as on a first run
        assert 'TASK1_PRED' not in v and 'CALIBRATION' not in v and v['SUBMIT_DATASET'].endswith('/data/source')
    e2e = plan['e2e_2gpu']
    assert [argv[-1] for argv in e2e] == ['model', 'data', 'prepare', 'sft', 'export', 'infer', 'score', 'submit1',
                                          'submit2']
    v = make_vars(e2e[3])
    assert (v['CUDA_VISIBLE_DEVICES'], v['SFT_BATCH'], v['SFT_GLOBAL'], v['SFT_EXTRA']) == (
        '0,1', '8', '16', '--deepspeed zero2')


def test_sft_stages_compose_the_default_recipe_for_one_gpu_and_zero2_on_two(tmp_path):
    pytest.importorskip('swift')
    from training.launch import compose
    from training.recipe import load_recipe
    plan = planned(tmp_path, 'issue24')
    recipe = REPO / 'recipes' / 'qwen2_5_vl' / '7B_lora.args'
    callbacks = load_recipe(recipe, {'DATA': '/d', 'RUN': '/r', 'MODEL': '/m'}).get('callbacks').values
    data = tmp_path / 'data'
    (data / 'swift').mkdir(parents=True)
    for split in ('train', 'val'):
        (data / 'swift' / f'{split}-original.jsonl').touch()
    expected = {'sft_1gpu': (1, None, '4', None, None), 'sft_zero2': (2, '2', '2', 'zero2', None),
                'sft_ddp2': (2, '2', '2', None, None), 'sft_1gpu_bf16': (1, None, '4', None, 'bfloat16')}
    assert list(plan) == ['model', 'data', *expected]
    for stage, (gpus, nproc, accumulation, deepspeed, lora_dtype) in expected.items():
        (argv,) = plan[stage]
        v = make_vars(argv)
        assert 'sft' in argv and v['RECIPE'] == 'recipes/qwen2_5_vl/7B_lora.args' and v['BENCH_NAME'] == stage
        assert v['CUDA_VISIBLE_DEVICES'] == ('0' if gpus == 1 else '0,1')
        flags, env = compose(str(recipe), str(data), str(tmp_path / 'run'), str(tmp_path / 'model'),
                             shlex.split(v['SFT_ARGS']), False, cpu_env(), gpus)
        assert env.get('NPROC_PER_NODE') == nproc                       # data-parallel processes on 2 GPUs
        assert flags.value('per_device_train_batch_size') == '32'        # the 141 GB cards' batch
        assert flags.value('global_batch') == '128'                      # the recipe's, kept
        assert flags.value('gradient_accumulation_steps') == accumulation
        assert flags.value('deepspeed') == deepspeed                     # the recipe itself is plain DDP
        assert flags.value('lora_dtype') == lora_dtype                   # ZeRO-2's adapter precision on 1 GPU
        assert flags.get('callbacks').values == (*callbacks, 'bench_perf')   # every recipe callback + the measuring
        assert flags.value('use_liger_kernel') == 'true' and flags.value('max_steps') == '20'


# ---------------------------------------------------------------- the inference stages on CPU, real files
@pytest.fixture(scope='module')
def cpu_run(tiny_model_dir, tmp_path_factory):
    """model (the tiny model, kept), data (N_ITEMS items), infer_1gpu (one process), infer_dp2 (two CPU workers)."""
    root = tmp_path_factory.mktemp('two_gpu')
    out = root / 'out'
    out.mkdir()
    env = base_env(root, BASE=str(tiny_model_dir), OUT=str(out), N_ITEMS=str(N_ITEMS), VAL_ROWS='2', WORKERS='2',
                   MAX_NEW_TOKENS='6', MAX_PIXELS='50176', BUDGET='100000',
                   INFER_ARGS='--batch-size 1')   # batch 1: a row's answer does not depend on its batch-mates
    proc = run_script('model', 'data', 'infer_1gpu', 'infer_dp2', env=env, timeout=900)
    return root, out, proc


@pytest.mark.slow
def test_inference_stages_on_cpu_give_same_rows_and_answers(cpu_run):
    root, out, proc = cpu_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results, preds = root / 'w' / 'results', root / 'w' / 'preds'
    assert 'exists, kept' in (root / 'w' / 'logs' / 'model.log').read_text()   # the given BASE is not rebuilt
    times = summary.read_stage_times(results / 'stage_times.tsv')
    assert [t['stage'] for t in times] == ['model', 'data', 'infer_1gpu', 'infer_dp2']
    assert all(t['rc'] == 0 and t['fresh'] and t['end'] >= t['start'] for t in times)
    one, two = ([json.loads(line) for line in (preds / f'{s}.jsonl').read_text().splitlines()]
                for s in ('infer_1gpu', 'infer_dp2'))
    assert len(one) == len(two) == N_ITEMS
    compared = json.loads((results / 'infer' / 'compare_infer_dp2.json').read_text())
    assert compared['ok'] and compared['same_count'] and compared['same_order']
    assert compared['identical_answers'] == N_ITEMS == sum(a['prediction'] == b['prediction'] for a, b in zip(one, two))
    assert compared['id_fields'] == ['img_id', 'question']
    # two worker processes wrote their own timing files; the parent the end-to-end one
    assert sorted(p.name for p in (results / 'infer').glob('infer_dp2.timing*.json')) == [
        'infer_dp2.timing.0.json', 'infer_dp2.timing.1.json', 'infer_dp2.timing.json']
    with tarfile.open(out / 'two_gpu_results.tgz') as tar:
        names = set(tar.getnames())
    assert {'results/two_gpu.md', 'results/two_gpu.json', 'results/stage_times.tsv',
            'results/infer/compare_infer_dp2.json', 'results/infer/infer_1gpu.timing.json',
            'results/logs/infer_dp2.log'} <= names


@pytest.mark.slow
def test_summary_numbers_come_from_the_timing_files(cpu_run):
    root, _, proc = cpu_run
    assert proc.returncode == 0
    folder = root / 'w' / 'results' / 'infer'
    one = json.loads((folder / 'infer_1gpu.timing.json').read_text())
    parent = json.loads((folder / 'infer_dp2.timing.json').read_text())
    ranks = [json.loads((folder / f'infer_dp2.timing.{r}.json').read_text()) for r in (0, 1)]
    assert parent['worker_processes'] == 2 and sum(r['stream']['rows'] for r in ranks) == N_ITEMS
    data = json.loads((root / 'w' / 'results' / 'two_gpu.json').read_text())['issue22']
    run1, run2 = data['runs']['infer_1gpu'], data['runs']['infer_dp2']
    assert run1['items_per_s_generating'] == one['stream']['items_per_s'] and run1['workers'] == 1
    begin = min(r['startup_s'] + r['stream']['first_submit_s'] for r in ranks)
    end = max(r['startup_s'] + r['stream']['last_row_s'] for r in ranks)
    assert run2['items_per_s_generating'] == pytest.approx(N_ITEMS / (end - begin), abs=1e-3)
    assert run2['items_per_s_end_to_end'] == pytest.approx(N_ITEMS / parent['end_to_end_s'], abs=1e-3)
    assert run2['x_generating'] == pytest.approx(run2['items_per_s_generating'] / run1['items_per_s_generating'])
    assert data['target']['generating'] == ('met' if run2['x_generating'] >= 1.9 else 'NOT met')
    md = (root / 'w' / 'results' / 'two_gpu.md').read_text()
    assert f"| infer_dp2 | 2 | 2 × 1 | {N_ITEMS} |" in md and f'| yes | {N_ITEMS}/{N_ITEMS} |' in md


@pytest.mark.slow
def test_compare_preds_catches_reordered_truncated_and_changed_files(cpu_run, tmp_path):
    root, _, proc = cpu_run
    assert proc.returncode == 0
    base, other = root / 'w' / 'preds' / 'infer_1gpu.jsonl', root / 'w' / 'preds' / 'infer_dp2.jsonl'
    lines = other.read_text().splitlines(keepends=True)
    cases = {'reordered': [lines[1], lines[0], *lines[2:]], 'truncated': lines[:-1],
             'duplicated': [*lines[:-1], lines[0]]}
    for name, content in cases.items():
        path, report = tmp_path / f'{name}.jsonl', tmp_path / f'{name}.json'
        path.write_text(''.join(content))
        result = run_module('bench.gpu.compare_preds', base, path, '--out', report, check=False)
        assert result.returncode == 2, name
        errors = result.stderr.strip().splitlines()
        assert len(errors) == 1 and errors[0].startswith(f'error: {path}'), errors
        written = json.loads(report.read_text())   # the failed check is recorded too
        assert not written['ok'] and not written['same_order']
        assert written['same_count'] == (name != 'truncated')
    assert 'rows: 5 rows, but' in run_module('bench.gpu.compare_preds', base, tmp_path / 'truncated.jsonl',
                                             check=False).stderr
    # another answer in the same row: counted, not an error
    row = json.loads(lines[2])
    row['prediction'] += ' (changed)'
    changed = tmp_path / 'changed.jsonl'
    changed.write_text(''.join([*lines[:2], json.dumps(row) + '\n', *lines[3:]]))
    result = run_module('bench.gpu.compare_preds', base, changed, '--out', tmp_path / 'changed.json')
    written = json.loads((tmp_path / 'changed.json').read_text())
    assert written['ok'] and written['identical_answers'] == N_ITEMS - 1
    assert [e['row'] for e in written['differing_examples']] == [3]
    not_preds = tmp_path / 'not_preds.jsonl'
    not_preds.write_text('{"img_id": "a", "question": "q"}\n')
    result = run_module('bench.gpu.compare_preds', base, not_preds, check=False)
    assert result.returncode == 2 and result.stderr.strip() == (
        f'error: {not_preds}:1: prediction: missing or not a string (not a make infer predictions file?)')


# ---------------------------------------------------------------- the summary's other parts (files as the runs write)
def test_subtask2_seconds_count_only_the_latest_measurement_inside_its_calls(tmp_path):
    """A finished run, then a fresh run cut at a call's end and continued in the next call: the table counts the fresh
    run's two calls, not the gap between them, and splits them at the times its prediction files were written."""
    results = tmp_path / 'results'
    folder = results / 'task2' / 'submit2_1gpu'
    folder.mkdir(parents=True)
    (results / 'stage_times.tsv').write_text(''.join('\t'.join(map(str, row)) + '\n' for row in [
        ('submit2_1gpu', 500, 0, 'i0', 1000, 1500, 1),
        ('submit2_1gpu', 540, 124, 'i1', 2000, 2540, 1),      # fresh start, cut at the deadline
        ('submit2_1gpu', 300, 0, 'i2', 3000, 3300, 0)]))     # continued
    for name, mtime in (('task2_val-original.timing.json', 2100), ('val-original.timing.json', 3050)):
        (folder / name).write_text(json.dumps({'rows': 1500 if name.startswith('task2') else 2000}))
        os.utime(folder / name, (mtime, mtime))
    (folder / 'timings.jsonl').write_text(''.join(json.dumps(t) + '\n' for t in [
        {'stage': 'probes+grounding', 'seconds': 100.0, 'rows': 1500, 'rank': None},
        {'stage': 'probes+grounding', 'seconds': 40.0, 'rows': 1500, 'rank': 0},   # a worker's line: not summed
        {'stage': 'occlusion', 'seconds': 120.0, 'rows': 1500, 'rank': None}]))
    run = summary.task2_run(results, 'submit2_1gpu', summary.read_stage_times(results / 'stage_times.tsv'))
    assert (run['invocations'], run['done'], run['total_s']) == (2, True, 840)
    assert run['task1_answers_s'] == 100 and run['calibration_answers_s'] == 540 - 100 + 50
    assert run['build_s'] == 840 - 590 and run['stages_s'] == {'probes+grounding': 100.0, 'occlusion': 120.0}
    assert run['rest_of_build_s'] == 250 - 220


def test_sft_scaling_and_e2e_tables(tmp_path):
    results = tmp_path / 'results'
    (results / 'sft').mkdir(parents=True)
    recorded = REPO / 'bench' / 'gpu' / 'results' / 'call5_2gpu_summary.json'   # run 6 (two H200s): X16, P16
    run6 = {p['name']: p for p in json.loads(recorded.read_text())['train']}
    for ours, theirs in (('sft_1gpu', 'X16'), ('sft_zero2', 'P16')):
        (results / 'sft' / f'perf_{ours}.json').write_text(json.dumps(run6[theirs]))
    data = summary.issue24(results)
    one, two = data['runs']['sft_1gpu'], data['runs']['sft_zero2']
    assert round(one['tokens_per_s']) == 7313 and round(two['tokens_per_s']) == 17195   # docs: run 6's table
    assert two['scaling_efficiency'] == pytest.approx(17195 / (2 * 7313), abs=1e-3)   # 1.17 as the docs say
    assert data['target']['zero2'] == 'met' and two['mfu_per_gpu'] is None            # no param_count.json here
    for name, rows in (('e2e_1gpu', [('sft', 100, 0), ('infer', 90, 0), ('submit2', 50, 1)]),
                       ('e2e_2gpu', [('sft', 60, 0), ('infer', 70, 0), ('infer', 45, 0)])):
        (results / name).mkdir()   # e2e.sh's file: stages.sh's layout, one invocation per stage as two_gpu.sh runs it
        lines = ['\t'.join(COLUMNS)] + ['\t'.join(map(str, (stage, secs, rc, 1000 * i, 1000 * i, 1000 * i + secs, 1)))
                                        for i, (stage, secs, rc) in enumerate(rows)]
        (results / name / 'stage_times.tsv').write_text('\n'.join(lines) + '\n')
    e2e = summary.issue25(results)
    assert e2e['runs']['e2e_2gpu']['infer'] == {'runs': 2, 'seconds': 45, 'rc': 0}   # the last successful run
    md = '\n'.join(summary.issue25_md(e2e))
    assert '| sft | 100 | 60 | 1.67 |' in md and '| submit2 | 50 (exit 1) | — | — |' in md
    assert '| **stages done on both** | 190 | 105 | 1.81 |' in md


# ---------------------------------------------------------------- carried wheels: stashed, installed when complete
def tiny_wheel(folder: Path, name: str) -> Path:
    """A minimal real wheel (one module) that pip installs."""
    import zipfile
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f'{name}-1.0-py3-none-any.whl'
    info = f'{name}-1.0.dist-info'
    files = {f'{name}.py': 'VALUE = 1\n', f'{info}/METADATA': f'Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n',
             f'{info}/WHEEL': 'Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n'}
    files[f'{info}/RECORD'] = ''.join(f'{f},,\n' for f in files) + f'{info}/RECORD,,\n'
    with zipfile.ZipFile(path, 'w') as z:
        for f, text in files.items():
            z.writestr(f, text)
    return path


@pytest.mark.slow
def test_carried_wheels_are_installed_once_every_piece_is_here(tmp_path):
    """A plain wheel folder installs at once; a wheel split in two pieces (carried in two calls) waits for the second
    piece and its sha256, then installs (install_stack.sh with absolute folders: its sha256 check used to fail); a
    later call reinstalls nothing. ~25 s: each call runs check_stack --imports."""
    import hashlib
    pytest.importorskip('swift')
    plain = tiny_wheel(tmp_path / 'kit_a', 'medico_plain_pkg')
    split = tiny_wheel(tmp_path / 'whole', 'medico_split_pkg')
    data = split.read_bytes()
    (tmp_path / 'kit_b').mkdir()
    (tmp_path / 'kit_c').mkdir()
    (tmp_path / 'kit_b' / f'{split.name}.part0').write_bytes(data[:len(data) // 2])
    (tmp_path / 'kit_c' / f'{split.name}.part1').write_bytes(data[len(data) // 2:])
    (tmp_path / 'kit_c' / f'{split.name}.sha256').write_text(f'{hashlib.sha256(data).hexdigest()}  {split.name}\n')
    site = tmp_path / 'site'
    env = base_env(tmp_path, SITE=str(site))

    def call(*kits: Path) -> subprocess.CompletedProcess:
        proc = run_script('stack', env={**env, 'STACK': ' '.join(map(str, kits))}, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    first = call(plain.parent, tmp_path / 'kit_b')
    assert (site / 'medico_plain_pkg.py').is_file() and not (site / 'medico_split_pkg.py').exists()
    assert f'{split.name}: 1 piece(s) here, not all of them yet' in first.stdout
    second = call(tmp_path / 'kit_c')
    assert (site / 'medico_split_pkg.py').read_text() == 'VALUE = 1\n'
    assert 'installing' in second.stdout and 'kit/kit_a' not in second.stdout.split('installing')[1].splitlines()[0]
    third = call()
    assert 'installing' not in third.stdout
    assert (site / 'stack_env.sh').is_file()
    times = summary.read_stage_times(tmp_path / 'w' / 'results' / 'stage_times.tsv')
    assert [t['stage'] for t in times] == ['stack', 'stack']
