"""PII redaction on a labelled synthetic set: >= 500 positives across types, >= 500 hard negatives."""

from __future__ import annotations

import ipaddress
import random
import string

import pytest

from pretrain.prepare.pii import PIIConfig, cn_id_check_char, luhn_valid, placeholder, redact

TEMPLATES = (
    "Please contact {} for details.",
    "Reference: {}",
    "{} was listed in the file.",
    "The form said ({}) and nothing else.",
    "联系方式：{}。",
    "see {}, then reply",
    "It ends with {}.",
    "[{}]\nnext line",
    "值：{}；备注",
)


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _email(rng: random.Random) -> str:
    local = rng.choice(["{a}.{b}", "{a}_{b}{n}", "{a}+news", "{a}{n}", "{a}-{b}"]).format(
        a=rng.choice(["anna", "li.wei", "j", "mohammed", "o'neil".replace("'", "")]),
        b=rng.choice(["smith", "zhang", "x", "dev"]),
        n=rng.randint(1, 999),
    )
    domain = rng.choice(["example.com", "mail.example.org", "uni-bonn.de", "corp.co.uk", "qq.com", "x.io"])
    return f"{local}@{domain}"


def _phone(rng: random.Random) -> str:
    d = lambda n: _digits(rng, n)  # noqa: E731
    area, exchange = f"{rng.randint(2, 9)}{d(2)}", f"{rng.randint(2, 9)}{d(2)}"
    mobile = f"1{rng.randint(3, 9)}{d(1)}"
    formats = [
        f"+1 {area} {exchange} {d(4)}",
        f"+1 ({area}) {exchange}-{d(4)}",
        f"({area}) {exchange}-{d(4)}",
        f"{area}-{exchange}-{d(4)}",
        f"{area}.{exchange}.{d(4)}",
        f"1-800-{exchange}-{d(4)}",
        f"+44 20 {d(4)} {d(4)}",
        f"+44 (0)20 {d(4)} {d(4)}",
        f"020 {d(4)} {d(4)}",
        f"01632 {d(6)}",
        f"+49 30 {d(8)}",
        f"030 {d(8)}",
        f"+33 1 {d(2)} {d(2)} {d(2)} {d(2)}",
        f"0{rng.randint(1, 9)} {d(2)} {d(2)} {d(2)} {d(2)}",
        f"+86 {mobile} {d(4)} {d(4)}",
        f"+86{mobile}{d(8)}",
        f"{mobile}{d(8)}",
        f"{mobile}-{d(4)}-{d(4)}",
        f"{mobile} {d(4)} {d(4)}",
        f"010-{d(8)}",
        f"(0755) {d(4)} {d(4)}",
        f"+81 3-{d(4)}-{d(4)}",
        f"+91 {rng.randint(6, 9)}{d(4)} {d(5)}",
        f"0086 {mobile} {d(4)} {d(4)}",
    ]
    return rng.choice(formats)


def _ipv4(rng: random.Random) -> str:
    return ".".join(str(rng.randint(1 if i == 0 else 0, 255)) for i in range(4))


def _ipv6(rng: random.Random) -> str:
    address = ipaddress.IPv6Address(rng.getrandbits(128))
    style = rng.choice(["compressed", "exploded", "zeros", "mapped"])
    if style == "zeros":
        return str(ipaddress.IPv6Address(f"2001:db8::{rng.randint(1, 0xFFFF):x}:{rng.randint(1, 0xFFFF):x}"))
    if style == "mapped":
        return f"::ffff:{_ipv4(rng)}"
    return getattr(address, style)


def _card_number(rng: random.Random) -> str:
    prefix, length = rng.choice(
        [("4", 16), ("4", 13), ("51", 16), ("55", 16), ("2221", 16), ("2720", 16), ("34", 15), ("37", 15),
         ("6011", 16), ("65", 16), ("3530", 16), ("62", 16), ("36", 14)]
    )  # fmt: skip
    body = prefix + _digits(rng, length - len(prefix) - 1)
    return body + next(c for c in string.digits if luhn_valid(body + c))


def _format_card(rng: random.Random, number: str) -> str:
    sep = rng.choice(["", " ", "-"])
    if len(number) == 15 and sep:
        return sep.join((number[:4], number[4:10], number[10:]))
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4))


def _cn_id_body(rng: random.Random) -> str:
    region = f"{rng.randint(1, 8)}{_digits(rng, 5)}"
    born = f"{rng.randint(1940, 2010)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    return region + born + _digits(rng, 3)


def _cn_id(rng: random.Random) -> str:
    body = _cn_id_body(rng)
    return body + cn_id_check_char(body)


def _ssn(rng: random.Random) -> str:
    area, sep = rng.choice([a for a in range(1, 900) if a != 666]), rng.choice("- ")
    return f"{area:03d}{sep}{rng.randint(1, 99):02d}{sep}{rng.randint(1, 9999):04d}"


POSITIVES = {
    "email": _email,
    "phone": _phone,
    "ipv4": _ipv4,
    "ipv6": _ipv6,
    "credit_card": lambda rng: _format_card(rng, _card_number(rng)),
    "cn_id": _cn_id,
    "ssn": _ssn,
}


def _bad_card(rng: random.Random) -> str:
    number = _card_number(rng)
    wrong = str((int(number[-1]) + rng.randint(1, 9)) % 10)
    return _format_card(rng, number[:-1] + wrong)


def _bad_cn_id(rng: random.Random) -> str:
    body = _cn_id_body(rng)
    right = cn_id_check_char(body)
    return body + rng.choice([c for c in "0123456789X" if c != right])


def _bad_ssn(rng: random.Random) -> str:
    serial = f"{rng.randint(1, 9999):04d}"
    return rng.choice(
        [f"000-{rng.randint(1, 99):02d}-{serial}", f"666-{rng.randint(1, 99):02d}-{serial}",
         f"9{_digits(rng, 2)}-{rng.randint(1, 99):02d}-{serial}", f"{rng.randint(1, 665):03d}-00-{serial}",
         f"{rng.randint(1, 665):03d}-{rng.randint(1, 99):02d}-0000"]
    )  # fmt: skip


def _imei(rng: random.Random) -> str:
    """A handset IMEI: reporting-body prefix, 12 digits, Luhn check digit (so Luhn alone is not enough)."""
    body = rng.choice(["35", "86", "01", "99"]) + _digits(rng, 12)
    return body + next(c for c in string.digits if luhn_valid(body + c))


def _hard_negative(rng: random.Random) -> str:
    d = lambda n: _digits(rng, n)  # noqa: E731
    y, m, day = rng.randint(1950, 2030), rng.randint(1, 12), rng.randint(1, 28)
    makers = [
        lambda: f"Order #{rng.randint(10**5, 10**10 - 1)}",
        lambda: f"order no. {y}{m:02d}{day:02d}-{d(4)}",
        lambda: f"INV-{y}-{d(6)}",
        lambda: f"ticket {d(2)}-{d(4)}-{d(4)}",
        lambda: f"{y}-{m:02d}-{day:02d}",
        lambda: f"{day:02d}/{m:02d}/{y}",
        lambda: f"{m}/{day}/{y}",
        lambda: f"{day:02d}.{m:02d}.{y}",
        lambda: (
            f"{y}-{m:02d}-{day:02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"
        ),
        lambda: f"{y}年{m}月{day}日",
        lambda: f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
        lambda: f"v{rng.randint(0, 20)}.{rng.randint(0, 40)}.{rng.randint(0, 99)}",
        lambda: (
            f"version {rng.randint(1, 3)}.{rng.randint(0, 12)}.{rng.randint(0, 30)}-beta.{rng.randint(1, 9)}"
        ),
        lambda: f"Windows 10.0.{rng.randint(10000, 22631)}.{rng.randint(1, 3000)}",
        lambda: f"Chrome {rng.randint(100, 130)}.0.{rng.randint(4000, 6999)}.{rng.randint(1, 200)}",
        lambda: _bad_card(rng),
        lambda: _bad_card(rng),
        lambda: _bad_cn_id(rng),
        lambda: _bad_cn_id(rng),
        lambda: _bad_ssn(rng),
        lambda: f"{rng.randint(256, 999)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}",
        lambda: (
            f"{rng.randint(1, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}"
        ),
        lambda: f"${rng.randint(1, 999)},{d(3)},{d(3)}.{d(2)}",
        lambda: f"population {rng.randint(1, 99)},{d(3)},{d(3)}",
        lambda: f"ISBN 978-{rng.randint(0, 9)}-{d(2)}-{d(6)}-{rng.randint(0, 9)}",
        lambda: f"doi:10.{d(4)}/{d(6)}",
        lambda: f"pages {rng.randint(1, 400)}-{rng.randint(401, 900)}",
        lambda: f"{rng.randint(1900, 1999)}–{rng.randint(2000, 2024)}",
        lambda: f"0x{rng.getrandbits(48):012x}",
        lambda: f"sha {rng.getrandbits(160):040x}",
        lambda: ":".join(f"{rng.randint(0, 255):02X}" for _ in range(6)),
        lambda: "std::vector<int> v;",
        lambda: "f :: Int -> Int",
        lambda: f"user@{rng.choice(['localhost', 'server'])}",
        lambda: f"@handle{rng.randint(1, 999)}",
        lambda: f"{rng.randint(1, 99)}.{d(5)}, -{rng.randint(0, 9)}.{d(4)}",
        lambda: f"IMEI {_imei(rng)}",
        lambda: f"tracking 1Z{d(3)}AA{d(10)}",
        lambda: f"订单号 {y}{m:02d}{day:02d}{d(10)}",
        lambda: f"{rng.randint(100, 999)}-{d(2)}",
        lambda: f"ext. {d(4)}",
    ]
    return rng.choice(makers)()


def labelled_set(
    seed: int = 0, per_type: int = 90, negatives: int = 600
) -> list[tuple[str, str, str | None]]:
    """(sentence, entity, type or None) triples; each sentence holds at most one entity."""
    rng = random.Random(seed)
    cases = []
    for kind, make in POSITIVES.items():
        for _ in range(per_type):
            entity = make(rng)
            cases.append((rng.choice(TEMPLATES).format(entity), entity, kind))
    for _ in range(negatives):
        entity = _hard_negative(rng)
        cases.append((rng.choice(TEMPLATES).format(entity), entity, None))
    return cases


def test_labelled_set_recall_and_precision():
    cases = labelled_set()
    positives = [c for c in cases if c[2]]
    assert len(positives) >= 500 and len(cases) - len(positives) >= 500
    true_pos, false_pos, misses = 0, 0, []
    for sentence, entity, kind in cases:
        redacted, counts = redact(sentence)
        if kind and redacted == sentence.replace(entity, placeholder(kind)) and counts == {kind: 1}:
            true_pos += 1
            continue
        if kind:
            misses.append((kind, entity, redacted))
        false_pos += sum(counts.values()) - (counts[kind] if kind and kind in counts else 0)
    recall = true_pos / len(positives)
    precision = true_pos / max(true_pos + false_pos, 1)
    assert recall >= 0.99, misses[:10]
    assert precision >= 0.98


@pytest.mark.parametrize(
    "text,kind",
    [
        ("mail anna.smith@example.co.uk now", "email"),
        ("电话13812345678。", "phone"),
        ("call +44 20 7946 0958 today", "phone"),
        ("host 192.168.0.1.", "ipv4"),
        ("host 2001:db8::8a2e:370:7334 up", "ipv6"),
        ("card 4111 1111 1111 1111 ok", "credit_card"),
        ("amex 3782 822463 10005", "credit_card"),
        ("身份证 11010519491231002X", "cn_id"),
        ("SSN 123-45-6789", "ssn"),
    ],
)
def test_each_type_is_replaced_by_its_placeholder(text, kind):
    redacted, counts = redact(text)
    assert counts == {kind: 1}
    assert placeholder(kind) in redacted


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # fails Luhn
        "card 4111 1111-1111 1111",  # mixed separators
        "身份证 110105194912310021",  # wrong check digit
        "身份证 11010519490230002X",  # 30 February (check digit not even reached)
        "SSN 666-45-6789",
        "released 2023-10-15 at 12:30:45, v2.7.18",
        "std::vector and a :: b",
    ],
)
def test_validators_reject_lookalikes(text):
    assert redact(text) == (text, {})


def test_checksums():
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")
    assert cn_id_check_char("11010519491231002") == "X"


def test_types_can_be_switched_off():
    text = "a@b.com and 192.168.0.1"
    redacted, counts = redact(text, PIIConfig(types=("ipv4",)).types)
    assert redacted == "a@b.com and <IPV4>" and counts == {"ipv4": 1}
    with pytest.raises(ValueError, match="unknown type"):
        PIIConfig(types=("passport",))
