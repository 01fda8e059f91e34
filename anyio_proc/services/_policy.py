"""When a service is restarted, and after how long: the policy, the backoff, the limit."""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._events import ServiceFailed

if TYPE_CHECKING:
    import random
    from collections.abc import Callable

    from anyio_proc import ExitStatus

__all__ = ["Backoff", "RestartBudget", "RestartPolicy"]


class RestartPolicy(str, enum.Enum):
    """When a service whose process exited is started again."""

    NEVER = "never"
    ON_FAILURE = "on-failure"
    ALWAYS = "always"


@dataclass(frozen=True)
class Backoff:
    """Delay before restart number ``n`` (counted within the restart window, from 0):
    ``initial * factor**n``, at most ``max``, then scaled by a random factor in
    ``[1 - jitter, 1 + jitter]`` (and capped at ``max`` again), so that services failing
    together do not restart in lockstep."""

    initial: float = 0.5
    factor: float = 2.0
    max: float = 30.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        # Written so that NaN, which fails every comparison, fails each check too.
        if not (0 <= self.initial <= self.max < math.inf):
            raise ValueError("Backoff needs 0 <= initial <= max < inf")
        if not self.factor >= 1:
            raise ValueError("Backoff factor must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("Backoff jitter must be between 0 and 1")

    def delay(self, attempt: int, rng: random.Random) -> float:
        try:
            base = min(self.max, self.initial * self.factor**attempt)
        except OverflowError:
            base = self.max
        spread = 1 + self.jitter * (2 * rng.random() - 1) if self.jitter else 1.0
        return min(self.max, base * spread)


class RestartBudget:
    """The restarts of one service: whether its policy restarts a status, and the delay,
    counting the restarts within a sliding window against the limit."""

    def __init__(
        self,
        service: str,
        policy: RestartPolicy,
        backoff: Backoff,
        *,
        limit: int,
        window: float,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.service = service
        self.policy = policy
        self.backoff = backoff
        self.limit = limit
        self.window = window
        self.clock = clock
        self.rng = rng
        self.recent: deque[float] = deque()  # clock times of the restarts within the window

    def delay_after(self, status: ExitStatus) -> float | None:
        """The delay before restarting, ``None`` for no restart; ServiceFailed past the limit."""
        policy = self.policy
        if policy is RestartPolicy.NEVER or (policy is RestartPolicy.ON_FAILURE and status.success):
            return None
        now = self.clock()
        recent = self.recent
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        if len(recent) >= self.limit:
            raise ServiceFailed(
                self.service,
                f"gave up after {len(recent)} restart(s) within {self.window:g} s",
                status,
            )
        delay = self.backoff.delay(len(recent), self.rng)
        recent.append(now)
        return delay
