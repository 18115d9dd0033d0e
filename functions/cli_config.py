"""Where the client CLI keeps what it remembers between commands: the API's URL, the tokens and
the current organisation, in one JSON file in the user's config directory (``platformdirs``),
readable by its owner only. ``MARKETPLACE_CONFIG_DIR`` puts it elsewhere (tests, several setups)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

DEFAULT_URL = "http://127.0.0.1:8080"


def config_path() -> Path:
    """The config file: ``$MARKETPLACE_CONFIG_DIR/config.json`` or the per-user config folder's."""
    folder = os.environ.get("MARKETPLACE_CONFIG_DIR") or platformdirs.user_config_dir("marketplace", appauthor=False)
    return Path(folder).expanduser() / "config.json"


@dataclass
class ClientConfig:
    """What ``marketplace login`` and ``orgs create|use`` remember."""

    url: str = DEFAULT_URL
    mode: str = "local"
    email: str | None = None
    access_token: str | None = None
    refresh_token: str | None = None
    #: Unix time the access token expires (refreshed a little before).
    expires_at: float = 0.0
    org_id: str | None = None
    org_name: str | None = None
    #: gcp mode: the OIDC issuer's token endpoint and the client id the device flow used.
    oidc: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls) -> ClientConfig:
        """The stored config, or the defaults when there is none (or it is unreadable)."""
        try:
            data = json.loads(config_path().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        if not isinstance(data, dict):
            return cls()
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            return cls(**known)
        except TypeError:
            return cls()

    def save(self) -> Path:
        """Write the file atomically with mode 0600 (it holds tokens)."""
        path = config_path()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(self.as_dict(), out, indent=2)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def as_dict(self) -> dict[str, Any]:
        """The stored fields."""
        return asdict(self)
