"""Energy-market identifiers for the sandbox data: LEIs (ISO 17442) and EICs (ENTSO-E).

Only what the data generator needs: check-digit arithmetic and a seeded pool of valid LEIs.
The checkers used by contracts live in ``etrmflow.energy``; these are kept separate so the
sandbox has no dependency on the code it is meant to test.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_EIC_ALPHABET = _ALNUM + "-"
# Prefixes of real LEI issuers (LOUs), so generated codes look like the ones vendors send.
_LOU_PREFIXES = ("5493", "2138", "5299", "7245", "9695", "8945", "3912", "8156")
LEI_POOL_SIZE = 50


def _mod97_digits(text: str) -> int:
    return int("".join(str(_ALNUM.index(ch)) for ch in text)) % 97


def lei_check_digits(base: str) -> str:
    """The two ISO 7064 MOD 97-10 check digits for an 18-character LEI base."""
    return f"{98 - _mod97_digits(base + '00'):02d}"


def is_valid_lei(code: str) -> bool:
    if len(code) != 20 or not code.isascii() or not code.isalnum() or code.upper() != code:
        return False
    return code[18:].isdigit() and _mod97_digits(code) == 1


def eic_check_char(code15: str) -> str:
    """The 16th character of an EIC from its first 15 (ENTSO-E weighted modulo 37)."""
    total = sum((16 - pos) * _EIC_ALPHABET.index(ch) for pos, ch in enumerate(code15))
    return _EIC_ALPHABET[36 - ((total - 1) % 37)]


def is_valid_eic(code: str) -> bool:
    if len(code) != 16 or any(ch not in _EIC_ALPHABET for ch in code) or code[15] == "-":
        return False
    return eic_check_char(code[:15]) == code[15]


def _seeded_lei(seed: int, number: int) -> str:
    draw = int.from_bytes(hashlib.blake2b(b"lei:%d:%d" % (seed, number), digest_size=16).digest(), "little")
    draw, prefix = divmod(draw, len(_LOU_PREFIXES))
    chars = []
    for _ in range(12):
        draw, pos = divmod(draw, 36)
        chars.append(_ALNUM[pos])
    base = _LOU_PREFIXES[prefix] + "00" + "".join(chars)
    return base + lei_check_digits(base)


@lru_cache(maxsize=32)
def lei_pool(seed: int) -> tuple[str, ...]:
    """``LEI_POOL_SIZE`` distinct valid LEIs, the same for the same seed."""
    pool: dict[str, None] = {}
    number = 0
    while len(pool) < LEI_POOL_SIZE:
        pool[_seeded_lei(seed, number)] = None
        number += 1
    return tuple(pool)


def corrupt_lei(code: str) -> str:
    """The same LEI with check digits that fail MOD 97-10 (off by one never passes)."""
    return code[:18] + f"{(int(code[18:]) + 1) % 100:02d}"
