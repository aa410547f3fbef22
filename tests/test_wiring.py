"""The wiring diagram: drawn from the checker's own pin table, and committed as drawn."""
from __future__ import annotations

import re
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dispenser.hardware import settings as hw_settings
from dispenser.hardware.errors import HardwareConfigError
from dispenser.hardware.settings import parse_hardware_config
from dispenser.hardware.wiring import HEADER, HEADER_PIN, SAMPLE, pin_table, render_svg
from dispenser.hardware.wiring_cli import main

ROOT = Path(__file__).resolve().parents[1]
SVG = ROOT / "docs" / "wiring.svg"
HARDWARE_MD = ROOT / "docs" / "HARDWARE.md"
NS = {"svg": "http://www.w3.org/2000/svg"}

CONFIGS = {
    "sample": SAMPLE,
    "pca9685 beside the backpack": {"backend": "pi", "compartments": 12, "servo_driver": "pca9685",
                                    "lcd": "pcf8574", "lid_pin": 23, "drop_pin": 24},
    "pca9685 with a parallel LCD": {"backend": "pi", "compartments": 16, "servo_driver": "pca9685",
                                    "lcd": "gpio", "button_pull_up": False},
    "parallel LCD with backlight": {"backend": "pi", "compartments": 2, "servo_pins": [12, 13],
                                    "lcd": "gpio", "lcd_pins": {"rs": 4, "e": 25, "d4": 8, "d5": 7,
                                                                "d6": 20, "d7": 21, "backlight": 26}},
    "mcp23008, no sensors": {"backend": "pi", "compartments": 3, "servo_pins": [5, 6, 16],
                             "lcd": "mcp23008", "button_pin": 10, "buzzer_pin": 9, "led_pin": 11},
    "no LCD": {"backend": "pi", "compartments": 1, "servo_pins": [18], "lcd": "none"},
    "simulator defaults": {},
}


class RecordingPins(hw_settings._Pins):
    """The checker's own table of claimed pins, kept after the check."""

    last: "RecordingPins | None" = None

    def __init__(self) -> None:
        super().__init__()
        RecordingPins.last = self


def checker_table(table: dict, monkeypatch: pytest.MonkeyPatch) -> tuple[object, dict[int, str]]:
    monkeypatch.setattr(hw_settings, "_Pins", RecordingPins)
    config = parse_hardware_config(table)
    assert RecordingPins.last is not None
    return config, dict(RecordingPins.last.owners)


@pytest.mark.parametrize("name", CONFIGS)
def test_the_pin_table_is_the_checkers_table(name, monkeypatch):
    config, owners = checker_table(CONFIGS[name], monkeypatch)
    assert {use.bcm: use.owner for use in pin_table(config)} == owners
    assert len({use.bcm for use in pin_table(config)}) == len(pin_table(config))


@settings(deadline=None,  # examples: tests/depth.py (100, 300 with --deep)
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_pin_table_is_the_checkers_for_any_accepted_table(data, monkeypatch):
    pins = data.draw(st.permutations(list(range(2, 28))))
    driver = data.draw(st.sampled_from(["gpio", "pca9685"]))
    lcd = data.draw(st.sampled_from(["pcf8574", "mcp23008", "gpio", "none"]))
    compartments = data.draw(st.integers(1, 8))
    table: dict = {"backend": "pi", "compartments": compartments, "servo_driver": driver, "lcd": lcd,
                   "button_pin": pins[0], "buzzer_pin": pins[1], "led_pin": pins[2],
                   "button_pull_up": data.draw(st.booleans())}
    if data.draw(st.booleans()):
        table["lid_pin"] = pins[3]
    if data.draw(st.booleans()):
        table["drop_pin"] = pins[4]
    if lcd == "gpio":
        table["lcd_pins"] = dict(zip(["rs", "e", "d4", "d5", "d6", "d7", "backlight"], pins[5:12]))
    if driver == "gpio":
        table["servo_pins"] = pins[12:12 + compartments]
    try:
        config, owners = checker_table(table, monkeypatch)
    except HardwareConfigError:
        assume(False)  # e.g. a pin drawn on the I2C lines: the checker refuses it, nothing to draw
    assert {use.bcm: use.owner for use in pin_table(config)} == owners


def test_the_committed_diagram_is_what_the_table_draws_now():
    assert SVG.read_text(encoding="utf-8") == render_svg(parse_hardware_config(SAMPLE)), \
        "docs/wiring.svg is stale: run  python -m dispenser.hardware.wiring_cli --out docs/wiring.svg"


def pin_groups(svg: str) -> dict[int, ET.Element]:
    root = ET.fromstring(svg)
    return {int(g.get("data-header")): g for g in root.iter("{http://www.w3.org/2000/svg}g")
            if g.get("data-header")}


def text_of(element: ET.Element) -> str:
    return " ".join("".join(t.itertext()) for t in element.iter("{http://www.w3.org/2000/svg}text"))


@pytest.mark.parametrize("name", CONFIGS)
def test_every_pin_of_the_table_is_in_the_diagram(name):
    config = parse_hardware_config(CONFIGS[name])
    svg = render_svg(config)
    groups = pin_groups(svg)
    assert sorted(groups) == list(range(1, 41))  # the whole header is drawn
    everything = text_of(ET.fromstring(svg))
    for use in pin_table(config):
        group = groups[use.header]
        assert group.get("data-bcm") == str(use.bcm)
        assert group.get("data-key") == use.key
        assert "used" in group.get("class").split()
        assert text_of(group) == f"{use.header} GPIO{use.bcm}  {use.label}"
        # ... and the part's box says where its wire goes.
        assert f"header pin {use.header} (GPIO{use.bcm})" in everything
    unused = set(HEADER_PIN) - {use.bcm for use in pin_table(config)}
    for bcm in unused:
        assert groups[HEADER_PIN[bcm]].get("class") == "pin free"
        assert text_of(groups[HEADER_PIN[bcm]]) == f"{HEADER_PIN[bcm]} GPIO{bcm}"


def test_the_diagram_carries_the_cautions():
    text = text_of(ET.fromstring(SVG.read_text(encoding="utf-8")))
    assert "never power servos from the Pi's 5 V pin" in text
    assert "one common ground" in text
    assert "remove its pull-ups or use a level shifter" in text


def test_the_header_is_the_pis():
    """Pinout of the 40-pin header (pinout.xyz): every GPIO 0..27 once, rails where they are."""
    assert sorted(HEADER) == list(range(1, 41))
    assert sorted(HEADER_PIN) == list(range(28))
    assert [p for p, v in HEADER.items() if v == "GND"] == [6, 9, 14, 20, 25, 30, 34, 39]
    assert [p for p, v in HEADER.items() if v == "5V"] == [2, 4]
    assert [p for p, v in HEADER.items() if v == "3V3"] == [1, 17]
    assert (HEADER_PIN[2], HEADER_PIN[3], HEADER_PIN[18], HEADER_PIN[21]) == (3, 5, 12, 40)


def markdown_section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n#", start + len(heading))
    return text[start:end if end != -1 else None]


def test_hardware_md_sample_is_the_drawn_build():
    section = markdown_section(HARDWARE_MD.read_text(encoding="utf-8"), "### Sample")
    (block,) = re.findall(r"```toml\n(.*?)```", section, re.S)
    assert tomllib.loads(block)["hardware"] == SAMPLE


def test_hardware_md_wiring_table_names_the_right_header_pins():
    """Each row's BCM numbers and header pins agree with the header, in order."""
    section = markdown_section(HARDWARE_MD.read_text(encoding="utf-8"), "## Wiring")
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| ")]
    checked = 0
    for part, bcm, header, _ in rows[1:]:
        numbers = [int(n) for n in re.findall(r"(?<![A-Za-z\d])\d+", bcm)]
        pins = [int(n) for n in re.findall(r"\d+", header)]
        assert [HEADER_PIN[n] for n in numbers] == pins, part
        checked += 1
    assert checked >= 8


def test_build_md_wires_the_sample_to_the_pins_of_the_table():
    """docs/BUILD.md's wiring steps name each pin of the documented build where the table has it."""
    steps = markdown_section((ROOT / "docs" / "BUILD.md").read_text(encoding="utf-8"), "## Wiring")
    table = pin_table(parse_hardware_config(SAMPLE))
    servos = [use.header for use in table if use.owner.startswith("servo")]
    assert "header pins " + ", ".join(map(str, servos)) + ")" in " ".join(steps.split())
    for use in table:
        if not use.owner.startswith("servo"):
            assert f"pin {use.header} (GPIO{use.bcm})" in steps, use


def test_the_command_writes_and_checks_the_diagram(tmp_path, capsys):
    out = tmp_path / "wiring.svg"
    assert main(["--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == SVG.read_text(encoding="utf-8")
    assert main(["--out", str(out), "--check"]) == 0
    out.write_text(out.read_text(encoding="utf-8").replace("GPIO17", "GPIO71"), encoding="utf-8")
    assert main(["--out", str(out), "--check"]) == 1
    assert "is not what the pin table draws now" in capsys.readouterr().err


def test_the_command_draws_a_makers_config(tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_text('[hardware]\nbackend = "pi"\ncompartments = 2\nservo_pins = [5, 6]\nlid_pin = 26\n',
                      encoding="utf-8")
    assert main(["--config", str(config)]) == 0
    groups = pin_groups(capsys.readouterr().out)
    assert groups[37].get("data-key") == "hardware.lid_pin"
    assert groups[29].get("data-key") == "hardware.servo_pins[0]"
    assert groups[32].get("class") == "pin free"  # GPIO12, a servo in the sample, is free here


@pytest.mark.parametrize("content, message", [
    ('[hardware]\nbackend = "pi"\nservo_pins = [12, 27]\ncompartments = 2\n',
     "hardware.servo_pins[1]: pin 27 is already used by the buzzer"),
    ("[hardware\n", "not valid TOML"),
    ("[hardware]\nlid_pin = 99\n", "hardware.lid_pin: must be a BCM GPIO number"),
])
def test_bad_config_is_one_line_and_writes_nothing(tmp_path, capsys, content, message):
    config = tmp_path / "config.toml"
    config.write_text(content, encoding="utf-8")
    out = tmp_path / "wiring.svg"
    assert main(["--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_a_missing_config_is_one_line(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "nope.toml")]) == 2
    assert capsys.readouterr().err == f"wiring: {tmp_path / 'nope.toml'}: no such file\n"
