"""Files people can use: one file per participant, without transcoding, and crash-cut files mended.

The recorder writes one file per track (so a late or silent track never holds back another);
`remux_participants` then copies each participant's audio and video packets, as they are, into
one file: WebM for VP8/Opus, Matroska for H.264. The packets keep the session-clock timestamps,
so files of one session still line up. Muxed into a seekable file, each output gets its Cues
(the seek index) in the trailer. `rewrite_media` copies a crash-cut track file (no trailer, no
Cues) into a complete one the same way. Both run offline: a worker thread or the CLI.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

from recorder import crypto
from recorder.crypto import Encryption, MasterKey
from recorder.manifest import FileEntry, file_sha256, read_manifest, write_manifest

log = logging.getLogger(__name__)

PARTICIPANT_MEDIA_KIND = "participant_media"
WEBM_CODECS = frozenset({"vp8", "vp9", "opus"})


@dataclass(frozen=True, slots=True)
class RemuxResult:
    """One output file: its name, the packets copied per input, and whether an input ended early."""

    name: str
    packets: int
    damaged_inputs: int


def session_encryption(directory: Path, master: MasterKey | None) -> Encryption:
    """How new files of the session in `directory` are written: with the session's own data key
    (unwrapped from one of its encrypted files) when it is encrypted, else plain."""
    for path in sorted(directory.iterdir()):
        if path.is_file() and crypto.is_encrypted(path):
            if master is None:
                raise crypto.DecryptionError(f"{directory.name} is encrypted and no recordings key is configured")
            try:
                with crypto.EncryptedFile(path, "r", master=master) as f:
                    return Encryption(f._key)
            except crypto.DecryptionError:
                continue  # a torn header (power cut): another file of the session has the key
    if read_manifest(directory, master).encryption is not None:
        raise crypto.DecryptionError(f"no file of {directory.name} holds a readable session key")
    return Encryption()


def _packets(container: Any, index: int, damaged: list[int]) -> Iterator[tuple[float, int, Any]]:
    """(dts in seconds, input index, packet) of one input until its end or its damage."""
    try:
        for packet in container.demux():
            if packet.dts is None or packet.size == 0:
                continue
            yield float(packet.dts * packet.time_base), index, packet
    except (av.error.FFmpegError, crypto.DecryptionError, OSError) as exc:
        log.info("remux: input %d ends early: %s", index, exc)
        damaged.append(index)


def copy_packets(inputs: list[Path], output: Path, encryption: Encryption, master: MasterKey | None) -> RemuxResult:
    """Mux every stream of `inputs` into `output` (created; never overwrites) without decoding."""
    files = [crypto.open_for_reading(p, master) for p in inputs]
    containers: list[Any] = []
    out_file: Any = None
    try:
        for f in files:
            containers.append(av.open(f, "r"))
        codecs = {s.codec_context.name for c in containers for s in c.streams}
        fmt = "webm" if codecs <= WEBM_CODECS else "matroska"
        out_file = encryption.create(output)
        out = av.open(out_file, "w", format=fmt)
        mapping: dict[tuple[int, int], Any] = {}
        for i, c in enumerate(containers):
            for s in c.streams:
                o = out.add_stream_from_template(s)
                o.time_base = s.time_base
                mapping[(i, s.index)] = o
        damaged: list[int] = []
        count = 0
        last_dts: dict[Any, int] = {}
        for _t, i, packet in heapq.merge(*(_packets(c, i, damaged) for i, c in enumerate(containers)),
                                         key=lambda item: (item[0], item[1])):
            target = mapping[(i, packet.stream.index)]
            if last_dts.get(target, -1) >= packet.dts:
                continue  # a muxer needs increasing timestamps per stream
            last_dts[target] = packet.dts
            packet.stream = target
            out.mux(packet)
            count += 1
        out.close()
        return RemuxResult(output.name, count, len(damaged))
    except BaseException:
        if out_file is not None:
            out_file.close()
            output.unlink(missing_ok=True)
        raise
    finally:
        if out_file is not None:
            out_file.close()
        for c in containers:
            c.close()
        for f in files:
            f.close()


def rewrite_media(path: Path, master: MasterKey | None, encryption: Encryption) -> RemuxResult:
    """Replace a (crash-cut) track file by a complete copy of what is readable in it, with Cues."""
    tmp = path.with_name(f".{path.stem}.repair{path.suffix}")
    tmp.unlink(missing_ok=True)
    result = copy_packets([path], tmp, encryption, master)
    os.replace(tmp, path)
    return RemuxResult(path.name, result.packets, result.damaged_inputs)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:40] or "anon"


def remux_participants(directory: Path, master: MasterKey | None = None) -> list[RemuxResult]:
    """One file per participant with media (`participant_<id>.webm|.mkv`), added to the manifest
    as kind `participant_media`. Files already made are kept. Returns what was made."""
    manifest = read_manifest(directory, master)
    encryption = session_encryption(directory, master)
    tracks: dict[str, list[FileEntry]] = {}
    for f in manifest.files:
        if f.kind in ("video", "audio") and (directory / f.name).exists() and f.frame_count > 0:
            tracks.setdefault(f.participant_id, []).append(f)
    done = {f.participant_id for f in manifest.files if f.kind == PARTICIPANT_MEDIA_KIND}
    results = []
    for pid, files in tracks.items():
        if pid in done:
            continue
        webm = all(f.codec.lower() in WEBM_CODECS for f in files)
        out = directory / f"participant_{_safe(pid)}{'.webm' if webm else '.mkv'}"
        out.unlink(missing_ok=True)  # a half-made file of an interrupted run
        files.sort(key=lambda f: (f.kind != "video", f.name))  # video first: players pick stream 0
        result = copy_packets([directory / f.name for f in files], out, encryption, master)
        results.append(result)
        manifest.files.append(FileEntry(
            name=out.name, kind=PARTICIPANT_MEDIA_KIND, track_id="+".join(f.track_id for f in files),
            participant_id=pid, codec="+".join(f.codec for f in files),
            start_offset_s=min((f.start_offset_s or 0.0) for f in files),
            duration_s=max((f.start_offset_s or 0.0) + f.duration_s for f in files)
            - min((f.start_offset_s or 0.0) for f in files),
            frame_count=result.packets, size_bytes=out.stat().st_size,
            sha256=file_sha256(out), details={"sources": [f.name for f in files]}))
    if results:
        write_manifest(directory, manifest, encryption)
    return results



def compose(directory: Path, output: Path, master: MasterKey | None = None) -> Path:
    """One transcoded file for the library: every participant's video side by side, audio mixed
    (ffmpeg, offline). Needs the `ffmpeg` program. Plain sessions only (encrypted: decrypt first)."""
    import shutil
    import subprocess

    manifest = read_manifest(directory, master)
    if manifest.encryption is not None:
        raise ValueError("compose works on plain sessions: export the decrypted files first")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise FileNotFoundError("compose needs the ffmpeg program")
    videos = [f for f in manifest.files if f.kind == "video" and f.frame_count > 0]
    audios = [f for f in manifest.files if f.kind == "audio" and f.frame_count > 0]
    if not videos:
        raise ValueError("the session has no video to compose")
    args = [ffmpeg, "-y", "-loglevel", "error"]
    for f in videos + audios:
        args += ["-i", str(directory / f.name)]
    # every input keeps its session-clock timestamps; scale to one height, then stack
    parts = [f"[{i}:v]setpts=PTS,scale=-2:360,fps=25[v{i}]" for i in range(len(videos))]
    if len(videos) > 1:
        parts.append("".join(f"[v{i}]" for i in range(len(videos))) + f"hstack=inputs={len(videos)}[v]")
    else:
        parts.append("[v0]null[v]")
    maps = ["-map", "[v]"]
    if audios:
        first = len(videos)
        parts.append("".join(f"[{first + i}:a]" for i in range(len(audios)))
                     + f"amix=inputs={len(audios)}:normalize=0[a]")
        maps += ["-map", "[a]"]
    args += ["-filter_complex", ";".join(parts), *maps, "-c:v", "libvpx", "-b:v", "1M",
             "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus", str(output)]
    with contextlib.suppress(FileNotFoundError):
        output.unlink()
    subprocess.run(args, check=True, timeout=3600)
    return output
