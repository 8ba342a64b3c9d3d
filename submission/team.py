"""Team details for a submission (the organizers' SUBMISSION_INFO), read from one JSON file.

Copy submission/team.example.json to submission/team.json and fill it in. Every field is required; only
Notes_to_organizers may be empty (the organizers call it optional). Values still holding an example
placeholder (`<...>`) are refused, so nothing half-filled reaches the leaderboard.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from common.errors import InputError

DEFAULT_TEAM_FILE = Path('submission/team.json')
# The organizers' keys, in their order (medvqa submission templates: "DONT change the keys").
TEAM_FIELDS = ('Participant_Names', 'Affiliations', 'Contact_emails', 'Team_Name', 'Country',
               'Notes_to_organizers')
_OPTIONAL = {'Notes_to_organizers'}
_PLACEHOLDER = re.compile(r'<[^<>]*>')
_EMAIL = re.compile(r'^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$')


def _text(value, path: str, field: str, optional: bool = False) -> str:
    """A string, or a list of strings joined with ', ' (the organizers' templates use one string)."""
    if isinstance(value, list) and field != 'Notes_to_organizers':
        if not all(isinstance(v, str) for v in value):
            raise InputError('expected a string or a list of strings', file=path, field=field)
        value = ', '.join(v.strip() for v in value if v.strip())
    if not isinstance(value, str):
        raise InputError(f'expected a string, got {type(value).__name__}', file=path, field=field)
    value = value.strip()
    if not value and not optional:
        raise InputError('empty value', file=path, field=field)
    if _PLACEHOLDER.search(value):
        raise InputError(f'placeholder left in: {value!r}', file=path, field=field)
    return value


def _emails(value, path: str) -> list[str]:
    field = 'Contact_emails'
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError('expected a list of e-mail addresses', file=path, field=field)
    value = [v.strip() for v in value if v.strip()]
    if not value:
        raise InputError('empty value (the first address is used for correspondence)', file=path, field=field)
    for v in value:
        if _PLACEHOLDER.search(v):
            raise InputError(f'placeholder left in: {v!r}', file=path, field=field)
        if not _EMAIL.match(v):
            raise InputError(f'not an e-mail address: {v!r}', file=path, field=field)
    return value


def load_team(path: str | Path = DEFAULT_TEAM_FILE) -> dict:
    """Read and check the team file; returns SUBMISSION_INFO with the organizers' keys in their order."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        hint = ' (copy submission/team.example.json and fill it in)' if path.name != 'team.example.json' else ''
        raise InputError(f'team file not found{hint}', file=where)
    try:
        raw = json.loads(path.read_text(encoding='utf-8'))
    except json.JSONDecodeError as e:
        raise InputError(f'not valid JSON ({e.msg}, line {e.lineno})', file=where) from None
    except UnicodeDecodeError as e:
        raise InputError(f'not UTF-8 text (byte at offset {e.start})', file=where) from None
    if not isinstance(raw, dict):
        raise InputError('expected one JSON object', file=where)
    unknown = sorted(set(raw) - set(TEAM_FIELDS))
    if unknown:
        raise InputError(f'unknown field (expected {", ".join(TEAM_FIELDS)})', file=where, field=unknown[0])
    info = {}
    for field in TEAM_FIELDS:
        if field not in raw:
            raise InputError('missing field', file=where, field=field)
        if field == 'Contact_emails':
            info[field] = _emails(raw[field], where)
        else:
            info[field] = _text(raw[field], where, field, optional=field in _OPTIONAL)
    return info
