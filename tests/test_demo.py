"""End to end: `make demo`'s script runs the whole mission path offline on CPU and leaves every artefact behind."""
import json
import subprocess
from pathlib import Path

import pytest

from submission.patch_check import check_script

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_runs_every_stage_and_prints_where_artefacts_are(tmp_path):
    demo = tmp_path / 'demo'
    proc = subprocess.run(['bash', 'scripts/demo.sh', str(demo)], cwd=REPO, capture_output=True, text=True,
                          timeout=1500, env={**__import__('os').environ, 'DEMO_IMAGES': '16'})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert 'Artefacts:' in proc.stdout and str(demo / 'submission' / 'task2' / 'demo') in proc.stdout

    # prepare: both settings written with aligned sidecars
    swift = demo / 'prepared' / 'swift'
    for name in ('train-original', 'train-augmented', 'test-original', 'test-augmented'):
        lines = (swift / f'{name}.jsonl').read_text().splitlines()
        assert lines and len(lines) == len((swift / f'{name}.meta.jsonl').read_text().splitlines())
    assert any('_aug' in json.loads(l)['images'][0] for l in (swift / 'train-augmented.jsonl').read_text().splitlines())

    # sft + export: a LoRA checkpoint, its loss curve and a merged standalone model
    assert list((demo / 'run').glob('v*/checkpoint-*/adapter_model.safetensors'))
    assert (demo / 'run' / 'merged' / 'config.json').is_file()
    assert (demo / 'run' / 'loss_curve.png').read_bytes()[:4] == b'\x89PNG' and 'loss_curve.png' in proc.stdout

    # serve + ask: the server came up, answered over HTTP, and was stopped
    assert 'Uvicorn running on http://127.0.0.1:' in (demo / 'serve.log').read_text()
    asked = proc.stdout.split('and ask it one question over HTTP', 1)[1].split('=== [', 1)[0]
    assert 'inference.ask --image' in asked and '--url http://127.0.0.1:' in asked

    # infer + score: one prediction per input line, one JSON object of the five leaderboard metrics
    for split in ('test-original', 'test-augmented', 'task2_val-original'):
        preds = (demo / 'preds' / f'{split}.jsonl').read_text().splitlines()
        assert len(preds) == len((swift / f'{split}.jsonl').read_text().splitlines())
        report = json.loads((demo / 'reports' / split / 'report.json').read_text())
        assert report
    # the augmented split is scored beside the original one (the challenge's two settings)
    assert '## Original vs augmented images' in (demo / 'reports' / 'test-augmented' / 'report.md').read_text()
    scores = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"bleu"')]
    assert len(scores) == 4 and all(set(s) == {'bleu', 'rouge1', 'rouge2', 'rougeL', 'meteor'} for s in scores)

    # submit-task1 (dry run): the organizers' contract holds and the generated script really ran
    t1 = demo / 'submission' / 'task1' / 'demo'
    check_script((t1 / 'submission_task1.py').read_text())
    pred1 = json.loads((t1 / 'predictions_1.json').read_text())
    assert len(pred1['predictions']) == len((swift / 'task1_public-original.jsonl').read_text().splitlines())
    assert (t1 / 'requirements.txt').is_file() and (t1 / 'README.md').is_file()
    readme = (t1 / 'README.md').read_text()
    assert '- dataset:' in readme and str(tmp_path) not in readme and str(REPO) not in readme   # no local paths

    # submit-task2 (dry run): one line per val_id with explanation, visuals inside the folder, confidence in [0, 1]
    t2 = demo / 'submission' / 'task2' / 'demo'
    rows = [json.loads(l) for l in (t2 / 'submission_task2.jsonl').read_text().splitlines()]
    assert [r['val_id'] for r in rows] == list(range(len(rows))) and rows
    for r in rows:
        assert r['textual_explanation'] and 0.0 <= r['confidence_score'] <= 1.0
        for v in r['visual_explanation']:
            if v['type'] == 'heatmap':
                assert (t2 / v['data']).is_file()
    assert (t2 / 'submission_task2.py').is_file() and (t2 / 'README.md').is_file()
    # what a rater opens: the README's gallery and every row in report/index.html, both printed at the end
    assert str(t2 / 'README.md') in proc.stdout and str(t2 / 'report' / 'index.html') in proc.stdout
    assert '## Gallery: ' in (t2 / 'README.md').read_text() and (t2 / 'report' / 'index.html').is_file()
    assert json.loads((t2 / 'report' / 'report.json').read_text())['settings']['rewrite'] is True
