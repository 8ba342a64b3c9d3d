"""The textual explanation a clinician reads, built from the model's own probe answers (explain.probing).

Each probe answer is read for the dataset's clinical vocabulary (LEXICON: findings, instruments, landmarks, the
dataset's position words, sizes, colours, Paris classes and shapes, procedures); each probe gives at most one short
sentence ("Location in the image: upper-left." from the location probe), made of fixed words and the terms found in
that answer, so every statement is traceable to one probe answer (`claims`: sentence, source, the matched spans). A
probe answer with no known term is quoted; an attribute probe answered with a denial ("none") gives no sentence. Then
how certain the model is (the calibrated confidence) and what the visual evidence shows (explain.pipeline).

Optional rewrite (stage `rewrite`, --rewrite): the same model turns the fact sentences into prose, text only. The
rewrite is used only when `check_rewrite` finds no unsupported claim in it: every vocabulary term it states is one of
the facts' terms, it keeps every fact term, and every other word is a fact's word or a plain connective (ALLOWED).
A denial in the facts must stay a denial (some negation word), and a rewrite may not deny when no fact does; a
word-level check cannot see which noun a negation governs, so it is a guard, not a proof. Otherwise the fact
sentences stay; the audit keeps both and the reason.
"""
from __future__ import annotations

import re

from explain import probing

# ---------------------------------------------------------------- vocabulary
_MM = r'(?:\s*(?:mm|millimet(?:er|re)s?))'
_CENTRE = r'(?:cent(?:er|re|ral)|middle)'
_RIGHT = r'r(?:ight|igth)'          # the dataset spells lower-rigth too
# (kind, pattern, canonical term or a function of the match); earlier patterns claim their span first.
LEXICON: list[tuple[str, str, object]] = [
    ('morphology', r'\bparis[\s-]*(?:type[\s-]*)?(?:0[\s-]*)?(isp|ip|is|iia|iib|iic|iii)\b',
     lambda m: 'Paris ' + {'isp': 'Isp', 'ip': 'Ip', 'is': 'Is', 'iia': 'IIa', 'iib': 'IIb', 'iic': 'IIc',
                           'iii': 'III'}[m.group(1).lower()]),
    ('morphology', r'\b(semi-?pedunculated|pedunculated|sessile|flat|elevated|depressed|lobulated|ulcerated)\b',
     lambda m: m.group(1).lower()),
    ('size', r'(?:<\s*(\d+)' + _MM + r'?|\b(?:less than|smaller than|under|below)\s*(\d+)' + _MM + r')(?![\d.])',
     lambda m: f'<{m.group(1) or m.group(2)} mm'),
    ('size', r'(?:>\s*(\d+)' + _MM + r'?|\b(?:greater than|larger than|more than|over|above|exceeding)\s*(\d+)'
     + _MM + r')(?![\d.])', lambda m: f'>{m.group(1) or m.group(2)} mm'),
    ('size', r'\b(\d+)\s*(?:-|–|to)\s*(\d+)' + _MM, lambda m: f'{m.group(1)}-{m.group(2)} mm'),
    ('size', r'\b(\d+(?:\.\d+)?)' + _MM, lambda m: f'{m.group(1)} mm'),
    ('size', r'\b(diminutive|tiny|small|medium|large)\b', lambda m: m.group(1).lower()),
    ('finding', r'\bulcerative colitis\b', 'ulcerative colitis'),
    ('finding', r'\b(?:o?esophagitis)\b', 'oesophagitis'),
    ('finding', r"\b(?:short[\s-]segment\s+)?barrett'?s?\b", "Barrett's"),
    ('finding', r'\bpolyps?\b', 'polyp'),
    ('finding', r'\b(?:haemorrhoids?|hemorrhoids?)\b', 'haemorrhoids'),
    ('finding', r'\bulcers?\b', 'ulcer'),
    ('finding', r'\b(?:bleeding|blood)\b', 'bleeding'),
    ('finding', r'\b(?:inflammation|inflammatory|inflamed)\b', 'inflammation'),
    ('instrument', r'\bbiopsy forceps\b', 'biopsy forceps'),
    ('instrument', r'\b(?:polyp )?snares?\b', 'polyp snare'),
    ('instrument', r'\b(?:metal )?clips?\b', 'metal clip'),
    ('instrument', r'\binjection needles?\b', 'injection needle'),
    ('instrument', r'\btubes?\b', 'tube'),
    ('landmark', r'\bz[\s-]?line\b', 'z-line'),
    ('landmark', r'\b(?:cecum|caecum)\b', 'cecum'),
    ('landmark', r'\bpylorus\b', 'pylorus'),
    ('landmark', r'\b(?:ileum|ileocecal valve)\b', 'ileum'),
    ('procedure', r'\b(colonoscopy|gastroscopy)\b', lambda m: m.group(1).lower()),
    ('location', r'\b(?:upper|top)[\s-]+left\b', 'upper-left'),
    ('location', r'\b(?:upper|top)[\s-]+' + _RIGHT + r'\b', 'upper-right'),
    ('location', r'\b(?:lower|bottom)[\s-]+left\b', 'lower-left'),
    ('location', r'\b(?:lower|bottom)[\s-]+' + _RIGHT + r'\b', 'lower-right'),
    ('location', r'\b(?:upper|top)[\s-]+' + _CENTRE + r'\b', 'upper-center'),
    ('location', r'\b(?:lower|bottom)[\s-]+' + _CENTRE + r'\b', 'lower-center'),
    ('location', r'\b' + _CENTRE + r'[\s-]+left\b', 'center-left'),
    ('location', r'\b' + _CENTRE + r'[\s-]+' + _RIGHT + r'\b', 'center-right'),
    ('location', r'\b' + _CENTRE + r'\b', 'center'),
    ('location', r'\b(?:upper|top)\b', 'upper'),
    ('location', r'\b(?:lower|bottom)\b', 'lower'),
    ('location', r'\bleft\b', 'left'),
    ('location', r'\b' + _RIGHT + r'\b', 'right'),
    ('colour', r'\b(pink|red|white|yellow|brown|grey|gray|green|black|purple|blue|orange)(?:d?ish)?\b',
     lambda m: {'gray': 'grey'}.get(m.group(1).lower(), m.group(1).lower())),
    ('colour', r'\bflesh(?:[\s-]colou?red)?\b', 'flesh-coloured'),
]
_COMPILED = [(kind, re.compile(pattern, re.I), canon) for kind, pattern, canon in LEXICON]

# Which kinds of term each probe's sentence states, and how the sentence starts.
PROBE_TERMS = {'finding': ('finding', 'instrument'), 'location': ('location',), 'colour': ('colour',),
               'size': ('size',), 'polyp_type': ('morphology',), 'instrument': ('instrument', 'location'),
               'instrument_location': ('location',), 'landmark': ('landmark', 'location'), 'procedure': ('procedure',)}
LEAD = {'finding': 'Finding', 'location': 'Location in the image', 'colour': 'Colour', 'size': 'Size',
        'polyp_type': 'Morphology', 'instrument': 'Instruments', 'instrument_location': 'Instrument location',
        'landmark': 'Landmark', 'procedure': 'Procedure', 'text': 'Text overlay', 'box': 'Green/black box artefact'}
YES_NO_PROBES = ('text', 'box')
ATTRIBUTE_PROBES = ('location', 'colour', 'size', 'polyp_type', 'instrument_location')   # a denial says nothing
# Confidence -> the word a clinician reads (lower bounds, highest first).
CERTAINTY = ((0.9, 'very high'), (0.75, 'high'), (0.5, 'moderate'), (0.0, 'low'))
CERTAINTY_LEVELS = tuple(level for _, level in reversed(CERTAINTY))

_NEGATIVE = re.compile(r'^\s*(?:no|none|nothing|not relevant|0)\b|\bnot (?:present|observed|visible|seen|detected|'
                       r'identified|found)\b|\b(?:no|without) (?:evidence|visible|abnormal|polyps?|lesions?|'
                       r'instruments?|findings?)\b', re.I)


def terms(text: str) -> list[dict]:
    """Every vocabulary term in a text, in reading order: {kind, term (canonical), span (the words as written)}."""
    taken = [False] * len(text)
    found = []
    for kind, pattern, canon in _COMPILED:
        for m in pattern.finditer(text):
            if any(taken[m.start():m.end()]):
                continue
            taken[m.start():m.end()] = [True] * (m.end() - m.start())
            found.append((m.start(), {'kind': kind, 'term': canon(m) if callable(canon) else canon,
                                      'span': m.group(0)}))
    return [f for _, f in sorted(found, key=lambda x: x[0])]


def _unique(values) -> list[str]:
    out: list[str] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def is_negative(text: str) -> bool:
    return bool(_NEGATIVE.search(text))


def _quote(text: str, words: int = probing.MAX_QUOTE_WORDS) -> str:
    said = ' '.join(text.split()).split(' ')
    return (' '.join(said[:words]) + (' …' if len(said) > words else '')).rstrip(' .')


def probe_sentence(probe: dict) -> dict | None:
    """One probe answer -> {sentence, evidence (the spans it rests on), kind} or None when it says nothing."""
    from explain.confidence import polarity
    key, answer = probe['key'], ' '.join(str(probe.get('answer') or '').split())
    lead = LEAD.get(key, probing.CUE.get(key, key).capitalize())
    if not answer:
        return None
    if key in YES_NO_PROBES:
        side = polarity(answer)
        word = {'yes': 'present', 'no': 'none'}.get(side)
        return {'sentence': f'{lead}: {word}.', 'evidence': [answer.split()[0]], 'kind': 'yes/no'} if word else None
    negative = is_negative(answer)
    if negative and key in ATTRIBUTE_PROBES:
        return None
    found = [t for t in terms(answer) if t['kind'] in PROBE_TERMS.get(key, ())]
    if negative and not found:
        return {'sentence': f'{lead}: none reported.', 'evidence': [_NEGATIVE.search(answer).group(0).strip()],
                'kind': 'denial'}
    if negative or not found:   # a denial that names things ("no polyp, but ...") is quoted, never reworded
        return {'sentence': f'{lead} (the model\'s words): "{_quote(answer)}".', 'evidence': [_quote(answer)],
                'kind': 'quote'}
    main = _unique(t['term'] for t in found if t['kind'] != 'location' or key in ('location', 'instrument_location'))
    where = _unique(t['term'] for t in found if t['kind'] == 'location') if key in ('instrument', 'landmark') else []
    text = ', '.join(main) if main else ''
    if where:
        text = f'{text} ({", ".join(where)})' if text else ', '.join(where)
    return {'sentence': f'{lead}: {text}.', 'evidence': [t['span'] for t in found], 'kind': 'terms'}


def certainty_level(score: float) -> str:
    return next(level for bound, level in CERTAINTY if score >= bound)


def certainty_sentence(score: float, calibrated_on: int | None) -> str:
    how = (f'calibrated on {calibrated_on:,} held-out answers' if calibrated_on else 'not calibrated')
    return f'Certainty: {certainty_level(score)} (confidence {score:.2f}, {how}).'


def facts(probes: list[dict]) -> list[dict]:
    """The probe sentences, in probe order, without repeats: [{sentence, source: probe:i, evidence, kind}]."""
    out, seen = [], set()
    for i, p in enumerate(probes):
        said = probe_sentence(p)
        if said and said['sentence'].lower() not in seen:
            seen.add(said['sentence'].lower())
            out.append({'sentence': said['sentence'], 'source': f'probe:{i}', 'evidence': said['evidence'],
                        'kind': said['kind']})
    return out


def disagreement(answer: str | None, probes: list[dict], fact_claims: list[dict]) -> dict | None:
    """A note when the answer denies a finding that the finding probe names: the reader should see the model
    disagree with itself rather than read both as facts."""
    if not answer or not is_negative(answer):
        return None
    for claim in fact_claims:
        i = int(claim['source'].split(':')[1])
        if probes[i]['key'] == 'finding' and claim['kind'] == 'terms':
            named = ', '.join(claim['sentence'].split(': ', 1)[1].rstrip('.').split(', '))
            return {'sentence': f'Note: the answer is a denial, yet asked separately the model names {named}.',
                    'source': f'answer+{claim["source"]}', 'evidence': [answer] + claim['evidence']}
    return None


def compose(probes: list[dict], certainty: dict | None = None, evidence: list[dict] | None = None,
            rewrite: str | None = None, answer: str | None = None) -> dict:
    """{"text", "claims", "rewrite"}: the fact sentences (or their checked rewrite), a note when the answer denies
    what the finding probe names, the certainty sentence (`certainty`: {sentence, score, ...}) and the visual evidence
    sentences (`evidence`: [{sentence, source}]). Every claim names its source: probe:i, answer+probe:i, confidence,
    visual:<kind>, or rewrite (with the facts it rewrites)."""
    fact_claims = facts(probes)
    verdict = None
    if rewrite is not None and fact_claims:
        ok, reason = check_rewrite(rewrite, [c['sentence'] for c in fact_claims])
        verdict = {'output': rewrite, 'accepted': ok, 'reason': reason}
    if verdict and verdict['accepted']:
        claims = [{'sentence': _sentence(rewrite), 'source': 'rewrite', 'rewrites': fact_claims}]
    else:
        claims = list(fact_claims)
    note = disagreement(answer, probes, fact_claims)
    if note:
        claims.append(note)
    if certainty:
        claims.append({'sentence': certainty['sentence'], 'source': 'confidence',
                       'evidence': {k: v for k, v in certainty.items() if k != 'sentence'}})
    claims += [dict(e) for e in evidence or []]
    if not claims:
        claims = [{'sentence': 'No probe answer gave a finding.', 'source': 'probes'}]
    return {'text': ' '.join(c['sentence'] for c in claims), 'claims': claims, 'rewrite': verdict}


def _sentence(text: str) -> str:
    text = ' '.join(text.split())
    return text if text.endswith(('.', '!', '?')) else text + '.'


# ---------------------------------------------------------------- rewrite by the same model, checked
REWRITE_PROMPT = ('Rewrite these notes on one endoscopy image as one or two short sentences for a clinician. Use only '
                  'the facts in the notes and add nothing else.\nNotes: {notes}\nRewrite:')
# Words a rewrite may use beyond the facts' own: connectives and plain reporting verbs, no clinical content. A
# negation, a number or a clinical word is allowed only when a fact states it.
ALLOWED = set('''a an the is are was were be been being and or with of in on at to from by as its it this that these
those there which has have having shows show showing shown seen visible appears appear appearing noted observed
identified present located location position positioned found measuring measures measured measure size sized
approximately about around roughly colour color coloured colored finding findings image frame region regions area
areas part side classified classification type morphology consistent also both each within across overall
displaying displays exhibits exhibiting demonstrates demonstrating lesion abnormality endoscopic view notes note
instrument instruments landmark procedure overlay artefact artifact text mm millimeters millimetres millimeter
millimetre its their reported'''.split())
NEGATIONS = {'no', 'none', 'not', 'without', 'absent', 'negative', 'nothing'}
_NEGATION = re.compile(r'\b(?:' + '|'.join(sorted(NEGATIONS)) + r')\b', re.I)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# check_rewrite's reasons, by how they start (reports count them)
REJECTIONS = ('empty', 'too long', 'adds a denial', 'drops a denial', 'adds', 'drops', 'unsupported word(s)')
MAX_REWRITE_GROWTH = 2.5   # a rewrite longer than this many times the notes' words is rejected


def rewrite_prompt(fact_sentences: list[str]) -> str:
    return REWRITE_PROMPT.format(notes=' '.join(fact_sentences))


def _words(text: str) -> set[str]:
    return {w[:-1] if w.endswith('s') and len(w) > 3 else w for w in _WORD.findall(text.lower())}


def _masked(text: str) -> str:
    out = text
    for t in terms(text):
        out = out.replace(t['span'], ' ', 1)
    return out


def check_rewrite(rewrite: str, fact_sentences: list[str]) -> tuple[bool, str]:
    """(accepted, reason): a rewrite is accepted when it states no vocabulary term the facts do not, drops none of
    theirs, and every other word is a word of the facts or a connective (ALLOWED)."""
    notes = ' '.join(fact_sentences)
    text = ' '.join((rewrite or '').split())
    if not text:
        return False, 'empty'
    if len(text.split()) > MAX_REWRITE_GROWTH * len(notes.split()) + 5:
        return False, f'too long ({len(text.split())} words for {len(notes.split())})'
    have = {(t['kind'], t['term']) for t in terms(notes)}
    said = {(t['kind'], t['term']) for t in terms(text)}
    added = sorted(said - have)
    if added:
        return False, 'adds ' + ', '.join(f'{k} "{v}"' for k, v in added)
    dropped = sorted(have - said)
    if dropped:
        return False, 'drops ' + ', '.join(f'{k} "{v}"' for k, v in dropped)
    denials, negations = len(_NEGATION.findall(notes)), len(_NEGATION.findall(text))
    if denials and not negations:
        return False, 'drops a denial'
    if negations and not denials:
        return False, 'adds a denial'
    unsupported = sorted(_words(_masked(text)) - _words(notes) - ALLOWED - NEGATIONS)
    if unsupported:
        return False, 'unsupported word(s): ' + ', '.join(unsupported[:8])
    return True, 'ok'
