# What the resumable GPU bench scripts (bench/gpu/learned.sh, two_gpu.sh, e2e.sh) share, sourced by each right after
# it sets SCRIPT. Each script keeps its own stages and its own loop over them; the loop is built from these:
#   fail FIELD MESSAGE...      one line `error: $SCRIPT: FIELD: MESSAGE` on stderr, exit 2 (bad arguments)
#   need_int NAME MIN          the variable NAME must hold an integer >= MIN, else fail
#   say MESSAGE...             `[<script> <seconds since T0>s] MESSAGE`
#   left                       seconds of BUDGET left in this invocation
#   stage_skipped NAME         true (and says so) when NAME finished in an earlier invocation and FORCE is unset
#   out_of_time NAME SECONDS   true (and says so) when fewer than SECONDS of BUDGET are left (for the next call)
#   timed_stage NAME CMD...    one run of a stage: its log, its row of stage_times.tsv, its markers; CMD's exit code
#   stage_failed NAME RC       says so, with the end of the stage's log
#   install_kits               carried wheel folders (STACK) stashed in KIT, each installed once it is complete
# The script sets STATE (NAME.done: finished; NAME.started: begun, not finished), LOGS (NAME.log: each run appends its
# output under a `=== invocation` line, so a stage continued over several calls keeps them all; what is printed of a
# log is the run's own part), RESULTS (stage_times.tsv), HIGHLIGHTS (an extended regex: the lines of a run's output
# printed after it), BUDGET where it calls left, and STACK KIT SITE PY for install_kits. T0, the invocation's start
# (Unix seconds, also its name in stage_times.tsv), is set here.
#
# $RESULTS/stage_times.tsv: a header line, then one line per stage run: stage, seconds, exit_code, invocation (its
# T0), start, end (Unix seconds), fresh (1 = the stage started from scratch; 0 = it continued a run an earlier
# invocation began and did not finish). Read by bench/gpu/stage_times.py.
T0=$(date +%s)
STAGE_SECONDS=0; STAGE_FIRST_LINE=1   # the last timed_stage's seconds, the first line of its output in its log

fail() { echo "error: $SCRIPT: $1: ${*:2}" >&2; exit 2; }

need_int() {  # NAME MIN
  local value=${!1}
  [[ $value =~ ^[0-9]+$ ]] && (( 10#$value >= $2 )) || fail "$1" "must be an integer >= $2, got '$value'"
}

say() { local name=${SCRIPT##*/}; echo "[${name%.sh} $(( $(date +%s) - T0 ))s] $*"; }

left() { echo $(( T0 + BUDGET - $(date +%s) )); }

stage_skipped() {  # NAME
  [ -f "$STATE/$1.done" ] && [ -z "${FORCE:-}" ] || return 1
  say "skip $1 (done)"
}

out_of_time() {  # NAME SECONDS
  (( $(left) < $2 )) || return 1
  say "$1 needs ~$2 s, $(left) s of BUDGET=$BUDGET left: stopping here; run again (the next call) to continue"
}

record_time() {  # NAME EXIT_CODE START END FRESH: a line of stage_times.tsv (the header first, in a new file)
  local tsv=$RESULTS/stage_times.tsv
  [ -s "$tsv" ] || printf 'stage\tseconds\texit_code\tinvocation\tstart\tend\tfresh\n' > "$tsv"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" $(( $4 - $3 )) "$2" "$T0" "$3" "$4" "$5" >> "$tsv"
}

timed_stage() {  # NAME COMMAND...
  local name=$1 log=$LOGS/$1.log fresh=1 start end rc; shift
  [ -f "$STATE/$name.started" ] && fresh=0
  rm -f "$STATE/$name.done"   # (FORCE) a failed rerun must not leave the earlier run's marker
  touch "$STATE/$name.started"
  say "$name"
  echo "=== invocation $T0, $(date -u +%FT%TZ)" >> "$log"
  STAGE_FIRST_LINE=$(( $(wc -l < "$log") + 1 ))
  start=$(date +%s)
  "$@" >> "$log" 2>&1
  rc=$?
  end=$(date +%s)
  record_time "$name" "$rc" "$start" "$end" "$fresh"
  STAGE_SECONDS=$(( end - start ))
  tail -n +"$STAGE_FIRST_LINE" "$log" | grep -E "$HIGHLIGHTS" | tail -5 | cut -c1-300
  if [ $rc = 0 ]; then
    touch "$STATE/$name.done"; rm -f "$STATE/$name.started"; say "$name done in ${STAGE_SECONDS}s"
  fi
  return $rc
}

stage_failed() {  # NAME EXIT_CODE (after its timed_stage)
  say "$1 FAILED (exit $2) after ${STAGE_SECONDS}s; the end of $LOGS/$1.log:"
  tail -n +"$STAGE_FIRST_LINE" "$LOGS/$1.log" | tail -30
}

install_kits() {  # STACK folders -> KIT; install every kit folder whose wheels are complete and not installed yet
  # A folder carried in one call need not outlive it (KIT, under /tmp, does while the machine stays warm). A split
  # wheel (NAME.whl.part0 .part1 ... + NAME.whl.sha256) installs once all its pieces are here, from several calls.
  local dir dest todo=() first name sha pieces start
  for dir in $STACK; do
    dest=$KIT/$(basename "$dir"); mkdir -p "$dest"; cp -p "$dir"/* "$dest"/ || return 1
    rm -f "$dest/.installed"; say "stashed $dir in $dest"
  done
  for dir in "$KIT"/*/; do
    dir=${dir%/}
    [ -f "$dir/.installed" ] || ! compgen -G "$dir/*.whl" > /dev/null || todo+=("$dir")
  done
  for first in "$KIT"/*/*.whl.part0; do   # a split wheel: installable once the joined pieces match its sha256
    [ -e "$first" ] || continue
    name=$(basename "$first" .part0)
    [ -f "$KIT/.$name.installed" ] && continue
    pieces=$(ls "$KIT"/*/"$name".part* 2> /dev/null | awk -F'.part' '{print $NF, $0}' | sort -n | cut -d' ' -f2-)
    sha=$(ls "$KIT"/*/"$name".sha256 2> /dev/null | head -1)
    if [ -n "$sha" ] && [ "$(cat $pieces | sha256sum | cut -d' ' -f1)" = "$(cut -d' ' -f1 "$sha")" ]; then
      for dir in $(dirname $pieces | sort -u); do [[ " ${todo[*]} " == *" $dir "* ]] || todo+=("$dir"); done
      touch "$KIT/.$name.pending"
    else
      say "$name: $(echo $pieces | wc -w) piece(s) here, not all of them yet (carry the next piece in the next call)"
    fi
  done
  [ ${#todo[@]} -gt 0 ] || return 0
  say "installing ${todo[*]}"
  start=$(date +%s)
  SITE=$SITE PY=$PY bash bench/gpu/install_stack.sh "${todo[@]}" >> "$LOGS/stack.log" 2>&1 \
    || { tail -20 "$LOGS/stack.log"; return 1; }
  for dir in "${todo[@]}"; do touch "$dir/.installed"; done
  for first in "$KIT"/.*.pending; do [ -e "$first" ] && mv "$first" "${first%.pending}.installed"; done
  record_time stack 0 "$start" "$(date +%s)" 1
}
