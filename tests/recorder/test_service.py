"""RecordingService through the real server: signaling, waveforms, HTTP, retention, disk full.

No WebRTC here (see test_service_media.py): real websockets, real WFDB records streamed by the
monitor simulator, real HTTP requests, a real tmpfs for ENOSPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wfdb

from clients.monitor_sim import MonitorSimConfig, MonitorSimulator, RecordSource
from recorder.manifest import SessionManifest, read_manifest, write_manifest
from tests.conftest import timeout_s
from tests.helpers import WsClient, running_app, token
from tests.recorder.rtc import wait_until

ROOM = "icu-3"


async def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET `url` in a worker thread (the server runs on this loop); never through a proxy."""
    def fetch() -> tuple[int, dict[str, str], bytes]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=timeout_s(5)) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()
    return await asyncio.to_thread(fetch)


async def joined(app: Any, identity: str, role: str, room: str = ROOM) -> WsClient:
    ws = await WsClient.connect(app.ws_url)
    reply = await ws.join(token(room, identity, role, kind="monitoring" if role == "host" else None))
    assert reply["type"] == "joined", reply
    return ws


def monitor(app: Any, source: RecordSource, speed: float, identity: str = "mon-1") -> MonitorSimulator:
    return MonitorSimulator(source, MonitorSimConfig(
        url=app.ws_url, token=token(ROOM, identity, "monitor"), stream_id="bed-1", chunk_ms=100,
        speed=speed, reconnect_min_s=0.05, reconnect_max_s=0.1))


def session_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / ROOM).iterdir() if p.is_dir()) if (root / ROOM).exists() else []


async def test_waveform_recording_is_sample_exact_across_an_outage_and_everyone_is_told(
        tmp_path: Path, ecg_data_dir: Path) -> None:
    async with running_app(waveforms=True, recorder=True, recordings_dir=tmp_path) as app:
        host = await joined(app, "dr-grey", "host")
        expert = await joined(app, "dr-yang", "expert")
        # Bad requests first: clear errors, nothing recorded.
        err = await expert.request("start_recording")
        assert err["type"] == "error" and err["reason"] == "forbidden", err
        err = await host.request("stop_recording")
        assert err["type"] == "error" and err["reason"] == "recording_inactive", err
        assert session_dirs(tmp_path) == []

        source = RecordSource(ecg_data_dir / "mitdb" / "100")
        sim = monitor(app, source, speed=6.0)
        run = asyncio.ensure_future(sim.run(duration_s=24.0))
        fs = sim.fs
        await wait_until(lambda: sim.stats.acked_seq >= 3 * fs, 10, "3 s of samples before recording")

        assert (await host.request("start_recording"))["type"] == "ok"
        for ws in (host, expert):
            msg = await ws.wait_type("recording")
            assert msg["active"] is True and msg["by"] == host.participant_id
        [directory] = session_dirs(tmp_path)

        # A network outage of the monitor while recording: it back-fills when it is back.
        await wait_until(lambda: sim.stats.acked_seq >= 9 * fs, 10, "9 s of samples")
        sim.set_offline(True)
        await asyncio.sleep(0.6)  # ~3.6 s of stream time generated offline
        sim.set_offline(False)
        stats = await asyncio.wait_for(run, timeout_s(20))
        assert stats.chunks_backfilled > 0 and stats.connections >= 2
        assert app.waveforms.stats().backfilled_samples > 0

        assert (await host.request("stop_recording"))["type"] == "ok"
        for ws in (host, expert):
            msg = await ws.wait_type("recording")
            assert msg["active"] is False
        await wait_until(lambda: ROOM not in app.recorder.rooms, 10, "the recording to be final")

        manifest = read_manifest(directory)
        assert manifest.stop_reason == "requested" and manifest.stopped_at is not None
        assert manifest.started_by == host.participant_id
        assert manifest.stopped_by == host.participant_id
        roles = {p.identity: p.role for p in manifest.participants}
        assert roles == {"dr-grey": "host", "dr-yang": "expert", "mon-1": "monitor"}, roles
        [dat] = [f for f in manifest.files if f.kind == "waveform"]
        origin = dat.details["origin_sample_index"]
        assert 3 * fs <= origin < 9 * fs  # the recording started mid-stream
        assert dat.details["gaps_open"] == 0 and dat.details["samples_duplicate"] == 0

        record = wfdb.rdrecord(str(directory / dat.details["record"]), physical=False)
        assert record.fs == fs and record.sig_name == ["MLII", "V5"]
        got = record.d_signal.T
        want = source.samples[:, origin:sim.next_seq]
        assert got.shape == want.shape, (got.shape, want.shape)
        assert np.array_equal(got, want)  # sample for sample, back-filled hole included
        assert dat.frame_count == sim.next_seq - origin
        # Beats from the server's live analysis are stored as annotations next to the samples:
        # they match the record's reference beats (the last second may still be in analysis).
        beats = wfdb.rdann(str(directory / dat.details["record"]), "atr").sample + origin
        ref = wfdb.rdann(str(ecg_data_dir / "mitdb" / "100"), "atr")
        ref_beats = np.array([s for s, sym in zip(ref.sample, ref.symbol, strict=True)
                              if sym in "NLRAVaJSejnF/fQ" and origin + fs <= s < sim.next_seq - fs])
        assert len(ref_beats) > 15
        nearest = np.abs(beats[None, :] - ref_beats[:, None]).min(axis=1)
        assert np.mean(nearest <= 0.075 * fs) >= 0.9, (len(beats), len(ref_beats))

        # The room ending stops a recording too.
        assert (await host.request("start_recording"))["type"] == "ok"
        await wait_until(lambda: len(session_dirs(tmp_path)) == 2, 5, "a second session")
        await host.send({"type": "end_room", "id": "end"})
        assert (await host.wait_type("bye"))["reason"] == "room_ended"
        await wait_until(lambda: ROOM not in app.recorder.rooms, 10, "the second recording to stop")
        [second_dir] = [d for d in session_dirs(tmp_path) if d != directory]
        second = read_manifest(second_dir)
        assert second.stopped_at is not None and second.stop_reason == "requested"
        await host.close()
        await expert.close()


async def test_http_listing_and_range_downloads_need_a_host_or_supervisor_token(
        tmp_path: Path, ecg_data_dir: Path) -> None:
    async with running_app(waveforms=True, recorder=True, recordings_dir=tmp_path) as app:
        host = await joined(app, "dr-grey", "host")
        source = RecordSource(ecg_data_dir / "mitdb" / "100")
        sim = monitor(app, source, speed=10.0)
        assert (await host.request("start_recording"))["type"] == "ok"
        await asyncio.wait_for(sim.run(duration_s=10.0), timeout_s(15))
        assert (await host.request("stop_recording"))["type"] == "ok"
        await wait_until(lambda: ROOM not in app.recorder.rooms, 10, "the recording to be final")
        [directory] = session_dirs(tmp_path)
        sid = directory.name
        base = app.url
        host_tok = token(ROOM, "dr-grey", "host")

        # Listing.
        status, _, body = await http_get(f"{base}/recordings")
        assert status == 401 and b"token" in body
        status, _, body = await http_get(f"{base}/recordings?token=not-a-jwt")
        assert status == 401 and json.loads(body)["error"] == "invalid_token"
        status, _, _ = await http_get(f"{base}/recordings?token={token(ROOM, 'dr-yang', 'expert')}")
        assert status == 403
        for tok in (host_tok, token(ROOM, "qa-1", "supervisor")):
            status, headers, body = await http_get(f"{base}/recordings?token={tok}")
            assert status == 200 and headers["Content-Type"] == "application/json"
            listing = json.loads(body)
            assert [s["session_id"] for s in listing["sessions"]] == [sid]
            assert listing["sessions"][0]["complete"] is True and "path" not in listing["sessions"][0]
        status, _, body = await http_get(f"{base}/recordings", {"Authorization": f"Bearer {host_tok}"})
        assert status == 200 and json.loads(body)["sessions"][0]["session_id"] == sid

        # Manifest and files.
        status, _, body = await http_get(f"{base}/recordings/{ROOM}/{sid}/manifest.json?token={host_tok}")
        assert status == 200
        manifest = SessionManifest.from_json(body.decode())
        assert manifest.session_id == sid
        other_room = token("ward-9", "dr-grey", "host")
        status, _, _ = await http_get(f"{base}/recordings/{ROOM}/{sid}/manifest.json?token={other_room}")
        assert status == 403
        status, _, _ = await http_get(f"{base}/recordings/{ROOM}/{sid}/manifest.json")
        assert status == 401

        dat = next(f for f in manifest.files if f.kind == "waveform")
        on_disk = (directory / dat.name).read_bytes()
        url = f"{base}/recordings/{ROOM}/{sid}/{dat.name}?token={host_tok}"
        status, headers, body = await http_get(url)
        assert status == 200 and body == on_disk and headers["Accept-Ranges"] == "bytes"
        status, headers, body = await http_get(url, {"Range": "bytes=100-1099"})
        assert status == 206 and body == on_disk[100:1100]
        assert headers["Content-Range"] == f"bytes 100-1099/{len(on_disk)}"
        status, headers, body = await http_get(url, {"Range": "bytes=-10"})
        assert status == 206 and body == on_disk[-10:]
        status, headers, _ = await http_get(url, {"Range": f"bytes={len(on_disk)}-"})
        assert status == 416 and headers["Content-Range"] == f"bytes */{len(on_disk)}"

        # Traversal and unknown names.
        for bad in ("..%2Fmanifest.json", ".manifest.json.tmp", "%2Fetc%2Fpasswd"):
            status, _, _ = await http_get(f"{base}/recordings/{ROOM}/{sid}/{bad}?token={host_tok}")
            assert status in (400, 404), (bad, status)
        status, _, _ = await http_get(f"{base}/recordings/{ROOM}/{sid}/nope.webm?token={host_tok}")
        assert status == 404
        status, _, _ = await http_get(f"{base}/recordings/{ROOM}/../../etc/passwd?token={host_tok}")
        assert status in (400, 404)
        status, _, _ = await http_get(f"{base}/recordings/ward-9/{sid}/manifest.json?token={other_room}")
        assert status == 404  # the session exists, but not in that room
        await host.close()


async def test_retention_prunes_old_sessions_at_start(tmp_path: Path) -> None:
    old_dir = tmp_path / ROOM / "20200101T000000Z-aaaaaa"
    old_dir.mkdir(parents=True)
    write_manifest(old_dir, SessionManifest("20200101T000000Z-aaaaaa", ROOM, "consultation",
                                            "2020-01-01T00:00:00.000+00:00", "x", 1577836800.0,
                                            stopped_at="2020-01-01T00:10:00.000+00:00"))
    new_dir = tmp_path / ROOM / "20990101T000000Z-bbbbbb"
    new_dir.mkdir()
    write_manifest(new_dir, SessionManifest("20990101T000000Z-bbbbbb", ROOM, "consultation",
                                            "2099-01-01T00:00:00.000+00:00", "x", time.time(),
                                            stopped_at="2099-01-01T00:10:00.000+00:00"))
    async with running_app(recorder=True, recordings_dir=tmp_path, recordings_retention_days=30) as app:
        # the counter is set after the worker thread has removed the directory: wait for both
        await wait_until(lambda: app.recorder.pruned_sessions == 1, 5, "the old session to be pruned")
        assert not old_dir.exists() and new_dir.exists()
        await app.recorder.close()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a real ENOSPC."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


async def test_disk_full_stops_the_recording_tells_the_room_and_the_manifest_says_why(
        tiny_disk: Path, ecg_data_dir: Path) -> None:
    async with running_app(waveforms=True, recorder=True, recordings_dir=tiny_disk) as app:
        host = await joined(app, "dr-grey", "host")
        expert = await joined(app, "dr-yang", "expert")
        sim = monitor(app, RecordSource(ecg_data_dir / "mitdb" / "100"), speed=5.0)
        run = asyncio.ensure_future(sim.run(duration_s=60.0))
        assert (await host.request("start_recording"))["type"] == "ok"
        await wait_until(lambda: len(session_dirs(tiny_disk)) == 1, 5, "the session directory")
        [directory] = session_dirs(tiny_disk)
        # Fill the disk with someone else's file: the recorder's next write hits ENOSPC.
        with open(tiny_disk / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(bytes(16 * 1024))
        err = await host.wait_type("error", timeout=10)
        assert err["reason"] == "recording_failed" and "disk is full" in err["message"], err
        for ws in (host, expert):
            msg = await ws.wait_type("recording", active=False)
            assert msg["active"] is False
        assert not any(m["type"] == "error" for m in expert.inbox)  # the alarm goes to moderators
        await wait_until(lambda: ROOM not in app.recorder.rooms, 5, "the recorder to let go")
        manifest = read_manifest(directory)  # written although the disk was full
        assert manifest.stop_reason == "disk_full" and manifest.stopped_at is not None
        assert "space" in manifest.stop_detail.lower()
        # The room may record again once space is freed.
        (tiny_disk / "filler").unlink()
        assert (await host.request("start_recording"))["type"] == "ok"
        assert (await host.request("stop_recording"))["type"] == "ok"
        await wait_until(lambda: len(session_dirs(tiny_disk)) == 2 and ROOM not in app.recorder.rooms,
                         5, "a second, clean session")
        [second_dir] = [d for d in session_dirs(tiny_disk) if d != directory]  # same second: any order
        assert read_manifest(second_dir).stop_reason == "requested"
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await host.close()
        await expert.close()


async def test_a_restarted_monitor_is_recorded_as_a_second_segment_and_nothing_is_lost(
        tmp_path: Path, ecg_data_dir: Path) -> None:
    """Finding 4 of issue 15 in the recording: the second run of a monitor (same bed, counter
    from 0 again) is its own record; the first is kept whole."""
    async with running_app(waveforms=True, recorder=True, recordings_dir=tmp_path) as app:
        host = await joined(app, "dr-grey", "host")
        assert (await host.request("start_recording"))["type"] == "ok"
        source = RecordSource(ecg_data_dir / "mitdb" / "100")
        runs = []
        for _ in range(2):  # a new MonitorSimulator is a restarted monitor: new session, seq 0
            sim = monitor(app, RecordSource(ecg_data_dir / "mitdb" / "100"), speed=10.0)
            await asyncio.wait_for(sim.run(duration_s=3.0), timeout_s(20))
            await wait_until(lambda s=sim: s.stats.acked_seq >= s.next_seq, 10, "every sample acked")
            runs.append(sim.next_seq)
        assert app.waveforms.stats().segments == 1
        assert (await host.request("stop_recording"))["type"] == "ok"
        await wait_until(lambda: ROOM not in app.recorder.rooms, 10, "the recording to be final")
        [directory] = session_dirs(tmp_path)
        dats = [f for f in read_manifest(directory).files if f.kind == "waveform"]
        assert len(dats) == 2, [f.details for f in dats]
        for dat, n in zip(dats, runs, strict=True):
            record = wfdb.rdrecord(str(directory / dat.details["record"]), physical=False)
            assert dat.details["origin_sample_index"] == 0
            assert np.array_equal(record.d_signal.T, source.samples[:, :n])  # each run whole, from 0
        await host.close()


async def test_encrypted_recordings_are_unreadable_on_disk_and_identical_when_downloaded(
        tmp_path: Path, ecg_data_dir: Path) -> None:
    from recorder import crypto
    from signaling.tokens import issue_library_token
    from tests.helpers import SECRET

    master = crypto.MasterKey(bytes(range(1, 33)))
    audit = tmp_path / "audit.jsonl"
    async with running_app(waveforms=True, recorder=True, recordings_dir=tmp_path / "rec", audit_log=audit,
                           recordings_key=master, recordings_encryption="sm4-gcm") as app:
        host = await joined(app, "dr-grey", "host")
        source = RecordSource(ecg_data_dir / "mitdb" / "100")
        sim = monitor(app, source, speed=10.0)
        assert (await host.request("start_recording"))["type"] == "ok"
        await asyncio.wait_for(sim.run(duration_s=30.0), timeout_s(20))
        assert (await host.request("stop_recording"))["type"] == "ok"
        await wait_until(lambda: ROOM not in app.recorder.rooms and app.recorder.finalized_sessions == 1,
                         20, "the recording to be final")
        [directory] = session_dirs(tmp_path / "rec")
        manifest = read_manifest(directory, master)
        assert manifest.encryption == {"algorithm": "sm4-gcm", "key_id": "k1"}
        assert (directory / "manifest.json").read_bytes().startswith(crypto.MAGIC)
        dat = next(f for f in manifest.files if f.kind == "waveform")
        on_disk = (directory / dat.name).read_bytes()
        plain = source.samples[:, dat.details["origin_sample_index"]:sim.next_seq].T.astype("<i2").tobytes()
        assert on_disk.startswith(crypto.MAGIC) and plain[:256] not in on_disk
        base = f"{app.url}/recordings/{ROOM}/{directory.name}"
        for tok in (token(ROOM, "dr-grey", "host"), issue_library_token(SECRET, identity="teacher-1", rooms=(ROOM,))):
            status, headers, body = await http_get(f"{base}/{dat.name}?token={tok}")
            assert status == 200 and body == plain and int(headers["Content-Length"]) == len(plain)
            # a range of any size, across chunk borders, decrypts only what it needs
            status, headers, body = await http_get(f"{base}/{dat.name}?token={tok}", {"Range": "bytes=16000-40000"})
            assert status == 206 and body == plain[16000:40001]
            assert headers["Content-Range"] == f"bytes 16000-40000/{len(plain)}"
            status, headers, _ = await http_get(f"{base}/{dat.name}?token={tok}", {"Range": f"bytes={len(plain)}-"})
            assert status == 416
        # the EDF+ made at the end is encrypted too, and downloads as a readable EDF+
        edf = next(f for f in manifest.files if f.kind == "edf")
        status, _, body = await http_get(f"{base}/{edf.name}?token={token(ROOM, 'dr-grey', 'host')}")
        assert status == 200 and body[:8] == b"0       " and (directory / edf.name).read_bytes().startswith(crypto.MAGIC)
        # a library token for another room sees nothing of this one
        other = issue_library_token(SECRET, identity="teacher-2", rooms=("ward-9",))
        status, _, _ = await http_get(f"{base}/{dat.name}?token={other}")
        assert status == 403
        status, _, body = await http_get(f"{app.url}/recordings?token={other}")
        assert status == 200 and json.loads(body)["sessions"] == []
        # the room's own listing reads the sealed manifest with the node's key; it is served decrypted
        status, _, body = await http_get(f"{app.url}/recordings?token={token(ROOM, 'dr-grey', 'host')}")
        [listed] = json.loads(body)["sessions"]
        assert status == 200 and listed["started_by"] == manifest.started_by and listed["complete"], listed
        status, _, body = await http_get(f"{app.url}{listed['manifest_url']}?token={token(ROOM, 'dr-grey', 'host')}")
        assert status == 200 and json.loads(body)["encryption"]["algorithm"] == "sm4-gcm"
        await host.close()
    downloads = [json.loads(line) for line in audit.read_text().splitlines()
                 if json.loads(line).get("event") == "recording_downloaded"]
    assert {(d["identity"], d["role"]) for d in downloads} == {("dr-grey", "host"), ("teacher-1", "library")}
    assert all(d["details"]["file"] and d["details"]["session"] == directory.name for d in downloads)
