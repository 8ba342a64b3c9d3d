"""What a row's Subtask 2 entry says, from the stage outputs (explain.stages): which region grounding asks for, the
box and heatmap entries, the composed justification. Also the synthetic-set evaluation against true geometry."""
from __future__ import annotations

import re

import numpy as np

from explain import grounding, probing

# Answers that deny the finding get no box: a box would show something the model says is not there.
_DENIES = re.compile(r'^\s*(no|none|nothing)\b|\bnot (present|observed|visible|seen|detected|identified|found)\b'
                     r'|\b(no|without) (evidence|visible|abnormal|polyp|lesion|instrument|finding)', re.I)


def grounding_target(question: str) -> str:
    for topic in probing.classify_question(question):
        if topic in grounding.TARGETS:
            return grounding.TARGETS[topic]
    return grounding.DEFAULT_TARGET


def denies(answer: str) -> bool:
    return bool(_DENIES.search(answer))


def box_visual(boxes: list[dict], target: str) -> dict | None:
    """The `bounding_box` entry for the boxes the model's grounding output gave (None when there are none)."""
    if not boxes:
        return None
    labels = sorted({b['label'] for b in boxes if b['label']})
    named = f'"{", ".join(labels)}"' if labels else f'the {target}'
    return {'type': 'bounding_box', 'data': [b['box'] for b in boxes],
            'description': f'Box(es) where the same model located {named} when asked to find the {target} this '
                           'answer is about.'}


def heatmap_text(cells: np.ndarray, region: str) -> str:
    if float(np.max(cells)) > 0:
        return (f'Occlusion heatmap: hiding the {region} part of the image lowered the model\'s probability of this '
                'answer the most (yellow = largest drop).')
    return 'Occlusion heatmap: hiding no single region lowered the model\'s probability of this answer.'


def describe(question: str, answer: str, probes: list[dict], grounding_row: dict, heatmap_rel: str,
             heat_text: str) -> dict:
    """The row's Subtask 2 content from the stage outputs: visuals (box from the grounding output, then the
    heatmap) and the composed justification with its claims."""
    visuals = [v for v in [box_visual(grounding_row.get('boxes') or [], grounding_row['target'])] if v]
    visuals.append({'type': 'heatmap', 'data': heatmap_rel, 'description': heat_text})
    composed = probing.compose(question, answer, probes, visuals)
    return {'textual_explanation': composed['text'], 'visual_explanation': visuals, 'claims': composed['claims']}


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
