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
