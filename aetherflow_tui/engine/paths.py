"""Where the config and the data live: flag, then environment, then the platform's dirs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

APP = "aetherflow"
CONFIG_ENV = "AETHERFLOW_CONFIG"
HOME_ENV = "AETHERFLOW_HOME"


@dataclass(frozen=True, slots=True)
class Paths:
    config: Path
    config_explicit: bool  # named by --config or AETHERFLOW_CONFIG: it must exist
    home: Path

    @property
    def database(self) -> Path:
        return self.home / "aetherflow.db"


def resolve(config: Path | None = None, home: Path | None = None) -> Paths:
    import platformdirs

    env_config = os.environ.get(CONFIG_ENV)
    env_home = os.environ.get(HOME_ENV)
    if config is None and env_config:
        config = Path(env_config)
    explicit = config is not None
    if config is None:
        config = platformdirs.user_config_path(APP) / "bouquet.toml"
    if home is None:
        home = Path(env_home) if env_home else platformdirs.user_data_path(APP)
    return Paths(config.expanduser(), explicit, home.expanduser())
