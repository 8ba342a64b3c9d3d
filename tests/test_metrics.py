"""eval.metrics against the libraries the organizers' evaluate scripts call, plus hand-computed values.

Needs the NLTK data of `make setup` (.nltk_data/: WordNet + punkt_tab); without it these tests fail, on purpose.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from eval import metrics

GOLDEN = Path(__file__).parent / 'golden' / 'pairs.jsonl'
DOC_PRED = 'It is a guide to action which ensures that the military always obeys the commands of the party'
DOC_REF = 'It is a guide to action that ensures that the military will forever heed Party commands'


@pytest.fixture(scope='module')
def golden() -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in GOLDEN.read_text(encoding='utf-8').splitlines()]
    assert len(rows) >= 300 and {r['kind'] for r in rows} >= {'identical', 'empty', 'two_lines', 'same_class'}
    return [r['prediction'] for r in rows], [r['reference'] for r in rows]


@pytest.fixture(scope='module')
def nltk_ready():
    import nltk
    try:
        nltk.data.find('corpora/wordnet/lexnames')
        nltk.data.find('tokenizers/punkt_tab/english/')
    except LookupError:
        pytest.fail('NLTK data missing: run `make setup` (bash scripts/install_nltk_data.sh PYTHON)')


# ---- documented values --------------------------------------------------------------------------------------------
def test_meteor_docstring_values(nltk_ready):
    # evaluate's meteor docstring: 0.6944; NLTK's own test "THIS Is a tEST" vs "this is a test": 0.9921875
    assert round(metrics.Scorer().meteor([DOC_PRED], [DOC_REF]), 4) == 0.6944
    assert metrics.Scorer().meteor(['THIS Is a tEST'], ['this is a test']) == 0.9921875
    from nltk.translate.meteor_score import meteor_score
    assert meteor_score([['this', 'is', 'a', 'test'], ['this', 'is' 'test']], ['THIS', 'Is', 'a', 'tEST'],
                        preprocess=str.lower) == 0.9921875


# ---- hand-computed values -----------------------------------------------------------------------------------------
def test_bleu_perfect_match_and_brevity_penalty():
    s = metrics.Scorer()
    assert s.bleu(['the polyp is small .'], ['the polyp is small .'])['bleu'] == 1.0
    # 5 of 10 reference tokens, every n-gram correct: BLEU = BP = exp(1 - 10/5)
    out = s.bleu(['a b c d e'], ['a b c d e f g h i j'])
    assert out['precisions'] == [1.0, 1.0, 1.0, 1.0]
    assert out['brevity_penalty'] == math.exp(-1) and out['bleu'] == math.exp(-1)
    assert out['length_ratio'] == 0.5 and (out['translation_length'], out['reference_length']) == (5, 10)
    # longer than the reference: no penalty
    assert s.bleu(['a b c d e f'], ['a b c d e'])['brevity_penalty'] == 1.0


def test_bleu_edge_cases_empty_predictions():
    s = metrics.Scorer()
    # nothing predicted at all: nmt's guard gives ratio 0, BP 0, BLEU 0 (older copies raised ZeroDivisionError)
    out = s.bleu(['', ''], ['a b', 'c d'])
    assert (out['bleu'], out['brevity_penalty'], out['length_ratio']) == (0.0, 0.0, 0.0)
    # one empty prediction only shortens the corpus
    out = s.bleu(['a b c d', ''], ['a b c d', 'e f g h'])
    assert out['brevity_penalty'] == math.exp(1 - 8 / 4) and out['bleu'] == pytest.approx(math.exp(-1))
    # no 4-gram anywhere: precision 0 -> BLEU 0 (no smoothing)
    assert s.bleu(['a b c'], ['a b c'])['bleu'] == 0


def test_rouge_known_pair():
    r1, r2, rl, rlsum = metrics.Scorer().rouge_pair('The cat sat on the mat.', 'the cat on the mat')
    assert r1 == (1.0, 5 / 6, pytest.approx(10 / 11))  # 5 unigrams shared
    assert r2.fmeasure == pytest.approx(2 * 0.75 * 0.6 / 1.35)  # 3 of 4 / 3 of 5 bigrams
    assert rl.fmeasure == pytest.approx(10 / 11) and rlsum == rl  # LCS 5


def test_lcs_length_matches_dynamic_programming():
    rng = np.random.default_rng(0)
    for _ in range(300):
        a = list(rng.choice(list('abcde'), size=rng.integers(0, 25)))
        b = list(rng.choice(list('abcdef'), size=rng.integers(0, 25)))
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(len(a)):
            for j in range(len(b)):
                table[i + 1][j + 1] = table[i][j] + 1 if a[i] == b[j] else max(table[i][j + 1], table[i + 1][j])
        assert metrics.lcs_length(a, b) == table[-1][-1]


# ---- equality with the libraries evaluate calls, pair by pair -----------------------------------------------------
def test_meteor_pairs_equal_nltk(golden, nltk_ready):
    from nltk import word_tokenize
    from nltk.translate.meteor_score import meteor_score
    preds, refs = golden
    s = metrics.Scorer()
    want = [meteor_score([word_tokenize(r)], word_tokenize(p), alpha=0.9, beta=3, gamma=0.5)
            for p, r in zip(preds, refs)]
    got = [s.meteor_pair(r, p) for p, r in zip(preds, refs)]
    assert got == want
    assert s.meteor(preds, refs) == np.mean(want)
    assert 0 < min(x for x in want if x > 0) and max(want) < 1  # the pairs exercise the whole range


def test_rouge_pairs_equal_rouge_score(golden):
    from rouge_score.rouge_scorer import RougeScorer
    preds, refs = golden
    scorer = RougeScorer(list(metrics.ROUGE_TYPES), use_stemmer=False)
    s = metrics.Scorer()
    for p, r in zip(preds, refs):
        want = scorer.score_multi([r], p)
        assert [tuple(want[t]) for t in metrics.ROUGE_TYPES] == [tuple(x) for x in s.rouge_pair(r, p)], (p, r)


def test_rouge_bootstrap_equals_aggregator(golden):
    from rouge_score import scoring
    from rouge_score.rouge_scorer import RougeScorer
    preds, refs = golden
    scorer = RougeScorer(list(metrics.ROUGE_TYPES), use_stemmer=False)
    np.random.seed(42)
    agg = scoring.BootstrapAggregator()
    for p, r in zip(preds, refs):
        agg.add_scores(scorer.score_multi([r], p))
    want = {k: v.mid.fmeasure for k, v in agg.aggregate().items()}
    np.random.seed(7)
    before = np.random.get_state()[1].copy()
    got = metrics.Scorer().rouge(preds, refs, seed=42)['bootstrap']
    assert got == want
    assert np.array_equal(np.random.get_state()[1], before)  # global numpy state restored, like evaluate's temp_seed


@pytest.mark.parametrize('n', [1, 2, 7, 130, 1001])
def test_bootstrap_mid_equals_aggregator_any_size(n):
    from rouge_score import scoring
    rng = np.random.default_rng(n)
    rows = [scoring.Score(*rng.random(3)) for _ in range(n)]
    np.random.seed(3)
    agg = scoring.BootstrapAggregator()
    for row in rows:
        agg.add_scores({'a': row, 'b': row})
    want = agg.aggregate()
    f = np.array([[row.fmeasure, row.fmeasure] for row in rows])
    assert metrics.bootstrap_mid(f, seed=3) == [want['a'].mid.fmeasure, want['b'].mid.fmeasure]


def test_bleu_equals_nmt_formula_and_sacrebleu(golden):
    import sacrebleu
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
    preds, refs = golden
    got = metrics.Scorer().bleu(preds, refs)
    # nmt compute_bleu as evaluate runs it, written plainly
    tok = Tokenizer13a()
    matches, possible, hyp_len, ref_len = [0] * 4, [0] * 4, 0, 0
    for p, r in zip(preds, refs):
        pt, rt = tok(p).split(), tok(r).split()
        hyp_len, ref_len = hyp_len + len(pt), ref_len + len(rt)
        for n in range(1, 5):
            pc = Counter(tuple(pt[i:i + n]) for i in range(len(pt) - n + 1))
            rc = Counter(tuple(rt[i:i + n]) for i in range(len(rt) - n + 1))
            matches[n - 1] += sum((pc & rc).values())
            possible[n - 1] += max(len(pt) - n + 1, 0)
    prec = [m / p for m, p in zip(matches, possible)]
    ratio = hyp_len / ref_len
    want = math.exp(sum(0.25 * math.log(p) for p in prec)) * (1.0 if ratio > 1 else math.exp(1 - 1.0 / ratio))
    assert got['bleu'] == want and got['precisions'] == prec
    sb = sacrebleu.corpus_bleu(preds, [refs], tokenize='13a', smooth_method='none', force=True).score / 100
    assert abs(got['bleu'] - sb) < 1e-12  # data.md §5: same value (the last bit may differ: other arithmetic)


# ---- the public API ----------------------------------------------------------------------------------------------
def test_score_rounds_and_reproduces(golden):
    preds, refs = golden
    a = metrics.score(preds, refs)
    assert set(metrics.REPORTED) <= set(a) and a['n'] == len(preds)
    for k in metrics.REPORTED:
        assert a[k] == round(a['unrounded'][k], 4)
    assert 'rougeLsum' in a['unrounded'] and set(a['rouge_mean']) == set(metrics.ROUGE_TYPES)
    assert metrics.score(preds, refs) == a
    assert metrics.score(refs, refs)['bleu'] == 1.0


def test_score_rejects_bad_input():
    with pytest.raises(ValueError):
        metrics.score(['a'], ['a', 'b'])
    with pytest.raises(ValueError):
        metrics.score([], [])
    with pytest.raises(TypeError):
        metrics.score([None], ['a'])


def test_english_wordnet_equals_nltk_default(nltk_ready):
    from nltk.corpus import wordnet
    fast = metrics.english_wordnet()
    for word in ('dog', 'polyps', 'removed', 'colonoscopy', 'visible', 'pink', 'lesion', 'running', 'xqzt'):
        assert [s.name() for s in fast.synsets(word)] == [s.name() for s in wordnet.synsets(word)]
        assert [[lem.name() for lem in s.lemmas()] for s in fast.synsets(word)] == \
               [[lem.name() for lem in s.lemmas()] for s in wordnet.synsets(word)]


def test_nltk_data_installer_is_idempotent(nltk_ready, tmp_path):
    from common.errors import InputError
    from eval import REPO_NLTK_DATA, nltk_data
    if not REPO_NLTK_DATA.is_dir():
        pytest.fail('run `make setup` first: .nltk_data/ is missing')
    assert nltk_data.install(REPO_NLTK_DATA, download=False, apt=False) == '0.6944 0.9921875'
    assert not nltk_data.has_wordnet(tmp_path) and nltk_data.has_wordnet(REPO_NLTK_DATA)
    with pytest.raises(InputError):  # nothing there and no route allowed: one clear error
        nltk_data.install(tmp_path / 'empty', download=False, apt=False)
    lex = (REPO_NLTK_DATA / 'corpora' / 'wordnet' / 'lexnames').read_text().splitlines()
    assert len(lex) == 45 and lex[3] == '03\tnoun.Tops\t1' and lex[-1] == '44\tadj.ppl\t3'


# ---- the fast pieces equal the libraries, string for string -------------------------------------------------------
ADVERSARIAL = ('He said "it\'s fine"... (really?) [no] {x} <y>', "can't won't 'tis gimme wanna go", 'a--b ‒–—― 1-2',
               'Mr. Smith went to Washington. He did.', '“Curly” ‘quotes’ «guillemets» „low”', 'x\u00a0y\u2028z\tw',
               'café naïve İı ſ K', '&quot;&amp;&lt;&gt; <skipped> line-\nbreak', 'trailing.) "end."\' ', '....',
               "rock 'n' roll y'all O'Neil's", 'http://a.b/c?d=e&f#g @h $1,000.50 5% x*y;z', '\n\n', '   ')


@pytest.fixture(scope='module')
def all_texts(golden, shared_dir) -> list[str]:
    """Every question and answer of the x1 train subset (../shared; skipped without it), the golden pairs and
    adversarial strings."""
    import pandas as pd
    frame = pd.read_parquet(shared_dir / 'data' / 'kvasir-vqa-x1' / 'train-subset.parquet',
                            columns=['question', 'answer'])
    from eval.fast_tokenize import PROBES
    texts = {*frame['question'], *frame['answer'], *golden[0], *golden[1], *ADVERSARIAL, *PROBES}
    assert len(texts) > 15000
    return sorted(texts)


def test_fast_tokenizers_equal_libraries(nltk_ready, all_texts):
    from nltk import word_tokenize
    from rouge_score.tokenizers import DefaultTokenizer
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    from eval.fast_tokenize import Bleu13a, WordTokenizer, rouge_tokens
    words, bleu, rouge = WordTokenizer(), Bleu13a(), DefaultTokenizer(use_stemmer=False)
    assert words.fast and bleu.fast  # the self-check passed, so the fast paths are what runs
    bleu_lib = Tokenizer13a()
    for text in all_texts:
        assert words(text) == word_tokenize(text), text
        assert bleu(text) == bleu_lib(text).split(), text
        assert rouge_tokens(text) == rouge.tokenize(text), text


def test_lite_wordnet_lemma_names_equal_nltk(nltk_ready, all_texts):
    import nltk.data
    from nltk.corpus import wordnet
    from nltk.corpus.reader.wordnet import POS_LIST

    from eval.wordnet_lite import FILES, LiteWordNet
    assert list(FILES) == POS_LIST  # synsets(word) walks POS_LIST; the lite reader knows exactly those files
    lite = LiteWordNet(nltk.data.find('corpora/wordnet').path)
    from eval.fast_tokenize import WordTokenizer
    tokenize = WordTokenizer()  # METEOR's words: lower-cased word_tokenize tokens (equal to NLTK's, tested above)
    words = {w.lower() for text in all_texts for w in tokenize(text)} | {w for text in all_texts for w in text.split()}
    words |= {'geese', 'ran', 'better', 'best', 'leaves', 'churches', 'women', 'lying', 'abaci', 'feet', 'xqzt',
              'Dogs', 'hotter', 'axes', 'boxes', 'ate', 'went', 'corpora', 'mice', 'quickly', "o'clock", '.', ''}
    root = Path(lite._root)
    for suffix, endings in (('noun', ('', 's', 'es')), ('verb', ('', 's', 'ed', 'ing')), ('adj', ('', 'er', 'est')),
                            ('adv', ('',))):  # a sample of WordNet itself, inflected so that morphy has work
        lemmas = [line.split()[0] for line in (root / f'index.{suffix}').read_text().splitlines()
                  if not line.startswith(' ')]
        words |= {lemma + end for lemma in lemmas[::97] for end in endings}
    exceptions = [line.split()[0] for line in (root / 'verb.exc').read_text().splitlines()]
    words |= set(exceptions[::7])
    assert len(words) > 4000
    for word in sorted(words):
        assert lite.lemma_names(word) == {lem.name() for s in wordnet.synsets(word) for lem in s.lemmas()}, word
    lite.close()
