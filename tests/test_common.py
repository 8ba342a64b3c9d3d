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
