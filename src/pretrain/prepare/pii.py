"""PII removal: emails, phone numbers, IP addresses, payment cards, Chinese resident IDs, US SSNs.

Each type is a candidate regex (ASCII classes, so "电话13812345678" is found: CJK letters are not
word characters here) plus a validator; a match that fails validation (a card number that
fails Luhn, an ID whose check digit is wrong, an impossible date, an SSN in a never-issued range)
is left alone, which is what keeps order numbers, dates and version strings out. Types run in a
fixed order and each replaces its matches with a typed placeholder (`<EMAIL>`, `<PHONE>`, ...) that
contains no digits, so a later type never re-matches part of an earlier one.

Hand-written: datatrove's PIIFormatter covers emails and IPs only, and Presidio needs spaCy models.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

PII_TYPES = ("email", "ipv6", "ipv4", "cn_id", "credit_card", "ssn", "phone")
"""Every type, in the order they are applied."""


@dataclass(frozen=True)
class PIIConfig:
    types: tuple[str, ...] = PII_TYPES
    """PII types to replace, any of: email, ipv6, ipv4, cn_id, credit_card, ssn, phone."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.types) - set(PII_TYPES))
        if unknown:
            raise ValueError(f"pii.types has unknown type(s) {unknown}; choose from {list(PII_TYPES)}")


def placeholder(kind: str) -> str:
    """The replacement text for a PII type, e.g. '<EMAIL>', '<CREDIT_CARD>'."""
    return f"<{kind.upper()}>"


EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b",
    re.ASCII,
)
IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\d|\.\d)",
    re.ASCII,
)
IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:]|\.\w)",
    re.ASCII,
)
CN_ID = re.compile(
    r"(?<![\w])[1-8]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?!\w)", re.ASCII
)
CARD = re.compile(r"(?<![\w+-])\d(?:[ -]?\d){12,18}(?![\w-])", re.ASCII)
SSN = re.compile(r"(?<![\w-])\d{3}([ -])\d{2}\1\d{4}(?![\w-])", re.ASCII)
# A phone number neither continues a word or a longer digit run ("3530 0094 6226 2572" holds no phone)
# nor is followed by one.
_PHONE_START = r"(?<![\w+.-])(?<!\d[ .-])"
_PHONE_END = r"(?![\w-]|[ .]\d)"
PHONE = re.compile(
    "|".join(
        _PHONE_START + body + _PHONE_END
        for body in (
            # International: +CC or 00CC, then digit groups, e.g. +44 20 7946 0958, +1 (415) 555-0132.
            r"(?:\+|00)[1-9]\d{0,2}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){1,5}",
            # North America: (415) 555-0132, 415-555-0132, 415.555.0132, 1-800-555-0199.
            r"(?:1[ .-])?\([2-9]\d{2}\) ?[2-9]\d{2}[ .-]\d{4}",
            r"(?:1[ .-])?[2-9]\d{2}([ .-])[2-9]\d{2}\1\d{4}",
            # Chinese mobile: 1[3-9]x xxxx xxxx, plain or with one separator style.
            r"1[3-9]\d([ -]?)\d{4}\2\d{4}",
            # Trunk-prefixed national numbers: 020 7946 0958, 030 12345678, 010-12345678, (0755) 1234 5678.
            r"(?:0[1-9]\d{1,3}|\(0[1-9]\d{1,3}\))([ -])\d{3,4}(?:\3?\d{3,4})?",
            # French-style pairs: 01 23 45 67 89, 06.12.34.56.78.
            r"0[1-9]([ .-])\d{2}(?:\4\d{2}){3}",
        )
    ),
    re.ASCII,
)

# Chinese resident ID (GB 11643-1999): ISO 7064 MOD 11-2 over the first 17 digits.
_CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CN_ID_CHECK = "10X98765432"
# Issuer prefixes (IIN ranges) and lengths of the major card networks (ISO/IEC 7812).
_CARD_NETWORKS = (
    (("4",), (13, 16, 19)),  # Visa
    (tuple(str(p) for p in range(51, 56)) + tuple(str(p) for p in range(2221, 2721)), (16,)),  # Mastercard
    (("34", "37"), (15,)),  # American Express
    (("6011", "65") + tuple(str(p) for p in range(644, 650)), (16, 17, 18, 19)),  # Discover
    (tuple(str(p) for p in range(3528, 3590)), (16, 17, 18, 19)),  # JCB
    (("36", "38") + tuple(str(p) for p in range(300, 306)), (14, 15, 16, 17, 18, 19)),  # Diners Club
    (("62",), (16, 17, 18, 19)),  # UnionPay
)


def luhn_valid(digits: str) -> bool:
    """Whether a digit string passes the Luhn (mod 10) checksum used by payment cards."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def cn_id_check_char(first17: str) -> str:
    """The 18th character of a Chinese resident ID number, computed from the first 17 digits."""
    return _CN_ID_CHECK[sum(int(d) * w for d, w in zip(first17, _CN_ID_WEIGHTS, strict=True)) % 11]


def _valid_date(yyyymmdd: str) -> bool:
    try:
        born = datetime.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:]))
    except ValueError:
        return False
    return born <= datetime.date.today()


def _valid_cn_id(text: str) -> bool:
    return _valid_date(text[6:14]) and cn_id_check_char(text[:17]) == text[17].upper()


def _valid_card(text: str) -> bool:
    separators = set(re.sub(r"\d", "", text))
    if len(separators) > 1:
        return False
    digits = re.sub(r"\D", "", text)
    if len(digits) == 18 and _valid_date(digits[6:14]):
        return False  # shaped like a Chinese ID (birth date at digits 7-14) whose check digit failed
    network = any(
        digits.startswith(prefixes) and len(digits) in lengths for prefixes, lengths in _CARD_NETWORKS
    )
    return network and luhn_valid(digits)


def _valid_ssn(text: str) -> bool:
    # Never issued: area 000, 666 or 900-999; group 00; serial 0000 (SSA, Social Security Number Randomization).
    area, group, serial = re.split(r"[ -]", text)
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _valid_phone(text: str) -> bool:
    digits = re.sub(r"\D", "", text)
    if text.startswith(("+", "00")):
        return 8 <= len(digits.removeprefix("00")) <= 15  # E.164: at most 15 digits with the country code
    if text.startswith(("0", "(0")):
        return 10 <= len(digits) <= 12
    return True


def _valid_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    # "::" and "::1" are protocol constants, and C++/Rust "a::b" paths are not addresses.
    return sum(1 for group in text.split(":") if group) >= 2


_DETECTORS: dict[str, tuple[re.Pattern[str], Callable[[str], bool]]] = {
    "email": (EMAIL, lambda _: True),
    "ipv6": (IPV6, _valid_ipv6),
    "ipv4": (IPV4, lambda _: True),
    "cn_id": (CN_ID, _valid_cn_id),
    "credit_card": (CARD, _valid_card),
    "ssn": (SSN, _valid_ssn),
    "phone": (PHONE, _valid_phone),
}


def redact(text: str, types: tuple[str, ...] = PII_TYPES) -> tuple[str, Counter[str]]:
    """The text with each PII match replaced by its placeholder, and how many of each type were replaced."""
    counts: Counter[str] = Counter()
    for kind in PII_TYPES:
        if kind not in types:
            continue
        pattern, valid = _DETECTORS[kind]

        def replace(match: re.Match[str], kind: str = kind, valid: Callable[[str], bool] = valid) -> str:
            if not valid(match.group(0)):
                return match.group(0)
            counts[kind] += 1
            return placeholder(kind)

        text = pattern.sub(replace, text)
    return text, counts
