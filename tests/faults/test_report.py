"""docs/reliability.md's table is the suite's: the same cases, each tried by a test, none failed when it was made."""
from __future__ import annotations

import re
from pathlib import Path

from tests.faults.cases import CASES
from tests.faults.report import BEGIN, DOC, END

HERE = Path(__file__).parent


def test_every_case_is_tried_by_a_test():
    marked = set()
    for path in HERE.glob('test_*.py'):
        for args in re.findall(r"@pytest\.mark\.case\(([^)]*)\)", path.read_text()):
            marked |= set(re.findall(r"'([^']+)'", args))
    assert sorted(set(CASES) - marked) == [] and sorted(marked - set(CASES)) == []


def test_the_doc_table_lists_the_suite_cases_and_no_failure():
    block = DOC.read_text().split(BEGIN, 1)[1].split(END, 1)[0]
    ids = re.findall(r'^\| ([A-Z][\w-]*) \| ', block, re.M)
    assert ids == list(CASES)
    assert '**FAILED**' not in block and '**not run**' not in block
