"""Stop training with a checkpoint at a wall-clock deadline, so that a job with a time limit ends on a saved step.

`MEDICO_TRAIN_DEADLINE` = Unix time in seconds (e.g. `$(( $(date +%s) + 480 ))`). After each optimizer step that
ends past it, the trainer saves a checkpoint and stops; `RESUME=1 make sft` (training.launch --resume) continues
from that step with the optimizer, scheduler and data order of the uninterrupted run (use it with checkpoints that
keep the optimizer: no `--save_only_model`). Useful wherever the wall clock is rationed: a Slurm allocation, a GPU
lease of minutes (bench/gpu/learned.sh). Unset: no deadline.
"""
from __future__ import annotations

import os
import time

from transformers import TrainerCallback

from common.errors import InputError

ENV = 'MEDICO_TRAIN_DEADLINE'


def deadline_from_env(environ=os.environ) -> float | None:
    raw = environ.get(ENV, '').strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise InputError(f'must be a Unix time in seconds, got {raw!r}', field=ENV) from None


def finished(trainer_state: dict) -> bool:
    """Whether a checkpoint's trainer_state.json is the end of its run (its step reached the run's max_steps)."""
    return int(trainer_state.get('global_step', 0)) >= int(trainer_state.get('max_steps') or 0) > 0


class TimeBudget(TrainerCallback):
    """`--callbacks time_budget`: save and stop at the first step end past $MEDICO_TRAIN_DEADLINE."""
    name = 'time_budget'

    def __init__(self, args=None, trainer=None, deadline: float | None = None, clock=time.time):
        self.deadline = deadline_from_env() if deadline is None else deadline
        self.clock = clock
        self.stopped_at: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.deadline is None:
            print(f'[training] {self.name}: no {ENV}: no deadline', flush=True)
        else:
            print(f'[training] {self.name}: saving and stopping after the first step that ends in '
                  f'{self.deadline - self.clock():.0f} s or later', flush=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.deadline is not None and self.clock() >= self.deadline and state.global_step < state.max_steps:
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
            print(f'[training] {self.name}: deadline reached at step {state.global_step} of {state.max_steps}: '
                  'saving a checkpoint and stopping (resume continues from it)', flush=True)
        return control
