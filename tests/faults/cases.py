"""The reliability cases the suite tries: the 145 of the audit of main 88f43d9 (ids P/I/E/T/V/U/X as there; the
issue's cause number where the audit saw it fail) and the crash, concurrency, full-disk and token cases beyond it (B*).

id -> (stage, case, cause). docs/reliability.md's table is generated from this and the suite's outcomes.
"""
from __future__ import annotations

STAGES = {
    'prepare': '`make prepare`', 'infer': '`make infer`', 'score': '`make score`',
    'export': '`make sft` / `make export`', 'validate': 'task-2 validator',
    'submit': '`make submit-task1` / `submit-task2`',
    'security': 'security',
}

_P = {
    'P1': ('truncated JPEG', None), 'P2': ('corrupt JPEG (bytes overwritten)', None), 'P3': ('JPEG magic + junk', None),
    'P4': ('image missing for an img_id', None), 'P5': ('same with --lenient: skipped and counted', None),
    'P6': ('parquet missing column `answer`', None),
    'P7': ("complexity as strings '1'..'3' in the train parquet (test int64)", None),
    'P8': ('same, one split only', None), 'P9': ('complexity strings in the test parquet (train correct)', 1),
    'P10': ("complexity 'high' in one train row", 2), 'P11': ('complexity 1.5 in one train row', 2),
    'P12': ('question_class as one comma-joined string', 2), 'P13': ("empty answer ''", None),
    'P14': ("answer '   ' / answer null", None), 'P15': ('empty question', None),
    'P16': ('duplicated (img_id, question), --duplicates keep', None), 'P17': ('same with --duplicates error', None),
    'P18': ('invalid UTF-8 bytes in a string column (strict and --lenient)', 3),
    'P19': ('NUL, U+2028, RTL override, \\r\\n in question/answer', None),
    'P20': ('huge text: 10 MB question, 500k-word answer', None),
    'P21': ('DATASET that does not exist (absolute, relative, org/name offline)', None), 'P22': ('CMYK JPEG', None),
    'P23': ('greyscale JPEG', None), 'P24': ('1x1 px image', None),
    'P25': ('20000x20000 px declared (decompression bomb)', None),
    'P26': ("10000x10000 px (below PIL's hard limit)", None), 'P27': ('PNG bytes named .jpg; RGBA PNG', None),
    'P28': ('SIGKILL at 5 points (originals, variants, swift JSONL, stats, manifest), rerun: byte-identical, '
            'no temp debris', 4),
    'P29': ('two runs at once, same options, same OUT', None), 'P30': ('two at once, --seed 7 vs 42', None),
    'P31': ('two at once, --val-fraction 0.05 vs 0.3', None),
    'P32': ("second run's writes between two of the first run's JSONL writes", 5),
    'P33': ('rerun after a source image changed', 6),
}
_I = {
    'I1': ('SIGKILL after the first chunk, rerun', None), 'I2': ('SIGKILL of the resumed run later on, rerun', None),
    'I3': ('SIGKILL with --workers 2 (rows in .partial.0 and .partial.1), rerun', None),
    'I4': ('rerun with another --max-new-tokens over a partial', None),
    'I5': ('partial whose last line is cut inside a multi-byte UTF-8 character', 10),
    'I6': ('malformed JSONL line', None),
    'I7': ('non-JSON line', None), 'I8': ('image path that no longer exists', None),
    'I9': ('image that exists but is truncated', 11), 'I10': ('empty input file (+ empty sidecar)', None),
    'I11': ('sidecar missing', None), 'I12': ('sidecar one line short', None),
    'I13': ('model folder that does not exist', None),
    'I14': ('model folder without weights (configs only)', 12), 'I15': ('mistyped hub id nosuchuser/nosuchmodel', 12),
    'I16': ('SPLIT that does not exist', None), 'I17': ('CMYK / greyscale / 1x1 images (rows of P22-P24)', None),
}
_E = {
    'E1': ('row without prediction', None), 'E2': ('prediction: null', None),
    'E3': ('prediction: 42; reference: null', None), 'E4': ('empty file', None), 'E5': ('blank lines only', None),
    'E6': ('non-JSON line', None), 'E7': ('a JSON array line', None), 'E8': ('file not UTF-8 (\\xff first byte)', 13),
    'E9': ('mismatched length (a subset of the rows)', None),
    'E10': ('--compare with files of different lengths', None),
    'E11': ('duplicated index', None), 'E12': ('empty-string prediction', None),
    'E13': ('unicode/emoji/zero-width/accents = the reference libraries', None),
    'E14': ('one prediction of ~200k words', None), 'E15': ('one prediction of 1M distinct words (11 MB)', None),
    'E16': ('no NLTK data (checkout without .nltk_data)', 14),
}
_T = {
    'T1': ('unknown recipe', None), 'T2': ('misspelled flag in a recipe', None),
    'T3': ('bad value --max_steps four', None),
    'T4': ('misspelled flag via SFT_ARGS', None), 'T5': ('NPROC_PER_NODE=4, CUDA_VISIBLE_DEVICES empty', None),
    'T6': ('same, CUDA_VISIBLE_DEVICES unset', None), 'T7': ('data folder that does not exist', None),
    'T8': ('RESUME=1 with no checkpoint', None),
    'T9': ('RESUME=1 after a SIGKILL during a checkpoint save: the last complete checkpoint', None),
    'T10': ('make export HUB_MODEL_ID= with HF_TOKEN set, hub unreachable', 15),
}
_V = {
    'V1': ('duplicated val_id', None), 'V2': ('a duplicated line', None), 'V3': ('a missing val_id', None),
    'V4': ('val_id "2"', None), 'V5': ('val_id 2.0', None), 'V6': ('val_id 1500', None), 'V7': ('confidence NaN', None),
    'V8': ('confidence Infinity', None), 'V9': ('confidence 1.5', None), 'V10': ('confidence -0.01', None),
    'V11': ('confidence "0.9"', None), 'V12': ('confidence true', None), 'V13': ('confidence missing', None),
    'V14': ('visual data ../../etc/passwd', None), 'V15': ('../ to a real PNG of the right size outside', None),
    'V16': ('absolute /etc/passwd', None), 'V17': ("absolute path to the folder's own PNG", None),
    'V18': ('backslash path', None), 'V19': ('heatmap a symlink to a PNG outside', None),
    'V20': ('visuals/ a symlink to a folder outside', None),
    'V21': ('symlink to a PNG inside the folder (accepted)', None),
    'V22': ('heatmap of the wrong size', None), 'V23': ('truncated PNG', None),
    'V24': ('PNG magic + random bytes', None),
    'V25': ('PNG with valid chunks and CRCs but undecodable pixels', 16), 'V26': ('JPEG bytes named .png', None),
    'V27': ('heatmap file missing', None), 'V28': ('heatmap path is a folder', None),
    'V29': ('box outside the image', None), 'V30': ('box with negative x', None), 'V31': ('inverted box', None),
    'V32': ('box of 3 numbers', None), 'V33': ('box with NaN', None), 'V34': ('empty box list', None),
    'V35': ('box of strings', None), 'V36': ('unknown visual type', None), 'V37': ('empty visual description', None),
    'V38': ('visual_explanation not a list', None), 'V39': ('answer differs from the task-1 prediction', None),
    'V40': ('same without --task1-predictions (nothing to compare)', None), 'V41': ('answer null', None),
    'V42': ('empty explanation', None), 'V43': ('whitespace-only explanation', None), 'V44': ('img_id differs', None),
    'V45': ('question differs by a trailing space', None), 'V46': ('submission_task2.py with extra code', None),
    'V47': ('submission_task2.py missing', None), 'V48': ('a non-UTF-8 byte in submission_task2.jsonl', 13),
    'V49': ('malformed JSON line', None), 'V50': ('empty submission_task2.jsonl', None),
}
_U = {
    'U1': ('team file without Country', None), 'U2': ('empty Team_Name', None), 'U3': ('bad e-mail', None),
    'U4': ('placeholder left', None), 'U5': ('unknown field', None),
    'U6': ('team file not JSON / a list / missing / not UTF-8', None),
    'U7': ('HUB_REPO user/name/extra, user/, ../../etc', None), 'U8': ('HUB_REPO with a space or a leading dash', None),
    'U9': ('HUB_REPO the hub rejects (user/a--b, user/name.git, user/.., user/-name)', 17),
    'U10': ('no DRY_RUN, no token: refused before any work', 18),
    'U11': ('no DRY_RUN, a token, hub unreachable: refused before any work', 18),
    'U12': ('make submit-task2 TASK1_PRED=<mistyped path>', 19),
    'U13': ("medvqa's task script rejects the upload (1499 lines): reported, exit non-zero", 20),
    'U14': ('a Subtask 2 upload of fewer than the 1500 val rows is refused by our validator', 20),
}
_X = {
    'X1': ('image column pointing outside the dataset folder', 7),
    'X2': ('img_id ../../../x or an absolute path', 8),
    'X3': ('visual data escaping the task-2 folder (V14-V21)', None),
    'X4': ('no code runs data: no shell=True, os.system, eval, exec, pickle, torch.load, yaml.load, marshal', None),
    'X5': ('team-file strings in the generated script stay strings', None),
    'X6': ('the hub token never in output, logs, files or exceptions', None),
    'X7': ('file modes of outputs follow the umask (0022 -> 0644)', 9),
}
_B = {
    'B-prepare-disk': ('prepare', 'full disk: one-line error, previous output intact, no debris'),
    'B-infer-kill': ('infer', 'SIGKILL after a chunk and before the final rename, rerun: byte-identical, nothing left'),
    'B-infer-conc': ('infer', 'a second run on the same PRED while one runs: refused'),
    'B-infer-disk': ('infer', 'full disk: one-line error, previous PRED intact'),
    'B-score-kill': ('score', 'SIGKILL while the report is written, rerun: byte-identical report, no debris'),
    'B-score-conc': ('score', 'a second report into the same folder while one runs: refused'),
    'B-score-disk': ('score', 'full disk: one-line error, previous report intact'),
    'B-export-kill': ('export', 'SIGKILL during the merge and before the rename, rerun: byte-identical model'),
    'B-export-conc': ('export', 'a second export into the same folder while one runs: refused'),
    'B-export-disk': ('export', 'full disk: one-line error before the merge, previous model intact'),
    'B-task1-kill': ('submit', 'submit-task1: SIGKILL at 3 points of the build, rerun: byte-identical, no debris'),
    'B-task1-conc': ('submit', 'submit-task1: a second build of the same name while one runs: refused'),
    'B-task1-disk': ('submit', 'submit-task1: full disk: one-line error, previous build intact'),
    'B-task2-kill': ('submit', 'submit-task2: SIGKILL with a row cached and before the swap, rerun: '
                                'byte-identical, no debris'),
    'B-task2-conc': ('submit', 'submit-task2: a second build of the same name while one runs: refused'),
    'B-task2-disk': ('submit', 'submit-task2: full disk: one-line error, previous build intact'),
    'B-token': ('security', 'the token never in output or files of export, both submissions, hub and medvqa errors'),
}

CASES: dict[str, tuple[str, str, int | None]] = {}
for _stage, _table in (('prepare', _P), ('infer', _I), ('score', _E), ('export', _T), ('validate', _V),
                       ('submit', _U), ('security', _X)):
    for _id, (_text, _cause) in _table.items():
        CASES[_id] = (_stage, _text, _cause)
for _id, (_stage, _text) in _B.items():
    CASES[_id] = (_stage, _text, None)
AUDIT = [c for c in CASES if not c.startswith(('B-', 'U13', 'U14'))]
assert len(AUDIT) == 145, len(AUDIT)
