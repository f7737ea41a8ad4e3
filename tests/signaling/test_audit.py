"""The hash-chained audit log: what is written verifies; edits, deletions and reordering are found."""

import json
from pathlib import Path

import pytest

from signaling.audit import AuditLog, verify_chain
from signaling.effects import Audit


@pytest.mark.parametrize("alg", ["sha256", "sm3"])
def test_chain_verifies_and_continues_across_restarts(tmp_path: Path, alg: str) -> None:
    path = tmp_path / "audit.jsonl"
    for run in range(2):  # a restarted server continues the file's chain
        log = AuditLog(path, hash_alg=alg)
        for i in range(5):
            log.record(Audit("join", "c1", f"dr-{run}-{i}", "expert", {"n": i}), 1.8e9 + i)
        log.close()
    report = verify_chain(path)
    assert report.ok and report.records == 10
    lines = path.read_text().splitlines()
    assert json.loads(lines[5])["prev"] == json.loads(lines[4])["hash"]

    def broken(new_lines: list[str]) -> int | None:
        path.write_text("\n".join(new_lines) + "\n")
        r = verify_chain(path)
        assert not r.ok
        return r.bad_line

    assert broken([lines[0], lines[1].replace("dr-0-1", "dr-0-9"), *lines[2:]]) == 2  # edited
    assert broken([lines[0], *lines[2:]]) == 2  # deleted
    assert broken([lines[1], lines[0], *lines[2:]]) == 1  # reordered
    assert broken(lines[:-1] + ["not json"]) == 10


def test_unknown_hash_is_refused() -> None:
    with pytest.raises(ValueError):
        AuditLog(None, hash_alg="md5")
