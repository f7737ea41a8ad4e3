"""What one subscriber gets of each track when its link cannot carry everything (sans-I/O policy).

Given the subscriber's bandwidth estimate and its tracks (kind, priority, measured bitrate per
temporal layer), `AdaptationPolicy.update` decides per video track: all layers, up to a lower
temporal layer (30 -> 15 -> 7.5 fps with L1T3), or paused. The order of sacrifice:

1. Audio is never touched (it is what a consultation cannot lose; it is also small).
2. Every video track first gets its base layer, most important first (priority: shared content,
   presenter, active speaker), then the upper layers in the same order: frame rate goes down
   everywhere before the least important track is paused.
3. Hysteresis: a track goes down as soon as the budget no longer carries it, but goes up only
   when the budget carries the next level with `up_margin` to spare, one step per
   `step_interval_s`, and one track at a time per subscriber, `probe_spacing_s` apart, the
   lowest first (a paused track's base layer before another's upper layers; each
   step up probes the link; its result, loss in the receiver reports, takes about a second to
   come back: two probes at once, two resume keyframes on a 200 kbit/s line, overflowed its
   queue and took audio with them). A track that goes down within `probe_fail_s` of going up (the probe
   failed) waits twice as long before trying again, up to `max_hold_s`.
4. A track that comes back from paused must start at a keyframe: the decision says `resume`.

The user's own choices (audio-only, a server mute) are the driver's business and come first; this
policy only decides for the tracks still forwarded. Times are monotonic seconds.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

PAUSED = -1  # the level of a paused track; levels >= 0 are the highest temporal layer forwarded


class VideoState(str, enum.Enum):
    """What the page shows for a track: everything, fewer frames, or nothing (weak connection)."""

    FULL = "full"
    REDUCED = "reduced"
    PAUSED = "paused"


@dataclass(frozen=True)
class AdaptationConfig:
    """Tuning of `AdaptationPolicy`."""

    headroom: float = 0.10  # of the estimate kept free (RTCP, retransmissions, estimate error)
    up_margin: float = 1.15  # the next level must fit this many times over before going up
    step_interval_s: float = 1.0  # at most one step up per track per interval
    probe_spacing_s: float = 1.5  # at most one step up per subscriber per interval
    hold_s: float = 1.0  # after going down, wait this long before going up
    probe_fail_s: float = 4.0  # going down this soon after going up doubles the hold
    max_hold_s: float = 4.0  # the longest hold: a recovered link is used within ~5 s


@dataclass(frozen=True)
class TrackDemand:
    """One track forwarded to the subscriber.

    `layer_bps[i]` is what forwarding temporal layers 0..i costs (bit/s, measured at the
    publisher; one entry for a single-layer stream, empty before its first frame). `priority`:
    higher goes first (2 = shared content/presenter/active speaker, 1 = the others).
    """

    track_id: str
    kind: Literal["audio", "video"]
    layer_bps: tuple[float, ...]
    priority: int = 1


@dataclass(frozen=True)
class TrackDecision:
    """The policy's decision for one video track.

    `max_layer`: the highest temporal layer forwarded (PAUSED = -1: none); `layers`: how many the
    publisher sends; `resume`: the track comes back from paused (start at a keyframe);
    `usable_bps`: the most this subscriber could take for the track (what a publisher may be
    asked for).
    """

    track_id: str
    max_layer: int
    layers: int
    state: VideoState
    resume: bool = False
    usable_bps: float = 0.0


@dataclass
class _TrackState:
    level: int
    layers: int = 1
    changed_at_s: float = -1e9
    went_up_at_s: float = -1e9
    down_at_s: float = -1e9
    hold_s: float = 0.0
    usable_bps: float = 0.0


def _state(level: int, layers: int) -> VideoState:
    if level == PAUSED:
        return VideoState.PAUSED
    return VideoState.FULL if level >= layers - 1 else VideoState.REDUCED


def _cost(demand: TrackDemand, level: int) -> float:
    if level == PAUSED or not demand.layer_bps:
        return 0.0
    return demand.layer_bps[min(level, len(demand.layer_bps) - 1)]


def _allocate(budget_bps: float, videos: Sequence[TrackDemand]) -> tuple[dict[str, int], dict[str, float]]:
    """Base layers first in priority order, then upper layers in the same order.

    Returns each track's level and what it could use at most (budget left after the others).
    """
    levels = {t.track_id: PAUSED for t in videos}
    left = budget_bps
    for t in videos:
        base = _cost(t, 0)
        if base <= left:
            levels[t.track_id] = 0
            left -= base
    for t in videos:
        level = levels[t.track_id]
        if level == PAUSED:
            continue
        top = max(0, len(t.layer_bps) - 1)
        while level < top and _cost(t, level + 1) - _cost(t, level) <= left:
            left -= _cost(t, level + 1) - _cost(t, level)
            level += 1
        levels[t.track_id] = level
    usable = {t.track_id: left + _cost(t, levels[t.track_id]) for t in videos}
    return levels, usable


@dataclass
class AdaptationPolicy:
    """One subscriber's adaptation state: feed `update` the estimate and tracks, apply what changed."""

    config: AdaptationConfig = field(default_factory=AdaptationConfig)
    _tracks: dict[str, _TrackState] = field(default_factory=dict)
    _last_up_s: float = -1e9

    def update(self, estimate_bps: float, tracks: Sequence[TrackDemand], now_s: float) -> list[TrackDecision]:
        """Decide for every video track in `tracks`; returns the decisions that changed.

        Tracks not listed any more are forgotten. A new track starts at the level the budget
        allows (no probing needed for what already fits).
        """
        c = self.config
        budget = estimate_bps * (1 - c.headroom) - sum(_cost(t, 0) for t in tracks if t.kind == "audio")
        videos = sorted((t for t in tracks if t.kind == "video"), key=lambda t: (-t.priority, t.track_id))
        for gone in set(self._tracks) - {t.track_id for t in videos}:
            del self._tracks[gone]
        down_levels, usable = _allocate(budget, videos)
        up_levels, _ = _allocate(budget / c.up_margin, videos)
        changed: list[TrackDecision] = []
        stepped_up = now_s - self._last_up_s < c.probe_spacing_s  # one probe of the link at a time
        # the one step up of this update goes to the lowest track that may take it (paused
        # before a base layer, a base layer before an upper one; then priority order), as the
        # budget is shared going down: otherwise the first track took all its steps while the
        # next stayed paused (traced on the 200 kbit/s link: the second expert came back 7 s
        # after the link did, the first was at 30 fps by then)
        climber: str | None = None
        if not stepped_up:
            candidates = []
            for order, t in enumerate(videos):
                st = self._tracks.get(t.track_id)
                if st is None:
                    continue
                level = min(st.level, max(1, len(t.layer_bps)) - 1)
                if (level <= down_levels[t.track_id] and up_levels[t.track_id] > level
                        and now_s - st.changed_at_s >= c.step_interval_s
                        and now_s - st.down_at_s >= max(c.hold_s, st.hold_s)):
                    candidates.append((level, order, t.track_id))
            if candidates:
                climber = min(candidates)[2]
        for t in videos:
            layers = max(1, len(t.layer_bps))
            st = self._tracks.get(t.track_id)
            if st is None:
                st = self._tracks[t.track_id] = _TrackState(level=down_levels[t.track_id], layers=layers,
                                                             changed_at_s=now_s)
                st.usable_bps = usable[t.track_id]
                changed.append(self._decision(t.track_id, st, resume=False))
                continue
            st.usable_bps = usable[t.track_id]
            old, old_layers = st.level, st.layers
            st.layers = layers
            new = min(old, layers - 1)
            if new > down_levels[t.track_id]:
                new = down_levels[t.track_id]
                if now_s - st.went_up_at_s < c.probe_fail_s:
                    st.hold_s = min(c.max_hold_s, max(c.hold_s, 2 * st.hold_s))
                elif now_s - st.down_at_s > c.probe_fail_s:
                    st.hold_s = c.hold_s
                st.down_at_s = now_s
            elif t.track_id == climber:
                new += 1
                st.went_up_at_s = now_s
                self._last_up_s = now_s
            if new != old or layers != old_layers:
                st.level = new
                if new != old:
                    st.changed_at_s = now_s
                changed.append(self._decision(t.track_id, st, resume=old == PAUSED and new != PAUSED))
        return changed

    def decision(self, track_id: str) -> TrackDecision | None:
        """The current decision for `track_id` (None if unknown)."""
        st = self._tracks.get(track_id)
        return None if st is None else self._decision(track_id, st, resume=False)

    @staticmethod
    def _decision(track_id: str, st: _TrackState, resume: bool) -> TrackDecision:
        return TrackDecision(track_id, st.level, st.layers, _state(st.level, st.layers), resume, st.usable_bps)


__all__ = [
    "PAUSED",
    "AdaptationConfig",
    "AdaptationPolicy",
    "TrackDecision",
    "TrackDemand",
    "VideoState",
]
