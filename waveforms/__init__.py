"""Live waveform streams, sans-I/O: monitors' samples in, exactly once to store sinks, bounded to viewers.

* `relay` — `WaveformRelay`: streams per group, exactly-once sample ranges, acks, fan-out.
* `outbox` — `ViewerOutbox`: one viewer's bounded queue and its overflow policy.
* `analysis` — `AnalysisScheduler`: ECG fed in order to the DSP analyzer, in steps, off the loop.
* `ranges` — `IntervalSet`: which samples of a stream we have.
* `sinks` — `StoreSink`: the seam to lossless consumers (the recorder).

Imports only `protocol` and libraries (and `dsp`, lazily, for analysis); the node wires it to
sockets and the recorder.
"""

from waveforms.outbox import ViewerOutbox, merge_analysis
from waveforms.ranges import IntervalSet
from waveforms.relay import WaveformConfig, WaveformRelay, WaveformStats
from waveforms.sinks import StoreSink

__all__ = [
    "IntervalSet",
    "StoreSink",
    "ViewerOutbox",
    "WaveformConfig",
    "WaveformRelay",
    "WaveformStats",
    "merge_analysis",
]
