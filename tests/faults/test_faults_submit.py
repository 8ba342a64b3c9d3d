"""`make submit-task1` / `make submit-task2` under attack: team files, hub repo ids, tokens and hubs (refused before any
work), a mistyped TASK1_PRED, medvqa's verdict (its real task scripts, network calls replaced), SIGKILL during the
builds, a second build, full disks; and the security cases: no code runs data, team strings stay strings, the token
never shows."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from common.errors import InputError
from submission import hub, task1, task2
from submission.task2 import load_val_rows, submission_script
from submission.validate_task2 import JSONL, main as validate_main
from tests.conftest import REPO, run_module
from tests.faults.harness import Trigger, debris, files_mode, fill, one_line_error, run_main, small_disk, tree

TEAM = REPO / 'submission' / 'team.demo.json'
TOKEN = 'hf_FAKEtoken123'
NETSTUB = Path(__file__).with_name('netstub')
REAL_VAL_SIZE = 1500   # the organizers' val set


def fails(main, argv, capsys, *parts, build: Path | None = None) -> str:
    code, err = run_main(main, argv, capsys)
    assert code == 2, err[-3000:]
    line = one_line_error(err, *parts)
    if build is not None:
        assert not build.exists() or not any(build.iterdir()), sorted(build.rglob('*'))
    return line


def task1_argv(model, build: Path, *extra) -> list:
    return ['--model', model, '--name', 'tiny', '--team', TEAM, '--build-root', build, '--model-type', 'qwen2_5_vl',
            '--template', 'qwen2_5_vl', '--max-pixels', '12544', *extra]


def task2_argv(model, dataset, build: Path, *extra) -> list:
    return ['--model', model, '--name', 'tiny', '--team', TEAM, '--dataset', dataset, '--build-root', build,
            '--limit', '2', '--grid', '2', '--answer-tokens', '4', '--probe-tokens', '2', '--grounding-tokens', '4',
            '--max-pixels', '12544', *extra]


@pytest.fixture
def no_login(tmp_path, monkeypatch):
    """No token anywhere (environment or stored login), hub switches on: what a new user has."""
    for name in ('HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf_home'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '0')


# ---- team file, repo ids --------------------------------------------------------------------------------------------

def team_with(tmp_path, **changes) -> Path:
    team = json.loads(TEAM.read_text())
    team.update(changes)
    for key, value in changes.items():
        if value is ...:
            del team[key]
    path = tmp_path / 'team.json'
    path.write_text(json.dumps(team))
    return path


@pytest.mark.case('U1', 'U2', 'U3', 'U4', 'U5')
@pytest.mark.parametrize('changes, part', [
    ({'Country': ...}, 'Country: missing field'), ({'Team_Name': ''}, 'Team_Name: empty value'),
    ({'Contact_emails': ['not-an-email']}, "Contact_emails: not an e-mail address: 'not-an-email'"),
    ({'Team_Name': '<your team>'}, "Team_Name: placeholder left in: '<your team>'"),
    ({'Extra': 'x'}, 'Extra: unknown field')])
def test_team_file_errors(tiny_model_dir, tmp_path, capsys, changes, part):
    team = team_with(tmp_path, **changes)
    argv = task1_argv(tiny_model_dir, tmp_path / 'build', '--dry-run', '--hub-repo', 'tester/t1')
    argv[argv.index('--team') + 1] = team
    fails(task1.main, argv, capsys, f'{team}: {part}', build=tmp_path / 'build')


@pytest.mark.case('U6')
def test_team_file_not_json_a_list_or_missing(tiny_model_dir, tmp_path, capsys):
    team = tmp_path / 'team.json'
    for content, part in (('{oops', 'not valid JSON'), ('[1, 2]', 'expected one JSON object'),
                          (None, 'team file not found (copy submission/team.example.json'),
                          (b'{"Team_Name": "\xff"}', 'not UTF-8 text')):
        if content is None:
            team.unlink()
        elif isinstance(content, bytes):
            team.write_bytes(content)
        else:
            team.write_text(content)
        argv = task1_argv(tiny_model_dir, tmp_path / 'build', '--dry-run')
        argv[argv.index('--team') + 1] = team
        fails(task1.main, argv, capsys, part, build=tmp_path / 'build')


@pytest.mark.case('U7', 'U9')
@pytest.mark.parametrize('repo', ['user/name/extra', 'user/', '../../etc', 'user/a--b', 'user/name.git', 'user/..',
                                  'user/-name'])
def test_repo_ids_the_hub_rejects_are_refused_before_any_work(tiny_model_dir, synthetic_dataset, tmp_path, capsys,
                                                              repo):
    """Cause 17 (the last four): the regex let them through; the dry run then failed after 16 s, or nothing did."""
    build = tmp_path / 'build'
    fails(task1.main, task1_argv(tiny_model_dir, build, '--dry-run', '--hub-repo', repo), capsys,
          'hub-repo: not a hub repo id', repr(repo), build=build)
    fails(task2.main, task2_argv(tiny_model_dir, synthetic_dataset, build, '--dry-run', '--hub-repo', repo), capsys,
          'not a hub repo id', repr(repo), build=build)


@pytest.mark.case('U8')
def test_repo_ids_make_cannot_pass_as_one_word(tiny_model_dir, tmp_path):
    for repo in ('bad name', '-name'):
        proc = subprocess.run(['make', '--no-print-directory', '-o', '.venv/.medico-setup', 'submit-task1',
                               f'HUB_REPO={repo}', f'MODEL={tiny_model_dir}', f'TEAM={TEAM}', 'DRY_RUN=1',
                               f'SUBMISSION_BUILD={tmp_path / "build"}'],
                              cwd=REPO, capture_output=True, text=True)
        assert proc.returncode != 0
        assert 'unrecognized arguments' in proc.stderr or 'expected one argument' in proc.stderr, proc.stderr[-2000:]
        assert not (tmp_path / 'build').exists()


# ---- uploads that cannot happen --------------------------------------------------------------------------------------

@pytest.mark.case('U10')
def test_no_token_is_refused_before_any_work(no_login, tiny_model_dir, synthetic_dataset, tmp_path, capsys):
    """Cause 18: the build and the dry run ran first, then "nothing uploaded" and exit 0."""
    build = tmp_path / 'build'
    fails(task1.main, task1_argv(tiny_model_dir, build, '--hub-repo', 'tester/t1', '--dataset', synthetic_dataset),
          capsys, 'hub-repo: cannot upload to tester/t1: no Hugging Face token', build=build)
    argv = task2_argv(tiny_model_dir, synthetic_dataset, build, '--hub-repo', 'tester/t2')
    del argv[argv.index('--limit'):argv.index('--limit') + 2]
    fails(task2.main, argv, capsys, 'cannot upload to tester/t2: no Hugging Face token', build=build)


@pytest.mark.case('U11')
def test_unreachable_hub_is_refused_before_any_work(no_login, tiny_model_dir, synthetic_dataset, tmp_path):
    """Real processes: the hub client reads its endpoint and offline switch at import."""
    env = dict(os.environ, HF_TOKEN=TOKEN, HF_ENDPOINT='http://127.0.0.1:9')   # nothing listens: refused at once
    build = tmp_path / 'build'
    argv2 = task2_argv(tiny_model_dir, synthetic_dataset, build, '--hub-repo', 'tester/t2')
    del argv2[argv2.index('--limit'):argv2.index('--limit') + 2]
    for module, argv, repo in (('submission.task1', task1_argv(tiny_model_dir, build, '--hub-repo', 'tester/t1'),
                                'tester/t1'), ('submission.task2', argv2, 'tester/t2')):
        proc = run_module(module, *argv, env=env, check=False)
        assert proc.returncode == 2, proc.stderr[-3000:]
        one_line_error(proc.stderr, f'cannot upload to {repo}: the hub is not reachable with this token (ConnectError)')
        assert TOKEN not in proc.stdout + proc.stderr
        assert not build.exists()


@pytest.mark.case('U12')
def test_a_given_task1_pred_must_exist(tiny_model_dir, synthetic_dataset, tmp_path, capsys):
    """Cause 19: $(wildcard) dropped a mistyped TASK1_PRED, so the answers were made anew and never compared."""
    missing = tmp_path / 'preds' / 'task2_val-orignal.jsonl'
    dry = subprocess.run(['make', '-n', '-o', '.venv/.medico-setup', 'submit-task2', f'TASK1_PRED={missing}'],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert f'--task1-predictions {missing}' in dry
    default = subprocess.run(['make', '-n', '-o', '.venv/.medico-setup', 'submit-task2', 'RUN=runs/none'], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    # the default file, when missing, is made first by `make infer` (same engine as Task 1), then passed on
    assert 'test -e preds/none/task2_val-original.jsonl ||' in default
    assert '--task1-predictions preds/none/task2_val-original.jsonl' in default
    build = tmp_path / 'build'
    fails(task2.main, task2_argv(tiny_model_dir, synthetic_dataset, build, '--dry-run', '--task1-predictions',
                                 missing), capsys, f'{missing}: --task1-predictions: file not found', build=build)


def netstub(monkeypatch, snapshot: Path) -> None:
    """medvqa's task scripts run for real; only their network calls are replaced (tests/faults/netstub)."""
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join([str(NETSTUB), str(REPO)]))
    monkeypatch.setenv('MEDICO_NETSTUB_SNAPSHOT', str(snapshot))


@pytest.mark.case('U13')
def test_a_medvqa_rejection_is_an_error(tmp_path, monkeypatch, capsys):
    """Cause 20: medvqa's CLI drops its task script's exit status, so a rejected upload was reported as passed."""
    snapshot = tmp_path / 'snapshot'
    snapshot.mkdir()
    (snapshot / 'submission_task2.py').write_text(submission_script(json.loads(TEAM.read_text())))
    rows = ''.join(json.dumps({'val_id': i}) + '\n' for i in range(REAL_VAL_SIZE - 1))
    (snapshot / JSONL).write_text(rows)
    netstub(monkeypatch, snapshot)
    with pytest.raises(InputError, match=r'medvqa validate` rejected the submission \(exit 1\): .*must contain '
                                         r'exactly 1500 valid JSON objects'):
        hub.medvqa('validate', 'tester/t2', 2, TOKEN)
    (snapshot / JSONL).write_text(rows + json.dumps({'val_id': REAL_VAL_SIZE - 1}) + '\n')
    hub.medvqa('validate', 'tester/t2', 2, TOKEN)   # the same script accepts 1500 lines
    assert 'Validation checks complete' in capsys.readouterr().out
    (snapshot / JSONL).unlink()
    with pytest.raises(InputError, match='rejected the submission'):   # Task 1: its script is not in the repo
        hub.medvqa('validate', 'tester/t1', 1, TOKEN)
    assert TOKEN not in capsys.readouterr().out


@pytest.mark.case('U14')
def test_an_upload_needs_the_full_val_set(tiny_model_dir, synthetic_dataset, tmp_path, capsys):
    """Cause 20: medvqa counts lines only; our validator is the gate and an upload carries the 1500 val rows."""
    build = tmp_path / 'build'
    fails(task2.main, task2_argv(tiny_model_dir, synthetic_dataset, build, '--hub-repo', 'tester/t2'), capsys,
          'limit: a --limit build is never uploaded', build=build)
    val = load_val_rows(str(synthetic_dataset), None, 3)
    folder = tmp_path / 'sub'
    (folder / 'visuals').mkdir(parents=True)
    lines = []
    for r in val:
        Image.new('L', (r['width'], r['height'])).save(folder / 'visuals' / f'{r["val_id"]}.png')
        lines.append({'val_id': r['val_id'], 'img_id': r['img_id'], 'question': r['question'], 'answer': 'a',
                      'textual_explanation': 'because', 'confidence_score': 0.5,
                      'visual_explanation': [{'type': 'heatmap', 'data': f'visuals/{r["val_id"]}.png',
                                              'description': 'heat'}]})
    (folder / JSONL).write_text(''.join(json.dumps(x) + '\n' for x in lines))
    (folder / 'submission_task2.py').write_text(submission_script(json.loads(TEAM.read_text())))
    from common.errors import cli_main
    argv = [folder, '--dataset', synthetic_dataset, '--limit', 3]
    assert run_main(cli_main(validate_main), argv, capsys)[0] == 0
    code, err = run_main(cli_main(validate_main), [*argv, '--for-upload'], capsys)
    assert code == 2
    one_line_error(err, f'{folder / JSONL}: val_id: 3 rows, but an upload needs the full 1500-row val set')


# ---- security --------------------------------------------------------------------------------------------------------

@pytest.mark.case('X4')
def test_no_code_runs_data():
    """Nothing in the project executes text it reads: no shell, eval/exec, pickle or unsafe deserialisers; processes
    are started from argument lists."""
    risky = re.compile(r'shell\s*=\s*True|os\.system\(|(?<![\w.])eval\(|(?<![\w.])exec\(|\bpickle\b|torch\.load\(|'
                       r'yaml\.load\(|\bmarshal\b|os\.popen\(')
    found = []
    for package in ('common', 'data_prep', 'training', 'inference', 'explain', 'eval', 'submission', 'bench'):
        for path in (REPO / package).rglob('*.py'):
            for number, text in enumerate(path.read_text(encoding='utf-8').splitlines(), 1):
                if risky.search(text.split('#', 1)[0]):
                    found.append(f'{path.relative_to(REPO)}:{number}: {text.strip()}')
    assert found == []


@pytest.mark.case('X5')
def test_team_strings_stay_strings_in_the_generated_script():
    import ast
    evil = '"""; import os; os.system("id") #\''
    team = {**json.loads(TEAM.read_text()), 'Team_Name': evil}
    code = task1.render_script(name='x', model_id='tester/m', adapter_id=None, team=team, model_type='qwen2_5_vl',
                               template_type='qwen2_5_vl')
    tree_ = ast.parse(code)
    calls = {ast.unparse(n.func) for n in ast.walk(tree_) if isinstance(n, ast.Call)}
    assert 'os.system' not in calls
    info = next(n for n in ast.walk(tree_) if isinstance(n, ast.Assign)
                and [getattr(t, 'id', None) for t in n.targets] == ['SUBMISSION_INFO'])
    assert ast.literal_eval(info.value)['Team_Name'] == evil
    script = submission_script(team)
    assert ast.literal_eval(ast.parse(script).body[1].value)['Team_Name'] == evil


@pytest.mark.case('X6', 'B-token')
def test_the_token_never_shows(runner, tiny_model_dir, tmp_path, monkeypatch, capsys):
    """In what a dry-run build prints and writes, and in the one-line errors of an upload and of medvqa."""
    build = tmp_path / 'build'
    run = runner.run('submission.task1', task1_argv(tiny_model_dir, build, '--dry-run', '--hub-repo', 'tester/t1'),
                     env={'HF_TOKEN': TOKEN})
    assert run.code == 0, run.err[-2000:]
    monkeypatch.setenv('HF_HUB_OFFLINE', '0')
    monkeypatch.setenv('HF_ENDPOINT', 'http://127.0.0.1:9')
    with pytest.raises(InputError) as upload:
        hub.upload('tester/t1', build / 'tiny', TOKEN)
    assert str(upload.value).startswith('upload: creating the repo tester/t1 failed (')
    snapshot = tmp_path / 'empty-snapshot'
    snapshot.mkdir()
    netstub(monkeypatch, snapshot)
    with pytest.raises(InputError) as medvqa:
        hub.medvqa('validate', 'tester/t2', 2, TOKEN)
    seen = [run.out, run.err, str(upload.value), str(medvqa.value), capsys.readouterr().out]
    seen += [p.read_text(errors='replace') for p in tmp_path.rglob('*') if p.is_file()]
    assert not [text for text in seen if TOKEN in text]


# ---- crashes, second runs, full disks ----------------------------------------------------------------------------

@pytest.fixture(scope='session')
def built1(runner, tiny_model_dir, tmp_path_factory) -> tuple[dict, list]:
    build = tmp_path_factory.mktemp('task1') / 'build'
    run = runner.run('submission.task1', task1_argv(tiny_model_dir, build, '--dry-run', '--hub-repo', 'tester/t1'))
    assert run.code == 0, run.err[-2000:]
    return tree(build / 'tiny'), ['--dry-run', '--hub-repo', 'tester/t1']


@pytest.mark.case('B-task1-kill', 'B-task1-conc', 'X7')
def test_task1_sigkill_at_three_points_then_rerun(runner, tiny_model_dir, built1, tmp_path, capsys):
    reference, extra = built1
    build = tmp_path / 'build'
    argv = task1_argv(tiny_model_dir, build, *extra)
    final = build / 'tiny'
    runner.killed_at('submission.task1', argv, Trigger('open', '*/README.md'))       # script written, README not
    assert not final.exists() and debris(build)
    with runner.paused_at('submission.task1', argv, Trigger('os.rename', str(final))) as first:
        fails(task1.main, argv, capsys, f'error: {final}: another submission.task1 build is writing here now')
    assert first.code == 0 and tree(final) == reference
    runner.killed_at('submission.task1', argv, Trigger('open', '*/README.md'))       # a rebuild over the first
    assert tree(final) == reference                                                  # the old build stays whole
    runner.killed_at('submission.task1', argv, Trigger('os.rename', str(final), 2))  # old moved aside, new not in
    run = runner.run('submission.task1', argv)
    assert run.code == 0, run.err[-2000:]
    assert tree(final) == reference and debris(build) == []
    assert files_mode(final) == {0o644}


@pytest.mark.case('B-task1-disk')
def test_task1_full_disk_keeps_the_previous_build(tiny_model_dir, built1, tmp_path, capsys):
    reference, extra = built1
    with small_disk(tmp_path / 'disk', 4) as disk:
        argv = task1_argv(tiny_model_dir, disk, *extra)
        assert run_main(task1.main, argv, capsys)[0] == 0
        fill(disk)
        fails(task1.main, argv, capsys, 'No space left on device')
        assert tree(disk / 'tiny') == reference and debris(disk) == []


@pytest.fixture(scope='session')
def built2(runner, tiny_model_dir, synthetic_dataset, tmp_path_factory) -> tuple[Path, dict]:
    build = tmp_path_factory.mktemp('task2') / 'build'
    run = runner.run('submission.task2', task2_argv(tiny_model_dir, synthetic_dataset, build, '--dry-run'))
    assert run.code == 0, run.err[-3000:]
    return build, tree(build / 'tiny')


@pytest.mark.case('B-task2-kill', 'B-task2-conc', 'X7')
def test_task2_sigkill_at_two_points_then_rerun(runner, tiny_model_dir, synthetic_dataset, built2, tmp_path,
                                                capsys):
    reference = built2[1]
    build = tmp_path / 'build'
    argv = task2_argv(tiny_model_dir, synthetic_dataset, build, '--dry-run')
    final = build / 'tiny'
    # paused once the stage build has written its rows file: a second build of the name is refused; then killed
    with runner.paused_at('submission.task2', argv, Trigger('os.rename', '*/.work-tiny/rows.jsonl'), then='kill'):
        fails(task2.main, argv, capsys, f'error: {final}: another submission.task2 build is writing here now')
    runner.killed_at('submission.task2', argv, Trigger('os.rename', str(final)))   # resumed; killed before the swap
    assert not final.exists() and debris(build)
    run = runner.run('submission.task2', argv)
    assert run.code == 0, run.err[-3000:]
    assert tree(final) == reference and debris(build) == []
    assert files_mode(final) == {0o644}


@pytest.mark.case('B-task2-disk')
def test_task2_full_disk_keeps_the_previous_build(runner, tiny_model_dir, synthetic_dataset, built2, tmp_path):
    build, reference = built2
    with small_disk(tmp_path / 'disk', 8) as disk:
        for name in ('tiny', '.work-tiny'):   # the previous build and its stage files
            shutil.copytree(build / name, disk / name)
        fill(disk)
        run = runner.run('submission.task2', task2_argv(tiny_model_dir, synthetic_dataset, disk, '--dry-run'))
        assert run.code == 2, run.err[-3000:]
        one_line_error(run.err, 'No space left on device')
        assert tree(disk / 'tiny') == reference and debris(disk) == []
