"""WordNet lemma names for METEOR's synonym stage, without building NLTK's whole WordNet reader (seconds per process).

METEOR needs, for a word, the lemma names of `wordnet.synsets(word)`. NLTK's `synsets` and `_morphy` are run here
unchanged (borrowed from WordNetCorpusReader); only what they read is lazier: the index files are split into lines
once and each line is parsed when a form is looked up, and a synset's lemma names are read from its data-file line
when asked for. NLTK's reader also parses every index line up front, scans data.adj for satellites and loads the
sense-key map; none of that changes which lemma names `synsets(word)` yields.
"""
from __future__ import annotations

import atexit
import re
from pathlib import Path

from nltk.corpus.reader.wordnet import WordNetCorpusReader

FILES = {'n': 'noun', 'v': 'verb', 'a': 'adj', 'r': 'adv'}  # WordNetCorpusReader._FILEMAP, by part of speech
_SYNTACTIC_MARKER = re.compile(r'(.*?)(\([^()]*\))?$')  # NLTK strips "(a)", "(p)", "(ip)" from adjective lemmas


class _LemmaIndex:
    """Stands in for NLTK's `_lemma_pos_offset_map` (lemma -> {pos: [offsets]}) for the lookups `_morphy` and
    `synsets` make: `form in index` and `index[form]`."""

    def __init__(self, root: Path):
        self._lines: dict[str, dict[str, str]] = {}
        for suffix in FILES.values():
            lines: dict[str, str] = {}
            with open(root / f'index.{suffix}', encoding='utf-8') as f:
                for line in f:
                    if not line.startswith(' '):  # license header
                        lemma, _, rest = line.partition(' ')
                        lines[lemma] = rest  # a later line for the same lemma replaces it, as in NLTK
            self._lines[suffix] = lines
        self._parsed: dict[str, dict[str, list[int]]] = {}

    def __contains__(self, form: str) -> bool:
        return any(form in lines for lines in self._lines.values())

    def __getitem__(self, form: str) -> dict[str, list[int]]:
        got = self._parsed.get(form)
        if got is None:
            got = self._parsed[form] = {}
            for lines in self._lines.values():
                rest = lines.get(form)
                if rest is not None:  # pos n_synsets n_pointers pointers... n_senses n_tagged offsets...
                    fields = rest.split()
                    n_synsets, n_pointers = int(fields[1]), int(fields[2])
                    start = 3 + n_pointers + 2
                    got[fields[0]] = [int(x) for x in fields[start:start + n_synsets]]
        return got


class LiteWordNet:
    """`lemma_names(word)`: the set of `lemma.name()` over `nltk.corpus.wordnet.synsets(word)`."""

    MORPHOLOGICAL_SUBSTITUTIONS = WordNetCorpusReader.MORPHOLOGICAL_SUBSTITUTIONS
    _morphy = WordNetCorpusReader._morphy
    synsets = WordNetCorpusReader.synsets  # here it returns each synset's lemma names (a tuple) instead of a Synset

    def __init__(self, root: str | Path):
        root = Path(root)
        self._root = root
        self._lemma_pos_offset_map = _LemmaIndex(root)
        self._exception_map: dict[str, dict[str, list[str]]] = {}
        for pos, suffix in FILES.items():
            exceptions = self._exception_map[pos] = {}
            with open(root / f'{suffix}.exc', encoding='utf-8') as f:
                for line in f:
                    terms = line.split()
                    exceptions[terms[0]] = terms[1:]
        self._exception_map['s'] = self._exception_map['a']
        self._data = {pos: open(root / f'data.{suffix}', 'rb') for pos, suffix in FILES.items()}
        self._data['s'] = self._data['a']
        atexit.register(self.close)   # the scorer keeps one reader per process; close its files at exit
        self._synset_names: dict[tuple[str, int], tuple[str, ...]] = {}

    def synset_from_pos_and_offset(self, pos: str, offset: int) -> tuple[str, ...]:
        key = (pos, offset)
        got = self._synset_names.get(key)
        if got is None:
            f = self._data[pos]
            f.seek(offset)
            line = f.readline().decode('utf-8')
            if line[:8] != f'{offset:08d}':
                raise ValueError(f'{self._root}/data.{FILES.get(pos, "adj")}: no synset at offset {offset}')
            fields = line.split('|', 1)[0].split()
            n_lemmas = int(fields[3], 16)
            got = self._synset_names[key] = tuple(_SYNTACTIC_MARKER.match(name).group(1)
                                                  for name in fields[4:4 + 2 * n_lemmas:2])
        return got

    def lemma_names(self, word: str) -> set[str]:
        return {name for names in self.synsets(word) for name in names}

    def close(self) -> None:
        for f in set(self._data.values()):
            f.close()

