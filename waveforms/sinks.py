"""The seam between the relay and a lossless consumer of samples (recorder, store-and-forward)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from protocol.waveforms import Analysis, Announce


class StoreSink(Protocol):
    """A lossless consumer of a group's samples (recorder, store-and-forward).

    Called on the event loop: must not block (queue and return). To refuse (e.g. its queue is full)
    it raises; the relay then detaches it and reports the failure loudly (ERROR log and the
    relay's `on_sink_failure`). Every method is called; a sink that does not care about one (e.g.
    analysis) implements it as a no-op.
    """

    def on_stream(self, publisher_id: str, announce: Announce) -> None:
        """A stream opened (or its publisher changed). Samples follow through `on_samples`."""

    def on_samples(self, stream_id: str, first_sample: int, samples: np.ndarray, t0: float) -> None:
        """New samples (ADC integers, shape (n_channels, n)); never a sample twice. `t0` is the
        monitor's clock (epoch s) at the first of them, as the monitor stamped its chunk."""

    def on_analysis(self, stream_id: str, analysis: Analysis) -> None:
        """Every analysis result that has news (beats found, alarms raised or cleared), once, in
        order, never merged nor dropped (unlike viewers' copies).

        ``analysis.beats`` are stream sample indices (the numbering of ``on_samples``) of QRS
        complexes; each alarm in ``alarms_raised`` / ``alarms_cleared`` has ``kind``,
        ``priority``, ``message`` and ``since_sample`` (stream sample index where the condition
        began; a cleared alarm keeps the ``since_sample`` it was raised with, the clearing itself
        happened within the samples this step analysed). A recorder maps beats to WFDB beat
        annotations (symbol "N": the detector does not classify beats) and raised alarms to
        comment annotations at ``since_sample``. Results arrive ~0.2-0.5 s after their samples
        (analysis runs in steps), never before those samples went through ``on_samples``.
        """

    def on_stream_ended(self, stream_id: str) -> None:
        """The stream is closed; no more samples."""
