"""A token bucket: at most ``count`` task starts in any ``per`` seconds, on average."""

from __future__ import annotations


class RateLimit:
    """Tokens refill continuously at ``count / per`` a second, up to ``count`` (the burst).

    Time only comes in as an argument, like everything in the engine.
    """

    __slots__ = ("_stamp", "_tokens", "count", "per", "rate")

    def __init__(self, count: int, per: float) -> None:
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"a rate limit's count must be an int >= 1, not {count!r}")
        if not per > 0:
            raise ValueError(f"a rate limit's period must be > 0 seconds, not {per!r}")
        self.count = count
        self.per = per
        self.rate = count / per
        self._tokens = float(count)
        self._stamp: float | None = None

    def refresh(self, now: float) -> None:
        if self._stamp is not None:
            self._tokens = min(self.count, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def available(self) -> int:
        """Whole starts allowed now (after ``refresh``)."""
        return int(self._tokens)

    def spend(self) -> None:
        self._tokens -= 1.0

    def next_token_at(self, needed: int = 1) -> float:
        """When ``needed`` whole tokens will be there, counted from the last ``refresh``."""
        shortfall = max(0.0, needed - self._tokens) / self.rate
        return (self._stamp or 0.0) + shortfall * (1 + 1e-9) + 1e-9  # rounding: never early

    def __repr__(self) -> str:
        return f"RateLimit({self.count}, per={self.per:g})"
