"""One parser for the integer and boolean values Floe reads from text: table properties and settings.

Every caller names what it parses (``table property commit.retry.num-retries``, ``FLOE_X``) and the
error to raise, so a bad value is refused with the same precise message wherever it comes from.
"""

from __future__ import annotations

from collections.abc import Mapping

from app.errors import FloeError, InvalidArgument

_TRUE = ("true",)
_FALSE = ("false",)


def parse_int(
    raw: str | None, label: str, default: int, minimum: int = 1, error: type[FloeError] = InvalidArgument
) -> int:
    """``raw`` as an integer of at least ``minimum``; ``default`` when absent or empty."""
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise error(f"{label}={raw!r} is not an integer") from None
    if value < minimum:
        raise error(f"{label}={value} must be at least {minimum}")
    return value


def parse_bool(raw: str | None, label: str, default: bool, error: type[FloeError] = InvalidArgument) -> bool:
    """``true`` or ``false`` (any case, surrounding blanks ignored); ``default`` when absent or empty."""
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise error(f"{label}={raw!r} is not true or false")


def int_property(props: Mapping[str, str], key: str, default: int, minimum: int = 1) -> int:
    """An integer table property; a bad one is INVALID_ARGUMENT naming the property."""
    return parse_int(props.get(key), f"table property {key}", default, minimum)


def bool_property(props: Mapping[str, str], key: str, default: bool) -> bool:
    """A boolean table property; a bad one is INVALID_ARGUMENT naming the property."""
    return parse_bool(props.get(key), f"table property {key}", default)
