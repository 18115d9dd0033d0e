"""What the secrets context returns."""

from __future__ import annotations

from pydantic import BaseModel


class KeyRotated(BaseModel):
    """An owner's data key after a rotation: new seals use ``version``."""

    owner: str
    version: int


class RewrapOut(BaseModel):
    """One pass of the KEK re-wrap: how many data keys now name the current KEK version."""

    rewrapped: int
    kek_version: str
