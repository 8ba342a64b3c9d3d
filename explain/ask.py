"""One answer for one image and question, with its Subtask 2 explanation (`make ask EXPLAIN=1 IMAGE=... Q="..."`).

    python -m explain.ask --image IMG --question Q --model RUN/merged [--out DIR] [--max-new-tokens 64]
        [--backend auto|vllm|transformers] [--max-pixels N] [--system S] [--calibration-data VAL_PRED]
        [--grid 6] [--occlusion-max-pixels N] [--probe-tokens 48] [--grounding-tokens 128] [--rewrite]

The answer is `make ask`'s (inference.ask: the same engine, prompt, image budget and greedy decoding) and is printed
first. The explanation is what `make submit-task2` writes for a val row, made by the same code over a one-row work
folder (explain.stages: probes, grounding, occlusion, confidence, calibration with --calibration-data, visuals, then
assembly), on the engine that gave the answer (the model is loaded once). Then stdout shows the clinician-oriented text,
the confidence and where the pictures are; DIR (default build/ask/<image>-<hash>) keeps them, the stage files and
explanation.json (the row's submission entry and its audit: every probe, claim, grounding output and heatmap cell).
The heatmap's scale is this row's own (a submission shares one scale over all val rows).
Only with the model loaded here: the stages score the answer's token log-probs under occluded images, which a chat
server (--url) does not give.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.errors import InputError, cli_main, require_positive
from common.hub import use_hub_defaults
from common.io import write_json
from common.procs import die_with_spawning_parent, mark_parent
from common.qwen_vision import use_image_budget
from common.run_env import image_budget
from explain import confidence, heatmap, stages, visuals
from explain.work import key_of
from inference.ask import check_request
from inference.predict import check_model_path

REPO = Path(__file__).resolve().parents[1]
ASK_ROOT = REPO / 'build' / 'ask'
RESULT_FILE = 'explanation.json'

if __name__ == '__mp_main__':   # a child spawned by this module (vLLM's engine core): dies with it, no orphan
    die_with_spawning_parent()


def default_out(image: Path, question: str) -> Path:
    """One folder per image and question: asking again reuses its finished stages (their keys still match)."""
    return ASK_ROOT / f'{image.stem}-{key_of(str(image.resolve()), question)[:8]}'


def explain_one(image: Path, question: str, s: stages.Settings, work: Path) -> dict:
    """The answer (printed as soon as it is there) and the row's Subtask 2 entry and audit from explain.stages."""
    from PIL import Image
    use_hub_defaults()
    use_image_budget(s.max_pixels)
    s, _, _ = stages.resolve(s)
    s.scorer = 'vllm' if s.backend == 'vllm' else 'transformers'   # score on the answering engine: one model load
    engines = stages.Engines(s)
    with Image.open(image) as im:
        width, height = im.size
    row = {'val_id': 0, 'img_id': image.stem, 'question': question, 'image': str(image.resolve()),
           'width': width, 'height': height}
    generator = engines.generator()
    generator.max_new_tokens = s.answer_tokens
    row['answer'] = generator.answer([stages._prompt(s, row, question)])[0]['prediction']
    print(row['answer'], flush=True)
    work.mkdir(parents=True, exist_ok=True)
    stages.write_rows(work, [row])
    done = stages.run(work, s, engines)
    lines, audit, _ = stages.assemble(work, done['calibration'])
    calibrated_on = done['calibration']['report']['sample']['rows'] if done['calibration'] else None
    result = {'entry': lines[0], 'audit': audit[0], 'calibrated_on': calibrated_on}
    write_json(work / RESULT_FILE, result)
    return result


def report_text(result: dict, work: Path) -> str:
    """What stdout shows after the answer: the text, the confidence, each picture with what it shows."""
    entry, audit, calibrated_on = result['entry'], result['audit'], result['calibrated_on']
    how = (f'calibrated on {calibrated_on:,} held-out answers' if calibrated_on else
           'not calibrated: give --calibration-data, or CALIBRATION= to make ask')
    lines = ['', 'Explanation: ' + entry['textual_explanation'],
             f'Confidence: {entry["confidence_score"]:.3f} ({audit["certainty"]}; {how})']
    for visual in entry['visual_explanation']:
        if visual['type'] == 'heatmap':
            lines.append(f'Heatmap: {work / visual["data"]}  (colour bar: {work / "visuals" / visuals.SCALE_FILE})')
        else:
            lines.append(f'Boxes {visual["data"]}: {work / audit["box_image"]}')
        lines.append('  ' + visual['description'])
    if not audit['box_image']:
        lines.append('Boxes: none (the answer denies the finding, so no box was asked for)'
                     if audit['grounding_output'] is None else
                     f'Boxes: none (the model\'s grounding answer held no usable box: '
                     f'{audit["grounding_output"][:80]!r})')
    lines += [f'Frame: {work / audit["frame"]}', f'All of it (probes, claims, heatmap cells): {work / RESULT_FILE}']
    return '\n'.join(lines)


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog='python -m explain.ask', description=__doc__.split('\n\n')[0])
    ap.add_argument('--image', required=True, help='image file (jpg, png, ...)')
    ap.add_argument('--question', required=True, help='the question, as the dataset words them')
    ap.add_argument('--model', help='model folder (e.g. RUN/merged) or hub id, loaded here')
    ap.add_argument('--url', help=argparse.SUPPRESS)   # refused with a reason (make ask EXPLAIN=1 URL=...)
    ap.add_argument('--out', default=None, help='work folder (default: build/ask/<image>-<hash>)')
    ap.add_argument('--max-new-tokens', type=int, default=64, help='answer length cap (MAX_NEW_TOKENS)')
    ap.add_argument('--backend', choices=['auto', 'vllm', 'transformers'], default='auto')
    ap.add_argument('--max-pixels', type=int, default=None, help='image budget (default: the model\'s)')
    ap.add_argument('--system', default=None, help='system prompt, if the model was trained with one')
    ap.add_argument('--calibration-data', default=None,
                    help='labelled predictions with log-probs (make infer SPLIT=val-original INFER_ARGS=--logprobs); '
                         'without it the confidence is not calibrated')
    ap.add_argument('--calibration-rows', type=int, default=confidence.CALIBRATION_ROWS)
    ap.add_argument('--calibration-method', choices=('temperature', 'isotonic'), default='temperature')
    ap.add_argument('--grid', type=int, default=heatmap.DEFAULT_GRID, help='occlusion grid size (grid x grid)')
    ap.add_argument('--occlusion-max-pixels', type=int, default=None)
    ap.add_argument('--probe-tokens', type=int, default=48)
    ap.add_argument('--grounding-tokens', type=int, default=128)
    ap.add_argument('--rewrite', action='store_true', help='let the same model rewrite the fact sentences')
    args = ap.parse_args(argv)
    mark_parent()   # children started from here on die with this process (common.procs)
    if args.url:
        raise InputError('explanations need the model loaded here (they score the answer under occluded images, '
                         'which a server does not give): leave out URL and use MODEL', field='--url')
    if not args.model:
        raise InputError('give the model folder or hub id', field='--model')
    image = check_request(args.image, args.question, args.max_new_tokens)
    require_positive(args, ('grid', 'probe_tokens', 'grounding_tokens', 'occlusion_max_pixels', 'max_pixels'))
    check_model_path(args.model, '--model')
    if args.calibration_data:
        if not Path(args.calibration_data).is_file():
            raise InputError('file not found', file=args.calibration_data, field='--calibration-data')
        confidence.calibration_inputs(args.calibration_data)   # a wrong file fails now, not after the model stages
    s = stages.Settings(model=args.model, backend=args.backend, max_pixels=image_budget(args.model, args.max_pixels),
                        system=args.system, answer_tokens=args.max_new_tokens, probe_tokens=args.probe_tokens,
                        grounding_tokens=args.grounding_tokens, grid=args.grid,
                        occlusion_max_pixels=args.occlusion_max_pixels, rewrite=args.rewrite,
                        calibration=args.calibration_data, calibration_rows=args.calibration_rows,
                        calibration_method=args.calibration_method, workers=1)
    work = (Path(args.out) if args.out else default_out(image, args.question)).resolve()
    result = explain_one(image, args.question, s, work)
    print(report_text(result, work), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
