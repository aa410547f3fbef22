"""The care service's own broker account, `care` (broker/dynsec.py add-care), against the
broker as shipped (broker/): it gets every event through its shared subscription and the
devices' status, and nothing else: a schedule it tries to send is refused, where the
`clinic` account's still goes. `add-care` works on a broker set up before the `care` role
existed (its plugin file without it) as on a new one."""
from __future__ import annotations

import json
import importlib.util
from pathlib import Path

import pytest

from broker import Clinic, ShippedBroker, make_client_cert
from care_support import care_toml, chained, taken
from dispenser.care.config import load_care_config
from dispenser.care.database import Database
from dispenser.care.serve import CareService
from waiting import HANG, wait_until

ROOT = Path(__file__).resolve().parents[1]
DEVICE, DEVICE_PASSWORD = "disp-0001", "device-password-for-tests"
CARE_PASSWORD = "care-password-for-tests"
PREFIX = "pilldispenser"
_spec = importlib.util.spec_from_file_location("dynsec", ROOT / "broker" / "dynsec.py")
dynsec = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dynsec)


def older_plugin_file(folder: Path, tls) -> Path:
    """The plugin's file as `dynsec.py init` wrote it before the `care` role: the template without it."""
    made = ShippedBroker(folder, tls)   # only `init`; never started
    document = json.loads(made.dynsec_file.read_text())
    document["roles"] = [role for role in document["roles"] if role["rolename"] != "care"]
    made.dynsec_file.write_text(json.dumps(document))
    return made.dynsec_file


@pytest.fixture(scope="module")
def shipped_brokers(tmp_path_factory, tls_files):
    """kind -> the shipped broker with a device and the `care` account, started at first use and
    shared by this module's tests: they only connect, publish and subscribe, on clean sessions
    (the care service's persistent ones are in one test only), retain nothing another test reads,
    and never restart or reconfigure it (`add_device` of a refused name changes nothing). One per
    kind, whatever order the tests run in."""
    started: dict[str, ShippedBroker] = {}

    def get(kind: str) -> ShippedBroker:
        if kind not in started:
            folder = tmp_path_factory.mktemp(f"shipped-{kind}")
            older = older_plugin_file(folder / "older", tls_files) if kind == "older" else None
            broker = ShippedBroker(folder / "broker", tls_files, accounts_from=older)
            started[kind] = broker.start()
            broker.add_device(DEVICE, DEVICE_PASSWORD)
            broker.dynsec("add-care", env={"CARE_PASSWORD": CARE_PASSWORD})
        return started[kind]

    try:
        yield get
    finally:
        for broker in started.values():
            broker.stop()


@pytest.fixture(params=["new", "older"])
def shipped(request, shipped_brokers):
    return shipped_brokers(request.param)


@pytest.fixture
def clients():
    made: list[Clinic] = []
    yield made
    for client in made:
        client.close()


def connect(broker, tls_files, clients, username: str, password: str, *topics: str, client_id: str) -> Clinic:
    client = Clinic(broker, client_id=client_id, username=username, password=password, tls=tls_files,
                    client_cert=make_client_cert(tls_files, username))
    clients.append(client)
    return client.connect(*topics)


def test_the_template_grants_the_care_role_what_add_care_grants():
    template = json.loads((ROOT / "broker" / "dynamic-security.json").read_text())
    [care] = [role for role in template["roles"] if role["rolename"] == "care"]
    assert [(acl["acltype"], acl["topic"]) for acl in care["acls"] if acl["allow"]] == dynsec.care_acls()
    assert not any(acl["acltype"] == "publishClientSend" for acl in care["acls"])


def test_the_care_account_ingests_events_and_status_through_its_subscriptions(tmp_path, shipped, tls_files, clients):
    care = care_toml(tmp_path / "care.toml", database_url=f"sqlite:///{tmp_path / 'care.db'}",
                     port=shipped.local_port, account=("care", CARE_PASSWORD))
    service = CareService(load_care_config(str(care)), workers=2, timer=False)
    service.start()
    try:
        assert service.wait_ready(HANG), shipped.log()   # both subscriptions granted to `care`
        device = connect(shipped, tls_files, clients, DEVICE, DEVICE_PASSWORD, client_id=DEVICE)
        events = chained(DEVICE, taken(5))
        for event in events:
            assert device.publish(f"{PREFIX}/{DEVICE}/events", json.dumps(event)) == 0
        assert device.publish(f"{PREFIX}/{DEVICE}/status", '{"online": true}', retain=True) == 0

        def stored() -> tuple[list[int], list[tuple]]:
            with Database(f"sqlite:///{tmp_path / 'care.db'}").connect() as conn:
                seqs = [seq for (seq,) in conn.execute("SELECT seq FROM events WHERE device = ? ORDER BY seq", (DEVICE,))]
                return seqs, conn.execute("SELECT online FROM devices WHERE device = ?", (DEVICE,))
        assert wait_until(lambda: stored() == ([1, 2, 3, 4, 5], [(1,)])), (stored(), shipped.log())
    finally:
        service.stop()


def test_the_care_account_cannot_send_a_schedule_the_clinic_account_still_can(shipped, tls_files, clients):
    device = connect(shipped, tls_files, clients, DEVICE, DEVICE_PASSWORD, f"{PREFIX}/{DEVICE}/schedule/set",
                     client_id=DEVICE)
    care = connect(shipped, tls_files, clients, "care", CARE_PASSWORD, client_id="care-probe")
    refused = care.publish(f"{PREFIX}/{DEVICE}/schedule/set", b'{"from": "care"}')
    assert refused.is_failure, refused                      # 0x87 Not authorized
    for topic in (f"{PREFIX}/{DEVICE}/events", f"{PREFIX}/{DEVICE}/status", f"{PREFIX}/{DEVICE}/state"):
        if not care.connected:
            break
        assert care.publish(topic, b"{}").is_failure, topic
    clinic = connect(shipped, tls_files, clients, "clinic", ShippedBroker.CLINIC_PASSWORD, client_id="clinic-push-t")
    assert clinic.publish(f"{PREFIX}/{DEVICE}/schedule/set", b'{"from": "clinic"}') == 0
    # Sent after the refused one: were that one delivered, it would have come first.
    assert device.wait_for(lambda: device.messages, HANG)
    assert device.on(f"{PREFIX}/{DEVICE}/schedule/set")[0] == b'{"from": "clinic"}'


def test_the_care_account_may_subscribe_to_nothing_else(shipped, tls_files, clients):
    care = Clinic(shipped, client_id="care-probe", username="care", password=CARE_PASSWORD, tls=tls_files,
                  client_cert=make_client_cert(tls_files, "care"))
    clients.append(care)
    care.connect(f"$share/care/{PREFIX}/+/events", f"{PREFIX}/+/status", f"{PREFIX}/+/events",
                 f"{PREFIX}/+/schedule/set", f"{PREFIX}/+/alerts", "#")
    [codes] = care.subscribed.values()
    assert [code.is_failure for code in codes] == [False, False, True, True, True, True]


@pytest.mark.parametrize("name", ["care", "care-1"])
def test_no_device_may_take_the_care_services_names(shipped, name):
    with pytest.raises(Exception, match="not admin, clinic, care"):
        shipped.add_device(name, DEVICE_PASSWORD)
