"""Build, check and upload (a token and the hub checked first) the Subtask 1 submission for a fine-tuned model.

    python -m submission.task1 --model RUN/merged --hub-repo user/name [--name N] [--team submission/team.json]
        [--dataset LOCAL_COPY] [--dry-run] [--submit]
    python -m submission.task1 --model Qwen/Qwen2.5-VL-7B-Instruct --adapter RUN/v0-.../checkpoint-100 \
        --hub-repo user/name

Writes submission/build/task1/<name>/ (via a temp folder + rename): submission_task1.py (our template, rendered with
the hub ids and team details), requirements.txt (pins the script needs), README.md (recipe, data, scores) and, after
the dry run, predictions_1.json. Then:
1. the organizers' hidden-set regexes must apply (submission.patch_check);
2. with --dataset, the script runs offline on that local copy against the LOCAL model folders and its
   predictions_1.json is validated (submission.dry_run);
3. without --dry-run: the repo is created (private) and the model folder (when --model/--adapter is a local folder)
   plus the submission files are uploaded to --hub-repo, then `medvqa validate`; with --submit,
   `medvqa validate_and_submit` after a typed confirmation (that makes the repo public + gated and shares it with the
   organizers). The token and the hub are checked before any work: an upload that cannot happen is an error (exit 2)
   at once, never a build that quietly ends with "nothing uploaded".
"""
from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from common.errors import InputError, cli_main
from common.io import atomic_dir, exclusive_lock
from common.run_env import image_budget
from submission import hub
from submission.dry_run import dry_run
from submission.patch_check import check_script
from submission.team import DEFAULT_TEAM_FILE, load_team

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = Path(__file__).with_name('templates') / 'submission_task1.py'
BUILD_ROOT = REPO / 'submission' / 'build' / 'task1'
DEFAULT_MAX_PIXELS = 1003520  # the organizers' ms-swift sample; override with the value used in training
# What the generated script imports, pinned from our requirements-base.txt (torch is the evaluator's own).
SCRIPT_PACKAGES = ('ms-swift', 'qwen-vl-utils', 'transformers', 'datasets', 'peft', 'accelerate', 'huggingface_hub',
                   'evaluate', 'rouge-score', 'nltk', 'tqdm', 'pillow')
_NAME = re.compile(r'^[A-Za-z0-9][\w.-]*$')


# ---------------------------------------------------------------- the script
def render_script(*, name: str, model_id: str, adapter_id: str | None, team: dict, model_type: str | None = None,
                  template_type: str | None = None, system_prompt: str | None = None, max_new_tokens: int = 64,
                  batch_size: int = 16, max_pixels: int = DEFAULT_MAX_PIXELS, backend: str = 'auto') -> str:
    """Our template with every `"@@KEY@@"` placeholder replaced by a Python literal."""
    if not _NAME.match(name):
        raise InputError(f'use letters, digits, ".", "_" or "-": {name!r}', field='name')
    values = {'MODEL_ID': model_id, 'ADAPTER_ID': adapter_id, 'MODEL_TYPE': model_type,
              'TEMPLATE_TYPE': template_type, 'SYSTEM_PROMPT': system_prompt, 'MAX_NEW_TOKENS': int(max_new_tokens),
              'BATCH_SIZE': int(batch_size), 'MAX_PIXELS': str(int(max_pixels)), 'BACKEND': backend}
    code = TEMPLATE.read_text(encoding='utf-8').replace('@@NAME@@', name)
    for key, value in values.items():
        code = code.replace(f'"@@{key}@@"', repr(value))
    # JSON of strings and lists of strings is also a Python literal; keeps the organizers' dict layout.
    info = json.dumps(team, indent=4, ensure_ascii=False)
    code = code.replace('"@@SUBMISSION_INFO@@"', info)
    if '@@' in code:
        left = re.findall(r'@@\w+@@', code)
        raise RuntimeError(f'unrendered placeholder in {TEMPLATE}: {left}')
    compile(code, 'submission_task1.py', 'exec')
    return code


def requirements_txt() -> str:
    """Pins for the packages the script imports, taken from requirements-base.txt (one source of truth)."""
    pins = {}
    for line in (REPO / 'requirements-base.txt').read_text(encoding='utf-8').splitlines():
        line = line.split('#', 1)[0].strip()
        m = re.match(r'^([A-Za-z0-9_.-]+)', line)
        if m:
            pins[m.group(1).lower().replace('_', '-')] = line
    lines = [pins.get(p.lower().replace('_', '-'), p) for p in SCRIPT_PACKAGES]
    return ('# Installed by `medvqa validate` after its own minimum set, so these pins win.\n'
            '# torch / CUDA are the evaluation machine\'s own. vLLM is used when already installed there.\n'
            + '\n'.join(lines) + '\n')


# ---------------------------------------------------------------- what we know about the model
def find_args_json(*folders: Path | None) -> dict:
    """ms-swift's args.json for the run behind a model folder (merged dir, checkpoint, or the run folder)."""
    for folder in filter(None, folders):
        candidates = [folder / 'args.json', folder.parent / 'args.json']
        candidates += sorted(folder.parent.glob('v*/args.json'), reverse=True)
        for c in candidates:
            if c.is_file():
                try:
                    return {**json.loads(c.read_text(encoding='utf-8')), '_path': str(c)}
                except json.JSONDecodeError:
                    continue
    return {}


RECIPE_KEYS = ('model', 'model_type', 'template', 'tuner_type', 'train_type', 'lora_rank', 'lora_alpha',
               'target_modules', 'freeze_vit', 'learning_rate', 'num_train_epochs', 'max_steps',
               'per_device_train_batch_size', 'gradient_accumulation_steps', 'max_length', 'max_pixels', 'torch_dtype',
               'dataset', 'val_dataset', 'split_dataset_ratio', 'system', 'seed')


def portable(value):
    """A recipe value as the README shows it: an absolute local path (this machine's data or model folder, meaningless
    to readers of the hub repo) becomes `.../<parent>/<name>`."""
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        return '.../' + '/'.join(Path(value).parts[-2:])
    return value


def readme(*, name: str, model_id: str, adapter_id: str | None, args_json: dict, scores: dict[str, dict],
           settings: dict) -> str:
    lines = [f'# Medico 2026 Subtask 1 submission: {name}', '',
             'Generated by medico2026-recipes (`make submit-task1`). The organizers run `submission_task1.py`',
             '(`medvqa validate --competition=medico-2026 --task=1`); it loads the model below from the hub and',
             'answers every question with greedy decoding.', '',
             '## Model', f'- model: `{model_id}`' + (f' + LoRA adapter `{adapter_id}`' if adapter_id else ''), '']
    lines += ['## Inference settings'] + [f'- {k}: `{v}`' for k, v in settings.items()] + ['']
    lines += ['## Training recipe (ms-swift args.json)']
    recipe = {k: portable(args_json[k]) for k in RECIPE_KEYS if args_json.get(k) not in (None, [], '')}
    if recipe:
        lines += [f'- {k}: `{json.dumps(v, ensure_ascii=False)}`' for k, v in recipe.items()]
        lines += [f'- from: `{Path(args_json["_path"]).name}` of the training run']
    else:
        lines += ['- no ms-swift args.json found next to the model; see the repository recipe used.']
    lines += ['', '## Data and splits',
              '- Kvasir-VQA-x1 (`SimulaMet/Kvasir-VQA-x1`); training data as listed in the recipe above.',
              '- The public validation subset is the first 1500 rows of the test split shuffled with seed 42. If the',
              '  test split was used for training (allowed for the final run), public scores are not held-out.',
              '', '## Scores']
    if scores:
        lines += ['| source | BLEU | ROUGE-1 | ROUGE-2 | ROUGE-L | METEOR |', '|---|---|---|---|---|---|']
        for src, s in scores.items():
            lines += [f'| {src} | ' + ' | '.join(str(s.get(k, '')) for k in ('bleu', 'rouge1', 'rouge2', 'rougeL',
                                                                             'meteor')) + ' |']
    else:
        lines += ['- none recorded at build time.']
    return '\n'.join(lines) + '\n'


def swift_types_from_config(model_dir: Path | None) -> tuple[str | None, str | None]:
    """ms-swift model_type/template named like config.json's model_type (qwen2_5_vl, qwen3_vl, ...), when it knows
    them: a renamed hub repo cannot be matched by name, and several types share one architecture."""
    if model_dir is None or not (model_dir / 'config.json').is_file():
        return None, None
    name = json.loads((model_dir / 'config.json').read_text(encoding='utf-8')).get('model_type')
    from swift.model import MODEL_MAPPING
    from swift.template import TEMPLATE_MAPPING
    if name in MODEL_MAPPING and name in TEMPLATE_MAPPING:
        return name, name
    return None, None


def _is_hub_id(value: str) -> bool:
    return hub.is_repo_id(value) and not Path(value).exists()


def _local_model(value: str, what: str) -> Path | None:
    """A local folder, or None for a hub id; anything else is bad input."""
    p = Path(value)
    if p.is_dir():
        return p.resolve()
    if _is_hub_id(value):
        return None
    raise InputError(f'neither a local folder nor a hub id (user/name): {value!r}', field=what)


def _cached_snapshot(repo_id: str) -> Path | None:
    """A hub model already in the local HF cache (for the offline dry run), else None."""
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        return None


# ---------------------------------------------------------------- the CLI
def resolve_models(model: str | None, adapter: str | None, hub_repo: str | None) -> dict:
    """Which hub ids the script loads, which local folders back them, and what to upload."""
    if not model:
        if adapter:
            raise InputError('an adapter needs its base model: pass --model <base hub id or folder>', field='adapter')
        raise InputError('no model: pass --model <merged folder or hub id>', field='model')
    model_dir = _local_model(model, 'model')
    if model_dir is not None and (model_dir / 'adapter_config.json').is_file() \
            and not (model_dir / 'config.json').is_file():
        raise InputError(f'{model} is a LoRA adapter: pass it with --adapter and its base with --model, '
                         'or merge it first (make export)', field='model')
    if model_dir is not None and not (model_dir / 'config.json').is_file():
        raise InputError(f'no config.json in {model}: not a model folder', field='model')
    repo = hub_repo
    if repo is not None:
        hub.check_repo_id(repo, 'hub-repo')
    out = {'upload_dirs': [], 'local': {}}
    if adapter is None:
        out['model_id'], out['adapter_id'] = (repo if model_dir else model), None
        if model_dir:
            out['upload_dirs'].append(model_dir)
            out['local'][out['model_id']] = model_dir
        elif (cached := _cached_snapshot(model)) is not None:
            out['local'][model] = cached
        return out
    adapter_dir = _local_model(adapter, 'adapter')
    if adapter_dir is not None and not (adapter_dir / 'adapter_config.json').is_file():
        raise InputError(f'no adapter_config.json in {adapter}: not a LoRA adapter folder', field='adapter')
    if model_dir is None:
        base_id = model
    else:  # the script needs the base's hub id: take it from the adapter's config when it names one
        base_id = None
        if adapter_dir is not None:
            cfg = json.loads((adapter_dir / 'adapter_config.json').read_text(encoding='utf-8'))
            named = cfg.get('base_model_name_or_path') or ''
            base_id = named if _is_hub_id(named) else None
        if base_id is None:
            raise InputError('the base model is a local folder and its hub id is unknown: pass --model <base hub id> '
                             '(or upload a merged model instead)', field='model')
    out['model_id'] = base_id
    out['local'][base_id] = model_dir or _cached_snapshot(base_id)
    if adapter_dir is not None:
        out['adapter_id'] = repo
        out['upload_dirs'].append(adapter_dir)
        out['local'][repo] = adapter_dir
    else:
        out['adapter_id'] = adapter
        out['local'][adapter] = _cached_snapshot(adapter)
    return out


def build(args) -> Path:
    team = load_team(args.team)
    placeholder_repo = args.hub_repo is None
    hub_repo = args.hub_repo or f'your-hf-user/medico2026-task1-{args.name}'
    models = resolve_models(args.model, args.adapter, hub_repo)
    args_json = find_args_json(*(Path(p) for p in (args.adapter, args.model) if p and Path(p).is_dir()))
    # the image budget the model was trained with: flag, the model's medico_env.json, $MAX_PIXELS, args.json, default
    max_pixels = (image_budget(args.model if Path(args.model).is_dir() else None, args.max_pixels)
                  or args_json.get('max_pixels') or DEFAULT_MAX_PIXELS)
    try:
        max_pixels = int(max_pixels)
    except ValueError:
        raise InputError(f'not a whole number of pixels: {max_pixels!r}', field='MAX_PIXELS') from None
    model_type = args.model_type or args_json.get('model_type')
    template_type = args.template or args_json.get('template')
    if not (model_type and template_type):  # importing ms-swift takes seconds: only when needed
        cfg_type, cfg_template = swift_types_from_config(Path(args.model) if Path(args.model).is_dir() else None)
        model_type, template_type = model_type or cfg_type, template_type or cfg_template
    settings = dict(model_type=model_type, template_type=template_type,
                    system_prompt=args.system if args.system is not None else args_json.get('system'),
                    max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, max_pixels=max_pixels,
                    backend=args.backend)
    code = render_script(name=args.name, model_id=models['model_id'], adapter_id=models['adapter_id'], team=team,
                         **settings)
    check_script(code, 'submission_task1.py')
    print('patch check: the organizers\' 3 hidden-set regexes each match once; the patched script compiles')

    root = Path(args.build_root)
    final = root / args.name
    # one build of a name at a time; the folder is assembled aside and swapped in whole (common.io.atomic_dir)
    with exclusive_lock(root / f'.{args.name}.lock', 'submission.task1 build', final), atomic_dir(final) as tmp:
        (tmp / 'submission_task1.py').write_text(code, encoding='utf-8')
        (tmp / 'requirements.txt').write_text(requirements_txt(), encoding='utf-8')
        scores = {}
        for f in args.scores or []:
            try:
                scores[Path(f).name] = json.loads(Path(f).read_text(encoding='utf-8'))
            except (OSError, ValueError) as e:
                raise InputError(f'cannot read scores ({e})', file=f) from None
        missing = [i for i, d in models['local'].items() if d is None]
        if args.dataset is None:
            print('dry run skipped: no --dataset (a local Kvasir-VQA-x1 copy); `medvqa validate` runs it for real')
        elif missing:
            print(f'dry run skipped: no local copy of {", ".join(missing)} (pass local folders to run it offline)')
        else:
            data = dry_run(tmp / 'submission_task1.py', dataset=args.dataset, images=args.images,
                           models=models['local'], team=team, keep=tmp / 'predictions_1.json')
            scores[f'dry run on {Path(args.dataset).name} ({len(data["predictions"])} questions)'] = \
                data['public_scores']
        (tmp / 'README.md').write_text(readme(name=args.name, model_id=models['model_id'],
                                              adapter_id=models['adapter_id'], args_json=args_json, scores=scores,
                                              settings=settings), encoding='utf-8')
    print(f'built {final}')
    if placeholder_repo:
        print(f'note: no --hub-repo; the script loads the placeholder {hub_repo}')
    return final


def publish(args, folder: Path, token: str) -> None:
    models = resolve_models(args.model, args.adapter, args.hub_repo)
    url = hub.upload(args.hub_repo, folder, token, model_dirs=models['upload_dirs'])
    print(f'uploaded to {url}')
    hub.medvqa('validate', args.hub_repo, 1, token)
    if args.submit:
        hub.submit_after_confirmation(args.hub_repo, 1, token)


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--model', help='merged model folder (RUN/merged) or hub id; with --adapter: the base model')
    ap.add_argument('--adapter', help='LoRA adapter folder or hub id (needs --model as its base)')
    ap.add_argument('--hub-repo', help='user/name of the Hugging Face model repo the organizers will run')
    ap.add_argument('--name', default='submission', help='build folder name (submission/build/task1/<name>)')
    ap.add_argument('--team', default=str(DEFAULT_TEAM_FILE), help='team details JSON (see team.example.json)')
    ap.add_argument('--dataset', help='local Kvasir-VQA-x1 copy for the offline dry run of the generated script')
    ap.add_argument('--images', help='folder of <img_id>.jpg for a --dataset copy without image files')
    ap.add_argument('--dry-run', action='store_true', help='build and check offline only; never upload')
    ap.add_argument('--submit', action='store_true', help='also `medvqa validate_and_submit` (asks to confirm)')
    ap.add_argument('--max-new-tokens', type=int, default=64)
    ap.add_argument('--batch-size', type=int, default=16)
    ap.add_argument('--max-pixels', type=int, help='image budget rendered into the script (default: $MAX_PIXELS, '
                    f'else the training args.json, else {DEFAULT_MAX_PIXELS})')
    ap.add_argument('--system', help='system prompt (default: the one in the training args.json, if any)')
    ap.add_argument('--model-type', help='ms-swift model_type (default: training args.json, else config.json)')
    ap.add_argument('--template', help='ms-swift template (default: training args.json, else config.json)')
    ap.add_argument('--backend', choices=('auto', 'vllm', 'transformers'), default='auto')
    ap.add_argument('--scores', action='append', help='score JSON (make score) to list in README.md; repeatable')
    ap.add_argument('--build-root', default=str(BUILD_ROOT), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not args.dry_run and not args.hub_repo:
        raise InputError('pass --hub-repo user/name (or --dry-run to build and check only)', field='hub-repo')
    if args.submit and args.dry_run:
        raise InputError('--submit and --dry-run exclude each other', field='submit')
    for flag in ('max_new_tokens', 'batch_size'):
        if getattr(args, flag) < 1:
            raise InputError('must be at least 1', field='--' + flag.replace('_', '-'))
    if args.hub_repo:
        hub.check_repo_id(args.hub_repo, 'hub-repo')
    token = None
    if not args.dry_run:   # an upload was asked for: it must be possible before the build and dry run start
        token = hub.hub_token()
        hub.require_online(token, args.hub_repo)
    folder = build(args)
    if args.dry_run:
        print('--dry-run: nothing uploaded')
        return 0
    publish(args, folder, token)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
