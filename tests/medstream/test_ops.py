"""Operations through real nodes: /readyz refuses while draining or when the recordings disk is
unusable, /metrics in Prometheus' own format with the old names, process metrics and histograms
that count real events, a drain that refuses new joins, tells clients and finishes recordings,
and SIGTERM on `medstream serve` (JSON logs) draining and exiting cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp

from bench.proc import free_port, wait_for_port
from clients.monitor_sim import MonitorSimConfig, MonitorSimulator, SyntheticSource
from tests.conftest import timeout_s
from tests.helpers import SECRET, WsClient, running_app, token


async def get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.read()


async def test_readyz_says_why_it_is_not_ready(tmp_path: Path) -> None:
    async with running_app(recorder=True, recordings_dir=tmp_path / "rec") as app:
        status, body = await get(f"{app.url}/readyz")
        assert status == 200 and json.loads(body) == {"status": "ready"}
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    async with running_app(recorder=True, recordings_dir=not_a_dir) as app:
        status, body = await get(f"{app.url}/readyz")
        assert status == 503 and "recordings disk" in json.loads(body)["reasons"][0]
        assert (await get(f"{app.url}/healthz"))[0] == 200  # alive, just not ready
    async with running_app(recorder=True, recordings_dir=tmp_path / "rec", min_free_disk_mb=2**40) as app:
        status, body = await get(f"{app.url}/readyz")
        assert status == 503 and "MiB free" in json.loads(body)["reasons"][0]


async def test_metrics_keep_their_names_and_add_process_metrics_and_histograms() -> None:
    async with running_app(waveforms=True, rooms=(("ward-3", "monitoring"),)) as app:
        nurse = await WsClient.connect(app.ws_url)
        assert (await nurse.join(token("ward-3", "nurse-li", "viewer")))["type"] == "joined"
        sim = MonitorSimulator(SyntheticSource(75.0, (), 250.0, seed=2), MonitorSimConfig(
            url=app.ws_url, token=token("ward-3", "bed-1", "monitor"), stream_id="bed-1", chunk_ms=200.0, speed=4.0))
        await sim.run(duration_s=6.0)

        def value(text: str, name: str) -> float:
            return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))

        deadline = time.monotonic() + timeout_s(10)
        while True:
            status, body = await get(f"{app.url}/metrics")
            text = body.decode()
            if (value(text, "medstream_waveform_analysis_step_seconds_count") > 0
                    and value(text, "medstream_waveform_relay_latency_seconds_count") >= 20) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert status == 200
        for old in ("medstream_rooms", "medstream_participants", "medstream_joins_total",
                    "medstream_waveform_chunks_in_total", "medstream_uptime_seconds"):
            assert f"\n{old} " in text, old
        assert value(text, "medstream_joins_total") == 2
        assert value(text, "process_resident_memory_bytes") > 10e6 and "process_cpu_seconds_total" in text
        assert value(text, "medstream_join_latency_seconds_count") == 2
        assert value(text, "medstream_waveform_relay_latency_seconds_count") >= 20  # chunks written to the nurse
        assert value(text, "medstream_waveform_analysis_step_seconds_count") > 0
        await nurse.close()


async def test_drain_refuses_new_joins_tells_clients_and_finishes_the_recording(tmp_path: Path) -> None:
    async with running_app(recorder=True, recordings_dir=tmp_path, record_kinds=("consultation",)) as app:
        doctor = await WsClient.connect(app.ws_url)
        assert (await doctor.join(token("c1", "dr-wang", "host", kind="consultation")))["type"] == "joined"
        draining = asyncio.ensure_future(app.drain(timeout_s(30)))
        notice = await doctor.wait_type("error", reason="server_draining")
        assert notice["id"] is None
        assert (await get(f"{app.url}/readyz"))[0] == 503
        late = await WsClient.connect(app.ws_url)
        assert (await late.join(token("c1", "dr-li", "expert")))["reason"] == "server_draining"
        await late.close()
        assert not draining.done()  # the doctor is still in the consultation
        t = time.monotonic()
        await doctor.send({"type": "leave"})
        await asyncio.wait_for(draining, timeout_s(5))
        print(f"drain finished {time.monotonic() - t:.2f} s after the last participant left")
        await doctor.close()
    [manifest] = list(tmp_path.glob("c1/*/manifest.json"))
    assert json.loads(manifest.read_text())["stopped_at"] is not None


def test_sigterm_drains_serve_and_exits_cleanly_with_json_logs(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "medstream.cli", "serve", "--port", str(port), "--no-media",
         "--audit-log", "none", "--recordings-dir", str(tmp_path), "--log-format", "json", "--drain-timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "MEDSTREAM_SECRET": SECRET})
    try:
        wait_for_port(port)

        async def scenario() -> str:
            ws = await WsClient.connect(f"ws://127.0.0.1:{port}/ws")
            assert (await ws.join(token("c1", "dr-wang", "host", kind="consultation")))["type"] == "joined"
            server.send_signal(signal.SIGTERM)
            notice = await ws.wait_type("error", reason="server_draining", timeout=10)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                assert r.status == 200  # still serving the ones who are in
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
                raise AssertionError("readyz said ready while draining")
            except urllib.error.HTTPError as err:
                assert err.code == 503
            await ws.send({"type": "leave"})
            await ws.close()
            return str(notice["message"])

        message = asyncio.run(scenario())
        assert "30 s" in message
        t = time.monotonic()
        server.wait(timeout=timeout_s(20))
        print(f"serve exited {time.monotonic() - t:.2f} s after the last participant left")
    finally:
        if server.poll() is None:
            server.kill()
        _, err = server.communicate(timeout=20)
    assert server.returncode == 0, err
    records = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any("draining" in r["message"] for r in records)
