"""The one way this project builds and connects a paho client, from MqttSettings.

The device's sync, its one-shot commands and the clinic's tools all need the same
things done the same way: the protocol the config asks for, a clean or a persistent
session (MQTT 5 and 3.1.1 say it differently), the account, TLS with the server's
certificate and host name checked (never `tls_insecure_set`), and reconnect pacing.
Only the callbacks and what is subscribed differ; those stay with the caller.
"""
from __future__ import annotations

import os
import ssl
import threading
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from .mqtt_settings import MqttSettings

SESSION_EXPIRY_S = 7 * 24 * 3600   # a persistent session (and what waits in it) is kept a week
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 60

ClientT = TypeVar("ClientT", bound=mqtt.Client)


# paho 2.x's internals that StoppableClient._reconnect_wait reads; without them, paho's own wait.
_PAHO_BACKOFF = ("_reconnect_delay_mutex", "_reconnect_delay", "_reconnect_min_delay", "_reconnect_max_delay",
                 "_state", "_thread_terminate")
_PAHO_GONE = tuple(getattr(getattr(mqtt, "_ConnectionState", None), name, None)
                   for name in ("MQTT_CS_DISCONNECTING", "MQTT_CS_DISCONNECTED"))


class StoppableClient(mqtt.Client):
    """paho's Client, but disconnect() and loop_stop() end its pause before a reconnect at once.

    paho sleeps that pause (reconnect_delay_set) in 1 s steps and looks between them only,
    so stopping a client that never reached its broker, or was refused, took up to 1 s.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._backoff = threading.Condition()  # disconnect() and loop_stop() wake the wait below

    def _reconnect_wait(self) -> None:
        """paho's wait before the next connection attempt, its length and doubling as paho's,
        on a condition that disconnect() and loop_stop() notify."""
        if None in _PAHO_GONE or not all(hasattr(self, name) for name in _PAHO_BACKOFF):
            return super()._reconnect_wait()
        with self._reconnect_delay_mutex:  # paho's doubling, as in its own _reconnect_wait
            if self._reconnect_delay is None:
                self._reconnect_delay = self._reconnect_min_delay
            else:
                self._reconnect_delay = min(self._reconnect_delay * 2, self._reconnect_max_delay)
            delay = self._reconnect_delay
        with self._backoff:
            self._backoff.wait_for(self._leaving, timeout=delay)

    def _leaving(self) -> bool:
        """What paho's wait looks at: disconnect() called, or loop_stop()."""
        return self._thread_terminate or self._state in _PAHO_GONE

    def disconnect(self, reasoncode: ReasonCode | None = None, properties: Properties | None = None) -> MQTTErrorCode:
        try:
            return super().disconnect(reasoncode, properties)
        finally:
            with self._backoff:
                self._backoff.notify_all()

    def loop_stop(self) -> MQTTErrorCode:
        if getattr(self, "_thread", None) is not None:
            self._thread_terminate = True  # what super() sets first; here before the wake-up
            with self._backoff:
                self._backoff.notify_all()
        return super().loop_stop()


class TlsFilesError(ValueError):
    """The TLS files the settings name cannot be used; the text is one line."""


def build_client(settings: MqttSettings, client_id: str, *, persistent: bool, client_class: type[ClientT],
                 reconnect_max_s: int = RECONNECT_MAX_S, manual_ack: bool = False) -> ClientT:
    """A paho client for `settings`, not yet connected: `client_class` is `mqtt.Client` or a
    subclass of it; `manual_ack` is paho's (a message is acknowledged when the caller says).

    `persistent`: the broker keeps the session (subscriptions, messages for us) while we
    are away. Raises TlsFilesError when TLS is asked for and its files cannot be used.
    """
    v5 = settings.protocol == "5"
    protocol = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
    clean_session = None if v5 else not persistent  # None: MQTT 5 says it at connect (clean_start)
    client = client_class(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                          clean_session=clean_session, manual_ack=manual_ack)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        try:
            for key in ("tls_ca", "tls_cert", "tls_key"):
                path = getattr(settings, key)
                if path is not None and not os.path.isfile(path):
                    raise FileNotFoundError(f"mqtt.{key}: no such file {path}")
            client.tls_set(ca_certs=settings.tls_ca, certfile=settings.tls_cert, keyfile=settings.tls_key)
        except (OSError, ssl.SSLError, ValueError) as error:
            raise TlsFilesError(" ".join(f"mqtt: cannot use the TLS files: {error}".split())) from None
    client.reconnect_delay_set(RECONNECT_MIN_S, reconnect_max_s)
    return client


def connect_async(client: mqtt.Client, settings: MqttSettings, *, persistent: bool,
                  **properties: int) -> None:
    """Start connecting in the background (then `client.loop_start()`).

    `properties`: MQTT 5 CONNECT properties by name (`MaximumPacketSize=...`); a persistent
    session also asks the broker to keep it SESSION_EXPIRY_S. Ignored on 3.1.1, whose
    session kind was fixed when the client was built.
    """
    if settings.protocol != "5":
        client.connect_async(settings.host, settings.port, settings.keepalive,
                             clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY)
        return
    connect = Properties(PacketTypes.CONNECT)
    if persistent:
        connect.SessionExpiryInterval = SESSION_EXPIRY_S
    for name, value in properties.items():
        setattr(connect, name, value)
    client.connect_async(settings.host, settings.port, settings.keepalive,
                         clean_start=not persistent, properties=connect)
