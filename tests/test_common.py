"""common/: one-line input errors and atomic writes."""
import pytest

from common.errors import InputError
from common.io import atomic_open, read_jsonl, write_jsonl


@pytest.mark.parametrize('kwargs, line', [
    (dict(file='a.jsonl', row=3, field='answer'), 'a.jsonl:3: answer: empty'),
    (dict(file='a.jsonl'), 'a.jsonl: empty'),
    (dict(field='answer'), 'answer: empty'),
    (dict(), 'empty'),
])
def test_input_error_is_one_line_naming_file_row_field(kwargs, line):
    assert str(InputError('empty', **kwargs)) == line


def test_atomic_open_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / 'out.jsonl'
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write('half')
            raise RuntimeError('boom')
    assert list(tmp_path.iterdir()) == []


def test_jsonl_roundtrip_and_bad_line_named(tmp_path):
    p = tmp_path / 'x.jsonl'
    write_jsonl(p, [{'a': 1}, {'b': 'é'}])
    assert read_jsonl(p) == [{'a': 1}, {'b': 'é'}]
    p.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(InputError, match=r'x.jsonl:2: not valid JSON'):
        read_jsonl(p)


def test_image_budget_prefers_flag_then_model_then_environment(tmp_path, monkeypatch):
    from common.run_env import image_budget, read_run_env, write_run_env
    monkeypatch.setenv('MAX_PIXELS', '111')
    assert image_budget(tmp_path) == 111 and image_budget('Qwen/Qwen2.5-VL-7B-Instruct') == 111
    write_run_env(tmp_path, {'MAX_PIXELS': '640000'})
    assert read_run_env(tmp_path) == {'MAX_PIXELS': '640000'}
    assert image_budget(tmp_path) == 640000
    assert image_budget(tmp_path, 222) == 222
    monkeypatch.delenv('MAX_PIXELS')
    assert image_budget(tmp_path / 'no-such-model') is None


def test_use_image_budget_drops_token_counts_ms_swift_derived_earlier():
    from common.qwen_vision import use_image_budget
    env = {'MAX_PIXELS': '50176', 'IMAGE_MAX_TOKEN_NUM': '64', 'IMAGE_MIN_TOKEN_NUM': '4', 'OTHER': 'x'}
    use_image_budget(12544, env)
    assert env == {'MAX_PIXELS': '12544', 'OTHER': 'x'}
    use_image_budget(None, env)
    assert env == {'MAX_PIXELS': '12544', 'OTHER': 'x'}


def test_a_new_budget_reaches_the_next_processor_in_the_same_process(tiny_model_dir):
    """ms-swift copies the budget into qwen_vl_utils once per process; after use_image_budget the next processor it
    loads must resize with the new one (a fresh process: the copy is per process, whatever ran before in pytest's)."""
    import subprocess
    import sys
    from pathlib import Path
    code = f"""
from PIL import Image
from swift.model import get_processor
from common.qwen_vision import use_image_budget
from qwen_vl_utils import vision_process
sizes = []
for budget in (28 * 28 * 64, 28 * 28 * 16):
    use_image_budget(budget)
    get_processor({str(tiny_model_dir)!r}, model_type='qwen2_5_vl')
    sizes.append(vision_process.fetch_image({{'image': Image.new('RGB', (600, 500))}}).size)
print(sizes)
"""
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, '-c', code], cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == '[(224, 196), (112, 84)]'   # 8 x 7 then 4 x 3 image tokens


def test_require_positive_names_the_first_flag_below_one():
    from argparse import Namespace

    from common.errors import require_positive
    require_positive(Namespace(grid=1, limit=None), ('grid', 'limit'))       # unset values are not checked
    with pytest.raises(InputError, match=r'^--batch-size: must be >= 1, got 0$'):
        require_positive(Namespace(grid=2, batch_size=0, limit=-1), ('grid', 'batch_size', 'limit'))
