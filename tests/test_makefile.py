"""The Makefile is the map of the whole run: every target documented, the GPU path wired to the right modules."""
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make(*args: str) -> str:
    out = subprocess.run(['make', '--no-print-directory', *args], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    return ' '.join(out.replace('\\\n', ' ').split(' ')) if args[0] == '-n' else out


def test_help_lists_every_phony_target_with_one_line():
    text = (REPO / 'Makefile').read_text()
    phony = set(re.search(r'^\.PHONY:(.*?)(?<!\\)\n', text, re.S | re.M).group(1).replace('\\', ' ').split())
    listed = {line.split()[0] for line in make('help').splitlines() if line.strip()}
    assert phony == listed, f'undocumented: {phony - listed}, not phony: {listed - phony}'


def test_gpu_path_defaults_use_the_hub_dataset_and_the_7b_recipe():
    dry = make('-n', '-o', '.venv/.medico-setup', 'prepare', 'sft', 'export', 'infer', 'score')
    assert '--dataset SimulaMet/Kvasir-VQA-x1' in dry
    assert 'training.launch --recipe recipes/qwen2_5_vl/7B_lora.args --data data/prepared --run runs/7B_lora' in dry
    assert 'inference.predict --model runs/7B_lora/merged --data data/prepared/swift/task1_public-original.jsonl' in dry
    assert 'eval.score preds/7B_lora/task1_public-original.jsonl' in dry


def test_variables_switch_to_local_copies():
    dry = make('-n', '-o', '.venv/.medico-setup', 'prepare', 'DATASET=/data/copy', 'IMAGES=/data/img', 'DATA=/tmp/p',
               'AUG_K=1')
    assert '--dataset /data/copy --images /data/img --out /tmp/p --aug-k 1' in ' '.join(dry.split())
    assert 'data_prep.prepare' in dry


def test_arch_picks_the_tiny_model_and_the_box_format():
    dry = make('-n', '-o', '.venv/.medico-setup', 'tiny-model', 'grounding-data', 'KVASIR_SEG=/data/seg')
    assert 'training.tiny_model --out models/tiny-qwen2.5-vl --arch qwen2_5_vl' in dry   # the default is unchanged
    assert '--family qwen2_5_vl' in dry
    dry = make('-n', '-o', '.venv/.medico-setup', 'tiny-model', 'grounding-data', 'ARCH=qwen3_vl',
               'KVASIR_SEG=/data/seg')
    assert 'training.tiny_model --out models/tiny-qwen3-vl --arch qwen3_vl' in dry
    assert '--kvasir-seg /data/seg --family qwen3_vl --out data/prepared/swift/grounding.jsonl' in ' '.join(dry.split())


def test_synthetic_copy_sizes_grounding_rows_and_baseline_folder():
    """bench/gpu/learned.sh's make calls: a bigger synthetic copy, grounding rows from its own geometry (only the
    images DATA trains on), and the baselines written where it says."""
    dry = ' '.join(make('-n', '-o', '.venv/.medico-setup', 'synthetic', 'grounding-data', 'baseline', 'OUT=/w/syn',
                        'IMAGES_N=5000', 'SYNTHETIC_ARGS=--qa-per-image 8 --workers 16', 'SYNTHETIC=/w/syn',
                        'DATA=/w/prep', 'BASELINE_OUT=/w/preds/baseline').split())
    assert 'data_prep.synthetic --out /w/syn --images 5000 --seed 0 --qa-per-image 8 --workers 16' in dry
    assert ('data_prep.grounding_data --synthetic /w/syn --images-of /w/prep/swift/train-original.meta.jsonl '
            '--family qwen2_5_vl --out /w/prep/swift/grounding.jsonl') in dry
    assert '--eval /w/prep/swift/task1_public-original.meta.jsonl --out /w/preds/baseline' in dry
    default = ' '.join(make('-n', '-o', '.venv/.medico-setup', 'baseline', 'grounding-data').split())
    assert '--out preds/baseline' in default and '--synthetic' not in default


def test_submit_task2_uses_the_task1_predictions_it_was_given(tmp_path):
    """A TASK1_PRED or CALIBRATION given on the command line is passed as it is (a missing one is then a one-line
    error of submission.task2, never silently dropped); left at their defaults and missing, both are made with
    `make infer ... INFER_ARGS=--logprobs` first."""
    given = make('-n', '-o', '.venv/.medico-setup', 'submit-task2', f'TASK1_PRED={tmp_path}/typo.jsonl',
                 f'CALIBRATION={tmp_path}/val.jsonl')
    assert f'--task1-predictions {tmp_path}/typo.jsonl' in given and f'--calibration-data {tmp_path}/val.jsonl' in given
    assert 'make infer' not in given and 'infer SPLIT=' not in given
    defaults = ' '.join(make('-n', '-o', '.venv/.medico-setup', 'submit-task2', f'RUN={tmp_path}/run').split())
    assert 'test -e preds/run/task2_val-original.jsonl ||' in defaults
    assert 'infer SPLIT=task2_val-original PRED=preds/run/task2_val-original.jsonl INFER_ARGS=" --logprobs"' in defaults
    assert 'infer SPLIT=val-original PRED=preds/run/val-original.jsonl INFER_ARGS=" --logprobs"' in defaults
    assert '--calibration-data preds/run/val-original.jsonl --calibration-rows 2000' in defaults
    assert '--calibration-data' not in make('-n', '-o', '.venv/.medico-setup', 'submit-task2', 'CALIBRATION=')
    # really run: a given path that does not exist stops the target with submission.task2's one-line error
    proc = subprocess.run(['make', '--no-print-directory', '-o', '.venv/.medico-setup', 'submit-task2', 'DRY_RUN=1',
                           f'TASK1_PRED={tmp_path}/typo.jsonl', 'CALIBRATION=', f'MODEL={tmp_path}',
                           'TEAM=submission/team.demo.json'], cwd=REPO, capture_output=True, text=True)
    err = [l for l in proc.stderr.splitlines() if l.startswith('error: ')]
    assert proc.returncode != 0 and err and err[0].startswith(f'error: {tmp_path}/typo.jsonl: --task1-predictions: '
                                                              'file not found'), proc.stderr


def test_serve_ask_and_adapter_variables():
    dry = make('-n', '-o', '.venv/.medico-setup', 'serve', 'ask', 'IMAGE=frame.jpg', 'Q=Is there a polyp?')
    assert 'inference.serve --model runs/7B_lora/merged --host 127.0.0.1 --port 8000 --backend auto' in dry
    assert 'inference.ask --image "frame.jpg" --question "Is there a polyp?" --model runs/7B_lora/merged' in dry
    dry = make('-n', '-o', '.venv/.medico-setup', 'ask', 'IMAGE=f.jpg', 'Q=q', 'URL=http://127.0.0.1:9/v1')
    assert '--url http://127.0.0.1:9/v1' in dry and '--model' not in dry
    # EXPLAIN=1: explain.ask, calibrated with CALIBRATION when that file exists or is given (else uncalibrated)
    dry = make('-n', '-o', '.venv/.medico-setup', 'ask', 'EXPLAIN=1', 'IMAGE=f.jpg', 'Q=q')
    assert 'explain.ask --image "f.jpg" --question "q"' in dry and '--calibration-data' not in dry
    dry = make('-n', '-o', '.venv/.medico-setup', 'ask', 'EXPLAIN=1', 'IMAGE=f.jpg', 'Q=q', 'CALIBRATION=/x/val.jsonl')
    assert '--max-new-tokens 64 --calibration-data /x/val.jsonl --calibration-rows 2000' in dry
    dry = make('-n', '-o', '.venv/.medico-setup', 'infer', 'MODEL=Qwen/Qwen2.5-VL-7B-Instruct',
               'ADAPTERS=SimulaMet/Qwen2.5-VL-KvasirVQA-x1-ft')
    assert '--model Qwen/Qwen2.5-VL-7B-Instruct' in dry and '--adapters SimulaMet/Qwen2.5-VL-KvasirVQA-x1-ft' in dry
    assert 'training.curves --run runs/7B_lora' in make('-n', '-o', '.venv/.medico-setup', 'curves')
