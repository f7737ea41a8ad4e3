"""Recordings encrypted at rest: a chunked AEAD file format, per-session data keys, a master key.

Why chunked: a recording is served with HTTP ranges and seeked by players, and the muxer writes
its trailer by seeking back; one AEAD over a whole file would mean reading (and re-writing) all
of it. Here the plaintext is cut into `chunk_size` pieces, each sealed on its own with a fresh
random 96-bit nonce and authenticated with the file id and its chunk index (so chunks cannot be
swapped or moved between files), so any range decrypts by reading only its chunks, and a chunk
rewritten in place gets a new nonce (no nonce reuse under one key).

    header (HEADER_BYTES): magic "MSENC1\\0\\0", algorithm, chunk size, file id, key id,
                           the session's data key wrapped (AEAD) by the master key
    chunk i:               nonce (12) | ciphertext (<= chunk_size) | tag (16)

Algorithms: AES-256-GCM, and SM4-GCM (GB/T 32907 block cipher in GCM, RFC 8998) for sites that
must use national cryptography; both from `cryptography` (OpenSSL). The data key of a session is
random, used for every file of that session, and stored only wrapped: the wrapping key is derived
from the master key with HKDF (SHA-256 for AES, SM3 for SM4) so one master key serves both.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"MSENC1\x00\x00"
HEADER_BYTES = 128
NONCE_BYTES = 12
TAG_BYTES = 16
DEFAULT_CHUNK_BYTES = 16 * 1024  # what a torn write can cost: 0.2 s of 600 kbit/s video
ALGORITHMS = {"aes-256-gcm": 1, "sm4-gcm": 2}
_KEY_BYTES = {1: 32, 2: 16}
ENV_KEY = "MEDSTREAM_RECORDINGS_KEY"


class DecryptionError(ValueError):
    """A file is damaged, was tampered with, or needs another master key."""


# ---- the two AEADs -------------------------------------------------------------------------

def _seal(alg: int, key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    if alg == 1:
        return AESGCM(key).encrypt(nonce, plaintext, aad)
    enc = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
    enc.authenticate_additional_data(aad)
    return enc.update(plaintext) + enc.finalize() + enc.tag


def _open(alg: int, key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
    if len(sealed) < TAG_BYTES:
        raise DecryptionError(f"a sealed chunk needs >= {TAG_BYTES} bytes, got {len(sealed)}")
    try:
        if alg == 1:
            return AESGCM(key).decrypt(nonce, sealed, aad)
        dec = Cipher(algorithms.SM4(key), modes.GCM(nonce, sealed[-TAG_BYTES:])).decryptor()
        dec.authenticate_additional_data(aad)
        return dec.update(sealed[:-TAG_BYTES]) + dec.finalize()
    except InvalidTag:
        raise DecryptionError("authentication failed: damaged, tampered with, or another key") from None


# ---- keys ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class MasterKey:
    """The site's master key (32 bytes) and a short id written into every file it wraps a key for."""

    key: bytes
    key_id: str = "k1"

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise ValueError(f"the recordings master key must be 32 bytes, got {len(self.key)}")
        if not 1 <= len(self.key_id.encode()) <= 16:
            raise ValueError(f"key id must be 1-16 bytes, got {self.key_id!r}")

    @classmethod
    def parse(cls, text: str | bytes, key_id: str = "k1") -> MasterKey:
        """32 raw bytes, or 64 hex digits, or base64 of 32 bytes (a key file or the environment)."""
        raw = text.encode() if isinstance(text, str) else text
        if len(raw) == 32 and not raw.strip().isalnum():
            return cls(raw, key_id)
        stripped = raw.strip()
        for decode in (binascii.unhexlify, base64.b64decode):
            try:
                key = decode(stripped)
            except (binascii.Error, ValueError):
                continue
            if len(key) == 32:
                return cls(key, key_id)
        if len(raw) == 32:
            return cls(raw, key_id)
        raise ValueError("the recordings key must be 32 bytes: raw, 64 hex digits or base64")

    @classmethod
    def load(cls, path: Path | None = None, environ: dict[str, str] | None = None) -> MasterKey:
        """From `path` (a key file) or else `$MEDSTREAM_RECORDINGS_KEY`. Raises ValueError if neither."""
        if path is not None:
            return cls.parse(Path(path).read_bytes())
        env = os.environ if environ is None else environ
        if env.get(ENV_KEY):
            return cls.parse(env[ENV_KEY])
        raise ValueError(f"recordings encryption needs a key file or ${ENV_KEY}")

    def wrapping_key(self, alg: int) -> bytes:
        """The key that wraps data keys of `alg` (HKDF-SHA256 for AES, HKDF-SM3 for SM4)."""
        algorithm: hashes.HashAlgorithm = hashes.SHA256() if alg == 1 else hashes.SM3()
        return HKDF(algorithm, _KEY_BYTES[alg], salt=None,
                    info=b"medstream recordings key wrap %d" % alg).derive(self.key)


@dataclass(frozen=True, slots=True)
class SessionKey:
    """A session's random data key and its wrapped form (what goes into each file's header)."""

    alg: int
    key: bytes
    key_id: str
    wrapped: bytes

    @classmethod
    def new(cls, master: MasterKey, algorithm: str = "aes-256-gcm") -> SessionKey:
        """A fresh data key for one session, wrapped by `master`. Raises ValueError on an unknown algorithm."""
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {sorted(ALGORITHMS)}, got {algorithm!r}")
        alg = ALGORITHMS[algorithm]
        key = secrets.token_bytes(_KEY_BYTES[alg])
        nonce = secrets.token_bytes(NONCE_BYTES)
        wrapped = nonce + _seal(alg, master.wrapping_key(alg), nonce, key, b"medstream data key")
        return cls(alg, key, master.key_id, wrapped)

    @classmethod
    def unwrap(cls, master: MasterKey, alg: int, key_id: str, wrapped: bytes) -> SessionKey:
        """The data key from a file header. Raises DecryptionError with another master key."""
        if key_id != master.key_id:
            raise DecryptionError(f"file was encrypted with master key {key_id!r}, have {master.key_id!r}")
        key = _open(alg, master.wrapping_key(alg), wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:],
                    b"medstream data key")
        return cls(alg, key, key_id, wrapped)


# ---- the file format -----------------------------------------------------------------------

def is_encrypted(path: Path) -> bool:
    """Whether `path` starts with the encrypted-file magic."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _header(key: SessionKey, file_id: bytes, chunk_bytes: int) -> bytes:
    kid = key.key_id.encode()
    body = MAGIC + struct.pack("<BI16s16sH", key.alg, chunk_bytes, file_id, kid, len(key.wrapped)) + key.wrapped
    if len(body) > HEADER_BYTES:
        raise ValueError("wrapped key too long for the header")
    return body.ljust(HEADER_BYTES, b"\x00")


class EncryptedFile(io.RawIOBase):
    """A random-access file-like over the chunked format: read, write, seek anywhere, like a plain
    file (PyAV muxes into it, numpy writes samples at their place, HTTP reads ranges of it).

    Writes go to an in-memory chunk that is sealed and written out when another chunk is touched,
    on `flush()` and on `close()`; so what a crash can lose is what `flush()` had not written yet.
    `master`: to open an existing file; `key`: the session's key to create a new one (mode "x").
    """

    def __init__(self, path: Path, mode: str = "r", *, master: MasterKey | None = None,
                 key: SessionKey | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        super().__init__()
        if mode not in ("r", "r+", "x"):
            raise ValueError(f"mode must be 'r', 'r+' or 'x', got {mode!r}")
        self.path = Path(path)
        self._writable = mode != "r"
        if mode == "x":
            if key is None:
                raise ValueError("creating an encrypted file needs the session key")
            self._f: Any = open(self.path, "xb+")  # noqa: SIM115 - owned for the object's life
            self._key = key
            self._file_id = secrets.token_bytes(16)
            self._chunk = chunk_bytes
            self._f.write(_header(key, self._file_id, chunk_bytes))
            self._size = 0
        else:
            if master is None and key is None:
                raise ValueError("opening an encrypted file needs the master key")
            self._f = open(self.path, "rb+" if self._writable else "rb")  # noqa: SIM115
            head = self._f.read(HEADER_BYTES)
            if len(head) < HEADER_BYTES or not head.startswith(MAGIC):
                self._f.close()
                raise DecryptionError(f"{self.path.name} is not an encrypted recording file")
            alg, chunk, file_id, kid, wlen = struct.unpack_from("<BI16s16sH", head, len(MAGIC))
            if alg not in _KEY_BYTES or not 0 < chunk <= 1 << 24:
                self._f.close()
                raise DecryptionError(f"{self.path.name}: unknown algorithm {alg} or chunk size {chunk}")
            off = len(MAGIC) + struct.calcsize("<BI16s16sH")
            wrapped = head[off:off + wlen]
            key_id = kid.rstrip(b"\x00").decode(errors="replace")
            self._key = key if key is not None and key.wrapped == wrapped else \
                SessionKey.unwrap(master, alg, key_id, wrapped)  # type: ignore[arg-type]
            self._file_id = file_id
            self._chunk = chunk
            self._size = self._plain_size(os.fstat(self._f.fileno()).st_size)
        self._pos = 0
        self._index = -1  # the chunk held in memory
        self._buf = bytearray()
        self._dirty = False

    # -- geometry
    @property
    def _stride(self) -> int:
        return NONCE_BYTES + self._chunk + TAG_BYTES

    def _plain_size(self, file_size: int) -> int:
        body = max(0, file_size - HEADER_BYTES)
        full, rest = divmod(body, self._stride)
        return full * self._chunk + max(0, rest - NONCE_BYTES - TAG_BYTES)

    @property
    def size(self) -> int:
        """Plaintext size in bytes."""
        return max(self._size, self._index * self._chunk + len(self._buf)) if self._index >= 0 else self._size

    # -- io.RawIOBase
    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return self._writable

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        n = 0
        while n < len(view) and self._pos < self.size:
            index, within = divmod(self._pos, self._chunk)
            self._load(index)
            part = self._buf[within:within + len(view) - n]
            if not part:
                break
            view[n:n + len(part)] = part
            n += len(part)
            self._pos += len(part)
        return n

    def write(self, b: Any) -> int:
        if not self._writable:
            raise io.UnsupportedOperation("not open for writing")
        data = memoryview(b).cast("B")
        if self._pos > self.size:  # a hole: zeros, as a plain file has
            gap_at, self._pos = self._pos, self.size
            self.write(bytes(gap_at - self._pos))
        done = 0
        while done < len(data):
            index, within = divmod(self._pos, self._chunk)
            self._load(index)
            take = min(len(data) - done, self._chunk - within)
            if within > len(self._buf):
                self._buf.extend(bytes(within - len(self._buf)))
            self._buf[within:within + take] = data[done:done + take]
            self._dirty = True
            done += take
            self._pos += take
        return done

    def flush(self) -> None:
        """Seal and write the chunk held in memory (then the OS has everything written so far)."""
        if self.closed or self._f.closed:
            return
        if self._writable:
            self._store()
            self._f.flush()

    def fileno(self) -> int:
        return self._f.fileno()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._writable:
                self._store()
        finally:
            self._f.close()
            super().close()

    def drop_damaged_tail(self) -> int:
        """Cut off a last chunk that does not authenticate (a write cut by a power loss), so the
        rest reads cleanly; returns the plaintext bytes dropped. Needs mode "r+"."""
        if not self._writable:
            raise io.UnsupportedOperation("drop_damaged_tail needs mode 'r+'")
        file_size = os.fstat(self._f.fileno()).st_size
        n_chunks = -(-max(0, file_size - HEADER_BYTES) // self._stride)
        if n_chunks == 0:
            return 0
        last = n_chunks - 1
        try:
            self._index = -1
            self._load(last)
            return 0
        except DecryptionError:
            before = self._size
            self._f.truncate(HEADER_BYTES + last * self._stride)
            self._size = last * self._chunk
            self._index, self._buf, self._dirty = -1, bytearray(), False
            return before - self._size

    def read_range(self, start: int, length: int) -> bytes:
        """`length` plaintext bytes from `start` (fewer at the end)."""
        self.seek(start)
        return self.read(length) or b""

    # -- chunks
    def _load(self, index: int) -> None:
        if index == self._index:
            return
        self._store()
        self._index = index
        self._buf = bytearray()
        self._f.seek(HEADER_BYTES + index * self._stride)
        raw = self._f.read(self._stride)
        if len(raw) > NONCE_BYTES + TAG_BYTES:
            self._buf = bytearray(_open(self._key.alg, self._key.key, raw[:NONCE_BYTES], raw[NONCE_BYTES:],
                                        self._aad(index)))

    def _store(self) -> None:
        if not self._dirty or self._index < 0:
            return
        nonce = secrets.token_bytes(NONCE_BYTES)  # fresh for every write of a chunk
        sealed = _seal(self._key.alg, self._key.key, nonce, bytes(self._buf), self._aad(self._index))
        self._f.seek(HEADER_BYTES + self._index * self._stride)
        self._f.write(nonce + sealed)
        self._size = max(self._size, self._index * self._chunk + len(self._buf))
        self._dirty = False

    def _aad(self, index: int) -> bytes:
        return self._file_id + struct.pack("<Q", index)


@dataclass(frozen=True, slots=True)
class Encryption:
    """How a recorder writes files: plain (`key` None) or encrypted with one session's key."""

    key: SessionKey | None = None
    chunk_bytes: int = DEFAULT_CHUNK_BYTES

    def create(self, path: Path) -> Any:
        """A new file at `path` (never overwriting), plain or encrypted, open for read and write."""
        if self.key is None:
            return open(path, "xb+", buffering=0)
        return EncryptedFile(path, "x", key=self.key, chunk_bytes=self.chunk_bytes)

    def write_bytes(self, path: Path, data: bytes) -> None:
        """Atomically replace `path` with `data` (temp + rename), encrypted if keyed."""
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.unlink(missing_ok=True)
        with self.create(tmp) as f:
            f.write(data)
        os.replace(tmp, path)


def open_for_reading(path: Path, master: MasterKey | None) -> Any:
    """`path` as a readable, seekable binary file: decrypted on the fly if it is encrypted.

    Raises DecryptionError for an encrypted file without (or with the wrong) master key."""
    if is_encrypted(path):
        if master is None:
            raise DecryptionError(f"{path.name} is encrypted and no recordings key is configured")
        return EncryptedFile(path, "r", master=master)
    return open(path, "rb")


def plain_size(path: Path, master: MasterKey | None) -> int:
    """Plaintext size of a (possibly encrypted) recording file."""
    if not is_encrypted(path):
        return path.stat().st_size
    with open_for_reading(path, master) as f:
        return int(f.size)


def read_bytes(path: Path, master: MasterKey | None) -> bytes:
    """The whole plaintext of a (possibly encrypted) small file (headers, annotations, chat)."""
    with open_for_reading(path, master) as f:
        return bytes(f.read())
