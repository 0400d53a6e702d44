"""The learning-rate schedule: linear warm-up, then cosine decay to 1% of the peak rate,
re-planned smoothly when the run's length changes.

A run that is extended (``--resume --epochs N``), shortened, or fitted to a time budget keeps
its current rate and decays from there to the floor over the new length, so the rate never
jumps: the cosine goes on from where it is (its phase), stretched or compressed over the steps
left, so re-planning as often as every step (a time budget cutting a run short) still ends at
the floor on the run's last step, and re-planning to the same end changes nothing. `WarmupCosine.restart` is the explicit alternative (``--warm-restart``): warm up to the
peak again, then decay over the new length. The schedule's numbers live in its ``__dict__``,
which `torch.optim.lr_scheduler.LambdaLR` saves in ``last.pt``.
"""

from __future__ import annotations

import math

#: The rate a schedule ends at, as a share of the peak.
FLOOR = 0.01
#: The warm-up's largest share of a run's planned steps, so that a short run (a time budget
#: of one or two epochs) trains mostly at and down from its peak rate, not warming up.
WARMUP_SHARE = 0.1


def warmup_steps(total: int, per_epoch: int, warmup_epochs: float) -> int:
    """The warm-up of a run of `total` steps: `warmup_epochs` epochs of `per_epoch` steps, at
    most `WARMUP_SHARE` of the run, at least one step."""
    return max(1, min(round(warmup_epochs * per_epoch), math.ceil(WARMUP_SHARE * total)))


class WarmupCosine:
    """Learning-rate factor per step (the optimiser's peak rate times this).

    Args:
        total: the step at which the decay reaches `FLOOR`.
        warmup: warm-up steps, from 1/warmup up to 1.
    """

    def __init__(self, total: int, warmup: int) -> None:
        self.warm_from = 0  #: the step the warm-up starts at
        self.warm_to = warmup  #: the step the warm-up reaches the peak
        self.start = warmup  #: the step the decay starts at ...
        self.start_factor = 1.0  #: ... from this factor
        self.total = total

    def __call__(self, step: int) -> float:
        if step < self.warm_to:
            return (step - self.warm_from + 1) / (self.warm_to - self.warm_from)
        progress = min(max((step - self.start) / max(self.total - self.start, 1), 0.0), 1.0)
        phase = self._start_phase()
        phase += (1.0 - phase) * progress
        return FLOOR + (1.0 - FLOOR) * 0.5 * (1 + math.cos(math.pi * phase))

    def _start_phase(self) -> float:
        """Where on the cosine (0: the peak, 1: the floor) the decay segment starts; kept as
        its factor (``start_factor``), as checkpoints have always saved it."""
        cosine = 2 * (self.start_factor - FLOOR) / (1.0 - FLOOR) - 1
        return math.acos(min(max(cosine, -1.0), 1.0)) / math.pi

    def retarget(self, step: int, total: int) -> None:
        """End the decay at `total` instead, continuing from the factor at `step`. A warm-up
        under way finishes first, shortened to `WARMUP_SHARE` of the new length where it was
        planned longer (a run fitted to a budget after it started)."""
        if step >= self.warm_to:
            self.start, self.start_factor = step, self(step)
        else:
            share = math.ceil(WARMUP_SHARE * max(total - self.warm_from, 1))
            self.warm_to = max(min(self.warm_to, self.warm_from + share), step + 1)
            self.start = self.warm_to
        self.total = total

    def restart(self, step: int, total: int, warmup: int) -> None:
        """Warm up again from `step` to the peak over `warmup` steps, then decay to `total`."""
        self.warm_from, self.warm_to = step, step + max(warmup, 1)
        self.start, self.start_factor, self.total = self.warm_to, 1.0, total
