"""Confidence from the answer's own token log-probs, calibrated on a labelled held-out split.

Raw score (from ms-swift's log-probs of the greedy answer): for a closed (yes/no) question whose answer starts with
yes/no, the two-way probability of the chosen polarity at the first token, p(chosen) / (p(yes) + p(no)), read from
the first position's top alternatives; otherwise the geometric mean token probability
exp(mean log p). Calibration: temperature scaling with a bias on the raw score's logit, sigmoid((logit(p) - b) / T),
fitted by Newton's method on the NLL (T alone cannot move an over-confident model's scores below 0.5), or isotonic
regression (pool-adjacent-violators). Correctness per question kind: closed questions by answer polarity, others by
normalised exact match or ROUGE-L F1 >= 0.5 with the reference.

Calibration data: predictions of a labelled held-out split written by `make infer INFER_ARGS=--logprobs` (each row's
token_logprobs and first_top_logprobs are exactly what the submission rows' confidence reads), of which a stratified
sample of at most CALIBRATION_ROWS rows (by question class, seeded) is used; nothing is re-answered.
"""
from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import InputError

EPS = 1e-6
ROUGE_THRESHOLD = 0.5
N_BINS = 10
CALIBRATION_ROWS = 2000  # default cap of the stratified calibration sample
SAMPLE_SEED = 0
_CLOSED = re.compile(r'^\s*(is|are|was|were|does|do|did|can|could|has|have|had|will|would|should)\b', re.I)
_NEG = re.compile(r'\b(no|not|none|without|absent|neither|nor|never|nothing|free of|negative)\b', re.I)


# ---------------------------------------------------------------- raw scores
def geometric_mean_prob(token_logprobs) -> float:
    lp = [float(v) for v in token_logprobs]
    if any(math.isnan(v) for v in lp):
        raise InputError('the model returned a NaN token log-prob: no confidence can be computed (check the model '
                         'weights and dtype)', field='token_logprobs')
    return float(math.exp(sum(lp) / len(lp))) if lp else 0.0


def is_closed_question(question: str) -> bool:
    return bool(_CLOSED.match(question))


def yes_no_margin(logp_yes: float, logp_no: float, chosen: str) -> float:
    """p(chosen) / (p(yes) + p(no)) from the first-token log-probs."""
    m = max(logp_yes, logp_no)
    py, pn = math.exp(logp_yes - m), math.exp(logp_no - m)
    return (py if chosen == 'yes' else pn) / (py + pn)


def polarity(text: str) -> str | None:
    """'yes' / 'no' for a yes/no-style answer (first word, then negation words), None for an empty one."""
    words = text.strip().lower().split()
    if not words:
        return None
    first = re.sub(r'[^a-z]', '', words[0])
    if first in ('yes', 'yeah'):
        return 'yes'
    if first == 'no':
        return 'no'
    return 'no' if _NEG.search(text) else 'yes'


def _side(first_top: dict[str, float], word: str) -> float | None:
    lps = [lp for tok, lp in first_top.items() if tok.strip().lower() == word]
    return float(np.logaddexp.reduce(lps)) if lps else None


def raw_score(question: str, answer: str, token_logprobs, first_top: dict[str, float] | None = None) -> float:
    """The uncalibrated confidence of one answer (see module doc). `first_top`: the top alternatives (token text ->
    log-prob) at the answer's first position; a side missing from them is given the smallest listed log-prob (an
    upper bound on its true value, so the margin errs towards 0.5)."""
    first = re.sub(r'[^a-z]', '', (answer.strip().lower().split() or [''])[0])
    if first_top and is_closed_question(question) and first in ('yes', 'no'):
        lp_yes, lp_no = _side(first_top, 'yes'), _side(first_top, 'no')
        floor = min(first_top.values())
        if lp_yes is not None or lp_no is not None:
            return yes_no_margin(floor if lp_yes is None else lp_yes, floor if lp_no is None else lp_no, first)
    return geometric_mean_prob(token_logprobs)


# ---------------------------------------------------------------- calibration data
def calibration_inputs(path: str | Path) -> list[dict]:
    """Rows of a predictions file with log-probs (inference.predict --logprobs on a labelled split), checked."""
    from common.io import read_jsonl
    rows = read_jsonl(path)
    if not rows:
        raise InputError('no rows', file=str(path), field='--calibration-data')
    for i, row in enumerate(rows, 1):
        if 'messages' in row:
            raise InputError('an ms-swift JSONL, not predictions: calibration reads the answers\' log-probs; make '
                             'them with `make infer SPLIT=val-original INFER_ARGS=--logprobs`', file=str(path), row=i)
        for key in ('question', 'prediction', 'reference', 'token_logprobs', 'first_top_logprobs'):
            if key not in row:
                hint = ' (predictions made with --logprobs by this version of inference.predict)' \
                    if key in ('token_logprobs', 'first_top_logprobs') else ''
                raise InputError(f'missing{hint}', file=str(path), row=i, field=key)
    return rows


def question_stratum(row: dict) -> str:
    """The calibration stratum of a row: its question_class (joined when several), else the question's topic."""
    classes = row.get('question_class')
    if isinstance(classes, str) and classes:
        return classes
    if isinstance(classes, list) and classes:
        return '+'.join(sorted(str(c) for c in classes))
    from explain.probing import classify_question
    topics = classify_question(row.get('question', ''))
    return topics[0] if topics else 'other'


def stratified_sample(strata: list[str], n: int, seed: int = SAMPLE_SEED) -> list[int]:
    """Indices (ascending) of at most n rows: each stratum gets its proportional share (largest remainders), drawn at
    random within it (seeded). n <= 0 or n >= len(strata): every row."""
    if n <= 0 or n >= len(strata):
        return list(range(len(strata)))
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(strata):
        groups.setdefault(s, []).append(i)
    names = sorted(groups)
    quota = {s: n * len(groups[s]) / len(strata) for s in names}
    take = {s: int(quota[s]) for s in names}
    for s in sorted(names, key=lambda s: (-(quota[s] - take[s]), s))[:n - sum(take.values())]:
        take[s] += 1
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for s in names:
        picked += rng.choice(groups[s], size=take[s], replace=False).tolist()
    return sorted(picked)


# ---------------------------------------------------------------- correctness
def normalise(text: str) -> str:
    return ' '.join(re.sub(r'[^a-z0-9 ]+', ' ', text.lower()).split())


@functools.lru_cache(maxsize=1)
def _rouge_l_scorer():
    from rouge_score import rouge_scorer
    return rouge_scorer.RougeScorer(['rougeL'])


def rouge_l(pred: str, ref: str) -> float:
    return _rouge_l_scorer().score(ref, pred)['rougeL'].fmeasure


def is_correct(question: str, prediction: str, reference: str) -> bool:
    if is_closed_question(question):
        return polarity(prediction) == polarity(reference)
    if normalise(prediction) == normalise(reference):
        return True
    return rouge_l(prediction, reference) >= ROUGE_THRESHOLD


# ---------------------------------------------------------------- metrics
def _arr(p, y):
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError('scores and labels must be 1-D and the same length')
    return p, y


def ece(p, y, n_bins: int = N_BINS) -> float:
    """Expected calibration error: sum over equal-width bins of (bin share) * |accuracy - mean confidence|.
    Bin b holds (b/n, (b+1)/n]; p = 0 falls in the first bin."""
    p, y = _arr(p, y)
    if not len(p):
        return 0.0
    idx = np.clip(np.ceil(p * n_bins).astype(int) - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(total)


def brier(p, y) -> float:
    p, y = _arr(p, y)
    return float(np.mean((p - y) ** 2)) if len(p) else 0.0


def nll(p, y) -> float:
    p, y = _arr(p, y)
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if len(p) else 0.0


def reliability_bins(p, y, n_bins: int = N_BINS) -> list[dict]:
    p, y = _arr(p, y)
    idx = np.clip(np.ceil(p * n_bins).astype(int) - 1, 0, n_bins - 1)
    return [{'lo': b / n_bins, 'hi': (b + 1) / n_bins, 'n': int((idx == b).sum()),
             'confidence': float(p[idx == b].mean()) if (idx == b).any() else None,
             'accuracy': float(y[idx == b].mean()) if (idx == b).any() else None} for b in range(n_bins)]


def metrics(p, y) -> dict:
    return {'n': int(len(p)), 'accuracy': float(np.mean(y)) if len(y) else 0.0,
            'mean_confidence': float(np.mean(p)) if len(p) else 0.0,
            'ece': ece(p, y), 'brier': brier(p, y), 'nll': nll(p, y)}


# ---------------------------------------------------------------- calibrators
def _logit(p):
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))  # no overflow for large |z|


@dataclass
class Calibrator:
    """method 'temperature': sigmoid((logit(p) - bias) / T); 'isotonic': step function through (xs, ys);
    'identity': p unchanged."""
    method: str = 'identity'
    temperature: float = 1.0
    bias: float = 0.0
    xs: list = field(default_factory=list)
    ys: list = field(default_factory=list)

    def __call__(self, p):
        scalar = np.isscalar(p)
        p = np.atleast_1d(np.asarray(p, dtype=np.float64))
        if self.method == 'temperature':
            out = _sigmoid((_logit(p) - self.bias) / self.temperature)
        elif self.method == 'isotonic':
            out = np.interp(p, self.xs, self.ys) if self.xs else p
        else:
            out = p
        out = np.clip(out, 0.0, 1.0)
        return float(out[0]) if scalar else out

    def to_json(self) -> dict:
        return {'method': self.method, 'temperature': self.temperature, 'bias': self.bias,
                'xs': list(self.xs), 'ys': list(self.ys)}

    @classmethod
    def from_json(cls, obj: dict) -> 'Calibrator':
        return cls(**obj)


def _platt_nll(a: float, c: float, z, y) -> float:
    m = a * z + c
    return float(np.mean(np.logaddexp(0.0, m) - y * m))  # -log-likelihood of sigmoid(m), stable


def fit_temperature(p, y, iters: int = 100) -> Calibrator:
    """Minimise the NLL of sigmoid(a * logit(p) + c) over (a, c) (convex) by Newton steps with backtracking, so the
    NLL never rises above the start (a=1, c=0: the identity); T = 1/a, bias = -c/a. a stays > 0 so calibration
    keeps the ranking."""
    p, y = _arr(p, y)
    z = _logit(p)
    a, c = 1.0, 0.0
    cur = _platt_nll(a, c, z, y)
    for _ in range(iters):
        q = _sigmoid(a * z + c)
        g = np.array([np.mean((q - y) * z), np.mean(q - y)])
        w = q * (1 - q)
        h = np.array([[np.mean(w * z * z), np.mean(w * z)], [np.mean(w * z), np.mean(w)]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        t = 1.0
        while t > 1e-8:
            a_new, c_new = a - t * step[0], c - t * step[1]
            if a_new > 1e-3:
                new = _platt_nll(a_new, c_new, z, y)
                if new <= cur:
                    break
            t /= 2
        else:
            break  # no step decreases the NLL: converged
        done = cur - new < 1e-12
        a, c, cur = a_new, c_new, new
        if done:
            break
    return Calibrator('temperature', temperature=float(1 / a), bias=float(-c / a))


def fit_isotonic(p, y) -> Calibrator:
    """Pool-adjacent-violators on scores sorted ascending; returns the block means as an interpolated step map."""
    p, y = _arr(p, y)
    order = np.argsort(p, kind='stable')
    blocks: list[list[float]] = []  # [sum_y, count, min_x, max_x]
    for x, t in zip(p[order], y[order]):
        blocks.append([t, 1.0, x, x])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            s, n, lo, hi = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += n
            blocks[-1][3] = hi
    xs, ys = [], []
    for s, n, lo, hi in blocks:
        xs += [float(lo), float(hi)]
        ys += [float(s / n)] * 2
    return Calibrator('isotonic', xs=xs, ys=ys)


def fit(p, y, method: str = 'temperature') -> Calibrator:
    if len(p) < 2 or len(set(np.asarray(y).tolist())) < 2:
        return Calibrator('identity')  # nothing to learn from one class
    return fit_isotonic(p, y) if method == 'isotonic' else fit_temperature(p, y)


# ---------------------------------------------------------------- report
def reliability_diagram(p_before, p_after, y, path: str | Path) -> None:
    """PNG a rater can read: top, accuracy per confidence bin before and after calibration against the diagonal, each
    bar labelled with its row count (empty bins drawn as no bar and n=0); bottom, the histogram of the confidences
    (how many rows sit in each bin). The titles give ECE and Brier on these rows."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from common.io import atomic_path
    p_before, p_after, y = (np.asarray(v, dtype=np.float64) for v in (p_before, p_after, y))
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True, gridspec_kw={'height_ratios': [3, 1.3]})
    top = max(1, max(b['n'] for p in (p_before, p_after) for b in reliability_bins(p, y)))
    for col, (p, title) in enumerate(((p_before, 'before calibration'), (p_after, 'after calibration'))):
        ax, hist = axes[0, col], axes[1, col]
        bins = reliability_bins(p, y)
        centres = [(b['lo'] + b['hi']) / 2 for b in bins]
        acc = [b['accuracy'] if b['accuracy'] is not None else 0 for b in bins]
        ax.bar(centres, acc, width=1 / N_BINS, edgecolor='black', alpha=0.7, label='accuracy in the bin')
        for c, a, b in zip(centres, acc, bins):
            ax.annotate(f'n={b["n"]}', (c, a), xytext=(0, 2), textcoords='offset points', ha='center', fontsize=7)
        ax.plot([0, 1], [0, 1], 'k--', label='perfect calibration')
        ax.set_title(f'{title} ({len(p)} rows): ECE {ece(p, y):.3f}, Brier {brier(p, y):.3f}', fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.08)
        hist.bar(centres, [b['n'] for b in bins], width=1 / N_BINS, edgecolor='black', color='tab:grey')
        hist.set_ylim(0, top * 1.15)
        hist.set_xlabel('confidence')
    axes[0, 0].set_ylabel('accuracy')
    axes[1, 0].set_ylabel('rows')
    axes[0, 0].legend(loc='upper left', fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=100)
    plt.close(fig)


def cross_fitted(p, y, method: str = 'temperature') -> np.ndarray:
    """Calibrated scores where each half (even / odd rows) is mapped by a calibrator fitted on the other half: an
    honest held-out estimate of the calibration the final map (fitted on all rows) will give on new data."""
    p, y = _arr(p, y)
    out = np.empty_like(p)
    for part in (0, 1):
        test = np.arange(len(p)) % 2 == part
        out[test] = fit(p[~test], y[~test], method)(p[test])
    return out


def calibration_report(raw, labels, method: str = 'temperature') -> tuple[Calibrator, dict, np.ndarray]:
    """The calibrator fitted on all rows, metrics before / after (cross-fitted when there are >= 20 rows, else
    in-sample, as `after_kind` says), and the after-scores used for the reliability diagram."""
    raw = np.asarray(raw, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    cal = fit(raw, labels, method)
    honest = len(raw) >= 20
    after = cross_fitted(raw, labels, method) if honest else cal(raw)
    return cal, {'method': cal.method, 'calibrator': cal.to_json(), 'before': metrics(raw, labels),
                 'after': metrics(after, labels), 'after_in_sample': metrics(cal(raw), labels),
                 'after_kind': '2-fold cross-fitted' if honest else 'in-sample (fewer than 20 rows)'}, after


def save_calibrator(cal: Calibrator, path) -> None:
    from common.io import write_json
    write_json(path, cal.to_json())


def load_calibrator(path) -> Calibrator:
    return Calibrator.from_json(json.loads(Path(path).read_text(encoding='utf-8')))
