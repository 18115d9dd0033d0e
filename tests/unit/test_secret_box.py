"""The AES-GCM secret box: round trips, context binding, tamper detection, key rotation, the key directory."""

from __future__ import annotations

import base64
import os
import stat

import pytest

from shared.kernel.adapters.aesgcm_secret_box import AesGcmSecretBox, key_id
from shared.kernel.secret_box import SecretBoxError

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))


def test_round_trip_and_fresh_nonces():
    box = AesGcmSecretBox([KEY_A])
    first = box.seal(b"whsec_abc", context="webhook:wh_1")
    second = box.seal(b"whsec_abc", context="webhook:wh_1")
    assert first != second
    assert b"whsec_abc" not in first
    assert box.unseal(first, context="webhook:wh_1") == b"whsec_abc"
    assert box.unseal(second, context="webhook:wh_1") == b"whsec_abc"


def test_a_value_opens_only_under_its_context():
    box = AesGcmSecretBox([KEY_A])
    sealed = box.seal(b"secret", context="webhook:wh_1")
    with pytest.raises(SecretBoxError, match="authenticate"):
        box.unseal(sealed, context="webhook:wh_2")


@pytest.mark.parametrize("position", [0, 1, 9, 21, -1])
def test_tampering_is_detected(position):
    box = AesGcmSecretBox([KEY_A])
    sealed = bytearray(box.seal(b"secret", context="c"))
    sealed[position] ^= 0x01
    with pytest.raises(SecretBoxError):
        box.unseal(bytes(sealed), context="c")


def test_truncated_values_are_refused():
    with pytest.raises(SecretBoxError, match="malformed"):
        AesGcmSecretBox([KEY_A]).unseal(b"\x01short", context="c")


def test_rotation_keeps_old_values_readable():
    old = AesGcmSecretBox([KEY_A])
    sealed_old = old.seal(b"one", context="c")
    rotated = AesGcmSecretBox([KEY_B, KEY_A])
    sealed_new = rotated.seal(b"two", context="c")
    assert sealed_new[1:9] == key_id(KEY_B)
    assert rotated.unseal(sealed_old, context="c") == b"one"
    assert rotated.unseal(sealed_new, context="c") == b"two"
    with pytest.raises(SecretBoxError, match="key this box does not hold"):
        old.unseal(sealed_new, context="c")


def test_keys_from_settings_text():
    encoded = ", ".join(base64.b64encode(k).decode() for k in (KEY_B, KEY_A))
    box = AesGcmSecretBox.from_encoded(encoded)
    assert box.unseal(AesGcmSecretBox([KEY_A]).seal(b"x", context="c"), context="c") == b"x"
    assert AesGcmSecretBox.from_encoded(base64.urlsafe_b64encode(KEY_A).decode().rstrip("=")).seal(b"x", context="c")
    with pytest.raises(ValueError, match="32 bytes"):
        AesGcmSecretBox.from_encoded(base64.b64encode(b"short").decode())
    with pytest.raises(ValueError, match="base64"):
        AesGcmSecretBox.from_encoded("not base64 !")
    with pytest.raises(ValueError, match="at least one key"):
        AesGcmSecretBox.from_encoded(" , ")


def test_key_directory_is_created_once_private_and_rotatable(tmp_path):
    keys_dir = tmp_path / "keys"
    first = AesGcmSecretBox.from_key_dir(keys_dir)
    files = sorted(keys_dir.glob("secretbox-*.key"))
    assert len(files) == 1
    assert stat.S_IMODE(os.stat(files[0]).st_mode) == 0o600
    sealed = first.seal(b"kept", context="c")
    again = AesGcmSecretBox.from_key_dir(keys_dir)
    assert again.unseal(sealed, context="c") == b"kept"
    assert len(list(keys_dir.glob("secretbox-*.key"))) == 1
    # Rotation: a newer key file becomes current; the old one still opens old values.
    (keys_dir / "secretbox-zzzz.key").write_text(base64.b64encode(KEY_B).decode() + "\n")
    rotated = AesGcmSecretBox.from_key_dir(keys_dir)
    assert rotated.seal(b"new", context="c")[1:9] == key_id(KEY_B)
    assert rotated.unseal(sealed, context="c") == b"kept"
