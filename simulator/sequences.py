"""Users' behaviour sequences: their last ``seq_len`` effective views, most recent first.

Requests are processed in time order; a request sees the history as it was before it, then its
own effective views (in feed order, the last one watched becoming the most recent) are pushed.
Histories carry over from day to day.
"""

from __future__ import annotations

import numpy as np


class BehaviourHistory:
    """Per-user list of effectively viewed video ids, most recent first, capped at ``seq_len``."""

    def __init__(self, seq_len: int) -> None:
        self.seq_len = seq_len
        self._history: list[list[int]] = []

    def add_users(self, initial: list[list[int]]) -> None:
        """Appends users (in user-id order) with their starting histories (most recent first)."""
        self._history.extend(list(h[: self.seq_len]) for h in initial)

    def recent(self, users: np.ndarray) -> list[list[int]]:
        """Each user's current history (most recent first), without changing it."""
        return [list(self._history[u]) for u in users.tolist()]

    def snapshot_and_update(
        self, users: np.ndarray, feed_videos: np.ndarray, feed_viewed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Histories at each request (in order), then pushes the requests' effective views.

        Args:
          users: [batch] user ids, requests in time order.
          feed_videos: [batch, n] exposed-or-not videos in feed order.
          feed_viewed: [batch, n] bool, exposed and effectively viewed.

        Returns:
          (offsets [batch + 1] int64, values int64): request i's sequence is
          ``values[offsets[i]:offsets[i + 1]]``.
        """
        lengths = np.empty(len(users), np.int64)
        snapshots: list[list[int]] = []
        history = self._history
        cap = self.seq_len
        for i, (user, videos, viewed) in enumerate(
            zip(users.tolist(), feed_videos.tolist(), feed_viewed.tolist(), strict=True)
        ):
            current = history[user]
            snapshots.append(current)
            lengths[i] = len(current)
            new = [v for v, seen in zip(videos, viewed, strict=True) if seen]
            if new:
                new.reverse()
                history[user] = (new + current)[:cap]
        offsets = np.zeros(len(users) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.fromiter(
            (v for s in snapshots for v in s), dtype=np.int64, count=int(offsets[-1])
        )
        return offsets, values
