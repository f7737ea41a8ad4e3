"""Media through a real coturn only, in a network-namespace topology where the client cannot
reach the media server at all except through TURN (UDP, TCP, and TLS on 443), with the
per-participant time-limited credentials the server hands out in `joined`.

    this test (client ns)          ns "turn"                         ns "srv"
    10.77.1.2  --veth--  10.77.1.1 coturn :3478 udp/tcp, :443 tls
                                   tcp proxy :8765 (signaling only)
                                   10.77.2.1 (coturn's relay)  --veth--  10.77.2.2 medstream serve

No forwarding in "turn": the client's packets can reach the server only as TURN relays them, and
its signaling only through the proxy (the hospital's HTTPS proxy). The whole test runs inside the
loopback-only namespace of the test command (it refuses to run in a namespace with other links).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, timeout_s
from tests.helpers import SECRET, MediaParticipant, WsClient, token
from tests.medstream.test_tls import self_signed
from tests.support.rtc_peer import ClientPeer

pytestmark = [pytest.mark.webrtc, pytest.mark.slow]

CLIENT, TURN_IN, TURN_OUT, SERVER = "10.77.1.2", "10.77.1.1", "10.77.2.1", "10.77.2.2"
PORT = 8765
TURN_SECRET = "coturn-static-auth-secret-for-tests"
ROOM = "lecture-1"


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


def links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link"], check=True, capture_output=True, text=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


def wait_http(url: str, timeout: float, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + timeout_s(timeout)
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer (server exited: {proc.poll()})")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if shutil.which("turnserver") is None:
        pytest.skip("coturn is not installed (scripts/setup.sh --test installs it)")
    if os.geteuid() != 0 or links() != ["lo"]:
        pytest.skip("needs root inside a fresh network namespace (unshare --net), never the host's")
    tmp = tmp_path_factory.mktemp("turn")
    tag = f"{os.getpid() % 100000}"
    turn_ns, srv_ns = f"ms-turn-{tag}", f"ms-srv-{tag}"
    procs: list[subprocess.Popen[Any]] = []
    run("ip", "netns", "add", turn_ns)
    run("ip", "netns", "add", srv_ns)
    try:
        run("ip", "link", "add", "vc0", "type", "veth", "peer", "name", "vc1")
        run("ip", "link", "set", "vc1", "netns", turn_ns)
        run("ip", "addr", "add", f"{CLIENT}/24", "dev", "vc0")
        run("ip", "link", "set", "vc0", "up")
        run("ip", "-n", turn_ns, "link", "set", "lo", "up")
        run("ip", "-n", turn_ns, "addr", "add", f"{TURN_IN}/24", "dev", "vc1")
        run("ip", "-n", turn_ns, "link", "set", "vc1", "up")
        run("ip", "-n", turn_ns, "link", "add", "vs0", "type", "veth", "peer", "name", "vs1")
        run("ip", "-n", turn_ns, "link", "set", "vs1", "netns", srv_ns)
        run("ip", "-n", turn_ns, "addr", "add", f"{TURN_OUT}/24", "dev", "vs0")
        run("ip", "-n", turn_ns, "link", "set", "vs0", "up")
        run("ip", "-n", srv_ns, "link", "set", "lo", "up")
        run("ip", "-n", srv_ns, "addr", "add", f"{SERVER}/24", "dev", "vs1")
        run("ip", "-n", srv_ns, "link", "set", "vs1", "up")
        cert, key = self_signed(tmp, host=TURN_IN)
        log = open(tmp / "coturn.log", "wb")  # noqa: SIM115 (closed with the processes)
        procs.append(subprocess.Popen([
            "ip", "netns", "exec", turn_ns, "turnserver", "-n", f"--listening-ip={TURN_IN}",
            f"--relay-ip={TURN_OUT}", "--listening-port=3478", "--tls-listening-port=443", f"--cert={cert}",
            f"--pkey={key}", "--use-auth-secret", f"--static-auth-secret={TURN_SECRET}", "--realm=medstream.test",
            "--no-cli", "--no-dtls", "--log-file=stdout", "--simple-log", f"--pidfile={tmp / 'turn.pid'}",
            f"--userdb={tmp / 'turndb'}", "--min-port=50000", "--max-port=50100", f"--allowed-peer-ip={SERVER}",
        ], stdout=log, stderr=subprocess.STDOUT))
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MEDSTREAM_SECRET": SECRET}
        server_log = open(tmp / "server.log", "wb")  # noqa: SIM115
        procs.append(subprocess.Popen([
            "ip", "netns", "exec", srv_ns, sys.executable, "-m", "medstream.cli", "serve", "--host", SERVER,
            "--port", str(PORT), "--ice-host", SERVER, "--room", f"{ROOM}:broadcast",
            "--turn-url", f"turn:{TURN_IN}:3478?transport=udp", "--turn-url", f"turn:{TURN_IN}:3478?transport=tcp",
            "--turn-url", f"turns:{TURN_IN}:443?transport=tcp", "--turn-secret", TURN_SECRET,
            "--audit-log", "none", "--recordings-dir", str(tmp / "rec"),
        ], stdout=server_log, stderr=subprocess.STDOUT, env=env, cwd=tmp))
        procs.append(subprocess.Popen([
            "ip", "netns", "exec", turn_ns, sys.executable, "-m", "tests.support.tcp_proxy", TURN_IN, str(PORT),
            SERVER, str(PORT)], env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL))
        wait_http(f"http://{TURN_IN}:{PORT}/healthz", 30, procs[1])
        yield cert
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
            if p.poll() is None:
                p.kill()
        run("ip", "netns", "del", srv_ns)
        run("ip", "netns", "del", turn_ns)


def test_the_client_cannot_reach_the_server_except_through_the_proxy_and_turn(topology: Path) -> None:
    for proto in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, proto) as s, pytest.raises(OSError) as err:
            s.connect((SERVER, PORT))
            s.send(b"x")
        assert err.value.errno == errno.ENETUNREACH


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_media_flows_through_coturn_only(topology: Path, transport: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if transport == "tls":  # the client trusts the TURN server's certificate (made for 10.77.1.1)
        monkeypatch.setenv("SSL_CERT_FILE", str(topology))
    wanted = {"udp": "turn:", "tcp": "turn:", "tls": "turns:"}[transport]
    url_transport = "udp" if transport == "udp" else "tcp"

    async def join(identity: str, role: str, **peer_kw: Any) -> MediaParticipant:
        ws = await WsClient.connect(f"ws://{TURN_IN}:{PORT}/ws")
        reply = await ws.join(token(ROOM, identity, role))
        assert reply["type"] == "joined", reply
        [turn] = [s for s in reply["ice_servers"] if s.get("username")]
        expiry, _, user = turn["username"].partition(":")
        assert user == reply["participant"]["participant_id"] and int(expiry) > time.time() + 3600
        urls = [u for u in turn["urls"] if u.startswith(wanted) and u.endswith(f"transport={url_transport}")]
        assert len(urls) == 1, turn["urls"]
        peer = ClientPeer(identity, host_addresses=(CLIENT,), ice_servers=[{**turn, "urls": urls}], **peer_kw)
        return MediaParticipant(ws, peer)

    presenter = await join(f"dr-zhou-{transport}", "host", video_codec="VP8", fps=20)
    viewer = await join(f"student-{transport}", "viewer")
    try:
        [track] = await presenter.publish(video=True)
        reply = await viewer.ws.request("subscribe", track_ids=[track["track_id"]])
        assert reply["type"] == "ok", reply
        received = await viewer.peer.wait_track(track["track_id"], timeout_s(20))
        await received.wait_frames(30, timeout_s(30))
        assert viewer.peer.selected_candidate_types() == ("relay", "host")
        assert presenter.peer.selected_candidate_types() == ("relay", "host")
        # and the relays ride the transport asked for: TCP connections to coturn's port for tcp/tls
        out = subprocess.run(["ss", "-Htn", "state", "established", "dst", TURN_IN], capture_output=True,
                             text=True, check=True).stdout
        turn_port = {"udp": None, "tcp": 3478, "tls": 443}[transport]
        tcp_to_turn = [line for line in out.splitlines() if f"{TURN_IN}:{turn_port}" in line]
        assert len(tcp_to_turn) == (0 if turn_port is None else 2), out
    finally:
        await viewer.close()
        await presenter.close()
