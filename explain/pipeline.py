"""What a row's Subtask 2 entry says, from the stage outputs (explain.stages): which region grounding asks for, the
box and heatmap entries, the composed justification. Also the synthetic-set evaluation against true geometry."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from explain import grounding, narrative, probing

# Answers that deny the finding get no box: a box would show something the model says is not there.
_DENIES = re.compile(r'^\s*(no|none|nothing)\b|\bnot (present|observed|visible|seen|detected|identified|found)\b'
                     r'|\b(no|without) (evidence|visible|abnormal|polyp|lesion|instrument|finding)', re.I)


def grounding_target(question: str) -> str:
    for topic in probing.classify_question(question):
        if topic in grounding.TARGETS:
            return grounding.TARGETS[topic]
    return grounding.DEFAULT_TARGET


def question_class(question: str) -> str:
    """The question's topic from its words (the val set carries no question_class): what reports group rows by."""
    topics = probing.classify_question(question)
    return topics[0] if topics else 'finding'


def denies(answer: str) -> bool:
    return bool(_DENIES.search(answer))


def _pct(share: float) -> str:
    return f'{100 * share:.0f} %'


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ', '.join(items[:-1]) + ' and ' + items[-1]


def box_labels(boxes: list[dict], target: str) -> str:
    labels = sorted({b['label'].strip() for b in boxes if b.get('label', '').strip()})
    return ', '.join(labels) if labels else target


def box_visual(boxes: list[dict], target: str, visual: dict | None = None) -> dict | None:
    """The `bounding_box` entry for the boxes the model's grounding output gave (None when there are none): the
    coordinates, and a description naming where they are, the drawn picture and how much of the occlusion effect lies
    inside (from the visuals stage's record, when given)."""
    if not boxes:
        return None
    labels = sorted({b['label'] for b in boxes if b['label']})
    named = f'"{", ".join(labels)}"' if labels else f'the {target}'
    text = f'Box(es) where the same model located {named} when asked to find the {target} this answer is about.'
    if visual:
        text += (f' They lie at the {_join(sorted(set(visual["box_positions"])))} of the frame and are drawn with the '
                 f'label in {visual["box_image"]}.')
        if visual['box_mass_share'] is not None:
            text += (f' {_pct(visual["box_mass_share"])} of the occlusion heatmap\'s effect lies inside the box(es), '
                     f'which cover {_pct(visual["box_area_share"])} of the frame.')
        else:
            text += (' The occlusion heatmap shows no region that changed the answer, so their agreement is not '
                     'measured.')
    return {'type': 'bounding_box', 'data': [b['box'] for b in boxes], 'description': text}


def regions_phrase(regions: list[dict], most: int = 4) -> str:
    """'the upper-left (61 % of the total drop, up to 0.84 nats per cell) and lower-right (22 %, up to 0.31 nats)
    regions'."""
    named = [f'{r["name"]} ({_pct(r["share"])}' + (f' of the total drop, up to {r["peak_nats"]:.2f} nats per cell)'
                                                  if i == 0 else f', up to {r["peak_nats"]:.2f} nats)')
             for i, r in enumerate(regions[:most])]
    if len(regions) > most:
        named.append(f'{len(regions) - most} smaller')
    return f'the {_join(named)} region{"s" if len(regions) > 1 else ""}'


def heatmap_description(visual: dict) -> str:
    """The `heatmap` entry's description: the regions the picture outlines, in the dataset's position words, with
    their share of the row's total effect, and the scale; or that no region changed the answer."""
    g = visual['grid']
    if not visual['changed']:
        return (f'Occlusion heatmap ({g}x{g} cells): no region changed the answer. Hiding any one cell lowered the '
                f'answer\'s log-probability by less than {visual["min_nats"]:g} nats (largest drop '
                f'{visual["peak_nats"]:.3f} nats), so the frame is shown untouched.')
    return (f'Occlusion heatmap ({g}x{g} cells): hiding {regions_phrase(visual["regions"])} lowered the answer\'s '
            f'log-probability the most; these regions are outlined in white. Tint: the drop in nats when a cell is '
            f'hidden, on one scale for every row (0 to {visual["scale_nats"]:.2f} nats, larger drops saturate; colour '
            f'bar in visuals/heatmap_scale.png); cells below {visual["min_nats"]:g} nats are not tinted.')


def evidence_sentences(boxes: list[dict], target: str, visual: dict) -> list[dict]:
    """Short sentences on the visual evidence for the textual explanation, each with its source."""
    out = []
    if boxes:
        text = (f'Grounding: the model boxes the {box_labels(boxes, target)} at the '
                f'{_join(sorted(set(visual["box_positions"])))} of the image')
        if visual['box_mass_share'] is not None:
            text += f', and {_pct(visual["box_mass_share"])} of the occlusion effect lies inside the box'
        out.append({'sentence': text + '.', 'source': 'visual:bounding_box',
                    'evidence': {'boxes': [b['box'] for b in boxes], 'box_mass_share': visual['box_mass_share']}})
    if visual['changed']:
        shown = visual['regions'][:4]
        names = _join([r['name'] for r in shown])
        text = (f'Occlusion: hiding the {names} region{"s" if len(shown) > 1 else ""} lowers the answer\'s '
                f'probability most ({_pct(sum(r["share"] for r in shown))} of the total effect).')
    else:
        text = f'Occlusion: no image region changed the answer (every drop below {visual["min_nats"]:g} nats).'
    out.append({'sentence': text, 'source': 'visual:heatmap',
                'evidence': {'regions': [{k: r[k] for k in ('name', 'nats', 'share')} for r in visual['regions']],
                             'peak_nats': visual['peak_nats']}})
    return out


def describe(probes: list[dict], grounding_row: dict, visual: dict, certainty: dict | None = None,
             rewrite: str | None = None, answer: str | None = None) -> dict:
    """The row's Subtask 2 content from the stage outputs: visuals (box from the grounding output, then the heatmap)
    and the clinician-oriented text (explain.narrative) with its claims and the rewrite's verdict."""
    boxes = grounding_row.get('boxes') or []
    entries = [v for v in [box_visual(boxes, grounding_row['target'], visual)] if v]
    entries.append({'type': 'heatmap', 'data': visual['heatmap'], 'description': heatmap_description(visual)})
    composed = narrative.compose(probes, certainty, evidence_sentences(boxes, grounding_row['target'], visual),
                                 rewrite, answer)
    return {'textual_explanation': composed['text'], 'visual_explanation': entries, 'claims': composed['claims'],
            'rewrite': composed['rewrite']}


# ---------------------------------------------------------------- evaluation against synthetic geometry
IOU_BINS = 10   # the IoU histogram's bins: [0, 0.1), [0.1, 0.2), ..., [0.9, 1]


def true_kinds(question: str) -> list[str]:
    """Which objects of a data_prep.synthetic scene a question is about: polyps, instruments, text, green_box."""
    topics = probing.classify_question(question)
    if 'text' in topics:
        return ['text']
    if 'box' in topics:
        return ['green_box']
    if 'instrument' in topics:
        return ['instruments']
    if 'polyp' in topics:
        return ['polyps']
    return ['polyps', 'instruments']


def _kind_boxes(scene: dict, kind: str) -> list[list[int]]:
    if kind in ('polyps', 'instruments'):
        return [o['bbox'] for o in scene.get(kind, [])]
    if kind == 'text':
        return [scene['text']['bbox']] if scene.get('text') else []
    return [scene['green_box']] if scene.get('green_box') else []


def true_boxes(scene: dict, question: str) -> list[list[int]]:
    """The ground-truth region a question is about, from data_prep.synthetic's geometry.jsonl scene."""
    return [b for kind in true_kinds(question) for b in _kind_boxes(scene, kind)]


def true_mask(scene: dict, question: str, labels: np.ndarray) -> np.ndarray:
    """The exact pixels of those objects, from the scene's label mask (data_prep.synthetic's masks/<img_id>.png)."""
    names = scene['mask']
    values = [v for kind in true_kinds(question)
              for v in (names[kind] if isinstance(names[kind], list) else [names[kind]]) if v is not None]
    return np.isin(labels, values)


def _distribution(ious: list[float]) -> dict:
    if not ious:
        return {'iou_quantiles': None, 'iou_histogram': None}
    q = np.quantile(ious, [0.1, 0.25, 0.5, 0.75, 0.9])
    hist = np.histogram(np.clip(ious, 0, 1), bins=IOU_BINS, range=(0.0, 1.0))[0]
    return {'iou_quantiles': dict(zip(('p10', 'p25', 'p50', 'p75', 'p90'), map(float, q))),
            'iou_histogram': [int(n) for n in hist]}


def evaluate_geometry(records: list[dict], scenes: dict[str, dict], heatmap_of, masks_root=None) -> dict:
    """Box IoU vs truth and heatmap mass inside the true region vs that region's area share, over the true boxes and,
    with `masks_root` (the synthetic copy holding masks/), over the objects' exact pixels. `heatmap_of`: val_id ->
    [H, W] map, or None for no heatmap (one map at a time in memory).
    A row "has truth" when its question's objects are in the image. Boxes are measured two ways: per row with truth,
    its best box-truth pair (distribution, share >= 0.5; a box on a row without truth is counted apart); and per
    emitted box, every box of every row whose image is in `scenes`, each at its IoU with the best-matching true object
    of its row, 0 where the row has none (`emitted_box_iou_at_0_5`: issue 21's "share of the boxes it emits with IoU
    >= 0.5")."""
    ious, no_box, box_without_truth = [], 0, 0
    emitted = []   # one IoU per emitted box
    regions = {'box': ([], []), 'mask': ([], [])}   # (mass inside, area share) per row
    for rec in records:
        scene = scenes.get(rec['img_id'])
        if not scene:
            continue
        truth = true_boxes(scene, rec['question'])
        pred = [b for v in rec['visual_explanation'] if v['type'] == 'bounding_box' for b in v['data']]
        emitted += [max((grounding.iou(p, t) for t in truth), default=0.0) for p in pred]
        if not truth:
            box_without_truth += bool(pred)
            continue
        if pred:
            ious.append(max(grounding.iou(p, t) for p in pred for t in truth))
        else:
            no_box += 1
        heat = heatmap_of(rec['val_id'])
        total = float(heat.sum()) if heat is not None else 0.0
        if total <= 0:
            continue
        inside = np.zeros(heat.shape, dtype=bool)
        for x1, y1, x2, y2 in truth:   # the generator's boxes include their last row and column (drawn to x2, y2)
            inside[max(0, int(y1)):int(y2) + 1, max(0, int(x1)):int(x2) + 1] = True
        areas = [('box', inside)]
        if masks_root is not None and scene.get('mask'):
            with Image.open(Path(masks_root) / scene['mask']['file']) as im:
                labels = np.asarray(im)
            if labels.shape == heat.shape:
                areas.append(('mask', true_mask(scene, rec['question'], labels)))
        for name, area in areas:
            if area.any():
                regions[name][0].append(float(heat[area].sum()) / total)
                regions[name][1].append(float(area.mean()))

    def mean(xs) -> float | None:
        return float(np.mean(xs)) if xs else None

    (box_mass, box_share), (mask_mass, mask_share) = regions['box'], regions['mask']
    return {'rows_with_truth': len(ious) + no_box, 'rows_with_box': len(ious), 'rows_without_box': no_box,
            'rows_without_truth_with_box': box_without_truth, 'mean_best_iou': mean(ious),
            'iou_at_0_5': mean([v >= 0.5 for v in ious]), **_distribution(ious),
            'emitted_boxes': len(emitted), 'emitted_box_mean_iou': mean(emitted),
            'emitted_box_iou_at_0_5': mean([v >= 0.5 for v in emitted]),
            'heatmap_rows': len(box_mass), 'mean_heatmap_mass_inside': mean(box_mass),
            'mean_true_area_share': mean(box_share),
            'heatmap_rows_above_share': mean([m > a for m, a in zip(box_mass, box_share)]),
            'mask_rows': len(mask_mass), 'mean_heatmap_mass_inside_mask': mean(mask_mass),
            'mean_true_mask_share': mean(mask_share),
            'mask_rows_above_share': mean([m > a for m, a in zip(mask_mass, mask_share)])}
