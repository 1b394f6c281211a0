"""Writing YAML by hand, for device file drafts with comments (`browse`, `scan`, `import-dbc`).

PyYAML's dumper cannot write comments, and a draft without them is a list of addresses nobody
can review. These helpers write single scalars so that the loader (PyYAML, YAML 1.1 rules)
reads back exactly the value written: text that YAML would take for a number, a boolean or
null is quoted, floats always carry a dot, and anything unusual is a JSON-style double-quoted
string (JSON escapes are YAML escapes).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

_PLAIN = re.compile(r"^[A-Za-z_/.][A-Za-z0-9_.\-/]*$")
# YAML 1.1 booleans and nulls (PyYAML resolves these case variants), plus 1.2's.
_SPECIAL = frozenset(
    word
    for base in ("y", "yes", "n", "no", "true", "false", "on", "off", "null", "nan", "inf")
    for variant in (base, base.capitalize(), base.upper())
    for word in (variant, "." + variant)
)


def scalar(value: object) -> str:
    """One YAML scalar that reads back as `value` (str, int, float, bool or None)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if not isinstance(value, str):
        raise TypeError(f"no YAML scalar for {type(value).__name__}")
    if _PLAIN.match(value) and value not in _SPECIAL:
        return value
    return json.dumps(value, ensure_ascii=False)


def flow_mapping(entries: Mapping[str, object]) -> str:
    """`{name: temp, node_id: "ns=2;s=T"}`: one list entry on one line."""
    return "{" + ", ".join(f"{key}: {scalar(value)}" for key, value in entries.items()) + "}"


def comment(text: str) -> str:
    """A comment line's text, one line (newlines would end the comment)."""
    return " ".join(text.split())


def _float(value: float) -> str:
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value)
    if "e" in text and "." not in text.split("e")[0]:
        # PyYAML (YAML 1.1) reads `1e-05` as text; `1.0e-05` is a float.
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent if exponent[0] in '+-' else '+' + exponent}"
    return text
