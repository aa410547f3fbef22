"""The paho client of the care service's workers, built as the rest of the project builds one.

main's `dispenser/mqtt_client.py` (written beside this branch) is the one builder of the
project: `build_client(settings, client_id, *, persistent, **options)` and
`connect_async(client, settings, *, persistent, **properties)`. These two follow its
signatures and behaviour exactly, so that after the merge this module is only
`from ..mqtt_client import SESSION_EXPIRY_S, TlsFilesError as LinkError, build_client, connect_async`.
What the care service adds is its own: a persistent MQTT 5 session under a fixed client
id, acknowledgements sent only once a message is stored (`manual_ack=True`), and a
Maximum Packet Size so that no device can make it read a huge message (serve.py).

    client = build_client(settings, "care-1", persistent=True, manual_ack=True)
    connect_async(client, settings, persistent=True, MaximumPacketSize=256 * 1024)
    client.loop_start()
"""
from __future__ import annotations

import os
import ssl
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..mqtt_settings import MqttSettings

SESSION_EXPIRY_S = 7 * 24 * 3600   # a persistent session (and what waits in it) is kept a week
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 60


class LinkError(ValueError):
    """The TLS files the settings name cannot be used; the text is one line."""


def build_client(settings: MqttSettings, client_id: str, *, persistent: bool,
                 reconnect_max_s: int = RECONNECT_MAX_S, **options: Any) -> mqtt.Client:
    """A paho client for `settings` (MQTT 5 or 3.1.1, account, TLS), not yet connected;
    `options` go to paho's constructor (`manual_ack=True`)."""
    v5 = settings.protocol == "5"
    protocol = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
    if not v5:
        options["clean_session"] = not persistent
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **options)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        try:  # the server's certificate and host name are always checked
            for key in ("tls_ca", "tls_cert", "tls_key"):
                path = getattr(settings, key)
                if path is not None and not os.path.isfile(path):
                    raise FileNotFoundError(f"mqtt.{key}: no such file {path}")
            client.tls_set(ca_certs=settings.tls_ca, certfile=settings.tls_cert, keyfile=settings.tls_key)
        except (OSError, ssl.SSLError, ValueError) as error:
            raise LinkError(" ".join(f"mqtt: cannot use the TLS files: {error}".split())) from None
    client.reconnect_delay_set(RECONNECT_MIN_S, reconnect_max_s)
    return client


def connect_async(client: mqtt.Client, settings: MqttSettings, *, persistent: bool, **properties: int) -> None:
    """Start connecting in the background (then `client.loop_start()`; paho reconnects).

    `properties`: MQTT 5 CONNECT properties by name; a persistent session also asks the
    broker to keep it SESSION_EXPIRY_S. Ignored on 3.1.1, whose session kind was fixed
    when the client was built.
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
