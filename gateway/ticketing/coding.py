"""Coded cause and remedy of a close: what a reliability engineer can count.

Free text ("replaced it, works now") cannot be counted, so `close` carries a failure cause code
and a remedy (maintenance activity) code. The built-in codes are the classifications of
ISO 14224 (failure causes by category, annex B; maintenance activities), written as the
standard numbers them; a site adds its own CMMS codes in `ticketing.cause_codes` and
`ticketing.remedy_codes`, and either set is accepted.
"""

from __future__ import annotations

from collections.abc import Mapping

# ISO 14224 failure causes: category (x.0) and the causes under it.
ISO14224_CAUSES: Mapping[str, str] = {
    "1.0": "design-related causes",
    "1.1": "improper capacity",
    "1.2": "improper material",
    "2.0": "fabrication or installation error",
    "2.1": "fabrication error",
    "2.2": "installation error",
    "3.0": "failure related to operation or maintenance",
    "3.1": "off-design service",
    "3.2": "operating error",
    "3.3": "maintenance error",
    "3.4": "expected wear and tear",
    "4.0": "failure related to management",
    "4.1": "documentation error",
    "4.2": "management error",
    "5.0": "miscellaneous",
    "5.1": "no cause found",
    "5.2": "common cause",
    "5.3": "combined causes",
    "5.4": "other unit or cascading failure",
    "5.5": "other",
    "5.6": "unknown",
}

# ISO 14224 maintenance activities (what was done).
ISO14224_ACTIVITIES: Mapping[str, str] = {
    "1": "replace",
    "2": "repair",
    "3": "modify",
    "4": "adjust",
    "5": "refit",
    "6": "check",
    "7": "service",
    "8": "test",
    "9": "inspection",
    "10": "overhaul",
    "11": "combination",
    "12": "other",
}


def check_codes(
    cause_code: str,
    remedy_code: str,
    *,
    site_causes: Mapping[str, str],
    site_remedies: Mapping[str, str],
) -> str | None:
    """None when both codes are known, else the reason to refuse the close."""
    if cause_code not in ISO14224_CAUSES and cause_code not in site_causes:
        return (
            f"unknown cause code `{cause_code}` (ISO 14224 failure cause such as `3.4`, or a "
            "site code from `ticketing.cause_codes`)"
        )
    if remedy_code not in ISO14224_ACTIVITIES and remedy_code not in site_remedies:
        return (
            f"unknown remedy code `{remedy_code}` (ISO 14224 maintenance activity such as `1` "
            "(replace), or a site code from `ticketing.remedy_codes`)"
        )
    return None


def describe(code: str, builtin: Mapping[str, str], site: Mapping[str, str]) -> str:
    return site.get(code) or builtin.get(code, "")
