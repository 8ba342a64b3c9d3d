"""Build tests/golden/grounding_boxes.json: recorded grounding outputs through the per-row Subtask 2 path of commit
88f43d9 (explain.pipeline.explain_row with explain.runner.VLRunner), before the stage-by-stage redesign.

    git archive 88f43d9 | tar -x -C /tmp/old && MAX_PIXELS=200704 PYTHONPATH=/tmp/old \
        python tests/golden/make_grounding_golden.py MODEL_DIR

The tiny model never emits a box, so its grounding answer is replaced by recorded outputs in Qwen2.5-VL's text format
(absolute pixels of the resized input in JSON, fenced or bare, cut at the token limit; the Qwen2-VL <|box_start|>
form and prose, which grounding.py does not parse); everything else (the resized size from ms-swift's template, the
parse, the map back to the original size, the clipping, the bounding_box entry) is the old code's. The test
(tests/test_explain_stages.py) feeds the same outputs through the new grounding stage's parse-and-map path.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
MAX_PIXELS = 200704   # 256 image tokens: the resized input differs from the original, so the mapping matters
SIZES = [(720, 576), (1280, 1024), (622, 529), (332, 487)]
QUESTIONS = ['Where is the polyp located in the image?', 'Is there an instrument in the image?',
             'Is there any text in the image?', 'Is there a green box in the image?', 'What abnormality is seen?']
OUTPUTS = [
    '```json\n[\n\t{"bbox_2d": [135, 114, 250, 210], "label": "polyp"}\n]\n```',
    '```json\n[\n\t{"bbox_2d": [12, 40, 96, 150], "label": "polyp"},\n\t{"bbox_2d": [160, 20, 220, 90], '
    '"label": "polyp"}\n]\n```',
    '{"bbox_2d": [30, 25, 180, 160], "label": "instrument"}',
    '```json\n[\n\t{"bbox_2d": [200, 150, 900, 700], "label": "text"}\n]\n```',
    '```json\n[\n\t{"bbox_2d": [-20, -10, 60, 80], "label": "green box"}\n]\n```',
    '```json\n[\n\t{"bbox_2d": [5000, 5000, 5100, 5100], "label": "polyp"}\n]\n```',
    '```json\n[\n\t{"bbox_2d": [40, 60, 150',
    '```json\n[\n\t{"bbox_2d": [40, 60, 150, 170], "label": "polyp"},\n\t{"bbox_2d": [1',
    '<|object_ref_start|>polyp<|object_ref_end|><|box_start|>(120,200),(480,610)<|box_end|>',
    'There is no polyp in the image.',
    '[{"bbox_2d": [10.5, 20.25, 100.75, 90], "label": ""}]',
]
ANSWER, DENYING = 'A polyp is visible.', 'No polyp is visible.'


def cases() -> list[dict]:
    """Every output at every size (question cycling), plus one answer that denies the finding (no grounding)."""
    out = [{'size': list(size), 'question': QUESTIONS[(i + j) % len(QUESTIONS)], 'answer': ANSWER, 'output': text}
           for i, size in enumerate(SIZES) for j, text in enumerate(OUTPUTS)]
    out.append({'size': list(SIZES[0]), 'question': QUESTIONS[0], 'answer': DENYING, 'output': OUTPUTS[0]})
    return out


def main(model: str) -> None:
    import tempfile
    from explain.pipeline import explain_row
    from explain.runner import VLRunner

    class Recorded(VLRunner):
        """The old runner, except that the grounding prompt is answered by the recorded output."""
        output = ''

        def generate(self, image, question, max_new_tokens=64):
            from explain.grounding import DEFAULT_TARGET, TARGETS, grounding_prompt
            if question in {grounding_prompt(t) for t in [*TARGETS.values(), DEFAULT_TARGET]}:
                return self.output
            return super().generate(image, question, max_new_tokens)

    runner = Recorded(model)
    folder = Path(tempfile.mkdtemp())
    results = []
    for case in cases():
        runner.output = case['output']
        image = Image.new('RGB', tuple(case['size']), (180, 90, 80))
        rec = explain_row(runner, image, case['question'], case['answer'], folder / 'h.png', 'visuals/h.png', grid=1,
                          probe_tokens=1, grounding_tokens=8, answer_tokens=4)
        boxes = [v for v in rec['visual_explanation'] if v['type'] == 'bounding_box']
        results.append({**case, 'grounding_output': rec['grounding_output'], 'target': rec['grounding_target'],
                        'resized': list(runner.resized_size(image)), 'box_stats': rec['box_stats'],
                        'visual': boxes[0] if boxes else None})
    path = HERE / 'grounding_boxes.json'
    path.write_text(json.dumps({'max_pixels': MAX_PIXELS, 'commit': '88f43d9', 'cases': results}, indent=1) + '\n')
    print(f'wrote {path}: {len(results)} cases, {sum(r["visual"] is not None for r in results)} with boxes')


if __name__ == '__main__':
    main(sys.argv[1])
