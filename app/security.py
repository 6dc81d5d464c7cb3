"""Transport security from the settings: Kafka TLS and SASL/SCRAM for every client.

One place turns ``RETAIL_KAFKA_*`` into what aiokafka (the outlet forwarder, the
bulk changelog producer, tests' producers) and Faust (the workers) take, so all
clients of one deployment speak to Kafka the same way. PostgreSQL TLS needs no
code: asyncpg reads ``sslmode``/``sslrootcert``/``sslcert``/``sslkey`` from the
DSN in ``RETAIL_DATABASE_URL``.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from app.settings import Settings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A client TLS context for ``SSL``/``SASL_SSL``; ``None`` for plaintext protocols."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.kafka_ssl_certfile is not None:
        keyfile = str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None
        ctx.load_cert_chain(str(settings.kafka_ssl_certfile), keyfile)
    if not settings.kafka_ssl_check_hostname:
        ctx.check_hostname = False  # test brokers only; the certificate is still verified
    return ctx


def _sasl(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def aiokafka_security(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaProducer``/``AIOKafkaConsumer``/admin clients."""
    out: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    ctx = kafka_ssl_context(settings)
    if ctx is not None:
        out["ssl_context"] = ctx
    if _sasl(settings):
        out["sasl_mechanism"] = settings.kafka_sasl_mechanism
        out["sasl_plain_username"] = settings.kafka_sasl_username
        out["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return out


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """``broker_credentials`` for :class:`faust.App` (``None``: plaintext, no auth)."""
    from faust.auth import SASLCredentials, SSLCredentials

    ctx = kafka_ssl_context(settings)
    if _sasl(settings):
        return SASLCredentials(  # its repr shows the username only
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            ssl_context=ctx,
            mechanism=settings.kafka_sasl_mechanism,
        )
    if ctx is not None:
        return SSLCredentials(ctx)
    return None
