"""Child process for the crash test: records VP8 + a waveform, checkpoints, says "ready", waits.

Usage: python -m tests.recorder.recording_child ROOT. The test SIGKILLs it after "ready".
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import numpy as np

from recorder import RecorderConfig, SessionRecorder, WaveformStreamInfo
from tests.recorder.media import encode_vp8, frames


async def main(root: Path) -> None:
    clip = encode_vp8(150)  # 5 s
    rec = SessionRecorder(RecorderConfig(root, cluster_time_limit_ms=500), room="ward7")
    directory = rec.start("dr-house")
    t0 = time.time()
    video = rec.add_track("cam", "patient-1", "video", "VP8")
    wave = rec.add_waveform_stream("mon", "patient-1",
                                   WaveformStreamInfo(("II",), ("mV",), (200.0,), (0,), 500.0))
    for f in frames(clip, "cam", start_at=t0):
        video.on_frame(f)
    wave.on_chunk(0, (np.arange(2500, dtype=np.int64) % 1000).reshape(1, -1))
    await rec.checkpoint()
    print(directory, flush=True)
    print("ready", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
