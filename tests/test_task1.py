"""Subtask 1 packaging: team file, rendered script, predictions validation, CLI errors, and the offline dry run."""
from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

from common.errors import InputError
from submission.dry_run import validate_predictions
from submission.patch_check import check_script
from submission.task1 import readme, render_script, requirements_txt, resolve_models
from submission.team import TEAM_FIELDS, load_team
from tests.conftest import REPO, run_module

TEAM = {
    'Participant_Names': ['Ada Lovelace', 'Alan Turing'],
    'Affiliations': 'Test University',
    'Contact_emails': ['ada@test-university.org'],
    'Team_Name': 'testers',
    'Country': 'Norway',
    'Notes_to_organizers': 'Unit-test team.',
}


@pytest.fixture
def team_file(tmp_path) -> Path:
    path = tmp_path / 'team.json'
    path.write_text(json.dumps(TEAM))
    return path


def _write_team(tmp_path, **changes) -> Path:
    team = {**TEAM, **changes}
    team = {k: v for k, v in team.items() if v is not _DROP}
    path = tmp_path / 'team_bad.json'
    path.write_text(json.dumps(team))
    return path


_DROP = object()


# ---------------------------------------------------------------- team file
def test_team_file_loads_in_the_organizers_key_order(team_file):
    info = load_team(team_file)
    assert tuple(info) == TEAM_FIELDS
    assert info['Participant_Names'] == 'Ada Lovelace, Alan Turing'
    assert info['Contact_emails'] == ['ada@test-university.org']


@pytest.mark.parametrize('changes, field, message', [
    ({'Team_Name': _DROP}, 'Team_Name', 'missing field'),
    ({'Country': '  '}, 'Country', 'empty value'),
    ({'Contact_emails': []}, 'Contact_emails', 'empty value'),
    ({'Contact_emails': ['not-an-email']}, 'Contact_emails', 'not an e-mail'),
    ({'Affiliations': '<University or company>'}, 'Affiliations', 'placeholder'),
    ({'Team_Name': 7}, 'Team_Name', 'expected a string'),
    ({'Team': 'typo'}, 'Team', 'unknown field'),
])
def test_team_file_errors_name_file_and_field(tmp_path, changes, field, message):
    path = _write_team(tmp_path, **changes)
    with pytest.raises(InputError, match=message) as e:
        load_team(path)
    assert e.value.file == str(path) and e.value.field == field


def test_team_example_and_missing_file_are_refused(tmp_path):
    with pytest.raises(InputError, match='placeholder'):
        load_team(REPO / 'submission' / 'team.example.json')
    with pytest.raises(InputError, match='team file not found'):
        load_team(tmp_path / 'nope.json')
    bad = tmp_path / 'bad.json'
    bad.write_text('{"Team_Name": ')
    with pytest.raises(InputError, match='not valid JSON'):
        load_team(bad)


# ---------------------------------------------------------------- rendered script
def _assigned(code: str, name: str):
    for node in ast.parse(code).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', None) == name:
            return ast.literal_eval(node.value)
    raise AssertionError(f'{name} not assigned')


def test_render_fills_every_placeholder_and_passes_the_patch_check(team_file):
    team = load_team(team_file)
    code = render_script(name='t', model_id='user/merged', adapter_id=None, team=team, model_type='qwen2_5_vl',
                         template_type='qwen2_5_vl', system_prompt='Answer briefly.', max_new_tokens=32)
    assert '@@' not in code
    ast.parse(code, feature_version=(3, 10))  # the evaluator may run Python 3.10
    assert 'import itertools' not in code and 'from itertools' not in code
    assert _assigned(code, 'SUBMISSION_INFO') == team
    assert _assigned(code, 'MODEL_ID') == 'user/merged' and _assigned(code, 'ADAPTER_ID') is None
    assert _assigned(code, 'MAX_NEW_TOKENS') == 32 and _assigned(code, 'SYSTEM_PROMPT') == 'Answer briefly.'
    assert 'RequestConfig(max_tokens=MAX_NEW_TOKENS, temperature=0)' in code
    # nothing depends on the public 1500: the number appears only in the line the organizers rewrite
    assert [l for l in code.splitlines() if '1500' in l] == ['val_dataset = ds_shuffled.select(range(1500))']
    patched = check_script(code)
    assert 'Kvasir-VQA-x1-private' in patched


def test_render_with_adapter_and_bad_name(team_file):
    code = render_script(name='t', model_id='Qwen/Qwen2.5-VL-7B-Instruct', adapter_id='user/lora',
                         team=load_team(team_file))
    assert _assigned(code, 'ADAPTER_ID') == 'user/lora'
    with pytest.raises(InputError, match='letters'):
        render_script(name='../x', model_id='u/m', adapter_id=None, team=load_team(team_file))


def test_requirements_pin_what_the_script_imports():
    req = requirements_txt()
    base = (REPO / 'requirements-base.txt').read_text()
    for line in ('ms-swift==', 'evaluate==', 'rouge-score==', 'datasets=='):
        pinned = next(l for l in req.splitlines() if l.startswith(line))
        assert pinned in base
    assert 'torch' not in req.replace('# torch', '')


# ---------------------------------------------------------------- model resolution
def test_readme_names_no_local_paths(tmp_path):
    """The hub repo's README lists the training recipe from args.json, whose paths are this machine's."""
    args_json = {'model': str(tmp_path / 'models/tiny'), 'dataset': [str(tmp_path / 'data/swift/train-original.jsonl')],
                 'val_dataset': [str(tmp_path / 'data/swift/val-original.jsonl')], 'lora_rank': 8, 'template':
                 'qwen2_5_vl', '_path': str(tmp_path / 'run/v0-1/args.json')}
    text = readme(name='t', model_id='u/m', adapter_id=None, args_json=args_json, scores={}, settings={'max_pixels': 1})
    assert str(tmp_path) not in text
    assert '- dataset: `[".../swift/train-original.jsonl"]`' in text and '- model: `".../models/tiny"`' in text
    assert '- lora_rank: `8`' in text and '- template: `"qwen2_5_vl"`' in text


def test_resolve_models_errors(tmp_path):
    adapter = tmp_path / 'adapter'
    adapter.mkdir()
    (adapter / 'adapter_config.json').write_text('{"base_model_name_or_path": "/local/base"}')
    merged = tmp_path / 'merged'
    merged.mkdir()
    (merged / 'config.json').write_text('{}')
    with pytest.raises(InputError, match='no model'):
        resolve_models(None, None, 'u/r')
    with pytest.raises(InputError, match='adapter needs its base'):
        resolve_models(None, str(adapter), 'u/r')
    with pytest.raises(InputError, match='is a LoRA adapter'):
        resolve_models(str(adapter), None, 'u/r')
    with pytest.raises(InputError, match='neither a local folder nor a hub id'):
        resolve_models(str(tmp_path / 'missing' / 'x' / 'y'), None, 'u/r')
    with pytest.raises(InputError, match='hub id is unknown'):
        resolve_models(str(merged), str(adapter), 'u/r')
    # a local merged folder is uploaded to the submission repo, which the script then loads
    ok = resolve_models(str(merged), None, 'u/r')
    assert ok['model_id'] == 'u/r' and ok['upload_dirs'] == [merged.resolve()] and ok['adapter_id'] is None
    ok = resolve_models('Qwen/Qwen2.5-VL-7B-Instruct', str(adapter), 'u/r')
    assert (ok['model_id'], ok['adapter_id']) == ('Qwen/Qwen2.5-VL-7B-Instruct', 'u/r')


# ---------------------------------------------------------------- predictions validation
ROWS = [{'img_id': f'img{i}', 'question': f'q{i}?', 'answer': f'a{i}'} for i in range(4)]


def _predictions(rows=ROWS, team=None) -> dict:
    return {'submission_info': team or {}, 'public_scores': dict(bleu=0.1, rouge1=0.2, rouge2=0.3, rougeL=0.4,
                                                                  meteor=0.5),
            'predictions': [{'index': i, 'img_id': r['img_id'], 'question': r['question'], 'answer': r['answer']}
                            for i, r in enumerate(rows)],
            'total_time': 1.0, 'time_per_item': 0.25, 'memory_used_mb': 0, 'model_memory_mb': 0, 'gpu_name': 'cpu',
            'debug': {'packages': [], 'system': {'python': '3.11', 'os': 'Linux', 'platform': 'x', 'arch': 'x86_64'}}}


def test_valid_predictions_pass():
    validate_predictions(_predictions(), ROWS, check_scores=False)


def _broken(kind: str) -> dict:
    data = _predictions()
    if kind == 'count':
        data['predictions'].pop()
    elif kind == 'answer':
        data['predictions'][2]['answer'] = 3
    elif kind == 'top_keys':
        data['scores'] = data.pop('public_scores')
    elif kind == 'pred_keys':
        data['predictions'][1]['confidence'] = 0.5
    elif kind == 'order':
        data['predictions'][0]['img_id'], data['predictions'][1]['img_id'] = 'img1', 'img0'
    elif kind == 'index':
        data['predictions'][3]['index'] = 7
    elif kind == 'score_keys':
        del data['public_scores']['meteor']
    elif kind == 'debug':
        data['debug'] = {'packages': []}
    return data


@pytest.mark.parametrize('kind, message', [
    ('count', '3 predictions for 4 questions'), ('answer', 'not a string'), ('top_keys', 'keys differ'),
    ('pred_keys', 'exactly the keys'), ('order', 'differs from the evaluation set'), ('index', 'index 7'),
    ('score_keys', 'exactly the keys'), ('debug', 'packages'),
])
def test_invalid_predictions_are_refused(kind, message):
    with pytest.raises(InputError, match=message):
        validate_predictions(_broken(kind), ROWS, check_scores=False)


def test_submission_info_must_equal_the_team(team_file):
    team = load_team(team_file)
    validate_predictions(_predictions(team=team), ROWS, team=team, check_scores=False)
    with pytest.raises(InputError, match='differs from the team file'):
        validate_predictions(_predictions(team={**team, 'Country': 'x'}), ROWS, team=team, check_scores=False)


def test_public_scores_must_match_our_metrics():
    pytest.importorskip('eval.metrics')
    from eval.metrics import score
    data = _predictions()
    data['public_scores'] = {k: round(float(v), 4) for k, v in score(
        [r['answer'] for r in ROWS], [r['answer'] for r in ROWS], rouge_seed=42).items() if k in data['public_scores']}
    validate_predictions(data, ROWS)
    data['public_scores']['bleu'] = round(data['public_scores']['bleu'] - 0.1, 4)
    with pytest.raises(InputError, match='bleu'):
        validate_predictions(data, ROWS)


# ---------------------------------------------------------------- CLI errors: one line, exit 2, nothing built
def test_cli_bad_input_exit_2_and_nothing_written(tmp_path, team_file):
    build = tmp_path / 'build'
    cases = [
        ['--team', str(_write_team(tmp_path, Country='')), '--model', 'user/m', '--dry-run'],
        ['--team', str(team_file), '--adapter', 'user/lora', '--dry-run'],
        ['--team', str(team_file), '--dry-run'],
        ['--team', str(team_file), '--model', 'user/m'],  # no --hub-repo and not a dry run
    ]
    for args in cases:
        proc = run_module('submission.task1', *args, '--build-root', build, check=False)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith('error: '), proc.stderr[-2000:]
        assert not build.exists() or not any(build.iterdir())


def test_cli_without_dataset_builds_and_rebuilds_in_place(tmp_path, team_file):
    build = tmp_path / 'build'
    args = ('--team', team_file, '--model', 'someone/merged-model', '--name', 'x', '--dry-run', '--build-root', build,
            '--max-pixels', '401408')
    for _ in range(2):  # the second build replaces the first (temp folder + rename)
        proc = run_module('submission.task1', *args)
        assert 'dry run skipped: no --dataset' in proc.stdout and 'nothing uploaded' in proc.stdout
    assert sorted(p.name for p in build.iterdir()) == ['x']
    assert sorted(p.name for p in (build / 'x').iterdir()) == ['README.md', 'requirements.txt', 'submission_task1.py']
    code = (build / 'x' / 'submission_task1.py').read_text()
    assert _assigned(code, 'MODEL_ID') == 'someone/merged-model'
    assert 'os.environ.setdefault("MAX_PIXELS", \'401408\')' in code
    assert 'someone/merged-model' in (build / 'x' / 'README.md').read_text()


def test_cli_upload_or_submit_offline_is_an_error_before_any_work(tmp_path, team_file):
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_TOKEN='hf_secret_never_printed')
    for extra in ([], ['--submit']):
        proc = run_module('submission.task1', '--team', team_file, '--model', 'someone/m', '--hub-repo', 'me/sub',
                          '--name', 'y', *extra, '--build-root', tmp_path / 'build', env=env, check=False)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines()[-1].startswith(
            'error: hub-repo: cannot upload to me/sub: HF_HUB_OFFLINE is set; nothing was built')
        assert 'hf_secret_never_printed' not in proc.stdout + proc.stderr
        assert not (tmp_path / 'build').exists()


# ---------------------------------------------------------------- the full offline dry run (tiny model)
@pytest.mark.slow
def test_dry_run_builds_a_valid_submission(tmp_path, tiny_model_dir, synthetic_dataset, team_file):
    build = tmp_path / 'build'
    env = dict(os.environ, HF_TOKEN='hf_secret_never_printed', MAX_PIXELS='50176')
    proc = run_module('submission.task1', '--model', tiny_model_dir, '--hub-repo', 'tester/medico-task1',
                      '--name', 'tiny', '--team', team_file, '--dataset', synthetic_dataset, '--dry-run',
                      '--max-new-tokens', '4', '--build-root', build, env=env, timeout=600)
    out = build / 'tiny'
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'predictions_1.json', 'requirements.txt',
                                                      'submission_task1.py']
    assert 'nothing uploaded' in proc.stdout
    assert 'hf_secret_never_printed' not in proc.stdout + proc.stderr
    for f in out.iterdir():
        assert 'hf_secret_never_printed' not in f.read_text(encoding='utf-8')

    from submission.dry_run import expected_rows, local_splits
    test = local_splits(str(synthetic_dataset))['test']
    rows = expected_rows(test, 'public')
    assert len(rows) == min(1500, len(test)) > 0
    data = json.loads((out / 'predictions_1.json').read_text())
    validate_predictions(data, rows, team=load_team(team_file))  # includes the public_scores recomputation
    assert [p['img_id'] for p in data['predictions']] == [r['img_id'] for r in rows]
    code = (out / 'submission_task1.py').read_text()
    assert _assigned(code, 'MODEL_ID') == 'tester/medico-task1'
    assert str(tiny_model_dir) not in code  # the script loads the hub id, the dry run served the local folder


@pytest.mark.slow
def test_dry_run_challenge_mode(tmp_path, tiny_model_dir, synthetic_dataset, team_file):
    """The organizers' hidden-set run: their three patches, every row of the private split, in order."""
    code = render_script(name='t', model_id='tester/m', adapter_id=None, team=load_team(team_file),
                         model_type='qwen2_5_vl', template_type='qwen2_5_vl', max_new_tokens=2)
    script = tmp_path / 'submission_task1.py'
    script.write_text(code)
    out = tmp_path / 'predictions_1.json'
    run_module('submission.dry_run', script, '--dataset', synthetic_dataset, '--model-dir', tiny_model_dir,
               '--mode', 'challenge', '--team', team_file, '--out', out, env=dict(os.environ, MAX_PIXELS='50176'),
               timeout=600)
    from submission.dry_run import local_splits
    test = local_splits(str(synthetic_dataset))['test']
    assert [p['img_id'] for p in json.loads(out.read_text())['predictions']] == test['img_id']


# A model-free script in the organizers' shape: answers half the questions right, scores them through
# `evaluate.load` (redirected to eval.metrics), and can be tampered with after its own computations.
FAKE_SCRIPT = """
import json
from datasets import load_dataset
from evaluate import load

MODEL_ID = "tester/fake"
SUBMISSION_INFO = json.loads(%r)
ds = load_dataset("SimulaMet/Kvasir-VQA-x1")["test"]
ds_shuffled = ds.shuffle(seed=42)
val_dataset = ds_shuffled.select(range(1500))
assert val_dataset[0]["image"].size[0] > 0  # the image column decodes from the local copy
preds = [{"index": i, "img_id": e["img_id"], "question": e["question"], "answer": e["answer"] if i %% 2 else "no"}
         for i, e in enumerate(val_dataset.remove_columns("image"))]
refs, answers = [[a] for a in val_dataset["answer"]], [p["answer"] for p in preds]
b = load("bleu").compute(predictions=answers, references=refs)
r = load("rouge", seed=42).compute(predictions=answers, references=refs)
m = load("meteor").compute(predictions=answers, references=refs)
scores = {"bleu": round(b["bleu"], 4), "meteor": round(float(m["meteor"]), 4),
          **{k: round(float(r[k]), 4) for k in ("rouge1", "rouge2", "rougeL")}}
%s
out = {"submission_info": SUBMISSION_INFO, "public_scores": scores, "predictions": preds, "total_time": 0.1,
       "time_per_item": 0.1 / len(preds), "memory_used_mb": 0, "model_memory_mb": 0, "gpu_name": "cpu",
       "debug": {"packages": [], "system": {"python": "3", "os": "Linux", "platform": "p", "arch": "a"}}}
json.dump(out, open("predictions_1.json", "w"))
"""


@pytest.mark.slow  # no model, but three processes that load datasets + WordNet (~10 s each)
@pytest.mark.parametrize('tamper, error', [
    ('', None),
    ('preds.pop()', 'predictions for'),
    ('scores["bleu"] = round(scores["bleu"] + 0.05, 4)', 'bleu'),
])
def test_dry_run_validation_catches_a_tampered_script(tmp_path, synthetic_dataset, team_file, tamper, error):
    script = tmp_path / 'submission_task1.py'
    script.write_text(FAKE_SCRIPT % (json.dumps(load_team(team_file)), tamper))
    out = tmp_path / 'predictions_1.json'
    # TMPDIR: a failed dry run keeps its work folder (script + log) for a look; here inside tmp_path
    proc = run_module('submission.dry_run', script, '--dataset', synthetic_dataset, '--model-dir', tmp_path,
                      '--team', team_file, '--out', out, check=False, timeout=300,
                      env=dict(os.environ, TMPDIR=str(tmp_path)))
    if error is None:
        assert proc.returncode == 0, proc.stderr[-3000:]
        scores = json.loads(out.read_text())['public_scores']
        assert 0 < scores['rouge1'] < 1  # half right: the recomputation compared real numbers
    else:
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert error in proc.stderr.strip().splitlines()[-1]
        assert not out.exists()


# ---------------------------------------------------------------- hub side, without a hub
def test_no_upload_without_token_or_when_offline(monkeypatch):
    from submission import hub
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    assert hub.why_not_online('hf_x') == 'HF_HUB_OFFLINE is set'
    monkeypatch.setenv('HF_HUB_OFFLINE', '0')
    assert 'no Hugging Face token' in hub.why_not_online(None)
    monkeypatch.setenv('HF_TOKEN', 'hf_from_env')
    assert hub.hub_token() == 'hf_from_env'


def test_submit_needs_a_typed_confirmation_on_a_terminal(monkeypatch):
    import io
    from submission import hub
    # piped input is not a terminal: even the right answer does not submit
    monkeypatch.setattr('sys.stdin', io.StringIO('user/name\n'))
    assert hub.confirm('repo? ', 'user/name') is False

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr('sys.stdin', Terminal('user/other\n'))
    assert hub.confirm('repo? ', 'user/name') is False
    monkeypatch.setattr('sys.stdin', Terminal('user/name\n'))
    assert hub.confirm('repo? ', 'user/name') is True
