"""Identifying values kept sealed beside a stored slide, so that ``deid verify`` can look for
them long after the source is gone, while a copy of the store without the key reveals none.

AES-256-GCM under a key derived (HKDF) from the repository's pseudonym key; the storage key
is the associated data, so a sealed file moved to another slide does not open.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from slidebank.deid.identifiers import IdentifyingValue
from slidebank.errors import CorruptSlide

SEALED_NAME = "identifiers.sealed"
NONCE_BYTES = 12


def _cipher(key: bytes) -> AESGCM:
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"slidebank sealed identifiers"
    ).derive(key)
    return AESGCM(derived)


def seal(path: Path, values: list[IdentifyingValue], key: bytes, storage_key: str) -> None:
    plain = json.dumps([[v.field, v.value] for v in values]).encode()
    nonce = secrets.token_bytes(NONCE_BYTES)
    path.write_bytes(nonce + _cipher(key).encrypt(nonce, plain, storage_key.encode()))


def unseal(path: Path, key: bytes, storage_key: str) -> list[IdentifyingValue]:
    try:
        data = path.read_bytes()
        plain = _cipher(key).decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], storage_key.encode())
    except FileNotFoundError as exc:
        raise CorruptSlide(f"{path}: sealed identifying values are missing") from exc
    except InvalidTag as exc:
        raise CorruptSlide(
            f"{path}: sealed identifying values do not open with this repository's key"
        ) from exc
    return [IdentifyingValue(field, value) for field, value in json.loads(plain)]
