"""Recipes: small argument files for `swift sft` that include shared fragments and override flags.

Syntax (one item per line; a word starting with `#` starts a comment):
    @swift_args/tuner/lora_llm.args       include a fragment (relative to the including file, else to the repo root)
    --flag value [value ...]              one ms-swift flag; shell quoting; ${VAR} is replaced from the variables
    --global_batch 64                     launcher pseudo-flag: gradient_accumulation_steps is derived from it
    --env MAX_PIXELS=1003520              launcher pseudo-flag: environment default for the run (kept if already set)
Later flags override earlier ones (an include counts where it stands), so a recipe names its fragments first
and its own choices after them; the launcher appends the command line's flags last.
"""
from __future__ import annotations

import contextlib
import functools
import io
import re
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

from common.errors import InputError

REPO = Path(__file__).resolve().parents[1]
PSEUDO_FLAGS = {'global_batch', 'env'}   # consumed by training.launch, never passed to ms-swift
_VAR = re.compile(r'\$\{([A-Za-z_][A-Za-z0-9_]*)\}')
_MAX_DEPTH = 16


@dataclass(frozen=True)
class Flag:
    """One `--name values...` item and where it was written (for error messages)."""
    name: str
    values: tuple[str, ...] = ()
    file: str = '<command line>'
    line: int | None = None

    @property
    def key(self) -> str:
        """What a later flag must match to override this one (`--env` overrides per variable name)."""
        return f'env:{self.values[0].split("=", 1)[0]}' if self.name == 'env' and self.values else self.name

    def argv(self) -> list[str]:
        return [f'--{self.name}', *self.values]


@dataclass
class Recipe:
    path: Path
    flags: list[Flag] = field(default_factory=list)

    def get(self, name: str) -> Flag | None:
        return next((f for f in self.flags if f.name == name), None)

    def value(self, name: str, default: str | None = None) -> str | None:
        flag = self.get(name)
        return flag.values[0] if flag and flag.values else default

    def env(self) -> dict[str, str]:
        return dict(f.values[0].split('=', 1) for f in self.flags if f.name == 'env')

    def swift_argv(self) -> list[str]:
        return [tok for f in self.flags if f.name not in PSEUDO_FLAGS for tok in f.argv()]


def _substitute(text: str, variables: Mapping[str, str], file: str, line: int) -> str:
    def one(m: re.Match) -> str:
        name = m.group(1)
        if name not in variables or variables[name] in (None, ''):
            raise InputError(f'${{{name}}} is not set (give it on the command line or in the environment)',
                             file=file, row=line, field=name)
        return str(variables[name])
    return _VAR.sub(one, text)


def _resolve_include(target: str, including: Path, line: int) -> Path:
    for base in (including.parent, REPO):
        candidate = (base / target).resolve()
        if candidate.is_file():
            return candidate
    raise InputError(f'included fragment {target} not found', file=str(including), row=line)


def _strip_comment(line: str) -> str:
    """Cut at a `#` that starts a word outside quotes: `file.jsonl#500` (ms-swift sampling) and quotes survive,
    and apostrophes in comments do not upset the shell-style split."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in '"\'':
            quote = ch
        elif ch == '#' and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def parse_lines(text: str, variables: Mapping[str, str], file: str = '<command line>') -> list[tuple[int, list[str]]]:
    """Split argument-file text into (line number, tokens) items; `@include` items are returned as ['@path']."""
    items = []
    for number, raw in enumerate(text.splitlines(), 1):
        try:
            tokens = shlex.split(_strip_comment(raw))
        except ValueError as e:
            raise InputError(f'cannot split the line ({e})', file=file, row=number) from None
        if not tokens:
            continue
        tokens = [_substitute(t, variables, file, number) for t in tokens]
        if tokens[0].startswith('@'):
            if len(tokens) != 1:
                raise InputError('an @include line holds only the fragment path', file=file, row=number)
        elif not tokens[0].startswith('--') or any(t.startswith('--') for t in tokens[1:]):
            raise InputError(f'expected one `--flag value...` per line, got {raw.strip()!r}', file=file, row=number)
        items.append((number, tokens))
    return items


def _collect(path: Path, variables: Mapping[str, str], stack: tuple[Path, ...]) -> list[Flag]:
    if len(stack) > _MAX_DEPTH or path in stack:
        raise InputError('include cycle: ' + ' -> '.join(map(str, (*stack, path))), file=str(stack[-1]))
    flags = []
    for number, tokens in parse_lines(path.read_text(encoding='utf-8'), variables, str(path)):
        if tokens[0].startswith('@'):
            flags += _collect(_resolve_include(tokens[0][1:], path, number), variables, (*stack, path))
        else:
            flags.append(Flag(tokens[0][2:], tuple(tokens[1:]), str(path), number))
    return flags


def merge(flags: list[Flag]) -> list[Flag]:
    """Later flags win; a flag keeps the place where it first appeared (the command reads in recipe order)."""
    merged: dict[str, Flag] = {}
    for f in flags:
        merged[f.key] = f
    return list(merged.values())


def load_recipe(path: str | Path, variables: Mapping[str, str], extra: list[Flag] = ()) -> Recipe:
    """Expand a recipe's includes and ${VARS}, apply `extra` flags last; returns the merged, ordered flags."""
    path = Path(path)
    if not path.is_file():
        raise InputError('recipe not found', file=str(path))
    return Recipe(path, merge(_collect(path.resolve(), variables, ()) + list(extra)))


def flags_from_argv(argv: list[str], file: str = '<command line>') -> list[Flag]:
    """`--a 1 --b x y` -> [Flag(a, (1,)), Flag(b, (x, y))] (extra flags given after `--` on the command line)."""
    flags: list[Flag] = []
    for tok in argv:
        if tok.startswith('--'):
            flags.append(Flag(tok[2:], (), file))
        elif not flags:
            raise InputError(f'expected a --flag, got {tok!r}', file=file)
        else:
            flags[-1] = replace(flags[-1], values=flags[-1].values + (tok,))
    return flags


# ---------------------------------------------------------------- validation against ms-swift's own parser
_COMMANDS = {'sft': 'SftArguments', 'export': 'ExportArguments', 'infer': 'InferArguments',
             'deploy': 'DeployArguments'}


@functools.lru_cache(maxsize=None)
def swift_parser(command: str = 'sft'):
    """transformers.HfArgumentParser over ms-swift's argument dataclass (nothing is loaded or run)."""
    if command not in _COMMANDS:
        raise InputError(f'unknown swift command {command!r} (known: {", ".join(_COMMANDS)})')
    import swift.arguments
    from swift.utils.utils import _patch_get_type_hints  # swift's own fix for str|dict fields
    from transformers import HfArgumentParser

    with _patch_get_type_hints():
        return HfArgumentParser([getattr(swift.arguments, _COMMANDS[command])])


def check_flags(flags: list[Flag], command: str = 'sft') -> None:
    """Every flag must be one ms-swift `command` knows, with a value its parser accepts; else InputError(file, line)."""
    parser = swift_parser(command)
    known = parser._option_string_actions
    for f in flags:
        if f.name in PSEUDO_FLAGS:
            if f.name == 'global_batch' and (len(f.values) != 1 or not f.values[0].isdigit() or int(f.values[0]) < 1):
                raise InputError('--global_batch takes one positive integer', file=f.file, row=f.line)
            if f.name == 'env' and (len(f.values) != 1 or '=' not in f.values[0]):
                raise InputError('--env takes one NAME=VALUE', file=f.file, row=f.line)
            continue
        if f'--{f.name}' not in known:   # exact names only: argparse would accept unambiguous prefixes
            hint = ' (ms-swift 4.x calls it --tuner_type)' if f.name == 'train_type' else ''
            raise InputError(f'--{f.name} is not a `swift {command}` argument{hint}', file=f.file, row=f.line)
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                _, rest = parser.parse_known_args(f.argv())
        except SystemExit:
            msg = err.getvalue().strip().splitlines()[-1:] or ['rejected by the parser']
            raise InputError(f'swift {command}: {msg[0].split("error: ", 1)[-1]}', file=f.file, row=f.line) from None
        if rest:
            raise InputError(f'swift {command} does not take {" ".join(rest)!r} here', file=f.file, row=f.line)
