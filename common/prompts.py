"""Prompts that training data and inference must share word for word."""

# What Subtask 2 asks the model to locate, by question topic (explain.probing.classify_question).
GROUNDING_TARGETS = {'polyp': 'polyp', 'instrument': 'surgical instrument', 'text': 'text overlay',
                     'box': 'green picture-in-picture box', 'landmark': 'anatomical landmark'}


def grounding_prompt(target: str) -> str:
    """The Qwen2.5-VL cookbook's grounding pattern: asked at inference (explain) and taught by data_prep.grounding_data."""
    return (f'Locate the {target} in the image and output its bbox coordinates in JSON format like '
            f'{{"bbox_2d": [x1, y1, x2, y2], "label": "{target}"}}.')
