"""Scoring exactly like the Medico leaderboard (BLEU, ROUGE-1/2/L, METEOR), reports and language-prior baselines.

Importing the package points NLTK at the repository's `.nltk_data/` (written by `make setup`) when NLTK_DATA is unset,
so METEOR finds WordNet and punkt_tab without a download.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPO_NLTK_DATA = REPO / '.nltk_data'


def use_repo_nltk_data() -> None:
    """Set NLTK_DATA to <repo>/.nltk_data when unset and present (also if nltk was imported already)."""
    if os.environ.get('NLTK_DATA') or not REPO_NLTK_DATA.is_dir():
        return
    os.environ['NLTK_DATA'] = str(REPO_NLTK_DATA)
    nltk_data = sys.modules.get('nltk.data')  # nltk reads NLTK_DATA once, at import
    if nltk_data is not None and str(REPO_NLTK_DATA) not in nltk_data.path:
        nltk_data.path.insert(0, str(REPO_NLTK_DATA))


use_repo_nltk_data()
