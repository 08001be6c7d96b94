"""TLS can be configured: the broker listens with a certificate, the rig and a viewer trust it through MqttSettings'
`tls_ca_file`, and a client that does not trust it is refused."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rig.remote.telemetry import MqttSettings, TelemetryLink, mqtt_client
from tests.mqtt.broker import USERS, Broker, require_mqtt5_broker, running_broker


def self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost (it is its own CA) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker (as the `broker` fixture picks it) listening with TLS only."""
    kind = require_mqtt5_broker()
    certs = tmp_path / "certs"
    certs.mkdir()
    cert, key = self_signed(certs, "broker")
    with running_broker(tmp_path / "tls-broker", kind, certfile=cert, keyfile=key) as b:
        yield b


def _settings(b: Broker, user: str, ca: Path | None) -> MqttSettings:
    return MqttSettings(
        host="127.0.0.1", port=b.port, rig_id="rig-a", username=user, password=USERS[user], tls_ca_file=ca
    )


async def test_rig_and_viewer_talk_tls_to_the_broker_and_untrusting_clients_are_refused(
    tls_broker: Broker, tmp_path: Path
) -> None:
    assert tls_broker.certfile is not None
    ca = tls_broker.certfile
    link = TelemetryLink(_settings(tls_broker, "rig-a", ca))
    await link.start()
    try:
        for _ in range(500):
            if link.connected:
                break
            await asyncio.sleep(0.02)
        assert link.connected, "the rig did not connect over TLS"
        async with mqtt_client(_settings(tls_broker, "viewer", ca), identifier="viewer-tls") as viewer:
            await viewer.subscribe("rig/rig-a/telemetry")
            link.publish_telemetry({"pressure_kpa": 180.02})
            async with asyncio.timeout(10):
                msg = await anext(aiter(viewer.messages))
        assert json.loads(msg.payload)["pressure_kpa"] == 180.02
    finally:
        await link.close()
    # a client that trusts another certificate is refused, and so is one speaking plain MQTT to the TLS port
    other, _ = self_signed(tmp_path, "impostor")
    with pytest.raises(aiomqtt.MqttError):
        async with mqtt_client(_settings(tls_broker, "viewer", other), identifier="viewer-wrong-ca"):
            pass
    with pytest.raises(aiomqtt.MqttError):
        async with mqtt_client(_settings(tls_broker, "viewer", None), identifier="viewer-plain"):
            pass
