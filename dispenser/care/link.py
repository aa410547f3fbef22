"""A paho client for a service that reads many devices: the builder others may call too.

The device's link (dispenser/sync.py) is one device's client; the clinic's watch has its
own (clinic_cli._Link, which could be built here too). The care service needs what
neither builds: a persistent MQTT 5 session under a
fixed client id, acknowledgements sent only once a message is stored (manual_ack), and
a Maximum Packet Size so that no device can make it read a huge message. The settings,
TLS rules and topic names are the project's own (mqtt_settings.py).

    client = build_client(settings, "care-1", manual_ack=True)
    connect(client, settings, persistent=True)      # returns at once; paho reconnects
"""
from __future__ import annotations

import os

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..mqtt_settings import MqttSettings
from ..sync import SESSION_EXPIRY_S   # the device's: what arrives while away waits a week

MAX_PACKET_BYTES = 256 * 1024      # no event comes near it (docs/MQTT.md's broker limit is lower)
RECEIVE_MAXIMUM = 50               # messages the broker may have unacknowledged with one worker


class LinkError(ValueError):
    """Settings that can never connect (TLS files missing or unusable); one line."""


def build_client(settings: MqttSettings, client_id: str, *, manual_ack: bool = False,
                 persistent: bool = True) -> mqtt.Client:
    """A paho client for `settings` (MQTT 5 or 3.1.1, TLS, account), not yet connected."""
    v5 = settings.protocol == "5"
    protocol = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                         manual_ack=manual_ack, clean_session=None if v5 else not persistent)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        for key in ("tls_ca", "tls_cert", "tls_key"):
            path = getattr(settings, key)
            if path is not None and not os.path.isfile(path):
                raise LinkError(f"mqtt.{key}: no such file {path}")
        try:  # the server's certificate and host name are always checked
            client.tls_set(ca_certs=settings.tls_ca, certfile=settings.tls_cert, keyfile=settings.tls_key)
        except (OSError, ValueError) as error:
            raise LinkError(" ".join(f"mqtt: cannot use the TLS files: {error}".split())) from None
    client.reconnect_delay_set(1, 30)
    return client


def connect(client: mqtt.Client, settings: MqttSettings, *, persistent: bool = True) -> None:
    """Connect in the background (paho's thread; it reconnects by itself)."""
    if settings.protocol == "5":
        properties = Properties(PacketTypes.CONNECT)
        properties.MaximumPacketSize = MAX_PACKET_BYTES
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        if persistent:
            properties.SessionExpiryInterval = SESSION_EXPIRY_S
        client.connect_async(settings.host, settings.port, settings.keepalive, clean_start=not persistent,
                             properties=properties)
    else:
        client.connect_async(settings.host, settings.port, settings.keepalive)
    client.loop_start()
