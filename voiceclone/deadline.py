"""A monotonic time budget shared by every upstream call of one unit of work."""

from __future__ import annotations

import time
from collections.abc import Callable


class DeadlineExceeded(Exception):
    """The budget ran out before the work could finish."""


class Deadline:
    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - self._clock())

    def check(self) -> float:
        """Remaining seconds, or DeadlineExceeded when there are none."""
        remaining = self.remaining()
        if remaining <= 0:
            raise DeadlineExceeded("deadline exceeded")
        return remaining
