"""A node that only forwards media starts without the analysis and recording stacks (issue 17).

numpy alone was 11 MiB of the bench node's 94 MiB idle RSS (PyJWT, which only mints now, 0.5 MiB;
dnspython, which aioice imports for mDNS, 3.5 MiB of 82); numpy came in through
`medstream.config` -> `recorder.crypto` (the recorder package imported its session writer),
the webhooks' annotations and the waveform bridge. Started in a fresh interpreter: this test
process has them all loaded already.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("numpy", "wfdb", "pandas", "scipy", "neurokit2", "waveforms", "dsp",
         "recorder.session", "readings", "jwt",
         "dns")  # dnspython behind aioice.mdns: 3.5 MiB, only for mDNS candidates (media_server/lazy_mdns.py)

START = """
import asyncio, json, sys
from medstream.app import MedstreamApp
from medstream.config import ServerConfig
from signaling.hub import SignalingConfig

async def main():
    app = MedstreamApp(ServerConfig(
        signaling=SignalingConfig(secret="s" * 40), host="127.0.0.1", port=0, audit_log=None,
        media=True, waveforms=False, recorder=False, ice_host_addresses=("127.0.0.1",),
        rooms=(("hall", "broadcast"),)))
    await app.start()
    try:
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in HEAVY or m in HEAVY)))
    finally:
        await app.stop()

HEAVY = %r
asyncio.run(main())
"""


def test_a_media_only_node_does_not_import_numpy_or_the_recorder_writer() -> None:
    out = subprocess.run([sys.executable, "-c", START % (HEAVY,)], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert imported == [], f"imported at start: {imported}"


def test_the_recorder_package_still_exports_its_api() -> None:
    import recorder

    assert recorder.SessionRecorder.__name__ == "SessionRecorder"
    assert recorder.WaveformStreamInfo.__module__ == "recorder.wfdb_file"
    try:
        recorder.nothing_of_that_name  # noqa: B018
    except AttributeError:
        pass
    else:
        raise AssertionError("unknown attribute did not raise")
