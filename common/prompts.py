"""Prompts that training data and inference must share word for word."""
from common.model_family import DEFAULT_FAMILY, RELATIVE_1000, family

# What Subtask 2 asks the model to locate, by question topic (explain.probing.classify_question).
GROUNDING_TARGETS = {'polyp': 'polyp', 'instrument': 'surgical instrument', 'text': 'text overlay',
                     'box': 'green picture-in-picture box', 'landmark': 'anatomical landmark'}
DEFAULT_GROUNDING_TARGET = 'abnormality'   # a question of none of those topics (a finding, a count, the procedure)

# Families that answer in 0..1000 relative coordinates are told so (Qwen3-VL's trained convention; Gemma 3 has no
# trained box format and learns this one from `make grounding-data ARCH=gemma3`).
RELATIVE_1000_SENTENCE = ' Give the coordinates as integers from 0 to 1000, relative to the image width and height.'


def grounding_prompt(target: str, family_name: str = DEFAULT_FAMILY) -> str:
    """The Qwen2.5-VL cookbook's grounding pattern (+ the coordinate convention for 0..1000 families): asked at
    inference (explain) and taught by data_prep.grounding_data."""
    prompt = (f'Locate the {target} in the image and output its bbox coordinates in JSON format like '
              f'{{"bbox_2d": [x1, y1, x2, y2], "label": "{target}"}}.')
    if family(family_name).box_coordinates == RELATIVE_1000:
        prompt += RELATIVE_1000_SENTENCE
    return prompt
