"""A real MQTT broker for tests: Mosquitto with a generated password file and ACL (amqtt if Mosquitto is absent)."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

USERS = {"rig-a": "pw-rig-a", "rig-b": "pw-rig-b", "viewer": "pw-viewer", "operator": "pw-operator"}
ACL = """pattern readwrite rig/%u/#
user viewer
topic read rig/#
user operator
topic read rig/#
topic write rig/+/command
"""


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_path() -> str | None:
    """Path of the mosquitto binary, if installed."""
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


@dataclass
class Broker:
    """A running Mosquitto on loopback, restartable on the same port (for outage tests)."""

    folder: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def configure(self) -> None:
        """Write the password file, the ACL and the configuration."""
        passwd = self.folder / "passwd"
        passwd.write_text("")
        for user, pw in USERS.items():
            subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, pw], check=True, capture_output=True)
        (self.folder / "acl").write_text(ACL)
        # as root, mosquitto drops to user 'mosquitto', who cannot read a private test folder: stay who we are
        user = f"user {getpass.getuser()}\n"
        (self.folder / "mosquitto.conf").write_text(
            f"{user}listener {self.port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
            f"acl_file {self.folder / 'acl'}\npersistence false\n"
        )

    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        binary = mosquitto_path()
        if binary is None:
            raise RuntimeError("mosquitto is not installed")
        log = (self.folder / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen([binary, "-c", str(self.folder / "mosquitto.conf")], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {(self.folder / 'mosquitto.log').read_text()}") from None
                time.sleep(0.05)
        raise TimeoutError("mosquitto did not start")

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
