"""Write the wiring diagram: `python -m dispenser.hardware.wiring_cli`.

Without `--config` it draws the documented build (`wiring.SAMPLE`): that is how
docs/wiring.svg is made. With `--config FILE` it draws a maker's own
`[hardware]` table, after the same checks `dispenser run` makes, so a diagram is
never drawn for wiring the dispenser would refuse. `--check` compares instead of
writing (exit 1 when the file is not what the table draws now).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dispenser.config import ConfigError, load_config

from .errors import HardwareConfigError
from .settings import HardwareConfig, parse_hardware_config
from .wiring import SAMPLE, render_svg


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when written (or, with --check, up to date); 1 when --check differs; 2 on bad input."""
    parser = argparse.ArgumentParser(prog="python -m dispenser.hardware.wiring_cli",
                                     description="draw the dispenser's wiring diagram (SVG)")
    parser.add_argument("--config", help="a dispenser config file; default: the documented build")
    parser.add_argument("--out", default="-", help="the SVG file to write; default: stdout")
    parser.add_argument("--check", action="store_true",
                        help="compare with --out instead of writing it")
    args = parser.parse_args(argv)
    try:
        svg = render_svg(_hardware(args.config))
    except (ConfigError, HardwareConfigError) as error:
        print(f"wiring: {error}", file=sys.stderr)
        return 2
    if args.check:
        if args.out == "-":
            print("wiring: --check needs --out FILE", file=sys.stderr)
            return 2
        try:
            current = Path(args.out).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            print(f"wiring: {args.out}: cannot be read ({error})", file=sys.stderr)
            return 1
        if current != svg:
            print(f"wiring: {args.out} is not what the pin table draws now; run "
                  f"python -m dispenser.hardware.wiring_cli --out {args.out}", file=sys.stderr)
            return 1
        return 0
    if args.out == "-":
        sys.stdout.write(svg)
        return 0
    try:
        Path(args.out).write_text(svg, encoding="utf-8")
    except OSError as error:
        print(f"wiring: {args.out}: cannot be written ({error.strerror or error})", file=sys.stderr)
        return 2
    return 0


def _hardware(config_path: str | None) -> HardwareConfig:
    if config_path is None:
        return parse_hardware_config(SAMPLE)
    return parse_hardware_config(load_config(config_path).hardware)


if __name__ == "__main__":
    sys.exit(main())
