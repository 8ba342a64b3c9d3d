#!/usr/bin/env bash
# Install carried wheels on an offline GPU node whose own Python already holds torch (the GPU set's torch 2.11.0),
# then check the result against the pinned GPU set (scripts/check_stack.py). Run from the repository root:
#   bash bench/gpu/install_stack.sh DIR...      every DIR/*.whl; a split wheel DIR/NAME.whl.part0, .part1, ... (with
#                                               an optional NAME.whl.sha256 beside a piece) is joined first
#   SITE=/tmp/site (default)                    where the wheels go; afterwards: source $SITE/stack_env.sh
# The make targets then run on that Python without a venv: `make infer SETUP=none PY=python3 ...`.
set -euo pipefail
SITE=${SITE:-/tmp/site}
PY=${PY:-python3}
[ $# -gt 0 ] || { echo "usage: install_stack.sh DIR..." >&2; exit 2; }
JOIN=$(mktemp -d)
trap 'rm -rf "$JOIN"' EXIT
wheels=()
for dir in "$@"; do
  for w in "$dir"/*.whl; do [ -e "$w" ] && wheels+=("$w"); done
done
# split wheels: the pieces may come from several DIRs (one per transfer)
for first in $(ls "$@" 2>/dev/null | grep -E '\.whl\.part0$' | sort -u); do
  name=${first%.part0}
  for dir in "$@"; do ls "$dir"/"$name".part* 2>/dev/null; done | awk -F'.part' '{print $NF, $0}' | sort -n \
    | cut -d' ' -f2- | xargs cat > "$JOIN/$name"
  for dir in "$@"; do
    if [ -f "$dir/$name.sha256" ]; then
      sums=$(cd "$dir" && pwd)/$name.sha256   # absolute: DIR may be given relative or absolute
      (cd "$JOIN" && sed "s#  .*#  $name#" "$sums" | sha256sum -c --quiet) \
        || { echo "error: $name: joined pieces do not match $dir/$name.sha256 (a piece missing?)" >&2; exit 1; }
    fi
  done
  wheels+=("$JOIN/$name")
done
[ ${#wheels[@]} -gt 0 ] || { echo "error: no wheels in $*" >&2; exit 2; }
echo "installing ${#wheels[@]} wheels into $SITE"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}"
cat > "$SITE/stack_env.sh" <<EOF
# source this in every shell that uses the carried stack
export PYTHONPATH=$SITE\${PYTHONPATH:+:\$PYTHONPATH}
# no flashinfer in the carried set: vLLM's top-k/top-p sampler imports it on CUDA unless this is 0
export VLLM_USE_FLASHINFER_SAMPLER=0
# no network: no usage-stats thread, no hub lookups
export VLLM_NO_USAGE_STATS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 MODELSCOPE_OFFLINE=1
EOF
# shellcheck disable=SC1091
source "$SITE/stack_env.sh"
"$PY" scripts/check_stack.py --set gpu || true   # the table says what differs from the pins (the image's own builds)
# each family's modelling code, in transformers and vLLM: a module the carried set lacks shows now, not minutes into
# an engine start (a warning only: a family nobody runs here should not stop the others)
"$PY" scripts/check_stack.py --set gpu --imports \
  || echo "warning: some imports fail (the table above): the stages that load them will fail too" >&2
