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
import difflib
import functools
import io
import re
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

from common.errors import InputError, cli_main

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / 'recipes'
DEFAULT_RECIPE = 'recipes/qwen2_5_vl/7B_lora.args'   # the Makefile's RECIPE default
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
        raise InputError(f'recipe not found; the recipes are: {", ".join(map(str, recipe_files()))}', file=str(path))
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
            if f.name == 'train_type':
                hint = ' (ms-swift 4.x calls it --tuner_type)'
            else:   # closest names from ms-swift's own flag list
                names = sorted({'--' + o[2:].replace('-', '_') for o in known if o.startswith('--')})  # one spelling
                close = difflib.get_close_matches(f'--{f.name}', names, n=3, cutoff=0.75)
                hint = f' (did you mean {" or ".join(close)}?)' if close else ''
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


# ---------------------------------------------------------------- the recipe list (`make recipes`)
# Values for the ${VARS} a recipe may use, so that every recipe composes without a data folder or a model.
PLACEHOLDERS = {'DATA': '<DATA>', 'RUN': '<RUN>', 'MODEL': '<MODEL>'}


def recipe_files() -> list[Path]:
    """Every recipe file, relative to the repository root (recipes/<model>/<name>.args)."""
    return sorted(p.relative_to(REPO) for p in RECIPES.rglob('*.args'))


def describe(path: str | Path) -> dict[str, str]:
    """What a recipe trains, read from the file itself: model, method, topology, image budget, hardware line."""
    path = Path(path) if Path(path).is_file() or Path(path).is_absolute() else REPO / path
    recipe = load_recipe(path, PLACEHOLDERS)
    lines = path.read_text(encoding='utf-8').splitlines()
    hardware = lines[0].lstrip('#').strip() if lines and lines[0].startswith('#') else ''
    for line in lines[1:]:   # a first line continued on the next ('... smaller cards' / '# lower the batch ...')
        if not re.match(r'#\s+[a-z(]', line):
            break
        hardware += ' ' + line.lstrip('#').strip()
    tuner = recipe.value('tuner_type', 'lora')
    method = f'{tuner} r{recipe.value("lora_rank", "8")}' if tuner == 'lora' else tuner
    if recipe.value('freeze_vit', 'true').lower() == 'false':
        method += ' +ViT'
    deepspeed = recipe.value('deepspeed')
    topology = f'DeepSpeed {deepspeed}' if deepspeed else ('FSDP' if recipe.get('fsdp') else 'DDP')
    batch = recipe.value('per_device_train_batch_size', '1')
    topology += f', global batch {recipe.value("global_batch")} ({batch}/device)' if recipe.get('global_batch') \
        else f', {batch}/device'
    model = recipe.value('model', '')
    shown = path.resolve().relative_to(REPO) if path.resolve().is_relative_to(REPO) else path
    return {'recipe': str(shown), 'model': 'MODEL=... (given)' if model == PLACEHOLDERS['MODEL'] else model,
            'method': method, 'topology': topology, 'MAX_PIXELS': recipe.env().get('MAX_PIXELS', '-'),
            'hardware': hardware}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys
    ap = argparse.ArgumentParser(prog='python -m training.recipe',
                                 description='List the recipes: model, method, topology, image budget, hardware.')
    ap.add_argument('recipes', nargs='*', help='recipe files (default: every file under recipes/)')
    args = ap.parse_args(argv)
    rows = [describe(p) for p in (args.recipes or recipe_files())]
    for row in rows:
        if row['recipe'] == DEFAULT_RECIPE:
            row['recipe'] += ' (default)'
    columns = list(rows[0]) if rows else []
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns[:-1]}
    print('  '.join(c.ljust(widths[c]) if c in widths else c for c in columns))
    for row in rows:
        print('  '.join(row[c].ljust(widths[c]) if c in widths else row[c] for c in columns))
    print(f'\nRun one: make sft RECIPE=<recipe>   (default {DEFAULT_RECIPE}); details: recipes/README.md',
          file=sys.stderr)
    return 0


if __name__ == '__main__':
    raise SystemExit(cli_main(main)())
