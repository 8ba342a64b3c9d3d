"""One val row end to end: teacher-forced check of the answer, raw confidence, self-probes, grounding boxes,
occlusion heatmap, and the composed justification. Also the synthetic-set evaluation against true geometry."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from explain import confidence, grounding, heatmap, probing

# Answers that deny the finding get no box: a box would show something the model says is not there.
_DENIES = re.compile(r'^\s*(no|none|nothing)\b|\bnot (present|observed|visible|seen|detected|identified|found)\b'
                     r'|\b(no|without) (evidence|visible|abnormal|polyp|lesion|instrument|finding)', re.I)


def grounding_target(question: str) -> str:
    for topic in probing.classify_question(question):
        if topic in grounding.TARGETS:
            return grounding.TARGETS[topic]
    return grounding.DEFAULT_TARGET


def answer_confidence(runner, image, question: str, answer: str | None, answer_tokens: int = 64):
    """(answer, raw confidence, matches): the model answers again greedily with log-probs; a given Task 1 answer must
    be that same text (`matches`). If it is not, its confidence is its own teacher-forced geometric-mean probability."""
    gen = runner.answer(image, question, answer_tokens)
    if answer is None:
        answer = gen.text
    if gen.text == answer:
        return answer, confidence.raw_score(question, answer, gen.token_logprobs, gen.first_top), True
    n = max(1, len(runner.tokenizer(answer, add_special_tokens=False)['input_ids']))
    return answer, float(np.exp(runner.answer_logprob_batch([image], question, answer)[0] / n)), False


def explain_row(runner, image: Image.Image, question: str, answer: str | None, heatmap_path: Path, heatmap_rel: str,
                grid: int = heatmap.DEFAULT_GRID, probe_tokens: int = 48, grounding_tokens: int = 128,
                answer_tokens: int = 64) -> dict:
    """Everything Subtask 2 needs for one row, plus the audit trail (probes, claims, raw grounding output).
    `answer`: the Task 1 prediction, or None to let the model answer now."""
    image = image.convert('RGB')
    width, height = image.size
    answer, raw, matches = answer_confidence(runner, image, question, answer, answer_tokens)

    probes = probing.run_probes(runner, image, question, probe_tokens)

    target = grounding_target(question)
    visuals, box_stats, grounding_output = [], grounding.BoxStats(), None
    if not _DENIES.search(answer):
        grounding_output = runner.generate(image, grounding.grounding_prompt(target, runner.family), grounding_tokens)
        boxes, box_stats = grounding.boxes_from_output(grounding_output, runner.resized_size(image), (width, height),
                                                       runner.family)
        if boxes:
            labels = sorted({b['label'] for b in boxes if b['label']})
            named = f'"{", ".join(labels)}"' if labels else f'the {target}'
            visuals.append({'type': 'bounding_box', 'data': [b['box'] for b in boxes],
                            'description': f'Box(es) where the same model located {named} when asked to find the '
                                           f'{target} this answer is about.'})

    cells = heatmap.occlusion_grid(runner, image, question, answer, grid)
    heat = heatmap.upsample(cells, width, height)
    heatmap.save_overlay(image, heat, heatmap_path)
    region = heatmap.peak_region(heat)
    if float(cells.max()) > 0:
        heat_text = (f'Occlusion heatmap: hiding the {region} part of the image lowered the model\'s probability of '
                     f'this answer the most (yellow = largest drop).')
    else:
        heat_text = 'Occlusion heatmap: hiding no single region lowered the model\'s probability of this answer.'
    visuals.append({'type': 'heatmap', 'data': heatmap_rel, 'description': heat_text})

    composed = probing.compose(question, answer, probes, visuals)
    return {'answer': answer, 'textual_explanation': composed['text'], 'visual_explanation': visuals,
            'raw_confidence': raw, 'greedy_consistent': matches,
            'probes': probes, 'claims': composed['claims'], 'grounding_target': target,
            'grounding_output': grounding_output, 'box_stats': box_stats.as_dict(),
            'heatmap_cells': np.round(cells, 6).tolist(), 'heatmap_peak': region}


# ---------------------------------------------------------------- evaluation against synthetic geometry
def true_boxes(scene: dict, question: str) -> list[list[int]]:
    """The ground-truth region a question is about, from data_prep.synthetic's geometry.jsonl scene."""
    topics = probing.classify_question(question)
    polyps = [p['bbox'] for p in scene.get('polyps', [])]
    instruments = [i['bbox'] for i in scene.get('instruments', [])]
    if 'text' in topics:
        return [scene['text']['bbox']] if scene.get('text') else []
    if 'box' in topics:
        return [scene['green_box']] if scene.get('green_box') else []
    if 'instrument' in topics:
        return instruments
    if 'polyp' in topics:
        return polyps
    return polyps + instruments


def evaluate_geometry(records: list[dict], scenes: dict[str, dict], heatmaps: dict[int, np.ndarray]) -> dict:
    """Box IoU vs truth (best pair per row) and heatmap mass inside the true region vs that region's area share."""
    ious, masses, shares, no_box = [], [], [], 0
    for rec in records:
        scene = scenes.get(rec['img_id'])
        if not scene:
            continue
        truth = true_boxes(scene, rec['question'])
        if not truth:
            continue
        pred = [b for v in rec['visual_explanation'] if v['type'] == 'bounding_box' for b in v['data']]
        if pred:
            ious.append(max(grounding.iou(p, t) for p in pred for t in truth))
        else:
            no_box += 1
        heat = heatmaps.get(rec['val_id'])
        if heat is not None:
            mask = np.zeros(heat.shape, dtype=bool)
            for x1, y1, x2, y2 in truth:
                mask[max(0, int(y1)):int(y2), max(0, int(x1)):int(x2)] = True
            total = float(heat.sum())
            if total > 0:
                masses.append(float(heat[mask].sum()) / total)
                shares.append(float(mask.mean()))
    return {'rows_with_truth': len(ious) + no_box, 'rows_with_box': len(ious), 'rows_without_box': no_box,
            'mean_best_iou': float(np.mean(ious)) if ious else None,
            'iou_at_0_5': float(np.mean([v >= 0.5 for v in ious])) if ious else None,
            'heatmap_rows': len(masses), 'mean_heatmap_mass_inside': float(np.mean(masses)) if masses else None,
            'mean_true_area_share': float(np.mean(shares)) if shares else None}
