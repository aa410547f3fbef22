"""The wiring diagram, drawn from the pins a checked `[hardware]` table uses.

`pin_table(config)` says which BCM pin each part is on, under the very names
`settings.py` uses when it refuses a pin given twice ("the button", "servo 3"), and
tests/test_wiring.py holds it equal to the checker's own table. `render_svg(config)`
draws the Pi's 40-pin header with every used pin labelled, and beside it each part
with what goes where, so docs/wiring.svg (the documented build, `SAMPLE`) and a
maker's own diagram (`python -m dispenser.hardware.wiring_cli --config FILE`) can
only show wiring the config accepts. Pure: no files, no GPIO.
"""
from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from .settings import I2C_PINS, LCD_LINES, HardwareConfig

# The 40-pin header of every Pi since the B+ (the Zero 2 W too): physical pin -> BCM GPIO
# number, or the rail it carries. Pins 27/28 (GPIO0/1) belong to the HAT ID EEPROM.
HEADER: dict[int, int | str] = {
    1: "3V3", 2: "5V", 3: 2, 4: "5V", 5: 3, 6: "GND", 7: 4, 8: 14, 9: "GND", 10: 15,
    11: 17, 12: 18, 13: 27, 14: "GND", 15: 22, 16: 23, 17: "3V3", 18: 24, 19: 10, 20: "GND",
    21: 9, 22: 25, 23: 11, 24: 8, 25: "GND", 26: 7, 27: 0, 28: 1, 29: 5, 30: "GND",
    31: 6, 32: 12, 33: 13, 34: "GND", 35: 19, 36: 16, 37: 26, 38: 20, 39: "GND", 40: 21,
}
HEADER_PIN = {bcm: pin for pin, bcm in HEADER.items() if isinstance(bcm, int)}

# The documented build (docs/HARDWARE.md, "Sample"): what docs/wiring.svg shows.
SAMPLE: dict = {
    "backend": "pi", "pin_factory": "auto", "compartments": 8,
    "servo_pins": [12, 13, 18, 19, 5, 6, 16, 26], "servo_open_angle": 90,
    "servo_closed_angle": [0, 0, 0, 0, 5, 0, 0, 0], "servo_min_pulse_ms": 1.0,
    "servo_max_pulse_ms": 2.0, "dwell_ms": 500, "button_pin": 17, "hold_s": 2.0,
    "buzzer_pin": 27, "led_pin": 22, "lcd": "pcf8574", "lcd_address": 0x27,
    "lcd_cols": 16, "lcd_rows": 2, "lid_pin": 23, "drop_pin": 24,
}


@dataclass(frozen=True)
class PinUse:
    """One BCM pin and the part on it. `owner` is the checker's name for the part
    (its "already used by ..." message), `label` what the diagram calls the line,
    `key` the config key that chose the pin."""

    bcm: int
    owner: str
    label: str
    key: str

    @property
    def header(self) -> int:
        return HEADER_PIN[self.bcm]


def pin_table(config: HardwareConfig) -> tuple[PinUse, ...]:
    """Every BCM pin the checked config uses, in the order the checker claims them."""
    uses = [
        PinUse(config.button_pin, "the button", "button", "hardware.button_pin"),
        PinUse(config.buzzer_pin, "the buzzer", "buzzer (transistor base)", "hardware.buzzer_pin"),
        PinUse(config.led_pin, "the LED", "LED", "hardware.led_pin"),
    ]
    if config.lcd in ("pcf8574", "mcp23008"):
        uses += _i2c("the LCD's I2C bus", _i2c_parts(config))
    elif config.lcd == "gpio":
        uses += [PinUse(pin, f"the LCD's {name} line", f"LCD {_line(name)}",
                        f"hardware.lcd_pins.{name}")
                 for name in LCD_LINES + ("backlight",)
                 if (pin := config.lcd_pins.get(name)) is not None]
    if config.servo_driver == "pca9685" and config.lcd not in ("pcf8574", "mcp23008"):
        uses += _i2c("the PCA9685's I2C bus", "PCA9685")
    if config.lid_pin is not None:
        uses.append(PinUse(config.lid_pin, "the lid switch", "lid switch", "hardware.lid_pin"))
    if config.drop_pin is not None:
        uses.append(PinUse(config.drop_pin, "the pill-drop sensor", "pill-drop sensor",
                           "hardware.drop_pin"))
    uses += [PinUse(pin, f"servo {i + 1}", f"servo {i + 1} signal", f"hardware.servo_pins[{i}]")
             for i, pin in enumerate(config.servo_pins)]
    return tuple(uses)


def _line(name: str) -> str:
    """An LCD line as the datasheet writes it: RS, E, D4..D7, backlight."""
    return name if name == "backlight" else name.upper()


def _i2c(owner: str, parts: str) -> list[PinUse]:
    sda, scl = I2C_PINS
    return [PinUse(sda, owner, f"I2C SDA: {parts}", "hardware.lcd"),
            PinUse(scl, owner, f"I2C SCL: {parts}", "hardware.lcd")]


def _i2c_parts(config: HardwareConfig) -> str:
    return "LCD backpack, PCA9685" if config.servo_driver == "pca9685" else "LCD backpack"


# -- drawing ----------------------------------------------------------------------

ROW = 26              # px between header rows
TOP = 110             # y of the header's first row
LEFT_PIN, RIGHT_PIN = 330, 362   # x of the odd and even pin columns
PARTS_X, PARTS_W = 650, 560
WIDTH = PARTS_X + PARTS_W + 20
COLOURS = {"power": "#c0392b", "ground": "#222222", "i2c": "#1f6fb2", "servo": "#d35400",
           "input": "#1e8449", "output": "#7d3c98", "lcd": "#117a65", "free": "#b3b3b3"}


@dataclass(frozen=True)
class _Part:
    """A box on the right: a part and its connections, one line each."""

    title: str
    kind: str
    lines: tuple[str, ...]


def render_svg(config: HardwareConfig) -> str:
    """The wiring of `config` as a standalone SVG document (same input, same bytes)."""
    table = pin_table(config)
    by_bcm = {use.bcm: use for use in table}
    parts = _parts(config, by_bcm)
    parts_height = sum(_box_height(part) + 14 for part in parts)
    height = max(TOP + 20 * ROW + 170, 90 + parts_height + 20)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Arial, sans-serif" font-size="13">',
        "<title>Dispenser wiring (BCM numbering)</title>",
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        _text(20, 32, "Pill dispenser wiring: Raspberry Pi Zero 2 W 40-pin header", size=20, weight="bold"),
        _text(20, 56, _summary(config), size=13),
        _text(20, 76, "Pins are BCM GPIO numbers (as in the config) and physical header pin numbers. "
                      "Generated from the [hardware] pin table: python -m dispenser.hardware.wiring_cli",
              size=11, fill="#555555"),
        _header(by_bcm, config),
        _legend(TOP + 20 * ROW + 30),
    ]
    y = 96
    for part in parts:
        out.append(_box(part, y))
        y += _box_height(part) + 14
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _summary(config: HardwareConfig) -> str:
    servos = ("servos on a PCA9685 board at " + f"0x{config.pca9685_address:02X}"
              if config.servo_driver == "pca9685" else "one servo per compartment on a GPIO pin")
    size = f"{config.lcd_cols}x{config.lcd_rows}"
    lcd = {"pcf8574": f"a {size} HD44780 LCD on a PCF8574 I2C backpack at 0x{config.lcd_address:02X}",
           "mcp23008": f"a {size} HD44780 LCD on an MCP23008 I2C backpack at 0x{config.lcd_address:02X}",
           "gpio": f"a {size} HD44780 LCD wired in 4-bit parallel", "none": "no LCD"}[config.lcd]
    return f"{config.compartments} compartments, {servos}; {lcd}"


def _header(by_bcm: dict[int, PinUse], config: HardwareConfig) -> str:
    rails = _rail_uses(config)
    out = ['<g id="header">',
           f'<rect x="{LEFT_PIN - 16}" y="{TOP - 18}" width="{RIGHT_PIN - LEFT_PIN + 32}" '
           f'height="{20 * ROW + 10}" rx="6" fill="#2e4d2e"/>']
    for pin, what in HEADER.items():
        row, right = (pin - 1) // 2, pin % 2 == 0
        x, y = (RIGHT_PIN if right else LEFT_PIN), TOP + row * ROW
        if isinstance(what, int):
            use = by_bcm.get(what)
            name = f"GPIO{what}"
            kind = _kind(use) if use else "free"
            label = f"{name}  {use.label}" if use else name
        else:
            use, name = None, what
            kind = "ground" if what == "GND" else "power"
            label = f"{what}  {rails[pin]}" if pin in rails else what
        attrs = f'class="pin {"used" if use or pin in rails else "free"}" data-header="{pin}"'
        if isinstance(what, int):
            attrs += f' data-bcm="{what}"'
        if use:
            attrs += f" data-key={quoteattr(use.key)}"
        out.append(f"<g {attrs}>")
        out.append(f'<circle cx="{x}" cy="{y}" r="8" fill="{COLOURS[kind]}" stroke="#ffffff" stroke-width="1.5"/>')
        out.append(_text(x, y + 4, str(pin), size=8, anchor="middle", fill="#ffffff"))
        weight = "bold" if use or pin in rails else "normal"
        colour = COLOURS[kind] if kind != "free" else "#999999"
        if right:
            out.append(_text(x + 18, y + 4, label, anchor="start", fill=colour, weight=weight))
        else:
            out.append(_text(x - 18, y + 4, label, anchor="end", fill=colour, weight=weight))
        out.append("</g>")
    out.append("</g>")
    return "\n".join(out)


def _rail_uses(config: HardwareConfig) -> dict[int, str]:
    """Which power and ground pins the parts use (header pin → what it feeds)."""
    rails = {2: "LCD VCC" if config.lcd in ("pcf8574", "mcp23008", "gpio") else "",
             4: "buzzer +", 6: "common ground", 9: "button",
             14: "LED cathode (via resistor)", 1: "", 17: "", 20: "", 25: "", 39: "LCD"}
    if config.drop_pin is not None:
        rails[1] = "pill-drop sensor VCC"
        rails[20] = "pill-drop sensor GND"
    if config.lid_pin is not None:
        rails[25] = "lid switch"
    if config.servo_driver == "pca9685":
        rails[17] = "PCA9685 VCC (logic)"
        rails[34] = "PCA9685 GND"
    if config.lcd == "none":
        rails[39] = ""
    if not config.button_pull_up:
        rails[9] = ""
        rails[17] = (rails[17] + ", " if rails[17] else "") + "button"
    return {pin: what for pin, what in rails.items() if what}


def _kind(use: PinUse) -> str:
    if use.owner.startswith("servo"):
        return "servo"
    if "I2C" in use.owner:
        return "i2c"
    if use.owner.startswith("the LCD"):
        return "lcd"
    if use.owner in ("the button", "the lid switch", "the pill-drop sensor"):
        return "input"
    return "output"


def _legend(y: int) -> str:
    items = [("power", "power (3.3 V, 5 V)"), ("ground", "ground"), ("i2c", "I2C"),
             ("servo", "servo signal"), ("input", "input"), ("output", "output"),
             ("lcd", "LCD parallel"), ("free", "free")]
    out = ['<g id="legend">']
    for i, (kind, name) in enumerate(items):
        x, row_y = 30 + (i % 4) * 140, y + (i // 4) * 22
        out.append(f'<circle cx="{x}" cy="{row_y}" r="6" fill="{COLOURS[kind]}"/>')
        out.append(_text(x + 12, row_y + 4, name, size=11))
    out.append("</g>")
    return "\n".join(out)


def _at(use: PinUse | None) -> str:
    return f"header pin {use.header} (GPIO{use.bcm})" if use else "(not fitted)"


def _parts(config: HardwareConfig, by_bcm: dict[int, PinUse]) -> list[_Part]:
    find = {use.key: use for use in by_bcm.values()}
    parts = []
    sda, scl = by_bcm.get(I2C_PINS[0]), by_bcm.get(I2C_PINS[1])
    if config.lcd in ("pcf8574", "mcp23008"):
        chip = "PCF8574" if config.lcd == "pcf8574" else "MCP23008"
        parts.append(_Part(f"LCD {config.lcd_cols}x{config.lcd_rows} on a {chip} I2C backpack "
                           f"(0x{config.lcd_address:02X})", "i2c", (
            f"SDA → {_at(sda)}", f"SCL → {_at(scl)}",
            "VCC → 5 V (header pin 2); GND → header pin 39",
            "a 5 V backpack pulls SDA/SCL up to 5 V: remove its pull-ups or use a level shifter",
        )))
    elif config.lcd == "gpio":
        lines = [f"{_line(name)} → {_at(find.get(f'hardware.lcd_pins.{name}'))}"
                 for name in LCD_LINES + ("backlight",) if name in config.lcd_pins]
        parts.append(_Part(f"LCD {config.lcd_cols}x{config.lcd_rows}, HD44780 in 4-bit parallel", "lcd", (
            *lines, "RW → GND; V0 → 10 kΩ contrast pot; VDD → 5 V (pin 2), VSS → GND (pin 39)",
            "the LCD never drives the data lines (RW low), so 5 V never reaches the Pi")))
    button = find["hardware.button_pin"]
    parts.append(_Part("push button", "input", (
        f"one leg → {_at(button)}",
        "other leg → GND (header pin 9); internal pull-up" if config.button_pull_up
        else "other leg → 3.3 V (header pin 17); 10 kΩ pull-down to GND",
    )))
    parts.append(_Part("active buzzer (5 V) through an NPN transistor (2N2222 / BC337)", "output", (
        f"transistor base → 1 kΩ → {_at(find['hardware.buzzer_pin'])}",
        "buzzer + → 5 V (header pin 4); buzzer - → collector; emitter → GND",
    )))
    parts.append(_Part("status LED", "output", (
        f"anode → {_at(find['hardware.led_pin'])}", "cathode → 330 Ω → GND (header pin 14)",
    )))
    if config.lid_pin is not None:
        parts.append(_Part("lid reed switch (closed when the lid is shut)", "input", (
            f"one lead → {_at(find['hardware.lid_pin'])}", "other lead → GND (header pin 25); internal pull-up",
        )))
    if config.drop_pin is not None:
        parts.append(_Part("pill-drop sensor: IR break-beam below the compartments", "input", (
            f"receiver OUT (open collector) → {_at(find['hardware.drop_pin'])}; internal pull-up",
            "receiver VCC → 3.3 V (header pin 1), GND → header pin 20; emitter from 3.3 V or 5 V",
        )))
    if config.servo_driver == "pca9685":
        parts.append(_Part(f"PCA9685 16-channel servo board (0x{config.pca9685_address:02X})", "servo", (
            f"SDA → {_at(sda)}, SCL → {_at(scl)}",
            "VCC (logic) → 3.3 V (header pin 17); GND → header pin 34",
            "V+ (screw terminal) → the 5 V servo supply, never the Pi",
            f"compartment N → channel N-1 (channels 0..{config.compartments - 1})",
        )))
    else:
        lines = [f"compartment {i + 1}: signal → {_at(find[f'hardware.servo_pins[{i}]'])}"
                 for i in range(len(config.servo_pins))]
        if not lines:
            lines = ["servo_pins not set (backend = \"sim\"): no servo is wired"]
        parts.append(_Part(f"{config.compartments} servos (SG90 / MG90S), one per compartment", "servo", (
            *lines, "red (+) → the 5 V servo supply; brown (-) → its GND",
        )))
    parts.append(_Part("5 V servo supply (2 A or more)", "power", (
        "+5 V → every servo's red wire" + (" (PCA9685 V+)" if config.servo_driver == "pca9685" else ""),
        "GND → servo GND and the Pi's GND (header pin 6): one common ground",
        "never power servos from the Pi's 5 V pin",
    )))
    return parts


def _box_height(part: _Part) -> int:
    return 30 + 18 * len(part.lines)


def _box(part: _Part, y: int) -> str:
    colour = COLOURS[part.kind]
    out = ['<g class="part">',
           f'<rect x="{PARTS_X}" y="{y}" width="{PARTS_W}" height="{_box_height(part)}" rx="5" '
           f'fill="#fafafa" stroke="{colour}" stroke-width="2"/>',
           _text(PARTS_X + 10, y + 19, part.title, weight="bold", fill=colour)]
    for i, line in enumerate(part.lines):
        out.append(_text(PARTS_X + 16, y + 38 + 18 * i, line, size=12))
    out.append("</g>")
    return "\n".join(out)


def _text(x: int, y: int, text: str, *, size: int = 13, anchor: str = "start",
          fill: str = "#222222", weight: str = "normal") -> str:
    return (f'<text x="{x}" y="{y}" font-size="{size}" text-anchor="{anchor}" fill="{fill}"'
            + (f' font-weight="{weight}"' if weight != "normal" else "") + f">{escape(text)}</text>")
