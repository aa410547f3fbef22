"""Firmware for a supervised smart pill dispenser."""

__version__ = "0.1.0"
