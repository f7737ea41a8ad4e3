"""The browser client speaks only the protocol the server knows (protocol/signaling.py and
protocol/waveforms.py): every message it sends exists with those fields, every server
message it handles exists, every waveform frame type it decodes exists.

Convention in clients/web/js: a signaling message is written as an object literal starting with
`{ type: "..."` (WebRTC descriptions are written `{ sdp, type: ... }`), handlers as `.on("...")`,
waveform frame types as `case "...":` in waveforms.js.
"""

from __future__ import annotations

import dataclasses
import re
import typing

import numpy as np
import pytest

from protocol import signaling as wire
from protocol import waveforms as ww
from signaling import roles
from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.browser]

WEB = REPO_ROOT / "clients" / "web"
SENT = re.compile(r"\{\s*type:\s*\"([a-z_]+)\"((?:[^{}]|\{[^{}]*\})*)\}")
KEY = re.compile(r"(?:^|,)\s*([a-z_]+)\s*(?=[:,]|$)")
HANDLED = re.compile(r"\.on\(\"([a-z_]+)\"")
CASES = re.compile(r"case \"([a-z_]+)\":")


def _js() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((WEB / "js").glob("*.js"))}


def _fields(body: str) -> set[str]:
    depth, flat = 0, []
    for ch in body:  # keep only the top level of the object literal
        depth += ch in "({["
        if depth == 0:
            flat.append(ch)
        depth -= ch in ")}]"
    return set(KEY.findall("".join(flat)))


def test_every_sent_message_and_field_exists_in_the_wire_module() -> None:
    sent: dict[str, set[str]] = {}
    for text in _js().values():
        for msg_type, body in SENT.findall(text):
            sent.setdefault(msg_type, set()).update(_fields(body))
    assert {"join", "publish", "sdp", "candidate", "mute", "promote", "raise_hand"} <= set(sent), sent
    for msg_type, fields in sent.items():
        assert msg_type in wire.CLIENT_MESSAGES, f"client sends unknown type {msg_type!r}"
        known = {f.name for f in dataclasses.fields(wire.CLIENT_MESSAGES[msg_type])}
        assert fields <= known, f"{msg_type}: unknown fields {fields - known} (wire has {known})"


def test_every_handled_server_message_exists() -> None:
    server_types = {cls.TYPE for cls in typing.get_args(wire.ServerMessage)}
    handled = {t for text in _js().values() for t in HANDLED.findall(text)}
    assert {"joined", "sdp", "participant_joined", "recording", "quality"} - {"joined"} <= handled
    assert handled <= server_types, f"handlers for unknown server messages: {handled - server_types}"


def test_every_decoded_waveform_frame_type_exists() -> None:
    chunk = ww.Chunk("s", 0, 1.0, np.zeros((1, 2), np.int16))
    announce = ww.Announce("s", (ww.ChannelInfo("II", "mV", 200.0, 0),), 250.0)
    samples = [ww.StreamAnnounce("p", announce), ww.ViewerChunk(chunk, True), ww.Analysis("s"),
               ww.Numerics("s", 1.0, {}), ww.Gap("s", 0, 1, False), ww.Skipped("s", 0, 1, 1),
               ww.StreamEnded("s", "x"), ww.Ack("s", 0),
               ww.WaveformError(ww.WaveformErrorReason.INTERNAL, "x")]
    import msgpack

    server_types = {msgpack.unpackb(ww.encode(m))["type"] for m in samples}
    decoded = set(CASES.findall(_js()["waveforms.js"]))
    assert {"announce", "chunk", "analysis", "numerics", "gap", "skipped", "stream_ended"} <= decoded
    assert decoded <= server_types, decoded - server_types


def test_pages_load_only_local_scripts() -> None:
    for page in WEB.glob("*.html"):
        text = page.read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), f"{page.name} fetches from elsewhere"


def test_permissions_come_from_the_server_not_a_copy_of_the_matrix() -> None:
    """The pages decide what to offer from `joined.permissions` (signaling/roles.py actions):
    every action they ask about exists, and no role list or role test stands in for it."""
    js = _js()
    asked = {a for text in js.values() for a in re.findall(r"\bmay\(\s*\"([a-z_]+)\"", text)}
    actions = {a.value for a in roles.Action}
    assert {"moderate", "record", "raise_hand"} <= asked, asked
    assert asked <= actions, f"pages ask about unknown actions: {asked - actions}"
    assert "j.permissions" in js["room.js"], "room.js must read joined.permissions"
    role_names = "|".join(r.value for r in roles.Role)
    role_list = re.compile(rf"\[\s*\"({role_names})\"\s*(,\s*\"({role_names})\"\s*)*\]")
    for name, text in js.items():
        assert not role_list.search(text), f"{name}: a list of roles (a permission matrix copy?)"
        assert "mayPublish(" not in text and "MODERATOR_ROLES" not in text, name
        # the only role test left is layout: the host is shown as the presenter
        tests = re.findall(rf"role\s*[!=]==?\s*\"({role_names})\"", text)
        assert set(tests) <= {"host", "monitor", "speaker"}, f"{name}: role tests {tests}"
