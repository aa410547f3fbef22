"""The care service against the clinic's broker as shipped (broker/), set up as docs/CARE.md
says: the `clinic` account made by `broker/dynsec.py init`, a device added with
`broker/dynsec.py add-device`, and `dispenser simulate --scenario` publishing as that device.

The other care tests use an open broker; this one holds the shipped accounts and rights to
what the service subscribes to (the shared subscription `$share/care/...`)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker import ShippedBroker
from dispenser.care.config import load_care_config
from dispenser.care.database import Database
from dispenser.care.serve import CareService
from inprocess import dispenser as run_in_process
from care_support import care_toml
from support import DEMO
from waiting import HANG, wait_until

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "disp-0001"
DEVICE_PASSWORD = "device-password-for-tests"


@pytest.fixture
def shipped(tmp_path, tls_files):
    broker = ShippedBroker(tmp_path / "broker", tls_files)
    broker.start()
    try:
        broker.add_device(DEVICE, DEVICE_PASSWORD)
        yield broker
    finally:
        broker.stop()


def test_the_care_service_subscribes_and_ingests_as_the_clinic_account(tmp_path, shipped):
    care = care_toml(tmp_path / "care.toml", database_url=f"sqlite:///{tmp_path / 'care.db'}",
                     port=shipped.local_port, account=("clinic", ShippedBroker.CLINIC_PASSWORD))
    service = CareService(load_care_config(str(care)), workers=2, timer=False)
    service.start()
    try:
        assert service.wait_ready(HANG), shipped.log()   # the shared subscription is allowed to `clinic`

        (tmp_path / "schedule.json").write_text((DEMO / "schedule.json").read_text())
        scenario = tmp_path / "missed.toml"
        scenario.write_text('start = "2026-11-24T06:00:00"\nuntil = "2026-11-24T10:30:00"\n'
                            'schedule = "schedule.json"\n[stock]\nsertraline = 28\n')
        device = tmp_path / "device.toml"
        device.write_text(f'[device]\nid = "{DEVICE}"\n[mqtt]\nhost = "127.0.0.1"\nport = {shipped.local_port}\n'
                          f'tls = false\nusername = "{DEVICE}"\npassword = "{DEVICE_PASSWORD}"\n')
        device.chmod(0o600)
        result = run_in_process("simulate", "--scenario", scenario, "--config", device, "--db", tmp_path / "device.db",
                                cwd=ROOT)
        assert result.returncode == 0, result.stderr
        events = [json.loads(line) for line in result.stdout.splitlines()]
        assert "dose.missed" in [event["type"] for event in events]

        def stored() -> list[tuple]:
            with Database(f"sqlite:///{tmp_path / 'care.db'}").connect() as conn:
                return conn.execute("SELECT seq FROM events WHERE device = ? ORDER BY seq", (DEVICE,))
        assert wait_until(lambda: len(stored()) == len(events)), shipped.log()
        assert [seq for (seq,) in stored()] == [event["seq"] for event in events]
    finally:
        service.stop()
