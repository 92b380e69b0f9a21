"""The benchmarks' check: every marked event of every phase, exactly once and in order, per session.

``MarkerChecker.on_message`` is the benchmark's hot path: it runs once per message delivered, so
it is written flat, and what can be derived later is: a session in order only moves its next
expected sequence number; events it skipped are kept in a set, to tell a late arrival (out of
order) from a duplicate. Latencies go into a mergeable histogram per phase.
"""

from __future__ import annotations

from math import log
from typing import Any, Final

from loadclient.checks import Totals, error_of
from loadclient.histogram import BUCKETS, SCALE, new_histogram
from loadclient.marker import PREFIX

LAST_BUCKET: Final = BUCKETS - 1


class MarkerCheck:
    def __init__(self, phase_sizes: list[int], totals: Totals) -> None:
        self.phase_sizes = phase_sizes
        self.totals = totals
        self.histograms = [new_histogram() for _ in phase_sizes]
        self.checkers: list[MarkerChecker] = []
        self._least = [0] * len(phase_sizes)

    def for_session(self, index: int) -> MarkerChecker:
        checker = MarkerChecker(self)
        self.checkers.append(checker)
        return checker

    def least(self) -> list[int]:
        """Per phase, the fewest distinct events any session has (and the total received)."""
        for phase, size in enumerate(self.phase_sizes):
            # Only phases under way are recomputed: this runs at every progress tick.
            if self._least[phase] < size:
                self._least[phase] = min((c.distinct(phase) for c in self.checkers), default=0)
        self.totals.received = sum(c.distinct(p) for c in self.checkers for p in range(len(self.phase_sizes)))
        return list(self._least)

    def new_phase(self) -> None:
        pass  # the phases are in the markers

    def report(self) -> dict[str, Any]:
        self.least()
        return {"phases": [self._phase_report(p) for p in range(len(self.phase_sizes))]}

    def _phase_report(self, phase: int) -> dict[str, Any]:
        expected = self.phase_sizes[phase]
        checkers = [c for c in self.checkers if c.messages[phase]]
        messages = sum(c.messages[phase] for c in checkers)
        sizes = [c.size[phase] for c in checkers]
        return {
            "messages": messages,
            "missing": sum(expected - c.distinct(phase) for c in self.checkers),
            "duplicates": sum(c.duplicates[phase] for c in self.checkers),
            "disorder": sum(c.disorder[phase] for c in self.checkers),
            # Every event of a phase has the same size give or take a digit: one sample per session.
            "payload_bytes": round(sum(sizes) / len(sizes) * messages) if sizes else 0,
            "first_us": min((c.first_us[phase] for c in checkers), default=0),
            "last_us": max((c.last_us[phase] for c in checkers), default=0),
            "histogram": self.histograms[phase],
        }


class MarkerChecker:
    __slots__ = (
        "_bucket",
        "_now",
        "_stamp",
        "disorder",
        "duplicates",
        "first_us",
        "histograms",
        "last_us",
        "messages",
        "next",
        "size",
        "sizes",
        "skipped",
        "totals",
    )

    def __init__(self, check: MarkerCheck) -> None:
        phases = len(check.phase_sizes)
        self.sizes = check.phase_sizes
        self.totals = check.totals
        self.histograms = check.histograms
        self.next = [0] * phases  # the next sequence number expected, per phase
        self.skipped: list[set[int]] = [set() for _ in range(phases)]  # passed over, not yet seen
        self.messages = [0] * phases
        self.duplicates = [0] * phases
        self.disorder = [0] * phases
        self.first_us = [0] * phases
        self.last_us = [0] * phases
        self.size = [0] * phases
        self._stamp = b""
        self._now = 0
        self._bucket = 0

    def distinct(self, phase: int) -> int:
        return self.next[phase] - len(self.skipped[phase])

    def on_message(self, payload: bytes, now_us: int) -> None:
        begin = payload.rfind(PREFIX)
        try:
            if begin < 0:
                raise ValueError
            start = begin + len(PREFIX)
            phase_text, seq_text, published_text = payload[start : payload.index(b'"', start)].split(b":")
            phase, seq = int(phase_text), int(seq_text)
            expected = self.next[phase]
            if not 0 <= seq < self.sizes[phase]:
                raise ValueError
        except (ValueError, IndexError):
            self._unexpected(payload)
            return
        if seq == expected:
            self.next[phase] = seq + 1
        else:
            self._out_of_line(phase, seq, expected)
        if not self.messages[phase]:
            self.first_us[phase] = now_us
            self.size[phase] = len(payload)
        self.messages[phase] += 1
        self.last_us[phase] = now_us
        # The events of one publish share their time stamp, and the frames of one read share
        # the clock: the bucket is computed again only when either changes.
        if published_text != self._stamp or now_us != self._now:
            self._stamp, self._now = published_text, now_us
            latency = now_us - int(published_text)
            self._bucket = min(int(log(latency) * SCALE), LAST_BUCKET) if latency > 1 else 0
        self.histograms[phase][self._bucket] += 1

    def _out_of_line(self, phase: int, seq: int, expected: int) -> None:
        skipped = self.skipped[phase]
        if seq > expected:  # a gap: those in between may still come, out of order
            skipped.update(range(expected, seq))
            self.next[phase] = seq + 1
        elif seq in skipped:
            skipped.discard(seq)
            self.disorder[phase] += 1
        else:
            self.duplicates[phase] += 1

    def _unexpected(self, payload: bytes) -> None:
        error = error_of(payload)
        if error is not None:
            self.totals.errors[error] += 1
        else:
            self.totals.problem("unexpected", payload[:200].decode(errors="replace"))
