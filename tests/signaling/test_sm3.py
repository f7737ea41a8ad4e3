"""SM3 (GB/T 32905-2016) against the standard's Appendix A examples and OpenSSL's, when present."""

import hashlib
import random

import pytest

from signaling.sm3 import sm3_hex


def test_standard_examples() -> None:
    assert sm3_hex(b"abc") == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    assert sm3_hex(b"abcd" * 16) == "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"


@pytest.mark.skipif("sm3" not in hashlib.algorithms_available, reason="OpenSSL without SM3")
def test_matches_openssl_at_every_padding_boundary() -> None:
    rng = random.Random(7)
    for n in [*range(0, 130), 1000, 4097]:
        data = bytes(rng.randrange(256) for _ in range(n))
        assert sm3_hex(data) == hashlib.new("sm3", data).hexdigest(), n
