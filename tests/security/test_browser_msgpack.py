"""The browser's msgpack decoder (clients/web/js/msgpack.js) against Python's msgpack on the
shared fixtures in fixtures/msgpack_cases.json: same values where Python decodes, a refusal where
Python refuses, and always a refusal for a `__proto__` key (prototype pollution)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.conftest import REPO_ROOT, timeout_s

FIXTURES = Path(__file__).with_name("fixtures") / "msgpack_cases.json"
DECODER = REPO_ROOT / "clients" / "web" / "js" / "msgpack.js"

RUNNER = """
import { decode } from %s;
import { readFileSync } from "node:fs";
const cases = JSON.parse(readFileSync(process.argv[2], "utf8")).cases;
const plain = (v) => v instanceof Uint8Array ? { bin: Buffer.from(v).toString("hex") }
  : Array.isArray(v) ? v.map(plain)
  : v && typeof v === "object" ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]))
  : v;
const out = cases.map((c) => {
  try {
    const v = decode(Buffer.from(c.hex, "hex"));
    return { ok: true, value: plain(v), proto_intact: v === null || typeof v !== "object" || Object.getPrototypeOf(v) === Object.prototype || Array.isArray(v) };
  } catch (e) { return { ok: false, error: String(e.message) }; }
});
console.log(JSON.stringify(out));
"""


def _python(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"bin": value.hex()}
    if isinstance(value, list):
        return [_python(v) for v in value]
    if isinstance(value, dict):
        return {k: _python(v) for k, v in value.items()}
    return value


def _has_proto(value: Any) -> bool:
    if isinstance(value, dict):
        return "__proto__" in value or any(_has_proto(v) for v in value.values())
    return isinstance(value, list) and any(_has_proto(v) for v in value)


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_browser_decoder_matches_python_and_refuses_proto_keys(tmp_path: Path) -> None:
    runner = tmp_path / "run.mjs"
    runner.write_text(RUNNER % json.dumps(DECODER.as_uri()))
    out = subprocess.run(["node", str(runner), str(FIXTURES)], capture_output=True, text=True,
                         timeout=timeout_s(30), check=True)
    results = json.loads(out.stdout)
    cases = json.loads(FIXTURES.read_text())["cases"]
    assert len(results) == len(cases) >= 10
    for case, js in zip(cases, results, strict=True):
        try:
            expected: Any = msgpack.unpackb(bytes.fromhex(case["hex"]), raw=False)
        except Exception:
            assert not js["ok"], f"{case['name']}: Python refuses it, the browser decoded {js}"
            continue
        if isinstance(expected, msgpack.ExtType):  # the waveform wire has none: the decoder refuses
            assert not js["ok"], case["name"]
            continue
        if _has_proto(expected):
            assert not js["ok"] and "__proto__" in js["error"], f"{case['name']}: {js}"
            continue
        assert js["ok"], f"{case['name']}: {js}"
        assert js["proto_intact"], case["name"]
        value = _python(expected)
        assert js["value"] == json.loads(json.dumps(value)), case["name"]
