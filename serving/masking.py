"""What must not be kept or shown: credentials in messages and logs, and buyers' contact and payment data in
the texts the prediction log keeps.

- `mask_url`, `mask_text`: URLs without their user info, texts without given secrets (errors, logs);
- `redact_personal_data`: e-mail addresses, phone numbers, IBANs and card numbers replaced by a
  placeholder (`<email>`, `<phone>`, `<iban>`, `<card>`); order ids, names and the rest are kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_USERINFO = re.compile(r"(\w[\w+.-]*://)[^/\s@?#]+@")


def mask_url(url: str) -> str:
    """`url` with its user info masked and its query and fragment dropped (either may hold credentials):
    `postgresql://u:pw@db/triage?sslkey=x` -> `postgresql://***@db/triage`."""
    return _USERINFO.sub(r"\1***@", re.split(r"[?#]", url.strip(), maxsplit=1)[0])


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with the user info of every URL in it, and every given secret, masked."""
    out = _USERINFO.sub(r"\1***@", text)
    for secret in secrets:
        if secret:
            out = out.replace(secret, "<secret>")
    return out


# -- personal data in messages ------------------------------------------------------------------------
# bounded parts (a local part starts a run, labels have at most 63 characters): linear on any 20,000 characters
_EMAIL = re.compile(r"(?<![\w.+%-])[\w.+%-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){0,8}\.[A-Za-z]{2,24}\b")
# IBAN: an ISO country code of an IBAN country, 2 check digits, then 8 to 30 capitals or digits, in groups
# of 4 separated by single spaces or not at all (FR/IT: 27 characters, GB: 22)
_IBAN_COUNTRIES = (
    "AD AE AL AT AZ BA BE BG BH BR CH CR CY CZ DE DK DO EE ES FI FO FR GB GE GI GL GR GT HR HU IE IL IS IT JO "
    "KW KZ LB LC LI LT LU LV MC MD ME MK MR MT MU NL NO PK PL PS PT QA RO RS SA SC SE SI SK SM TN TR UA VA VG XK"
).split()
_IBAN = re.compile(rf"\b(?:{'|'.join(_IBAN_COUNTRIES)})\d{{2}}(?:[ ]?[A-Z0-9]{{4}}){{2,7}}(?:[ ]?[A-Z0-9]{{1,3}})?\b")
# card numbers: 16 to 19 digits in groups of 4 (spaces, dashes or none), or the 4-6-5 form of 15 digits
_CARD = re.compile(r"(?<![\d-])(?:\d{4}([ -]?)\d{4}\1\d{4}\1\d{4}(?:\1?\d{1,3})?|\d{4}([ -]?)\d{6}\2\d{5})(?![\d-])")
# phone candidates: an optional + or 00, then 7 to 15 digits with single separators (space . - /) and an
# optional "(0)" after the country code; `_is_phone` keeps the ones that are phone numbers
_PHONE = re.compile(r"(?<![\w.+/-])(?:\+|00)?\d(?:[ .\-/]?(?:\(0\)[ ]?)?\d){6,16}(?![\w-])")


def _is_phone(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate.replace("(0)", ""))
    if candidate.startswith(("+", "00")):  # international: +33 6..., +39 3..., +44 7..., 0039...
        return 8 <= len(digits) - (2 if candidate.startswith("00") else 0) <= 15
    if digits.startswith("0"):  # national with a trunk 0: FR 06 12 34 56 78 (10), UK 07700 900123 (11), IT 02...
        return 9 <= len(digits) <= 11
    return digits.startswith("3") and len(digits) in (9, 10)  # Italian mobiles: 333 123 4567


def redact_personal_data(text: str) -> str:
    """`text` with e-mail addresses, IBANs, card numbers and phone numbers (fr/it/en formats) replaced by
    `<email>`, `<iban>`, `<card>` and `<phone>`; Amazon order ids (3-7-7 digits), dates, prices and
    everything else are kept. Names and postal addresses are not recognised."""
    out = _EMAIL.sub("<email>", text)
    out = _IBAN.sub("<iban>", out)
    out = _CARD.sub("<card>", out)
    return _PHONE.sub(lambda m: "<phone>" if _is_phone(m.group(0)) else m.group(0), out)
