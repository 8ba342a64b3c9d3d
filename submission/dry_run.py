"""Run a generated submission_task1.py offline, exactly as the organizers would, and check what it writes.

The script runs unmodified in a fresh temp working dir, in its own Python process. Only the hub is redirected:
- `datasets.load_dataset("SimulaMet/Kvasir-VQA-x1" | "...-private")` returns a local copy (`data_prep.sources`),
  with the image column as a datasets Image feature pointing at readable files;
- the model (and adapter) hub ids resolve to local folders through a throw-away Hugging Face cache (HF_HUB_CACHE with
  `models--org--name/snapshots/<rev>` linked to the folder; HF_HUB_OFFLINE=1), so ms-swift's own hub code runs;
- `evaluate.load("bleu" | "rouge" | "meteor")` returns objects backed by `eval.metrics.score` (the official metric
  scripts live on the hub).
Source edits use the organizers' own regex mechanism: mode "public" changes `range(1500)` to `range(n)` when the
local test split has fewer than 1500 rows (small synthetic copies); mode "challenge" applies the organizers' three
hidden-set patches and serves the local test split as the private set (every row, unshuffled).

predictions_1.json is then checked: key sets, one prediction per row, string answers, index/img_id/question equal
to the expected rows in order, submission_info equal to the team file, public_scores equal to `eval.metrics.score`.

    python -m submission.dry_run SCRIPT --dataset DIR --model-dir DIR [--mode public|challenge] [--team FILE]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from common.errors import InputError, cli_main
from common.offline import offline_env
from common.qwen_vision import DERIVED_TOKEN_VARS
from submission.patch_check import PRIVATE_DATASET, apply_challenge_patch

REPO = Path(__file__).resolve().parents[1]
PUBLIC_DATASET = 'SimulaMet/Kvasir-VQA-x1'
PUBLIC_SIZE = 1500
# Same mechanism as the organizers' patches: a regex on the select line (only for local splits < 1500 rows).
SMALL_SET_PATTERN = r'(ds_shuffled\.select\s*\(\s*range\s*\(\s*)1500(\s*\)\s*\))'
TOP_KEYS = {'submission_info', 'public_scores', 'predictions', 'total_time', 'time_per_item', 'memory_used_mb',
            'model_memory_mb', 'gpu_name', 'debug'}
SCORE_KEYS = {'bleu', 'rouge1', 'rouge2', 'rougeL', 'meteor'}
PRED_KEYS = {'index', 'img_id', 'question', 'answer'}
SYSTEM_KEYS = {'python', 'os', 'platform', 'arch'}
_METRIC_KEYS = {'bleu': ('bleu',), 'rouge': ('rouge1', 'rouge2', 'rougeL', 'rougeLsum'), 'meteor': ('meteor',)}


# ---------------------------------------------------------------- the local copy, as the script will see it
def local_splits(dataset: str, images: str | None = None):
    """`load_source(dataset, images)` with the image column as a datasets Image feature the script can read
    offline (local files or embedded bytes, found by `data_prep.sources.resolve_image`)."""
    from datasets import Image
    from data_prep.sources import load_source, resolve_image

    dd = load_source(dataset, images)
    for split, ds in dd.items():
        if images is None and isinstance(ds.features.get('image'), Image):
            continue  # already an Image feature (e.g. a save_to_disk copy of the hub dataset)
        if isinstance(ds.features.get('image'), Image):
            ds = ds.cast_column('image', Image(decode=False))

        def readable(row):
            # LazyRow is no dict: pass the fields themselves
            src = resolve_image(row['image'] if 'image' in row else None, dataset=dataset, images=images,
                                img_id=row['img_id'])
            if isinstance(src, bytes):
                return {'image': {'bytes': src, 'path': None}}
            if src is None or isinstance(src, str):  # nowhere, or an URL: the dry run is offline
                raise InputError(f'no local image for {row.get("img_id")!r} (pass --images <folder of '
                                 '<img_id>.jpg>)', file=dataset, field='image')
            return {'image': {'bytes': None, 'path': str(Path(src).resolve())}}

        features = ds.features.copy()
        features['image'] = Image()
        dd[split] = ds.map(readable, features=features, desc=f'local images ({split})')
    return dd


def expected_rows(test, mode: str) -> list[dict]:
    """The rows the script must answer, in order: the organizers' public subset, or (challenge) the whole split."""
    from datasets import Image
    if 'image' in test.column_names:  # no need to decode images to know the order
        test = test.cast_column('image', Image(decode=False))
    if mode == 'challenge':
        subset = test
    else:
        from data_prep.subsets import task1_subset
        subset = task1_subset(test)
    return [{k: r[k] for k in ('img_id', 'question', 'answer')} for r in subset]


# ---------------------------------------------------------------- redirects installed inside the script's process
class OfflineMetric:
    """Stands in for `evaluate.load(name)`: .compute(predictions=, references=) with evaluate's result keys."""

    def __init__(self, name: str, seed: int | None = None):
        if name not in _METRIC_KEYS:
            raise ValueError(f'dry run has no offline metric {name!r} (only {", ".join(_METRIC_KEYS)})')
        self.name, self.seed = name, 42 if seed is None else seed

    def compute(self, *, predictions, references, **_):
        from eval.metrics import score
        refs = [r[0] if isinstance(r, (list, tuple)) else r for r in references]
        result = score(list(predictions), refs, rouge_seed=self.seed)
        raw = result.get('unrounded', result)  # evaluate returns unrounded values; the script rounds
        out = {k: raw[k] for k in _METRIC_KEYS[self.name] if k in raw}
        if self.name == 'bleu':
            out.update(result.get('bleu_details', {}))
        return out


def install_redirects(cfg: dict) -> None:
    """Patch datasets.load_dataset and evaluate.load before the script imports them."""
    import datasets
    import evaluate

    real_load_dataset = datasets.load_dataset
    splits = {}

    def load_dataset(path, *args, **kwargs):
        if path not in (PUBLIC_DATASET, PRIVATE_DATASET):
            return real_load_dataset(path, *args, **kwargs)
        if 'dd' not in splits:
            splits['dd'] = local_splits(cfg['dataset'], cfg.get('images'))
        split = kwargs.get('split')
        return splits['dd'][split] if split else splits['dd']

    def load(path, *args, seed=None, **kwargs):
        return OfflineMetric(path, seed)

    datasets.load_dataset = load_dataset
    evaluate.load = load


def _bootstrap(cfg_path: str) -> None:
    """Entry point of the child process (see `run_script`)."""
    import runpy
    cfg = json.loads(Path(cfg_path).read_text(encoding='utf-8'))
    install_redirects(cfg)
    sys.argv = [cfg['script']]
    runpy.run_path(cfg['script'], run_name='__main__')


def fake_hub_cache(cache: Path, models: dict[str, Path]) -> None:
    """An offline Hugging Face cache in which each hub id resolves to a local folder."""
    rev = '0' * 40
    for repo_id, folder in models.items():
        if '/' not in repo_id:
            raise InputError(f'not a hub id (user/name): {repo_id!r}', field='model')
        repo = cache / ('models--' + repo_id.replace('/', '--'))
        (repo / 'refs').mkdir(parents=True, exist_ok=True)
        (repo / 'refs' / 'main').write_text(rev)
        (repo / 'snapshots').mkdir(exist_ok=True)
        os.symlink(Path(folder).resolve(), repo / 'snapshots' / rev, target_is_directory=True)


# ---------------------------------------------------------------- run + validate
def prepare_code(code: str, mode: str, n_test: int) -> str:
    if mode == 'challenge':
        code, counts = apply_challenge_patch(code)
        if counts != [1, 1, 1]:
            raise InputError(f'organizer patches matched {counts} times (expected [1, 1, 1])', field='script')
    elif n_test < PUBLIC_SIZE:
        code, n = re.subn(SMALL_SET_PATTERN, rf'\g<1>{n_test}\g<2>', code)
        if n != 1:
            raise InputError('`ds_shuffled.select(range(1500))` not found exactly once', field='script')
    return code


def _run_teed(cmd: list[str], *, cwd: Path, env: dict, log: Path, timeout: float | None, echo: bool) -> int:
    """Run `cmd`, writing its output to `log` and (echo) to our stderr as it comes, progress bars included."""
    with open(log, 'wb') as f, subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT) as proc:
        timed_out = []
        timer = threading.Timer(timeout, lambda: (timed_out.append(True), proc.kill())) if timeout else None
        if timer:
            timer.start()
        try:
            while chunk := proc.stdout.read1(65536):
                f.write(chunk)
                if echo:
                    sys.stderr.buffer.write(chunk)
                    sys.stderr.flush()
            returncode = proc.wait()
        finally:
            if timer:
                timer.cancel()
    if timed_out:
        raise InputError(f'the script ran past {timeout:.0f} s in the dry run (log: {log})')
    return returncode


def run_script(script: Path, *, dataset: str, models: dict[str, Path], workdir: Path, mode: str = 'public',
               n_test: int, images: str | None = None, timeout: float | None = None, echo: bool = True) -> Path:
    """Run the script in `workdir` with the redirects; returns the predictions_1.json it wrote."""
    code = prepare_code(script.read_text(encoding='utf-8'), mode, n_test)
    target = workdir / 'submission_task1.py'
    target.write_text(code, encoding='utf-8')
    fake_hub_cache(workdir / 'hub', models)
    cfg = workdir / 'dry_run.json'
    cfg.write_text(json.dumps({'script': str(target), 'dataset': str(Path(dataset).resolve()),
                               'images': str(Path(images).resolve()) if images else None}), encoding='utf-8')
    env = offline_env()
    env.update(HF_HUB_CACHE=str(workdir / 'hub'), HF_HOME=str(workdir / 'hf_home'), USE_HF='1',
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')])))
    env.pop('HF_TOKEN', None)  # nothing in a dry run talks to the hub
    for name in DERIVED_TOKEN_VARS:  # stale image budgets of this process: the script's own MAX_PIXELS must win
        env.pop(name, None)
    bootstrap = f'import sys; from submission.dry_run import _bootstrap; _bootstrap({str(cfg)!r})'
    log = workdir / 'dry_run.log'
    print(f'dry run ({mode}): running the generated script offline in {workdir} (log: {log})', flush=True)
    returncode = _run_teed([sys.executable, '-c', bootstrap], cwd=workdir, env=env, log=log, timeout=timeout,
                           echo=echo)
    for heavy in ('hub', 'hf_home'):  # keep only the script, its log and its output for a look afterwards
        shutil.rmtree(workdir / heavy, ignore_errors=True)
    if returncode != 0:
        lines = log.read_text(encoding='utf-8', errors='replace').replace('\r', '\n').splitlines()
        tail = [l for l in lines if l.strip()][-1:]
        raise InputError(f'the script failed in the dry run (exit {returncode}): {tail[0] if tail else ""} '
                         f'(full log: {log})', file=str(script))
    out = workdir / 'predictions_1.json'
    if not out.is_file():
        raise InputError('the script finished without writing predictions_1.json', file=str(script))
    return out


def validate_predictions(data, rows: list[dict], *, team: dict | None = None, file: str = 'predictions_1.json',
                         check_scores: bool = True) -> None:
    """Raise InputError at the first way `data` differs from what the organizers read."""
    if not isinstance(data, dict):
        raise InputError('expected one JSON object', file=file)
    if set(data) != TOP_KEYS:
        missing, extra = sorted(TOP_KEYS - set(data)), sorted(set(data) - TOP_KEYS)
        raise InputError(f'keys differ from the organizers\' (missing {missing}, unexpected {extra})', file=file)
    preds = data['predictions']
    if not isinstance(preds, list):
        raise InputError('expected a list', file=file, field='predictions')
    if len(preds) != len(rows):
        raise InputError(f'{len(preds)} predictions for {len(rows)} questions', file=file, field='predictions')
    for i, (p, r) in enumerate(zip(preds, rows)):
        if not isinstance(p, dict) or set(p) != PRED_KEYS:
            raise InputError(f'expected exactly the keys {sorted(PRED_KEYS)}', file=file, row=i, field='predictions')
        if not isinstance(p['answer'], str):
            raise InputError(f'answer is {type(p["answer"]).__name__}, not a string', file=file, row=i,
                             field='answer')
        if p['index'] != i:
            raise InputError(f'index {p["index"]!r}, expected {i}', file=file, row=i, field='index')
        for key in ('img_id', 'question'):
            if p[key] != r[key]:
                raise InputError(f'{p[key]!r} differs from the evaluation set ({r[key]!r})', file=file, row=i,
                                 field=key)
    scores = data['public_scores']
    if not isinstance(scores, dict) or set(scores) != SCORE_KEYS:
        raise InputError(f'expected exactly the keys {sorted(SCORE_KEYS)}', file=file, field='public_scores')
    for k, v in scores.items():
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(f'{k} is {v!r}, not a number', file=file, field='public_scores')
    for k in ('total_time', 'time_per_item', 'memory_used_mb', 'model_memory_mb'):
        if not isinstance(data[k], (int, float)) or isinstance(data[k], bool):
            raise InputError(f'{data[k]!r} is not a number', file=file, field=k)
    if not isinstance(data['gpu_name'], str):
        raise InputError('expected a string', file=file, field='gpu_name')
    debug = data['debug']
    if (not isinstance(debug, dict) or set(debug) != {'packages', 'system'} or not isinstance(debug['packages'], list)
            or not isinstance(debug['system'], dict) or set(debug['system']) != SYSTEM_KEYS):
        raise InputError(f'expected {{packages: [...], system: {sorted(SYSTEM_KEYS)}}}', file=file, field='debug')
    if team is not None and data['submission_info'] != team:
        raise InputError('differs from the team file', file=file, field='submission_info')
    if check_scores:
        from eval.metrics import score
        want = score([p['answer'] for p in preds], [r['answer'] for r in rows], rouge_seed=42)
        for k in sorted(SCORE_KEYS):
            if abs(round(float(want[k]), 4) - scores[k]) > 1e-9:
                raise InputError(f'{k} = {scores[k]}, but eval.metrics.score gives {round(float(want[k]), 4)}',
                                 file=file, field='public_scores')


def dry_run(script: str | Path, *, dataset: str, models: dict[str, Path], mode: str = 'public',
            images: str | None = None, team: dict | None = None, keep: Path | None = None,
            timeout: float | None = None, echo: bool = True) -> dict:
    """Run `script` offline on the local copy `dataset` and validate its predictions_1.json.

    `models` maps each hub id the script loads to a local folder. The validated JSON is returned and, with
    `keep`, copied there (atomically). Raises InputError on any failure.
    """
    script = Path(script)
    if not script.is_file():
        raise InputError('script not found', file=str(script))
    if not Path(dataset).exists():
        raise InputError('local dataset copy not found', file=str(dataset))
    for repo_id, folder in models.items():
        if not Path(folder).is_dir():
            raise InputError(f'local folder for {repo_id} not found', file=str(folder))
    test = local_splits(dataset, images)['test']
    rows = expected_rows(test, mode)
    workdir = Path(tempfile.mkdtemp(prefix=f'task1-dry-run-{mode}-'))
    out = run_script(script, dataset=dataset, models=models, workdir=workdir, mode=mode, n_test=len(test),
                     images=images, timeout=timeout, echo=echo)
    try:
        data = json.loads(out.read_text(encoding='utf-8'))
    except json.JSONDecodeError as e:
        raise InputError(f'not valid JSON ({e.msg})', file=str(out)) from None
    validate_predictions(data, rows, team=team, file=str(out))
    if keep is not None:
        from common.io import atomic_path
        with atomic_path(keep) as tmp:
            shutil.copyfile(out, tmp)
    shutil.rmtree(workdir, ignore_errors=True)
    print(f'dry run ({mode}): {len(rows)} predictions valid; public_scores {data["public_scores"]}')
    return data


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('script', help='a generated submission_task1.py')
    ap.add_argument('--dataset', required=True, help='local Kvasir-VQA-x1 copy (see data_prep.sources)')
    ap.add_argument('--images', help='folder of <img_id>.jpg when the copy has no image files of its own')
    ap.add_argument('--model-dir', required=True, help='local folder served for the script\'s MODEL_ID')
    ap.add_argument('--adapter-dir', help='local folder served for the script\'s ADAPTER_ID')
    ap.add_argument('--mode', choices=('public', 'challenge'), default='public')
    ap.add_argument('--team', help='team file; submission_info must equal it')
    ap.add_argument('--out', help='copy the validated predictions_1.json here')
    args = ap.parse_args(argv)
    ids = script_hub_ids(Path(args.script))
    models = {ids['MODEL_ID']: Path(args.model_dir)}
    if args.adapter_dir:
        if not ids.get('ADAPTER_ID'):
            raise InputError('script has no ADAPTER_ID', file=args.script)
        models[ids['ADAPTER_ID']] = Path(args.adapter_dir)
    team = None
    if args.team:
        from submission.team import load_team
        team = load_team(args.team)
    dry_run(args.script, dataset=args.dataset, images=args.images, models=models, mode=args.mode, team=team,
            keep=Path(args.out) if args.out else None)
    return 0


def script_hub_ids(script: Path) -> dict:
    """MODEL_ID / ADAPTER_ID literals of a generated script."""
    import ast
    ids = {}
    for node in ast.parse(script.read_text(encoding='utf-8')).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and node.targets[0].id in ('MODEL_ID', 'ADAPTER_ID') and isinstance(node.value, ast.Constant):
            ids[node.targets[0].id] = node.value.value
    if not ids.get('MODEL_ID'):
        raise InputError('no MODEL_ID = "user/name" line', file=str(script))
    return ids


if __name__ == '__main__':
    raise SystemExit(main())
