"""A private Mosquitto for tests: a child process on a free port on 127.0.0.1.

Ports come from tests/ports.py: below the kernel's ephemeral range, so that a broker
restarted on its port never finds it taken by some client's outgoing connection.

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

import glob
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ports import free_port  # noqa: F401 - below the ephemeral range; tests import it from here too
from waiting import HANG

HOST = "127.0.0.1"
START_TIMEOUT = HANG  # only a broken broker takes that long; a loaded machine takes seconds
REPO = Path(__file__).resolve().parents[1]
SHIPPED_CONF = REPO / "broker" / "mosquitto.conf"
DYNSEC_TOOL = REPO / "broker" / "dynsec.py"


class BrokerError(RuntimeError):
    """The broker could not be found or started; the message carries its log."""


def find_mosquitto() -> str:
    """Path of the mosquitto binary (Debian puts it in /usr/sbin, often off PATH)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise BrokerError("mosquitto is not installed: apt-get install -y mosquitto")
    return found


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


def make_client_cert(tls: TlsFiles, name: str, directory: Path | None = None) -> tuple[Path, Path]:
    """A client certificate (CN = `name`) signed by `tls`'s CA: (cert, key). Reused when present."""
    directory = directory or tls.ca.parent
    cert, key = directory / f"client-{name}.pem", directory / f"client-{name}.key"
    if cert.exists() and key.exists():
        return cert, key
    openssl = shutil.which("openssl")
    ext = directory / "client.ext"
    ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=clientAuth\n")
    csr = directory / f"client-{name}.csr"
    _run([openssl, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
          "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr)])
    _run([openssl, "x509", "-req", "-in", str(csr), "-CA", str(tls.ca), "-CAkey", str(tls.ca.parent / "ca.key"),
          "-CAcreateserial", "-days", "7", "-extfile", str(ext), "-out", str(cert)])
    return cert, key


def dynsec_plugin() -> str:
    """Debian's mosquitto_dynamic_security.so for this machine's architecture."""
    found = sorted(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so") +
                   glob.glob("/usr/lib/mosquitto_dynamic_security.so"))
    if not found:
        raise BrokerError("mosquitto_dynamic_security.so not found (Debian package: mosquitto)")
    return found[0]


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
        self._pick_ports()
        self._started_before = False
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
        """Start on this broker's port and return once it accepts connections.

        Before the first start only, a port taken meanwhile (another suite on the machine
        got there first) is exchanged for another; from then on a test holds the port.
        """
        if self.running:
            return self
        for attempt in range(3):
            try:
                self._start()
            except BrokerError as error:
                if self._started_before or "Address already in use" not in str(error) or attempt == 2:
                    raise
                self.log_path.unlink(missing_ok=True)
                self._pick_ports()
                self._write_config()
                continue
            self._started_before = True
            return self

    def _pick_ports(self) -> None:
        self.port = free_port()

    def _start(self) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0  # the log of earlier starts stays
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
            # "running" comes once every listener is open and every certificate and plugin loaded
            # (a bad TLS key opens the listener, then exits without it).
            if self._says_running(offset) and self._accepts():
                return
            time.sleep(0.005)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on {self.port} within {START_TIMEOUT} s:\n{self.log()}")

    def _says_running(self, offset: int) -> bool:
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return re.search(rb"mosquitto version \S+ running$", log.read(), re.M) is not None

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


class ShippedBroker(Broker):
    """Mosquitto started with the repository's broker/mosquitto.conf, as a clinic installs it.

    Only ports and paths change: the TLS listener (8883) and the local one (1883) move to
    free ports on 127.0.0.1, the certificate, plugin and plugin-file paths point into the
    test's folder. The plugin's file is made by `broker/dynsec.py init` from
    broker/dynamic-security.json, and accounts are added by `broker/dynsec.py add-...`
    through the local listener, exactly as docs/MQTT.md tells a clinic to.
    """

    ADMIN_PASSWORD = "admin-password-for-tests"
    CLINIC_PASSWORD = "clinic-password-for-tests"

    def __init__(self, workdir: Path, tls: TlsFiles, *, accounts_from: Path | None = None, extra: str = ""):
        """`accounts_from`: the plugin file of an earlier ShippedBroker, copied (saves the set-up)."""
        super().__init__(workdir, tls=tls, persistence=True, extra=extra)
        self.dynsec_file = self.workdir / "dynamic-security.json"
        if accounts_from is not None:
            shutil.copyfile(accounts_from, self.dynsec_file)
        if not self.dynsec_file.exists():
            self.dynsec("init", str(self.dynsec_file), env={"DYNSEC_ADMIN_PASSWORD": self.ADMIN_PASSWORD,
                                                             "DYNSEC_CLINIC_PASSWORD": self.CLINIC_PASSWORD})

    def _write_config(self) -> None:
        text = SHIPPED_CONF.read_text()
        store = self.workdir / "persist"
        store.mkdir(exist_ok=True)
        replacements = [
            (r"^listener 8883$", f"listener {self.port} {self.host}"),
            (r"^listener 1883 127\.0\.0\.1$", f"listener {self.local_port} {self.host}"),
            (r"^cafile .*$", f"cafile {self.tls.ca}"),
            (r"^certfile .*$", f"certfile {self.tls.cert}"),
            (r"^keyfile .*$", f"keyfile {self.tls.key}"),
            (r"^plugin .*$", f"plugin {dynsec_plugin()}"),
            (r"^plugin_opt_config_file .*$", f"plugin_opt_config_file {self.workdir / 'dynamic-security.json'}"),
        ]
        for pattern, new in replacements:
            text, count = re.subn(pattern, new.replace("\\", "\\\\"), text, flags=re.M)
            if count != 1:
                raise BrokerError(f"broker/mosquitto.conf: expected one line matching {pattern!r}, found {count}")
        # What Debian's /etc/mosquitto/mosquitto.conf adds around the conf.d file, here in the temp folder.
        lines = [text, f"persistence_location {store}/", "autosave_interval 0", "log_dest stderr",
                 "log_type error", "log_type warning", "log_type notice", "log_type information"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to `mosquitto`, who cannot read our 0700 temp dir
        if self.extra:
            lines.append(self.extra)
        self.config_path.write_text("\n".join(lines) + "\n")

    def _pick_ports(self) -> None:
        self.port, self.local_port = free_port(), free_port()

    def dynsec(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run broker/dynsec.py (through the local listener as admin); raise on failure."""
        import sys
        command = [sys.executable, str(DYNSEC_TOOL)]
        if args[0] != "init":
            command += ["--host", self.host, "--port", str(self.local_port)]
        full_env = {**os.environ, "DYNSEC_ADMIN_PASSWORD": self.ADMIN_PASSWORD, **(env or {})}
        result = subprocess.run([*command, *args], capture_output=True, text=True, env=full_env,
                                stdin=subprocess.DEVNULL, timeout=60)
        if result.returncode != 0:
            raise BrokerError(f"dynsec.py {' '.join(args)} failed: {result.stderr.strip()}\n{self.log()}")
        return result

    def add_device(self, device_id: str, password: str) -> None:
        self.dynsec("add-device", device_id, env={"DEVICE_PASSWORD": password})

    def add_caregiver(self, name: str, password: str, *devices: str) -> None:
        self.dynsec("add-caregiver", name, *devices, env={"CAREGIVER_PASSWORD": password})


class Clinic:
    """The clinic's side in tests: a paho client recording everything that arrives.

    `wait_for(predicate)` sleeps on a condition that every message notifies, so tests
    wait for what they expect, never for a fixed time; its timeout (HANG) bounds a hang only.
    """

    def __init__(self, broker: Broker, *, client_id: str = "clinic", username: str | None = None,
                 password: str | None = None, tls: TlsFiles | None = None, persistent: bool = False,
                 client_cert: tuple[Path, Path] | None = None, protocol: str = "5"):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        from dispenser.mqtt_client import StoppableClient  # close() does not sit out a pause before a reconnect

        self.broker = broker
        self.messages: list[tuple[str, bytes, bool]] = []
        self.acks: dict[int, object] = {}
        self.subscribed: dict[int, list] = {}
        self.connected = False
        self._cond = threading.Condition()
        self._topics: list[str] = []
        self.refused = None     # the reason code of a refused CONNACK
        v5 = protocol == "5"
        self.client = StoppableClient(CallbackAPIVersion.VERSION2, client_id=client_id,
                                      protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
                                      **({} if v5 else {"clean_session": not persistent}))
        if username:
            self.client.username_pw_set(username, password)
        if tls:
            cert, key = client_cert or (None, None)
            self.client.tls_set(ca_certs=str(tls.ca), certfile=cert and str(cert), keyfile=key and str(key))
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self._properties = Properties(PacketTypes.CONNECT) if v5 else None
        if persistent and v5:
            self._properties.SessionExpiryInterval = 3600
        self._clean_start = (not persistent) if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY

    def connect(self, *topics: str, timeout: float = HANG) -> "Clinic":
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
            with self._cond:
                self.refused = reason_code
                self._cond.notify_all()
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

    def wait_for(self, predicate, timeout: float = HANG) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def publish(self, topic: str, payload: bytes | str, retain: bool = False, timeout: float = HANG):
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
