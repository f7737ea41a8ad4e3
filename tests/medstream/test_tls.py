"""TLS on the signaling port: HTTPS and WSS with a certificate made in the test (cryptography),
the same port refuses plain HTTP, and a client that does not trust the certificate gets nowhere."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers import WsClient, running_app, token


def self_signed(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate for `host` (as an IP SAN) and its key, PEM files in `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "medstream test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_https_and_wss_on_one_port_and_plain_http_refused(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    async with running_app(tls_cert=cert, tls_key=key, api_key="k" * 32) as app:
        assert app.url.startswith("https://") and app.ws_url.startswith("wss://")
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{app.url}/healthz", ssl=trust) as r:
                assert r.status == 200 and (await r.json())["status"] == "ok"
            async with s.get(f"{app.url}/api/v1/rooms", ssl=trust, headers={"Authorization": "Bearer " + "k" * 32}) as r:
                assert r.status == 200
            with pytest.raises(aiohttp.ClientError):  # plain HTTP to the TLS port
                async with s.get(f"http://127.0.0.1:{app.port}/healthz") as r:
                    await r.read()
            with pytest.raises(aiohttp.ClientConnectorCertificateError):  # a client that does not trust it
                async with s.get(f"{app.url}/healthz") as r:
                    await r.read()
        client = await WsClient.connect(app.ws_url, ssl=trust)
        assert (await client.join(token("c1", "dr-wang", "host", kind="consultation")))["type"] == "joined"
        assert (await client.request("ping"))["type"] == "pong"
        await client.close()


async def test_a_certificate_without_its_key_does_not_start(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    _, other_key = self_signed(tmp_path / "other")
    with pytest.raises(ssl.SSLError):
        async with running_app(tls_cert=cert, tls_key=other_key):
            pass
