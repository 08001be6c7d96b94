"""A real MQTT broker for tests: Mosquitto with a generated password file and ACL, or amqtt (MQTT 3.1.1 only).

Both run as their own process on a free loopback port, so `stop()` is a real outage (connections drop, the port
refuses) and `start()` brings the same broker back on the same port. The ACL is the same for both: each rig account
(username = rig id) owns `rig/<id>/#`; `viewer` reads `rig/#`; `operator` also writes `rig/+/command`. amqtt has no
`%u` pattern, so its ACL lists each rig account's subtree (see docs/decisions/0020-mqtt-test-brokers.md).
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

# `sim` is the name `rig run --sim` gives its simulated rig (tests/mqtt/rig_process.py)
USERS = {"rig-a": "pw-rig-a", "rig-b": "pw-rig-b", "sim": "pw-sim", "viewer": "pw-viewer", "operator": "pw-operator"}
RIGS = ("rig-a", "rig-b", "sim")
ACL = """pattern readwrite rig/%u/#
user viewer
topic read rig/#
user operator
topic read rig/#
topic write rig/+/command
"""
BROKER_ENV = "RIG_TEST_BROKER"  # "mosquitto" or "amqtt": which broker the tests use (default: mosquitto if installed)

Kind = Literal["mosquitto", "amqtt"]


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_path() -> str | None:
    """Path of the mosquitto binary, if installed."""
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def amqtt_available() -> bool:
    """Whether the pure-Python amqtt broker can be imported."""
    try:
        import amqtt.broker  # noqa: F401
    except ImportError:
        return False
    return True


def broker_kind() -> Kind | None:
    """The broker the tests use here: forced by RIG_TEST_BROKER, else Mosquitto if installed, else amqtt."""
    forced = os.environ.get(BROKER_ENV, "").strip().lower()
    if forced == "amqtt":
        return "amqtt" if amqtt_available() else None
    if forced == "mosquitto":
        return "mosquitto" if mosquitto_path() else None
    if forced:
        raise ValueError(f"{BROKER_ENV} must be 'mosquitto' or 'amqtt', not {forced!r}")
    if mosquitto_path() is not None:
        return "mosquitto"
    return "amqtt" if amqtt_available() else None


MQTT5_ONLY = (
    "the rig speaks MQTT 5 and amqtt 0.12 speaks MQTT 3.1.1 only: this test needs Mosquitto "
    "(apt-get install mosquitto; docs/decisions/0023)"
)


def require_mqtt5_broker() -> Kind:
    """The MQTT 5 broker kind for a test (Mosquitto); skip (fail in CI) where there is none."""
    kind = broker_kind()
    if kind == "mosquitto":
        return kind
    if os.environ.get("CI"):
        pytest.fail(f"no MQTT 5 broker in CI ({BROKER_ENV}={os.environ.get(BROKER_ENV)}): .ci/run installs mosquitto")
    if kind is None:
        pytest.fail(f"no MQTT broker: install mosquitto ({BROKER_ENV}={os.environ.get(BROKER_ENV)})")
    pytest.skip(MQTT5_ONLY)


def amqtt_config(
    port: int, passwd: Path, *, certfile: Path | None = None, keyfile: Path | None = None
) -> dict[str, object]:
    """amqtt 0.12 broker configuration: password file (argon2), subscribe and publish ACLs, one TCP listener."""
    read = {**{rig: [f"rig/{rig}/#"] for rig in RIGS}, "viewer": ["rig/#"], "operator": ["rig/#"]}
    write = {**{rig: [f"rig/{rig}/#"] for rig in RIGS}, "viewer": [], "operator": ["rig/+/command"]}
    listener: dict[str, object] = {"type": "tcp", "bind": f"127.0.0.1:{port}", "max_connections": 0}
    if certfile is not None and keyfile is not None:
        listener.update(ssl=True, certfile=str(certfile), keyfile=str(keyfile))
    return {
        "listeners": {"default": listener},
        "plugins": {
            "amqtt.plugins.authentication.FileAuthPlugin": {"password_file": str(passwd)},
            "amqtt.plugins.topic_checking.TopicAccessControlListPlugin": {"acl": read, "publish_acl": write},
        },
    }


@dataclass
class Broker:
    """A running broker on loopback, restartable on the same port (for outage tests)."""

    folder: Path
    kind: Kind = "mosquitto"
    port: int = field(default_factory=free_port)
    certfile: Path | None = None  # TLS listener when both are set
    keyfile: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def configure(self) -> None:
        """Write the password file, the ACL and the configuration."""
        passwd = self.folder / "passwd"
        if self.kind == "amqtt":
            from pwdlib import PasswordHash
            from pwdlib.hashers.argon2 import Argon2Hasher

            hasher = PasswordHash((Argon2Hasher(),))
            passwd.write_text("".join(f"{user}:{hasher.hash(pw)}\n" for user, pw in USERS.items()))
            config = amqtt_config(self.port, passwd, certfile=self.certfile, keyfile=self.keyfile)
            (self.folder / "amqtt.yaml").write_text(json.dumps(config, indent=1))  # JSON is YAML
            return
        passwd.write_text("")
        for user, pw in USERS.items():
            subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, pw], check=True, capture_output=True)
        (self.folder / "acl").write_text(ACL)
        # as root, mosquitto drops to user 'mosquitto', who cannot read a private test folder: stay who we are
        user = f"user {getpass.getuser()}\n"
        tls = ""
        if self.certfile is not None and self.keyfile is not None:
            tls = f"certfile {self.certfile}\nkeyfile {self.keyfile}\n"
        (self.folder / "mosquitto.conf").write_text(
            f"{user}listener {self.port} 127.0.0.1\n{tls}allow_anonymous false\npassword_file {passwd}\n"
            f"acl_file {self.folder / 'acl'}\npersistence false\n"
        )

    def _command(self) -> list[str]:
        if self.kind == "amqtt":
            config = str(self.folder / "amqtt.yaml")
            return [sys.executable, "-c", "from amqtt.scripts.broker_script import main; main()", "-c", config]
        binary = mosquitto_path()
        if binary is None:
            raise RuntimeError("mosquitto is not installed")
        return [binary, "-c", str(self.folder / "mosquitto.conf")]

    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        log_path = self.folder / f"{self.kind}.log"
        log = log_path.open("ab")
        self.proc = subprocess.Popen(self._command(), stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.kind} exited: {log_path.read_text()}") from None
                time.sleep(0.05)
        raise TimeoutError(f"{self.kind} did not start")

    def stop(self) -> None:
        """Stop the broker."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@contextmanager
def running_broker(folder: Path, kind: Kind, **options: Any) -> Iterator[Broker]:
    """A broker in a new `folder`, configured and started; stopped when the block ends."""
    folder.mkdir()
    b = Broker(folder, kind=kind, **options)
    b.configure()
    b.start()
    try:
        yield b
    finally:
        b.stop()
