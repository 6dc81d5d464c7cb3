"""Transport security settings reach every client (issue 10, SECURITY.md "Transport").

- Kafka over TLS for real: a Tansu broker behind a TLS-terminating loopback proxy
  (Tansu 0.6.0's own ``--cert``/``--key`` cannot be given together, and its SCRAM
  exchange does not complete with aiokafka), so the client side is proven:
  ``app.security`` builds a context that verifies the broker against the CA and
  refuses a certificate from another CA.
- SASL/SCRAM: the settings land in aiokafka's and Faust's client configuration.
- PostgreSQL: TLS is in the DSN (``sslmode=verify-full``); the DSN never shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from app.security import aiokafka_security, faust_credentials, kafka_ssl_context
from app.settings import Settings
from devstack.broker import tansu_binary
from devstack.process import free_port, port_answers, spawn, stop_process, wait_until
from outlet_agent.config import OutletSettings
from outlet_agent.forwarder import make_producer

pytestmark = pytest.mark.e2e


def _cert(
    subject: str, issuer_key: Any, issuer: x509.Name | None, *, ca: bool
) -> tuple[Any, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return key, builder.sign(issuer_key or key, hashes.SHA256())


def _pem(path: Path, *items: Any) -> Path:
    out = b""
    for item in items:
        if isinstance(item, x509.Certificate):
            out += item.public_bytes(serialization.Encoding.PEM)
        else:
            out += item.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
    path.write_bytes(out)
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca = _cert("retail test CA", None, None, ca=True)
    srv_key, srv = _cert("127.0.0.1", ca_key, ca.subject, ca=False)
    _other_key, other_ca = _cert("someone else's CA", None, None, ca=True)
    return {
        "ca": _pem(d / "ca.pem", ca),
        "other_ca": _pem(d / "other.pem", other_ca),
        "cert": _pem(d / "server.pem", srv),
        "key": _pem(d / "server.key", srv_key),
    }


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def tls_broker(tmp_path: Path, pki: dict[str, Path]) -> AsyncIterator[str]:
    """Tansu on a plain port, advertised as the TLS port of a proxy in front of it."""
    plain, tls = free_port(), free_port()
    proc = spawn(
        [str(tansu_binary()), "broker",
         "--listener-url", f"tcp://127.0.0.1:{plain}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{tls}",
         "--storage-engine", "memory://tansu/"],
        log_path=tmp_path / "tansu.log",
    )  # fmt: skip
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki["cert"], pki["key"])

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", plain)
        await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))

    try:
        wait_until(lambda: port_answers(plain), timeout=20, what="Tansu")
        server = await asyncio.start_server(handle, "127.0.0.1", tls, ssl=ctx)
        try:
            yield f"127.0.0.1:{tls}"
        finally:
            server.close()
    finally:
        stop_process(proc)


async def test_kafka_over_tls_verifies_the_broker(tmp_path: Path, pki: dict[str, Path]) -> None:
    good = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=pki["ca"])
    wrong_ca = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=pki["other_ca"])
    async with tls_broker(tmp_path, pki) as bootstrap:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", **aiokafka_security(good)
        )
        await producer.start()
        try:
            await producer.send_and_wait("tls-topic", b"over tls", key=b"S1")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            "tls-topic", bootstrap_servers=bootstrap, auto_offset_reset="earliest",
            **aiokafka_security(good),
        )  # fmt: skip
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), 20)
            assert record.value == b"over tls"
        finally:
            await consumer.stop()
        # a broker whose certificate our CA did not sign is refused
        impostor = AIOKafkaProducer(
            bootstrap_servers=bootstrap, request_timeout_ms=3000, **aiokafka_security(wrong_ca)
        )
        with pytest.raises(Exception) as info:  # aiokafka wraps the SSL error its own way
            await asyncio.wait_for(impostor.start(), 15)
        await impostor.stop()
        assert not isinstance(info.value, AssertionError)


async def test_sasl_scram_settings_reach_aiokafka_and_faust(pki: dict[str, Path]) -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    settings = OutletSettings(
        store_id="S1",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="outlet-s1",
        kafka_sasl_password=SecretStr("pa55-word"),
        kafka_ssl_cafile=pki["ca"],
    )
    cfg = aiokafka_security(settings)
    assert cfg["security_protocol"] == "SASL_SSL"
    assert cfg["sasl_mechanism"] == "SCRAM-SHA-512"
    assert cfg["sasl_plain_username"] == "outlet-s1"
    assert cfg["sasl_plain_password"] == "pa55-word"
    assert cfg["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert cfg["ssl_context"].check_hostname
    producer = make_producer(settings)  # the outlet forwarder's producer
    assert producer.client._security_protocol == "SASL_SSL"
    assert producer.client._sasl_mechanism == "SCRAM-SHA-512"
    creds = faust_credentials(settings)
    assert creds is not None and "pa55-word" not in repr(creds)
    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_password"] == "pa55-word"
    for text in (repr(settings), str(settings.model_dump())):
        assert "pa55-word" not in text


def test_plaintext_is_the_default() -> None:
    settings = Settings()
    assert aiokafka_security(settings) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings) is None
    assert kafka_ssl_context(settings) is None


def test_database_url_is_secret() -> None:
    dsn = "postgresql://sink:hunter2@db.example:5432/retail?sslmode=verify-full&sslrootcert=/ca"
    settings = Settings(database_url=SecretStr(dsn))
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
