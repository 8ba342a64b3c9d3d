"""The three metric tokenizers, token for token as their libraries give them, only faster.

- `WordTokenizer`: `nltk.word_tokenize` (punkt sentences, then NLTKWordTokenizer's regexes in NLTK's order). NLTK
  wraps each pattern in `nltk.redos`, which adds a per-call timeout; we call the same compiled `regex` patterns
  directly and skip a substitution when the text lacks a character the pattern cannot match without (then `sub`
  returns the text unchanged, so skipping it changes nothing).
- `bleu_13a`: sacrebleu's Tokenizer13a. Its first regex puts spaces around single characters of an ASCII class,
  which is what `str.translate` does; the other three run only when their character occurs.
- `rouge_tokens`: rouge_score's tokenizer (lower-case, runs of [a-z0-9]; no stemmer).
Each checks itself against its library on `PROBES` when built and falls back to the library if anything differs.
"""
from __future__ import annotations

import re

# Strings where the tokenizers' rules matter (quotes, contractions, brackets, dots, dashes, unicode, newlines).
PROBES = (
    '', ' ', 'a', 'The polyp is red. It is big.', 'Is there a polyp?', '"Quoted" text, and \'single\' ones.',
    "I can't, won't and shouldn't; they're 'here' and we'd've gone.", 'cannot gonna gimme lemme wanna whaddya',
    "'tis 'twas the night", '``double`` and \'\'two\'\' quotes', '«Fr» “curly” ‘single’ „low“ »back«',
    'Brackets (round) [square] {curly} <angle>!', 'Ellipsis... and .. two dots. Final dot .', 'e.g. i.e. Dr. Smith',
    'U.S.A. 3.88 3,36 1,000.50 -5 5-6 pH-7 x--y — – ‒ ―', 'http://example.com/a?b=c&d=e#frag @user $5 50% a&b; *star*',
    'Tab\tand\nnewline\r\nand  spaces', 'Mixed CASE Don\'T CAN\'T', 'end with quote."', 'end with paren.)',
    'colon: comma, x:y 1:2 a,b', 'ünïcödé naïve café Straße İstanbul ǅ', '&quot;amp&amp;&lt;lt&gt; <skipped> a-\nb',
    'No polyps.\n\nTwo findings: a polyp (5 mm) and an ulcer.', "O'Neil's rock 'n' roll ma'am y'all",
    '?!?! !! wow?!', '... leading dots', '"start quote', "' lone quote '", 'size 10-15mm; grade: 2/3',
)


def _needles(pattern: str) -> tuple[str, ...] | None:
    """Substrings of which a text must contain at least one for `pattern` (NLTKWordTokenizer's) to match; None = any."""
    return _NEEDLES.get(pattern)


_NEEDLES: dict[str, tuple[str, ...]] = {
    '([«“‘„]|[`]+)': tuple('«“‘„`'),
    '^\\"': ('"',),
    '(``)': ('``',),
    '([ \\(\\[{<])(\\"|\\\'{2})': ('"', "''"),
    "(?i)(?<!\\w)(\\')(?!(?:re|ve|ll|m|t|s|d|n)\\b)(?=\\w)": ("'",),
    '([»”’])': tuple('»”’'),
    "''": ("''",),
    '"': ('"',),
    "([^' ])('[sS]|'[mM]|'[dD]|') ": ("'",),
    "([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ": ("'",),
    '([^\\.])(\\.)([\\]\\)}>"\\\'»”’ ]*+)\\s*$': ('.',),
    '([:,])([^\\d])': (':', ','),
    '([:,])$': (':', ','),
    '\\.{2,}': ('..',),
    '[;@#$%&]': tuple(';@#$%&'),
    '[\\u2012-\\u2015]': tuple('\u2012\u2013\u2014\u2015'),
    '([^\\.])(\\.)([\\]\\)}>"\\\']*)\\s*$': ('.',),
    '[?!]': ('?', '!'),
    "([^'])' ": ("' ",),
    '[*]': ('*',),
    '[\\]\\[\\(\\)\\{\\}\\<\\>]': tuple('][(){}<>'),
    '--': ('--',),
}


# MacIntyre's contractions (NLTKWordTokenizer.CONTRACTIONS2/3, all case-insensitive): the letters each must match.
_CONTRACTION_WORDS = {
    '(?i)\\b(can)(?#X)(not)\\b': 'cannot', "(?i)\\b(d)(?#X)('ye)\\b": "d'ye", '(?i)\\b(gim)(?#X)(me)\\b': 'gimme',
    '(?i)\\b(gon)(?#X)(na)\\b': 'gonna', '(?i)\\b(got)(?#X)(ta)\\b': 'gotta', '(?i)\\b(lem)(?#X)(me)\\b': 'lemme',
    "(?i)\\b(more)(?#X)('n)\\b": "more'n", '(?i)\\b(wan)(?#X)(na)(?=\\s)': 'wanna',
    "(?i) ('t)(?#X)(is)\\b": "'tis", "(?i) ('t)(?#X)(was)\\b": "'twas",
}


class WordTokenizer:
    """`nltk.word_tokenize(text)` (english, preserve_line=False)."""

    def __init__(self):
        from nltk import word_tokenize
        from nltk.tokenize import NLTKWordTokenizer, sent_tokenize

        def step(pattern, repl):
            compiled = getattr(pattern, '_rx', pattern)  # the `regex` pattern inside nltk.redos.TimedPattern
            needles = _needles(compiled.pattern)
            if needles is None:
                return compiled, repl, None, ()
            return (compiled, repl, frozenset(n for n in needles if len(n) == 1),
                    tuple(n for n in needles if len(n) > 1))

        t = NLTKWordTokenizer
        self._sentences = sent_tokenize
        self._front = [step(p, r) for p, r in (*t.STARTING_QUOTES, *t.PUNCTUATION, t.PARENS_BRACKETS, t.DOUBLE_DASHES)]
        self._back = [step(p, r) for p, r in t.ENDING_QUOTES]
        self._contractions = [p for p in (*t.CONTRACTIONS2, *t.CONTRACTIONS3)]
        # One search over all contraction patterns: if none matches anywhere, each of their subs is a no-op.
        flags = {p.flags for p in self._contractions}
        self._any_contraction = (re.compile('|'.join(f'(?:{p.pattern.removeprefix("(?i)")})'
                                                     for p in self._contractions), flags.pop())
                                 if len(flags) == 1 and all(p.pattern.startswith('(?i)') for p in self._contractions)
                                 else None)
        words = [_CONTRACTION_WORDS.get(p.pattern) for p in self._contractions]
        self._contraction_words = None if None in words else tuple(words)
        self._library = word_tokenize
        self.fast = all(self._tokenize(s) == word_tokenize(s) for s in PROBES)

    def __call__(self, text: str) -> list[str]:
        return self._tokenize(text) if self.fast else self._library(text)

    def _tokenize(self, text: str) -> list[str]:
        return [tok for sentence in self._sentences(text) for tok in self._words(sentence)]

    def _words(self, text: str) -> list[str]:
        text = self._apply(self._front, text)
        text = self._apply(self._back, ' ' + text + ' ')
        if self._may_contract(text):
            for pattern in self._contractions:
                text = pattern.sub(r' \1 \2 ', text)
        return text.split()

    def _may_contract(self, text: str) -> bool:
        """False only if no contraction pattern matches `text`. On ASCII text a case-insensitive match of an ASCII
        pattern is, lower-cased, the pattern's letters, so a missing word settles it; else one combined search."""
        if self._contraction_words is not None and text.isascii():
            low = text.lower()
            return any(w in low for w in self._contraction_words)
        return self._any_contraction is None or self._any_contraction.search(text) is not None

    @staticmethod
    def _apply(steps, text: str) -> str:
        chars = set(text)  # kept equal to set(text) as the substitutions go
        for pattern, repl, single, multi in steps:
            if single is None or not chars.isdisjoint(single) or any(n in text for n in multi):
                new = pattern.sub(repl, text)
                if new != text:
                    text, chars = new, set(new)
        return text


# sacrebleu 13a's first rule, `([\{-\~\[-\` -\&\(-\+\:-\@\/])` -> ' \1 ': the class spelled out.
_13A_SPACED = '{|}~[\\]^_` !"#$%&()*+:;<=>?@/'
_13A_RULE1 = '([\\{-\\~\\[-\\` -\\&\\(-\\+\\:-\\@\\/])'
_13A_TABLE = str.maketrans({c: f' {c} ' for c in _13A_SPACED})


class Bleu13a:
    """sacrebleu's Tokenizer13a()(line).split()."""

    def __init__(self):
        from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
        self._library = Tokenizer13a()
        rules = self._library._post_tokenizer._re
        ascii_class = {chr(i) for i in range(128) if rules[0][0].fullmatch(chr(i))}
        self._rest = [(p, r, needle) for (p, r), needle in zip(rules[1:], ('.,', '.,', '-'))]
        self.fast = (len(rules) == 4 and rules[0][0].pattern == _13A_RULE1 and rules[0][1] == r' \1 '
                     and ascii_class == set(_13A_SPACED)
                     and [(p.pattern, r) for p, r, _ in self._rest] == [
                         (r'([^0-9])([\.,])', r'\1 \2 '), (r'([\.,])([^0-9])', r' \1 \2'), (r'([0-9])(-)', r'\1 \2 ')])
        self.fast = self.fast and all(self._tokenize(s) == self._library(s).split() for s in PROBES)

    def __call__(self, line: str) -> list[str]:
        return self._tokenize(line) if self.fast else self._library(line).split()

    def _tokenize(self, line: str) -> list[str]:
        line = line.replace('<skipped>', '').replace('-\n', '').replace('\n', ' ')
        if '&' in line:
            line = line.replace('&quot;', '"').replace('&amp;', '&').replace('&lt;', '<').replace('&gt;', '>')
        line = f' {line} '.translate(_13A_TABLE)
        for pattern, repl, chars in self._rest:
            if any(c in line for c in chars):
                line = pattern.sub(repl, line)
        return line.split()


_ROUGE_TOKEN = re.compile(r'[a-z0-9]+')


def rouge_tokens(text: str) -> list[str]:
    """rouge_score.tokenize.tokenize(text, None): after lower() and replacing runs of non-[a-z0-9] by spaces, the
    tokens are exactly the maximal [a-z0-9] runs."""
    return _ROUGE_TOKEN.findall(text.lower())
