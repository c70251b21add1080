"""Is wandb logged in? The one answer (an API key in the environment, or a netrc entry for the wandb
host): never prompts, never touches the network, never imports wandb."""

from __future__ import annotations

import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_PROJECT = "transformer-ablations"
LOGIN_HINT = "run `wandb login` or set WANDB_API_KEY"


def wandb_host(env: Mapping[str, str] = os.environ) -> str:
    return urlparse(env.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"


def has_wandb_login(env: Mapping[str, str] = os.environ, home: str | Path | None = None) -> bool:
    """An API key in the environment or in netrc for the wandb host. Never prompts, never
    touches the network, never imports wandb."""
    if env.get("WANDB_API_KEY", "").strip():
        return True
    home = Path(home) if home is not None else Path(env.get("HOME") or Path.home())
    candidates = [Path(env["NETRC"])] if env.get("NETRC") else [home / ".netrc", home / "_netrc"]
    host = wandb_host(env)
    for path in candidates:
        if not path.is_file():
            continue
        try:
            auth = netrc.netrc(str(path)).authenticators(host)
        except (netrc.NetrcParseError, OSError):
            continue
        if auth and auth[2]:
            return True
    return False
