"""A private Mosquitto for tests: a child process on a free port on 127.0.0.1.

Never the system broker on 1883. Each broker has its own temp config; options add a
password file, an ACL file, a TLS listener and on-disk persistence. `stop()` and
`start()` again keep the port, so a test can take the broker away and bring it back.

    broker = Broker(tmp_path, users={"disp-a": "secret"}, acl=ACL)
    broker.start()
    try:
        ...  # connect to broker.host, broker.port
    finally:
        broker.stop()
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
START_TIMEOUT = 5.0


class BrokerError(RuntimeError):
    """The broker could not be found or started; the message carries its log."""


def find_mosquitto() -> str:
    """Path of the mosquitto binary (Debian puts it in /usr/sbin, often off PATH)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise BrokerError("mosquitto is not installed: apt-get install -y mosquitto")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA and a server certificate for localhost / 127.0.0.1 signed by it."""

    ca: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """Create (or reuse) a CA and a server cert with SAN DNS:localhost, IP:127.0.0.1.

    Made with the openssl command, as a clinic would; EC keys keep it fast.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    if all(path.exists() for path in (files.ca, files.cert, files.key)):
        return files
    openssl = shutil.which("openssl")
    if not openssl:
        raise BrokerError("openssl is not installed")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_key = directory / "ca.key"
    csr = directory / "server.csr"
    ext = directory / "server.ext"
    ext.write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _run([openssl, "req", "-x509", *ec, "-days", "7", "-subj", "/CN=dispenser test CA",
          "-keyout", str(ca_key), "-out", str(files.ca)])
    _run([openssl, "req", *ec, "-subj", "/CN=localhost", "-keyout", str(files.key), "-out", str(csr)])
    _run([openssl, "x509", "-req", "-in", str(csr), "-CA", str(files.ca), "-CAkey", str(ca_key),
          "-CAcreateserial", "-days", "7", "-extfile", str(ext), "-out", str(files.cert)])
    return files


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise BrokerError(f"{' '.join(command[:3])} failed: {result.stderr.strip()}")


class Broker:
    """One Mosquitto child process with its own config, port and log.

    - `users`: {name: password} -> a password file and `allow_anonymous false`.
    - `acl`: the text of an ACL file (`user`, `topic`, `pattern` lines).
    - `tls`: TlsFiles -> the listener speaks TLS only.
    - `persistence`: keep sessions and queued messages across stop()/start().
    - `extra`: more config lines, as is.
    Queues are unbounded (`max_queued_messages 0`) so that a test can count every message.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        tls: TlsFiles | None = None,
        persistence: bool = False,
        extra: str = "",
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = free_port()
        self.users = dict(users or {})
        self.acl = acl
        self.tls = tls
        self.persistence = persistence
        self.extra = extra
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "mosquitto.log"
        self.config_path = self.workdir / "mosquitto.conf"
        self._binary = find_mosquitto()
        self._write_config()

    def _write_config(self) -> None:
        lines = [f"listener {self.port} {self.host}", "max_queued_messages 0", "log_dest stderr",
                 "log_type error", "log_type warning", "log_type notice", "log_type information"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to `mosquitto`, who cannot read our 0700 temp dir
        if self.persistence:
            store = self.workdir / "persist"
            store.mkdir(exist_ok=True)
            lines += ["persistence true", f"persistence_location {store}/", "autosave_interval 0"]
        else:
            lines.append("persistence false")
        if self.users:
            password_file = self.workdir / "passwords"
            password_file.unlink(missing_ok=True)
            for index, (name, password) in enumerate(self.users.items()):
                create = ["-c"] if index == 0 else []
                _run(["mosquitto_passwd", "-b", *create, str(password_file), name, password])
            lines += [f"password_file {password_file}", "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        if self.acl is not None:
            acl_file = self.workdir / "acl"
            acl_file.write_text(self.acl)
            lines.append(f"acl_file {acl_file}")
        if self.tls is not None:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.cert}", f"keyfile {self.tls.key}",
                      "tls_version tlsv1.2"]
        if self.extra:
            lines.append(self.extra)
        self.config_path.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "Broker":
        """Start on this broker's port and return once it accepts connections."""
        if self.running:
            return self
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen([self._binary, "-c", str(self.config_path)],
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"mosquitto exited with {self.proc.returncode}:\n{self.log()}")
            if self._accepts():
                # A broker with a bad TLS key opens its listener and then exits: look once more.
                time.sleep(0.02)
                if self.proc.poll() is None:
                    return self
            time.sleep(0.01)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on {self.port} within {START_TIMEOUT} s:\n{self.log()}")

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM (persistence is written then), SIGKILL if it lingers. Safe to repeat."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Clinic:
    """The clinic's side in tests: a paho client recording everything that arrives.

    `wait_for(predicate)` sleeps on a condition that every message notifies, so tests
    wait for what they expect, never for a fixed time.
    """

    def __init__(self, broker: Broker, *, client_id: str = "clinic", username: str | None = None,
                 password: str | None = None, tls: TlsFiles | None = None, persistent: bool = False):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.broker = broker
        self.messages: list[tuple[str, bytes, bool]] = []
        self.acks: dict[int, object] = {}
        self.subscribed: dict[int, list] = {}
        self.connected = False
        self._cond = threading.Condition()
        self._topics: list[str] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=MQTTProtocolVersion.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(ca_certs=str(tls.ca))
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self._properties = Properties(PacketTypes.CONNECT)
        if persistent:
            self._properties.SessionExpiryInterval = 3600
        self._clean_start = not persistent

    def connect(self, *topics: str, timeout: float = 5.0) -> "Clinic":
        """Connect and subscribe to `topics` (QoS 1); return once the SUBACK is in."""
        self._topics = list(topics)
        self.client.connect_async(self.broker.host, self.broker.port, 30,
                                  clean_start=self._clean_start, properties=self._properties)
        self.client.loop_start()
        if not self.wait_for(lambda: self.connected and (not topics or self.subscribed), timeout):
            raise AssertionError(f"clinic client could not connect/subscribe:\n{self.broker.log()}")
        return self

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            return
        if self._topics and not flags.session_present:
            client.subscribe([(topic, 1) for topic in self._topics])
        with self._cond:
            self.connected = True
            self._cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self._cond:
            self.connected = False
            self._cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cond:
            self.subscribed[mid] = reason_codes
            self._cond.notify_all()

    def _on_message(self, client, userdata, message):
        with self._cond:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))
            self._cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._cond:
            self.acks[mid] = reason_code
            self._cond.notify_all()

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def publish(self, topic: str, payload: bytes | str, retain: bool = False, timeout: float = 5.0):
        """Publish at QoS 1 and return the PUBACK's reason code."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if not self.wait_for(lambda: info.mid in self.acks, timeout):
            raise AssertionError(f"no PUBACK for {topic}")
        return self.acks[info.mid]

    def on(self, topic: str) -> list[bytes]:
        with self._cond:
            return [payload for t, payload, _ in self.messages if t == topic]

    def json_on(self, topic: str) -> list[dict]:
        return [json.loads(payload) for payload in self.on(topic)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
