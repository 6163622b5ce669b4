"""A token bucket for bandwidth limits: pure arithmetic over a caller's clock.

``reserve(n, now)`` takes ``n`` tokens (bytes) at time ``now`` and answers how long the caller
must wait before using them. The bucket holds at most ``burst`` tokens and refills at
``rate`` a second; a reservation larger than what is there leaves a debt that later callers
wait out, so a read larger than the burst still passes, only later. What it guarantees
(property-tested): the tokens of every reservation released by time ``t`` add up to at most
``burst + rate * (t - start)``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    rate: float          # tokens a second, above 0
    burst: float         # the most tokens held; a full bucket at the start
    start: float         # the clock's time when the bucket was made
    tokens: float = -1.0  # what the bucket holds now (negative: a debt); -1: full
    stamp: float = -1.0   # time of the last reservation

    def __post_init__(self) -> None:
        if not (self.rate > 0 and self.burst >= 0):
            raise ValueError("a token bucket needs a rate above 0 and a burst of at least 0")
        if self.tokens == -1.0 and self.stamp == -1.0:
            self.tokens, self.stamp = self.burst, self.start

    def reserve(self, n: float, now: float) -> float:
        """Take ``n`` tokens at ``now`` (never earlier than the last call's ``now``); the
        seconds to wait before using them (0: at once)."""
        now = max(now, self.stamp)
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate
