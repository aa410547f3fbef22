"""The real charlcd library driving the HD44780 emulator through every wiring we support."""
from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from dispenser.hardware import lcd as lcd_module
from dispenser.hardware.errors import LcdFault
from fake_i2c import FakeI2C, Mcp23008Chip, Pcf8574Chip
from dispenser.hardware.hd44780 import CUSTOM_PLACEHOLDER, HD44780
from dispenser.hardware.lcd import NullLcd, encode, gpio_lcd, mcp23008_lcd, no_sleep, pcf8574_lcd, sim_lcd

SIZES = [(16, 2), (20, 4)]
WIRINGS = ["gpio", "mcp23008", "pcf8574", "sim"]
GPIO_PINS = {"rs": 4, "e": 25, "d4": 8, "d5": 7, "d6": 20, "d7": 21, "backlight": 26}


class WiredPin(MockPWMPin):
    """A mock pin with a wire to one input of the emulated controller."""

    listener = None

    def _change_state(self, value):
        changed = super()._change_state(value)
        if changed and self.listener is not None:
            self.listener(bool(value))
        return changed


def wire(pin, target) -> None:
    pin.listener = lambda level: setattr(target, "value", level)


def make(wiring: str, cols: int, rows: int):
    """(Lcd, HD44780, bus or None) for one wiring."""
    if wiring == "sim":
        lcd = sim_lcd(cols, rows)
        return lcd, lcd.emulator, None
    screen = HD44780(cols, rows)
    if wiring == "gpio":
        factory = MockFactory(pin_class=WiredPin)
        targets = {"rs": screen.rs, "e": screen.enable, "d4": screen.d4, "d5": screen.d5,
                   "d6": screen.d6, "d7": screen.d7, "backlight": screen.backlight_pin}
        for name, number in GPIO_PINS.items():
            wire(factory.pin(number), targets[name])
        return gpio_lcd(GPIO_PINS, cols, rows, pin_factory=factory, fast=True), screen, None
    bus = FakeI2C()
    if wiring == "mcp23008":
        bus.attach(0x20, Mcp23008Chip(screen))
        return mcp23008_lcd(bus, cols, rows, fast=True), screen, bus
    bus.attach(0x27, Pcf8574Chip(screen))
    return pcf8574_lcd(bus, cols, rows, fast=True), screen, bus


def sample(cols: int, rows: int) -> list[str]:
    texts = ["Next dose 08:00", "Sertraline x1", "Press to take", "Stock: 12 left"]
    return [f"{i}{text}".ljust(cols, "#")[:cols] for i, text in enumerate(texts[:rows])]


@pytest.mark.parametrize("cols,rows", SIZES)
@pytest.mark.parametrize("wiring", WIRINGS)
def test_what_is_shown_reads_back_on_every_row(wiring, cols, rows):
    lcd, screen, _ = make(wiring, cols, rows)
    assert lcd.show(sample(cols, rows)) is True
    assert screen.display_on and not screen.cursor_on and not screen.blink_on
    assert screen.lines() == sample(cols, rows)
    assert lcd.text == sample(cols, rows)


@pytest.mark.parametrize("wiring", WIRINGS)
def test_only_changed_characters_cross_the_bus(wiring):
    lcd, screen, _ = make(wiring, 20, 4)
    lcd.show(["Hello", "World"])
    before = screen.commands
    assert lcd.show(["Hello", "World"]) is False
    assert screen.commands == before
    lcd.show(["Hello", "Wxrld", "", "end"])
    # Per changed row: the position (charlcd sends it twice) and only the changed characters.
    assert screen.commands - before == (2 + 1) + (2 + 3)
    assert screen.lines() == ["Hello".ljust(20), "Wxrld".ljust(20), " " * 20, "end".ljust(20)]


@pytest.mark.parametrize("wiring", WIRINGS)
def test_clear_and_backlight(wiring):
    lcd, screen, _ = make(wiring, 16, 2)
    lcd.show(["abc", "def"])
    assert screen.backlight is True
    lcd.backlight(False)
    assert screen.backlight is False and lcd.backlight_on is False
    lcd.clear()
    assert screen.lines() == [" " * 16] * 2
    lcd.show(["abc", "def"])  # after a clear the text must be sent again
    assert screen.lines() == ["abc".ljust(16), "def".ljust(16)]
    assert screen.backlight is False  # text does not switch the backlight back on
    lcd.backlight(True)
    assert screen.backlight is True


def test_backlight_chosen_before_the_first_show_is_applied():
    lcd, screen, _ = make("pcf8574", 16, 2)
    lcd.backlight(False)
    lcd.show(["dark"])
    assert screen.backlight is False


def test_text_is_padded_cut_and_encoded():
    lcd, screen, _ = make("sim", 16, 2)
    lcd.show(["a line that is far too long", "x", "a third row is dropped"])
    assert screen.lines() == ["a line that is f", "x".ljust(16)]
    lcd.show(["20\u00b0C \u2192 ok", "tab\there \u00e9\\"])
    assert screen.lines() == ["20\u00b0C \u2192 ok".ljust(16), "tab here ??".ljust(16)]
    assert encode("\x01") == "\x01"


@pytest.mark.parametrize("wiring", ["mcp23008", "pcf8574"])
def test_a_failing_bus_is_an_lcd_fault_and_the_display_recovers(wiring):
    lcd, screen, bus = make(wiring, 16, 2)
    lcd.show(["first", ""])
    bus.fail = OSError(121, "Remote I/O error")
    with pytest.raises(LcdFault) as caught:
        lcd.show(["second", ""])
    assert isinstance(caught.value.cause, OSError)
    assert "OSError" in str(caught.value)
    bus.fail = None
    screen.power_on()  # as if it had been unplugged: back in 8-bit mode, blank
    lcd.show(["second", "line"])
    assert screen.lines() == ["second".ljust(16), "line".ljust(16)]


def test_no_device_at_the_address_is_an_lcd_fault():
    lcd = pcf8574_lcd(FakeI2C(), 16, 2, fast=True)
    with pytest.raises(LcdFault, match="LCD show failed"):
        lcd.show(["x"])
    lcd = mcp23008_lcd(FakeI2C(), 16, 2, address=0x21, fast=True)
    with pytest.raises(LcdFault, match="No I2C device at address: 0x21"):
        lcd.connect()


def test_pcf8574_writes_only_changed_lines_and_keeps_rw_low():
    bus, screen = FakeI2C(), HD44780(16, 2)
    chip = Pcf8574Chip(screen)
    bus.attach(0x27, chip)
    lcd = pcf8574_lcd(bus, 16, 2, fast=True)
    lcd.show(["A"])
    writes = chip.writes
    lcd.show(["B"])  # 3 bytes (position twice, one character) x 2 nibbles x (5 data lines + E twice) at most
    assert 0 < chip.writes - writes <= 3 * 2 * 7
    assert not chip.port & 0x02


def test_no_sleep_is_contained():
    character_lcd, character_lcd_i2c = lcd_module._load_library()
    import time

    with no_sleep():
        with no_sleep():
            assert character_lcd.time is not time
        assert character_lcd_i2c.time is not time
    assert character_lcd.time is time and character_lcd_i2c.time is time


def test_null_lcd_keeps_the_interface():
    lcd = NullLcd(20, 4)
    assert lcd.show(["x"]) is True and lcd.show(["x"]) is False
    assert lcd.text[0] == "x".ljust(20) and lcd.size == (20, 4)
    lcd.backlight(True)
    lcd.clear()


# -- the emulator itself, through the library's other commands ---------------------------------

@pytest.fixture
def driven():
    """(charlcd object, emulator) with sleeps free."""
    character_lcd, _ = lcd_module._load_library()
    screen = HD44780(16, 2)
    with no_sleep():
        device = character_lcd.Character_LCD_Mono(
            screen.rs, screen.enable, screen.d4, screen.d5, screen.d6, screen.d7, 16, 2,
            backlight_pin=screen.backlight_pin)
        yield device, screen


def test_message_with_newline_and_display_switch(driven):
    device, screen = driven
    device.message = "Hello\nWorld"
    assert screen.lines() == ["Hello".ljust(16), "World".ljust(16)]
    device.display = False
    assert not screen.display_on and screen.lines() == [" " * 16] * 2
    device.display = True
    device.cursor = True
    device.blink = True
    assert screen.cursor_on and screen.blink_on
    assert screen.lines()[0] == "Hello".ljust(16)


def test_display_shift(driven):
    device, screen = driven
    device.message = "Scroll"
    device.move_right()
    assert screen.lines()[0] == " Scroll".ljust(16)
    device.move_left()
    device.move_left()
    assert screen.lines()[0] == "croll".ljust(16)
    device.home()
    assert screen.lines()[0] == "Scroll".ljust(16)


def test_custom_characters_are_stored_and_shown_as_a_placeholder(driven):
    device, screen = driven
    heart = [0, 10, 31, 31, 14, 4, 0, 0]
    device.create_char(1, heart)
    device.message = "I \x01 pills"
    assert screen.custom_char(1) == heart
    assert screen.lines()[0] == f"I {CUSTOM_PLACEHOLDER} pills".ljust(16)


def test_right_to_left_entry(driven):
    device, screen = driven
    device.text_direction = device.RIGHT_TO_LEFT
    device.message = "abc"
    assert screen.lines()[0] == " " * 13 + "cba"


def test_second_init_resynchronises_from_any_nibble_state():
    character_lcd, _ = lcd_module._load_library()
    screen = HD44780(16, 2)
    with no_sleep():
        pins = (screen.rs, screen.enable, screen.d4, screen.d5, screen.d6, screen.d7)
        character_lcd.Character_LCD_Mono(*pins, 16, 2).message = "one"
        screen.drive(rs=False, enable=True, nibble=0x5)
        screen.drive(rs=False, enable=False, nibble=0x5)  # half a byte: out of step
        character_lcd.Character_LCD_Mono(*pins, 16, 2).message = "two"
    assert screen.lines()[0] == "two".ljust(16)
