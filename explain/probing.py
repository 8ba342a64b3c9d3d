"""Self-probing: the same model answers a few auxiliary questions chosen by the question's topic; explain.narrative
turns the answers into the clinician-oriented text, every sentence traceable to one probe answer. The val set
carries no question_class, so topics come from the question text.
"""
from __future__ import annotations

import re

# Topic -> keywords in the question (lower-cased, word-prefix match).
TOPIC_KEYWORDS = {
    'polyp': ('polyp', 'paris', 'sessile', 'pedunculated', 'removal', 'resect'),
    'instrument': ('instrument', 'tool', 'tube', 'forceps', 'snare', 'device', 'biopsy'),
    'colour': ('colour', 'color', 'red', 'pink', 'white'),
    'location': ('where', 'location', 'located', 'position', 'region', 'area of', 'quadrant'),
    'size': ('size', 'large', 'small', 'big', 'mm', 'millimet', 'diameter'),
    'count': ('how many', 'number of', 'count'),
    'text': ('text', 'caption', 'writing', 'annotation'),
    'box': ('box', 'green', 'black box', 'picture'),
    'landmark': ('landmark', 'z-line', 'pylorus', 'cecum', 'caecum', 'ileum', 'retroflex'),
    'procedure': ('procedure', 'examination', 'endoscopy', 'colonoscopy', 'gastroscopy'),
}

PROBES = {
    'finding': 'What abnormality or finding is seen in the image?',
    'location': 'Where in the image is the abnormality located?',
    'colour': 'What colour is the abnormality?',
    'size': 'What is the size of the polyp?',
    'polyp_type': 'What type of polyp is seen?',
    'instrument': 'Are there any instruments in the image, and where?',
    'instrument_location': 'Where is the instrument located?',
    'text': 'Is there any text in the image?',
    'box': 'Is there a green or black box artefact in the image?',
    'landmark': 'Which anatomical landmark is visible?',
    'procedure': 'What type of procedure is shown in the image?',
}
# Which cue each probe gives the reader, in the justification's wording.
CUE = {'finding': 'finding', 'location': 'location', 'colour': 'colour', 'size': 'size',
       'polyp_type': 'morphology', 'instrument': 'instruments', 'instrument_location': 'instrument position',
       'text': 'text overlay', 'box': 'box artefact', 'landmark': 'landmark', 'procedure': 'procedure'}
MAX_PROBES = 4
MAX_QUOTE_WORDS = 30


def classify_question(question: str) -> list[str]:
    """Topics of a question, in TOPIC_KEYWORDS order; [] when none matches (then it is about a finding)."""
    q = ' ' + re.sub(r'[^a-z0-9\- ]+', ' ', question.lower()) + ' '
    return [t for t, words in TOPIC_KEYWORDS.items() if any(f' {w}' in q for w in words)]


def probes_for(question: str) -> list[str]:
    """Probe keys for a question: what it is about first, always the finding and its location, at most MAX_PROBES."""
    topics = classify_question(question)
    keys: list[str] = []
    by_topic = {'polyp': ['size', 'polyp_type'], 'instrument': ['instrument', 'instrument_location'],
                'colour': ['colour'], 'size': ['size'], 'text': ['text'], 'box': ['box'],
                'landmark': ['landmark'], 'procedure': ['procedure'], 'location': [], 'count': []}
    for t in topics:
        keys += by_topic[t]
    keys = ['finding', 'location'] + [k for k in keys if k not in ('finding', 'location')]
    seen: list[str] = []
    for k in keys:
        if k not in seen and PROBES[k].rstrip('?').lower() != question.strip().rstrip('?').lower():
            seen.append(k)
    return seen[:MAX_PROBES]
