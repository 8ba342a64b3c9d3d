"""BLEU, ROUGE and METEOR exactly as the organizers' Hugging Face `evaluate` scripts compute them, only faster.

What the leaderboard runs (docs: anchors.md §1.8, data.md §5), with one reference per prediction:
- BLEU: sacrebleu's 13a tokens (no lowercasing), corpus-level 1-4-gram precisions, no smoothing, brevity penalty from
  the pooled lengths (tensorflow/nmt `compute_bleu`, which equals sacrebleu `corpus_bleu(..., smooth_method='none')`).
- ROUGE: rouge_score tokens (lowercase, [a-z0-9]+, no stemmer), F-measure per pair, then the mean estimated by
  `BootstrapAggregator` (1000 resamples, the median = `.mid`) under `np.random.seed(seed)`.
- METEOR: NLTK `meteor_score` on `word_tokenize` tokens (alpha 0.9, beta 3, gamma 0.5), exact -> Porter stem ->
  WordNet synonym alignment, averaged with `np.mean`.
Speed comes from tokenising each distinct string once (with the library-identical tokenizers of eval.fast_tokenize),
caching stems and WordNet synonym sets (read lazily by eval.wordnet_lite), scoring each distinct (reference,
prediction) pair once, a bit-parallel LCS, a vectorised bootstrap that draws the same random numbers, and no cyclic
garbage collection while scoring. Tests compare every piece with the libraries themselves.
"""
from __future__ import annotations

import gc
import math
import re
from collections import Counter, defaultdict
from itertools import chain
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

import eval  # noqa: F401  (points NLTK at <repo>/.nltk_data)
from common.errors import InputError
from eval.fast_tokenize import rouge_tokens

REPORTED = ('bleu', 'rouge1', 'rouge2', 'rougeL', 'meteor')
ROUGE_TYPES = ('rouge1', 'rouge2', 'rougeL', 'rougeLsum')  # evaluate's order: it fixes which random draws each gets
BLEU_MAX_ORDER = 4
METEOR_ALPHA, METEOR_BETA, METEOR_GAMMA = 0.9, 3, 0.5
BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_CHUNK = 10  # resamples drawn per numpy call (memory: CHUNK x N indices; small stays in cache)
DECIMALS = 4


class RougeScore(NamedTuple):  # same fields and arithmetic as rouge_score.scoring.Score
    precision: float
    recall: float
    fmeasure: float


ZERO_ROUGE = RougeScore(0.0, 0.0, 0.0)


def _fmeasure(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _ngram_counts(tokens: Sequence[str], max_order: int) -> Counter:
    """One Counter of all 1..max_order-grams (tuples; a gram's length is its order)."""
    shifted = [tokens[k:] for k in range(max_order)]
    return Counter(chain.from_iterable([zip(*shifted[:n]) for n in range(1, max_order + 1)]))


def _overlaps(a: Counter, b: Counter, max_order: int) -> list[int]:
    """Clipped matches per order: sum over grams of min(count in a, count in b), for orders 1..max_order."""
    if len(a) > len(b):
        a, b = b, a
    out = [0] * max_order
    get = b.get
    for gram, c in a.items():
        o = get(gram)
        if o:
            out[len(gram) - 1] += c if c < o else o
    return out


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, bit-parallel (Allison-Dix / Hyyro): one big-int step per b token."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        u = v & masks.get(tok, 0)
        v = (v + u) | (v - u)
    return len(a) - (v & full).bit_count()


class Scorer:
    """Holds the caches (tokens, stems, synonyms, pair scores); reuse one to score many subsets of the same data."""

    def __init__(self):
        self._bleu_tok: dict[str, tuple[int, Counter]] = {}
        self._rouge_tok: dict[str, tuple[list[str], Counter]] = {}
        self._meteor_tok: dict[str, list[str]] = {}
        self._rouge_pairs: dict[tuple[str, str], tuple[RougeScore, ...]] = {}
        self._meteor_pairs: dict[tuple[str, str], float] = {}
        self._stems: dict[str, str] = {}
        self._synonyms: dict[str, frozenset[str]] = {}
        self._tools = None

    # ---- third-party pieces, imported on first use -----------------------------------------------------------------
    def _lib(self):
        if self._tools is None:
            from nltk.stem.porter import PorterStemmer

            from eval.fast_tokenize import Bleu13a, WordTokenizer
            try:
                word_tokenize = WordTokenizer()
            except LookupError as e:
                raise missing_nltk_data(e) from None
            self._tools = dict(word_tokenize=word_tokenize, lemma_names=None, stemmer=PorterStemmer(),
                               bleu_tokenizer=Bleu13a())
        return self._tools

    # ---- BLEU ------------------------------------------------------------------------------------------------------
    def bleu(self, predictions: Sequence[str], references: Sequence[str]) -> dict:
        """Corpus BLEU with the nmt arithmetic (same float operations, so the same bits)."""
        tok = self._lib()['bleu_tokenizer']
        for s in set(predictions) | set(references):
            if s not in self._bleu_tok:
                tokens = tok(s)
                self._bleu_tok[s] = (len(tokens), _ngram_counts(tokens, BLEU_MAX_ORDER))
        matches = [0] * BLEU_MAX_ORDER
        possible = [0] * BLEU_MAX_ORDER
        ref_len = hyp_len = 0
        for pred, ref in zip(predictions, references):
            (p_len, p), (r_len, r) = self._bleu_tok[pred], self._bleu_tok[ref]
            hyp_len += p_len
            ref_len += r_len
            overlaps = ([max(p_len - k, 0) for k in range(BLEU_MAX_ORDER)] if pred == ref  # all n-grams match
                        else _overlaps(p, r, BLEU_MAX_ORDER))
            for k, m in enumerate(overlaps):
                matches[k] += m
                if p_len - k > 0:
                    possible[k] += p_len - k
        precisions = [matches[k] / possible[k] if possible[k] > 0 else 0.0 for k in range(BLEU_MAX_ORDER)]
        geo_mean = math.exp(sum((1. / BLEU_MAX_ORDER) * math.log(p) for p in precisions)) if min(precisions) > 0 else 0
        if ref_len == 0 or hyp_len == 0:  # nmt's guard: no text at all scores 0 (older copies divided by zero)
            ratio, bp = 0.0, 0.0
        else:
            ratio = float(hyp_len) / ref_len
            bp = 1.0 if ratio > 1.0 else math.exp(1 - 1.0 / ratio)
        return {'bleu': geo_mean * bp, 'precisions': precisions, 'brevity_penalty': bp, 'length_ratio': ratio,
                'translation_length': hyp_len, 'reference_length': ref_len}

    # ---- ROUGE -----------------------------------------------------------------------------------------------------
    def _rouge_tokens(self, text: str):
        got = self._rouge_tok.get(text)
        if got is None:
            tokens = rouge_tokens(text)
            got = self._rouge_tok[text] = (tokens, _ngram_counts(tokens, 2))
        return got

    def rouge_pair(self, reference: str, prediction: str) -> tuple[RougeScore, ...]:
        """(rouge1, rouge2, rougeL, rougeLsum) Scores of one pair, as rouge_score's RougeScorer.score gives them."""
        key = (reference, prediction)
        got = self._rouge_pairs.get(key)
        if got is not None:
            return got
        ref, pred = self._rouge_tokens(reference), self._rouge_tokens(prediction)
        out = []
        for n, inter in enumerate(_overlaps(ref[1], pred[1], 2), 1):
            precision = inter / max(len(pred[0]) - n + 1, 1)  # the number of n-grams
            recall = inter / max(len(ref[0]) - n + 1, 1)
            out.append(RougeScore(precision, recall, _fmeasure(precision, recall)))
        if ref[0] and pred[0]:
            lcs = lcs_length(ref[0], pred[0])
            precision, recall = lcs / len(pred[0]), lcs / len(ref[0])
            out.append(RougeScore(precision, recall, _fmeasure(precision, recall)))
        else:
            out.append(ZERO_ROUGE)
        if '\n' in reference or '\n' in prediction:  # summary-level LCS over lines: let rouge_score do it
            from rouge_score.rouge_scorer import RougeScorer
            s = RougeScorer(['rougeLsum'], use_stemmer=False).score(reference, prediction)['rougeLsum']
            out.append(RougeScore(*s))
        else:  # one line each: summary-level LCS is the plain LCS
            out.append(out[2])
        got = self._rouge_pairs[key] = tuple(out)
        return got

    def rouge(self, predictions: Sequence[str], references: Sequence[str], seed: int | None = 42) -> dict:
        """Bootstrap `mid.fmeasure` (evaluate's value) and plain means of the per-pair F-measures."""
        pairs = [self.rouge_pair(r, p) for p, r in zip(predictions, references)]
        f = np.array([[s.fmeasure for s in pair] for pair in pairs], dtype=np.float64).reshape(len(pairs), 4)
        mids = bootstrap_mid(f, seed)
        return {'bootstrap': dict(zip(ROUGE_TYPES, mids)),
                'mean': {t: float(np.mean(f[:, k])) for k, t in enumerate(ROUGE_TYPES)}}

    # ---- METEOR ----------------------------------------------------------------------------------------------------
    def _stem(self, word: str) -> str:
        got = self._stems.get(word)
        if got is None:
            got = self._stems[word] = self._lib()['stemmer'].stem(word)
        return got

    def _syns(self, word: str) -> frozenset[str]:
        got = self._synonyms.get(word)
        if got is None:
            tools = self._lib()
            if tools['lemma_names'] is None:
                try:
                    tools['lemma_names'] = wordnet_lemma_names()
                except LookupError as e:
                    raise missing_nltk_data(e) from None
            names = tools['lemma_names'](word)
            got = self._synonyms[word] = frozenset({n for n in names if '_' not in n} | {word})
        return got

    def meteor_pair(self, reference: str, prediction: str) -> float:
        key = (reference, prediction)
        got = self._meteor_pairs.get(key)
        if got is None:
            got = self._meteor_pairs[key] = self._meteor_tokens_score(self._meteor_tokens(reference),
                                                                     self._meteor_tokens(prediction))
        return got

    def _meteor_tokens(self, text: str) -> list[str]:
        got = self._meteor_tok.get(text)
        if got is None:
            got = self._meteor_tok[text] = [t.lower() for t in self._lib()['word_tokenize'](text)]
        return got

    def _meteor_tokens_score(self, ref: list[str], hyp: list[str]) -> float:
        """nltk single_meteor_score on lower-cased tokens: the same alignment, the same float operations."""
        hyp_left = list(enumerate(hyp))
        ref_left = list(enumerate(ref))
        matches: list[tuple[int, int]] = []
        for stem, synonyms in ((None, None), (self._stem, None), (None, self._syns)):
            if not hyp_left or not ref_left:
                break
            hyp_left, ref_left = _align_stage(hyp_left, ref_left, stem, synonyms, matches)
        m = len(matches)
        if m == 0:  # also covers empty texts (nltk returns 0.0 on its ZeroDivisionError)
            return 0.0
        precision = float(m) / len(hyp)
        recall = float(m) / len(ref)
        fmean = (precision * recall) / (METEOR_ALPHA * precision + (1 - METEOR_ALPHA) * recall)
        matches.sort()
        chunks = 1 + sum(1 for (h0, r0), (h1, r1) in zip(matches, matches[1:]) if not (h1 == h0 + 1 and r1 == r0 + 1))
        frag_frac = float(chunks) / m
        penalty = METEOR_GAMMA * frag_frac ** METEOR_BETA
        return (1 - penalty) * fmean

    def meteor(self, predictions: Sequence[str], references: Sequence[str]) -> float:
        return float(np.mean([self.meteor_pair(r, p) for p, r in zip(predictions, references)]))

    # ---- everything ------------------------------------------------------------------------------------------------
    def score(self, predictions: Sequence[str], references: Sequence[str], rouge_seed: int | None = 42) -> dict:
        _check(predictions, references)
        gc_was_on = gc.isenabled()
        gc.disable()  # the caches fill with ~10^5 small containers and no cycles: collections would only rescan them
        try:
            bleu = self.bleu(predictions, references)
            rouge = self.rouge(predictions, references, rouge_seed)
            meteor = self.meteor(predictions, references)
        finally:
            if gc_was_on:
                gc.enable()
        unrounded = {'bleu': bleu['bleu'], **rouge['bootstrap'], 'meteor': meteor}
        return {**{k: round(float(unrounded[k]), DECIMALS) for k in REPORTED},
                'unrounded': {k: float(v) for k, v in unrounded.items()},
                'rouge_mean': rouge['mean'],
                'bleu_details': {k: v for k, v in bleu.items() if k != 'bleu'},
                'n': len(predictions), 'rouge_seed': rouge_seed}


def missing_nltk_data(error: LookupError) -> InputError:
    """NLTK's multi-line LookupError banner as one line that says how to get the data."""
    text = re.sub(r'\x1b\[[0-9;]*m', '', str(error))
    found = re.search(r'Resource (\S+) not found', text)
    what = found[1].strip('\'"') if found else 'punkt_tab / wordnet'
    return InputError(f'the NLTK data METEOR needs ({what}) is not installed: run `make setup` (it puts WordNet and '
                      f'punkt_tab in {eval.REPO_NLTK_DATA}) or set NLTK_DATA to a folder holding them',
                      field='meteor')


def wordnet_lemma_names():
    """word -> {lemma.name() for synset in wordnet.synsets(word) for lemma in synset.lemmas()}, from the lazy reader of
    eval.wordnet_lite where WordNet is a plain folder, else from NLTK's own reader (e.g. a wordnet.zip)."""
    import nltk.data
    found = nltk.data.find('corpora/wordnet')
    if isinstance(found, nltk.data.FileSystemPathPointer) and Path(found.path).is_dir():
        from eval.wordnet_lite import LiteWordNet
        return LiteWordNet(found.path).lemma_names
    wordnet = english_wordnet()
    return lambda word: {lemma.name() for synset in wordnet.synsets(word) for lemma in synset.lemmas()}


def english_wordnet():
    """NLTK's WordNet reader without its WordNet-3.0-to-3.0 sense-key map (two passes over index.sense that only
    multilingual OMW lookups use): half the load time, the same English synsets and lemmas."""
    import warnings

    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class EnglishWordNet(WordNetCorpusReader):
        def map_wn(self, version='wordnet'):
            return None

    with warnings.catch_warnings():  # "multilingual functions are not available": we only need English
        warnings.simplefilter('ignore')
        return EnglishWordNet(nltk.data.find('corpora/wordnet'), None)


def _align_stage(hyp_left, ref_left, stem, synonyms, matches):
    """One METEOR matching stage, walking the hypothesis from its end as NLTK does; returns what is left unmatched.

    Exact (no stem, no synonyms) or stem (both sides' words replaced by their stems, and the stems are what later
    stages see, as in NLTK): a hypothesis word takes the last free reference position of the same word.
    Synonym: among the word and its WordNet synonyms, the one whose last free reference position is largest.
    """
    if stem is not None:
        hyp_left = [(i, stem(w)) for i, w in hyp_left]
        ref_left = [(j, stem(w)) for j, w in ref_left]
    positions: dict[str, list[int]] = defaultdict(list)
    for j, (_, word) in enumerate(ref_left):
        positions[word].append(j)
    used_h, used_r = set(), set()
    for i in range(len(hyp_left) - 1, -1, -1):
        word = hyp_left[i][1]
        if synonyms is not None:
            best_j, best = -1, None
            for syn in synonyms(word):
                pos = positions.get(syn)
                if pos and pos[-1] > best_j:
                    best_j, best = pos[-1], syn
            if best is None:
                continue
            j = positions[best].pop()
        else:
            pos = positions.get(word)
            if not pos:
                continue
            j = pos.pop()
        used_h.add(i)
        used_r.add(j)
        matches.append((hyp_left[i][0], ref_left[j][0]))
    return ([p for i, p in enumerate(hyp_left) if i not in used_h],
            [p for j, p in enumerate(ref_left) if j not in used_r])


def bootstrap_mid(f: np.ndarray, seed: int | None = 42, n_samples: int = BOOTSTRAP_SAMPLES) -> list[float]:
    """rouge_score BootstrapAggregator's `mid` for each column of `f` (N pairs x K types), bit for bit.

    The aggregator, per type in order, draws `np.random.choice(N, N)` n_samples times (the same stream as
    `randint(0, N, (n_samples, N))`), takes each resample's mean by adding its (N, 3) rows one after the other,
    and reports the 50th percentile of those means. We draw in chunks and add with a cumulative sum, which keeps
    that order (np.add.reduce over many columns may not, and then the last bits differ). The global numpy random state is restored afterwards, as evaluate's temp_seed does.
    """
    n, k = f.shape
    state = np.random.get_state()
    try:
        if seed is not None:
            np.random.seed(seed)
        mids = []
        q = 100 * np.array([(1 - 0.95) / 2, 0.5, 1 - (1 - 0.95) / 2])
        for col in range(k):
            column = f[:, col]
            means = np.empty(n_samples)
            for start in range(0, n_samples, BOOTSTRAP_CHUNK):
                stop = min(start + BOOTSTRAP_CHUNK, n_samples)
                idx = np.random.randint(0, n, size=(stop - start, n))
                means[start:stop] = np.cumsum(column[idx], axis=1)[:, -1] / n  # rows contiguous: faster, same adds
            mids.append(float(np.percentile(means[:, None], q, axis=0)[1, 0]))
        return mids
    finally:
        if seed is not None:
            np.random.set_state(state)


def _check(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f'{len(predictions)} predictions but {len(references)} references')
    if not predictions:
        raise ValueError('nothing to score')
    for name, seq in (('prediction', predictions), ('reference', references)):
        for i, s in enumerate(seq):
            if not isinstance(s, str):
                raise TypeError(f'{name} {i} is {type(s).__name__}, not str')


_DEFAULT = Scorer()


def score(predictions: Sequence[str], references: Sequence[str], rouge_seed: int | None = 42) -> dict:
    """{'bleu','rouge1','rouge2','rougeL','meteor'} rounded to 4 decimals like the organizers, plus 'unrounded'
    (with rougeLsum), 'rouge_mean' (seed-free plain means), 'bleu_details', 'n', 'rouge_seed'.

    rouge_seed=None draws from numpy's current global state, like `evaluate.load('rouge')` without a seed."""
    return _DEFAULT.score(list(predictions), list(references), rouge_seed)
