"""Every check of a value a user gives: the library's arguments, RunConfig's fields, a page's parameters.

Each check takes the parameter's name and its value and returns the value (converted: an int, a
float, a parsed list), or raises a ValueError that names the parameter, the value and what is
allowed::

    >>> check_positive_int("num_seeds", 0)
    Traceback (most recent call last):
    ...
    ValueError: num_seeds=0 is not allowed: num_seeds must be an integer >= 1

The rules below (``integer()``, ``number()``, ``one_of(...)``, ...) are the same checks with their
bounds filled in, ``rule(name, value) -> value``: the rule table of the notebooks'
parameters (:data:`vqlib.notebook.RULES`) is written with them.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["check_choice", "check_choices", "check_flag", "check_fraction", "check_non_negative", "check_number",
           "check_positive_int", "check_text", "check_widths", "flag", "integer", "integers", "number", "numbers",
           "number_list", "one_of", "some_of", "text", "widths"]


# checks


def check_positive_int(name: str, value, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int if it is an integer (Python or NumPy, not bool) in [``minimum``, ``maximum``]."""
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum
            or (maximum is not None and value > maximum)):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name}={value!r} is not allowed: {name} must be an integer {bounds}")
    return int(value)


def check_number(name: str, value, minimum: float = 0, strict: bool = False) -> float:
    """``value`` as a float if it is a finite number (not bool) >= ``minimum`` (> with ``strict``)."""
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
            or not math.isfinite(value) or (value <= minimum if strict else value < minimum)):
        raise ValueError(f"{name}={value!r} is not allowed: {name} must be a finite number "
                         f"{'>' if strict else '>='} {minimum:g}")
    return float(value)


def check_non_negative(name: str, value) -> float:
    return check_number(name, value, minimum=0)


def check_fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{name}={value!r} is not allowed: {name} must be a number in (0, 1]")
    return float(value)


def check_choice(name: str, value, allowed):
    if isinstance(value, bool) or value not in allowed:  # True == 1: a flag is not a choice
        raise ValueError(f"{name}={value!r} is not allowed: choose one of {', '.join(map(repr, allowed))}")
    return value


def check_flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not allowed: give True or False")
    return value


def check_text(name: str, value) -> str:
    """A non-empty string (a folder, a label)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}={value!r} is not allowed: give a non-empty string")
    return value


def number_list(name: str, text, kind=int, minimum=0, strict: bool = False) -> list:
    """Comma-separated numbers ("0,2,4,8") as a list of ``kind``, each >= ``minimum`` (> with ``strict``)."""
    try:
        values = [kind(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        values = []
    if (not values or not all(map(math.isfinite, values))
            or any((v <= minimum) if strict else (v < minimum) for v in values)):
        raise ValueError(f"{name}={text!r} is not allowed: give comma-separated {kind.__name__} values "
                         f"{'>' if strict else '>='} {minimum:g}")
    return values


def check_choices(name: str, text, allowed) -> list:
    """Comma-separated distinct names ("ae,vq"), each one of ``allowed``, as a list."""
    names = [n.strip() for n in str(text).split(",") if n.strip()] if isinstance(text, str) else []
    if not names or len(set(names)) != len(names) or not set(names) <= set(allowed):
        raise ValueError(f"{name}={text!r} is not allowed: give distinct names separated by commas, each one of "
                         f"{', '.join(map(repr, allowed))}")
    return names


def check_widths(name: str, text) -> tuple:
    """Layer widths joined by '-' ("500-500-2000") as a tuple of ints >= 1."""
    try:
        values = tuple(int(w) for w in text.split("-"))
    except (AttributeError, ValueError):
        values = ()
    if not values or min(values) < 1:
        raise ValueError(f"{name}={text!r} is not allowed: give layer widths >= 1 joined by '-', like '500-500-2000'")
    return values


# rules: the checks with their bounds filled in, rule(name, value) -> value


def integer(minimum: int = 1, maximum: int | None = None):
    return lambda name, value: check_positive_int(name, value, minimum, maximum)


def number(minimum: float = 0, strict: bool = False):
    return lambda name, value: check_number(name, value, minimum, strict)


def one_of(allowed):
    return lambda name, value: check_choice(name, value, tuple(allowed))


def some_of(allowed):
    return lambda name, value: check_choices(name, value, tuple(allowed))


def integers(minimum: int = 0):
    return lambda name, value: number_list(name, value, int, minimum)


def numbers(minimum: float = 0, strict: bool = True):
    return lambda name, value: number_list(name, value, float, minimum, strict)


def flag():
    return check_flag


def text():
    return check_text


def widths():
    return check_widths
