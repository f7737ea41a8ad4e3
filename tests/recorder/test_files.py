"""Files people can use, kept safe: per-participant remux, EDF+, encryption at rest, power cuts.

Real encoded VP8/Opus frames and a real MIT-BIH record go through a real SessionRecorder; the
outputs are read back by independent tools (ffprobe, PyAV, pyedflib, wfdb).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pyedflib
import pytest
import wfdb

from recorder import RecorderConfig, SessionRecorder, WaveformStreamInfo, crypto
from recorder import manifest as manifest_module
from recorder.crypto import EncryptedFile, MasterKey, SessionKey
from recorder.edf_export import export_session
from recorder.library import list_sessions
from recorder.manifest import read_manifest
from recorder.playback import session_timeline
from recorder.remux import remux_participants
from recorder.repair import repair_session
from tests.recorder.media import Clip, frames

T0 = 1_760_000_000.0
MASTER = MasterKey(bytes(range(32)))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def ffprobe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True, timeout=30)
    return json.loads(out.stdout)


def has_cues(data: bytes) -> bool:
    return bytes.fromhex("1C53BB6B") in data  # the Matroska Cues element


def record_session(root: Path, vp8: Clip, opus: Clip, ecg: Path, *, master: MasterKey | None = None,
                   algorithm: str = "aes-256-gcm", stop: bool = True) -> tuple[SessionRecorder, np.ndarray]:
    clock = Clock()
    rec = SessionRecorder(RecorderConfig(root, master_key=master, encryption_algorithm=algorithm,
                                         cluster_time_limit_ms=250),
                          room="icu-3", clock=clock)
    rec.start("dr-grey")
    rec.add_participant("pat-1", "expert", "pat-1", "Patient side")
    rec.add_participant("dr-grey", "host", "dr-grey", "Dr Grey")
    video = rec.add_track("v1", "pat-1", "video", "VP8")
    audio = rec.add_track("a1", "pat-1", "audio", "opus")
    for f in sorted(frames(vp8, "v1", start_at=T0 + 0.5) + frames(opus, "a1", start_at=T0 + 0.4),
                    key=lambda f: f.received_at):
        (video if f.kind == "video" else audio).on_frame(f)
    record = wfdb.rdrecord(str(ecg), sampfrom=0, sampto=360 * 4, physical=False)
    samples = record.d_signal.T.astype(np.int16)
    info = WaveformStreamInfo(tuple(record.sig_name), tuple(record.units), tuple(record.adc_gain),
                              tuple(int(b) for b in record.baseline), float(record.fs))
    wave = rec.add_waveform_stream("bed-1", "mon-1", info)
    clock.now = T0 + 1.0
    wave.on_chunk(0, samples[:, :720])
    wave.on_chunk(720, samples[:, 720:])
    ref = wfdb.rdann(str(ecg), "atr", sampto=360 * 4)
    for s, sym in zip(ref.sample, ref.symbol, strict=True):
        if sym in "NV":
            wave.on_beat(int(s), sym)
    wave.on_alarm(400, "tachycardia high: HR 130")
    rec.checkpoint_blocking(30)
    if stop:
        clock.now = T0 + 5
        rec.stop_blocking("dr-grey")
    return rec, samples


def test_one_file_per_participant_seek_index_edf_and_timeline(tmp_path: Path, vp8_clip: Clip, opus_clip: Clip,
                                                               ecg_data_dir: Path) -> None:
    rec, samples = record_session(tmp_path, vp8_clip, opus_clip, ecg_data_dir / "mitdb" / "119")
    directory = rec.directory
    assert directory is not None
    # finished track files carry their seek index
    assert has_cues((directory / "video01_pat-1.webm").read_bytes())
    [made] = remux_participants(directory)
    out = directory / made.name
    assert out.name == "participant_pat-1.webm" and made.damaged_inputs == 0
    probe = ffprobe(out)
    assert sorted(s["codec_name"] for s in probe["streams"]) == ["opus", "vp8"]
    assert probe["format"]["format_name"].startswith("matroska,webm")
    assert has_cues(out.read_bytes())
    # without transcoding: every payload is the publisher's, in order, per stream
    with av.open(str(out)) as c:
        got = {s.type: [] for s in c.streams}
        for p in c.demux():
            if p.size:
                got[p.stream.type].append(bytes(p))
    assert got["video"] == vp8_clip.payloads and got["audio"] == opus_clip.payloads
    entry = next(f for f in read_manifest(directory).files if f.kind == "participant_media")
    assert entry.start_offset_s == pytest.approx(0.4, abs=0.002) and entry.frame_count == 240
    assert remux_participants(directory) == []  # already made: kept

    # EDF+: digital samples equal the WFDB record, annotations carried over
    [edf] = export_session(directory)
    wf = wfdb.rdrecord(str(directory / "wave01_mon_1"), physical=False)
    with pyedflib.EdfReader(str(edf)) as r:
        assert r.filetype == pyedflib.FILETYPE_EDFPLUS
        assert r.getSignalLabels() == ["MLII", "V1"]
        for c in range(2):
            back = r.readSignal(c, digital=True)[:wf.sig_len]
            assert np.array_equal(back, wf.d_signal[:, c]) and np.array_equal(back, samples[c])
            phys = r.readSignal(c)[:wf.sig_len]
            want = (wf.d_signal[:, c] - wf.baseline[c]) / wf.adc_gain[c]
            assert np.allclose(phys, want, atol=1e-3)
        onsets, _, texts = r.readAnnotations()
    assert "V" in set(texts) and "alarm: tachycardia high: HR 130" in set(texts)
    ann = wfdb.rdann(str(directory / "wave01_mon_1"), "atr")
    assert len(texts) == len(ann.sample)
    assert np.allclose(sorted(onsets), np.sort(ann.sample) / 360.0, atol=1e-3)

    # the playback page's view of the session
    tl = session_timeline(directory, "/x/")
    [w] = tl["waveforms"]
    assert w["n_samples"] == samples.shape[1] and w["fs"] == 360.0
    assert {b[1] for b in w["beats"]} == {"N", "V"} and w["alarms"] == [[400, "tachycardia high: HR 130"]]
    assert [c["url"] for c in tl["combined"]] == ["/x/participant_pat-1.webm"]
    assert {e["kind"] for e in tl["events"]} >= {"joined", "alarm", "video_started", "audio_started"}


@pytest.mark.parametrize("algorithm", ["aes-256-gcm", "sm4-gcm"])
def test_encrypted_recording_is_unreadable_on_disk_and_identical_decrypted(
        tmp_path: Path, vp8_clip: Clip, opus_clip: Clip, ecg_data_dir: Path, algorithm: str) -> None:
    rec, samples = record_session(tmp_path / "enc", vp8_clip, opus_clip, ecg_data_dir / "mitdb" / "100",
                                  master=MASTER, algorithm=algorithm)
    directory = rec.directory
    assert directory is not None
    # the manifest names the participants: sealed like the files (it was plain JSON before)
    on_disk = (directory / "manifest.json").read_bytes()
    assert on_disk.startswith(crypto.MAGIC) and b"Dr Grey" not in on_disk and b"dr-grey" not in on_disk
    assert crypto.MAGIC == manifest_module._ENCRYPTED_MAGIC  # its reader knows the format without importing it
    with pytest.raises(crypto.DecryptionError, match="encrypted and no recordings key"):
        read_manifest(directory)
    [locked] = list_sessions(tmp_path / "enc")  # listed without the key: there, but unreadable
    assert "encrypted" in locked.error and locked.started_by is None
    [listed] = list_sessions(tmp_path / "enc", master=MASTER)
    assert listed.complete and listed.started_by == "dr-grey"
    manifest = read_manifest(directory, MASTER)
    assert manifest.encryption == {"algorithm": algorithm, "key_id": "k1"}
    assert {"Patient side", "Dr Grey"} <= {p.name for p in manifest.participants}
    raw_dat = samples.T.astype("<i2").tobytes()
    for f in manifest.files:
        data = (directory / f.name).read_bytes()
        assert data.startswith(crypto.MAGIC), f.name
        assert b"\x1a\x45\xdf\xa3" not in data and raw_dat[:64] not in data  # no EBML, no samples
    # decrypted: the same media and samples as a plain recording gives
    with crypto.open_for_reading(directory / "video01_pat-1.webm", MASTER) as f, av.open(f) as c:
        assert [bytes(p) for p in c.demux() if p.size] == vp8_clip.payloads
    assert crypto.read_bytes(directory / "wave01_mon_1.dat", MASTER) == raw_dat
    with pytest.raises(crypto.DecryptionError):
        crypto.read_bytes(directory / "wave01_mon_1.dat", MasterKey(bytes(32)))
    # remux and EDF+ of an encrypted session stay encrypted and decrypt to working files
    [made] = remux_participants(directory, MASTER)
    [edf] = export_session(directory, MASTER)
    for path in (directory / made.name, edf):
        assert path.read_bytes().startswith(crypto.MAGIC)
    plain = tmp_path / "edf.edf"
    plain.write_bytes(crypto.read_bytes(edf, MASTER))
    with pyedflib.EdfReader(str(plain)) as r:
        assert np.array_equal(r.readSignal(0, digital=True)[:samples.shape[1]], samples[0])
    tl = session_timeline(directory, "/x/", MASTER)
    assert tl["encrypted"] and len(tl["waveforms"][0]["beats"]) > 3
    manifest = read_manifest(directory, MASTER)  # remux and EDF+ rewrote it sealed, with their files
    assert {"participant_media", "edf"} <= {f.kind for f in manifest.files}
    assert (directory / "manifest.json").read_bytes().startswith(crypto.MAGIC)


def test_chunks_cannot_be_swapped_and_sm4_gcm_matches_rfc8998(tmp_path: Path) -> None:
    # RFC 8998 appendix A.1: SM4-GCM test vector
    from recorder.crypto import _seal
    sealed = _seal(2, bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"), bytes.fromhex("00001234567800000000ABCD"),
                   bytes.fromhex("AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
                                 "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"),
                   bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2"))
    assert sealed.hex().upper().endswith("83DE3541E4C2B58177E065A9BF7B62EC")
    assert sealed.hex().upper().startswith("17F399F08C67D5EE19D0DC9969C4BB7D")
    key = SessionKey.new(MASTER, "aes-256-gcm")
    path = tmp_path / "f.bin"
    data = os.urandom(10_000)
    with EncryptedFile(path, "x", key=key, chunk_bytes=1000) as f:
        f.write(data)
    with EncryptedFile(path, "r", master=MASTER) as f:
        assert f.read_range(2500, 3000) == data[2500:5500]  # a range reads only its chunks
    raw = bytearray(path.read_bytes())
    stride = 12 + 1000 + 16
    h = crypto.HEADER_BYTES
    raw[h:h + stride], raw[h + stride:h + 2 * stride] = raw[h + stride:h + 2 * stride], raw[h:h + stride]
    path.write_bytes(bytes(raw))
    with EncryptedFile(path, "r", master=MASTER) as f, pytest.raises(crypto.DecryptionError):
        f.read()


@pytest.mark.parametrize("master", [None, MASTER], ids=["plain", "encrypted"])
def test_a_power_cut_at_random_points_is_repaired_to_playable_files(
        tmp_path: Path, vp8_clip: Clip, opus_clip: Clip, ecg_data_dir: Path, master: MasterKey | None) -> None:
    """A session copied while recording (what a crash leaves: no trailers, no Cues), its files
    cut at random points (what a power cut leaves of unsynced writes), then repaired."""
    rng = np.random.default_rng(16)
    for trial in range(3):
        root = tmp_path / f"t{trial}"
        rec, samples = record_session(root, vp8_clip, opus_clip, ecg_data_dir / "mitdb" / "100",
                                      master=master, stop=False)
        assert rec.directory is not None
        cut = root / "cut" / rec.directory.name
        shutil.copytree(rec.directory, cut)
        rec.stop_blocking("dr-grey")
        assert not has_cues(crypto.read_bytes(cut / "video01_pat-1.webm", master))
        cut_at = {}
        for name in ("video01_pat-1.webm", "audio02_pat-1.webm", "wave01_mon_1.dat"):
            size = (cut / name).stat().st_size
            cut_at[name] = int(rng.integers(size // 3, size))
            with open(cut / name, "r+b") as f:
                f.truncate(cut_at[name])
        manifest = repair_session(cut, master)
        assert manifest.stop_reason == "interrupted" and manifest.repaired_at is not None
        files = {f.name: f for f in manifest.files}
        for name in ("video01_pat-1.webm", "audio02_pat-1.webm"):
            if not (cut / name).exists():  # set aside: only when nothing whole was left in it
                stride = 12 + crypto.DEFAULT_CHUNK_BYTES + 16
                assert master is not None and cut_at[name] < crypto.HEADER_BYTES + stride, (name, cut_at)
                assert (cut / f".{name}.damaged").exists() and name not in files
                continue
            plain = tmp_path / f"plain-{trial}-{name}"
            plain.write_bytes(crypto.read_bytes(cut / name, master))
            assert has_cues(plain.read_bytes())
            # decodes from start to end without an error, and seeks
            with av.open(str(plain)) as c:
                decoded = sum(1 for _ in c.decode(c.streams[0]))
                assert decoded == files[name].frame_count > 0
                c.seek(int(c.duration * 0.5) if c.duration else 0)
                next(c.decode(c.streams[0]))
        dat = crypto.read_bytes(cut / "wave01_mon_1.dat", master)
        with pytest.MonkeyPatch.context():
            hea = crypto.read_bytes(cut / "wave01_mon_1.hea", master)
        n = int(hea.split()[3])
        assert n == len(dat) // 4 == files["wave01_mon_1.dat"].frame_count
        assert np.array_equal(np.frombuffer(dat, "<i2").reshape(n, 2).T, samples[:, :n])
        if master is None:
            back = wfdb.rdrecord(str(cut / "wave01_mon_1"), physical=False)
            assert back.sig_len == n
        assert repair_session(cut, master) == manifest  # idempotent
