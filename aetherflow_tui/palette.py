"""The colours of states, one palette for the cockpit and the CLI.

Each map goes from a state's value to a Rich style name (a plain string: nothing here
imports Rich or Textual, so the CLI can load it before deciding to draw anything). The
engine's states are StrEnums, so a member finds its colour as its value does:
STEP[StepState.DONE] is STEP["done"].
"""

from __future__ import annotations

# A plan step (engine.progress.StepState).
STEP = {
    "pending": "grey50", "running": "cyan", "waiting": "yellow", "done": "green",
    "failed": "red", "skipped": "dark_orange", "cancelled": "magenta",
}

# A run's headline (engine.progress.RunStatus): bold, green when done, red when it stopped
# short of done.
RUN = {"running": "bold", "done": "bold green"}
RUN_ENDED_SHORT = "bold red"


def run_style(status: str) -> str:
    return RUN.get(status, RUN_ENDED_SHORT)


# The machine as the regulator judges it (engine.regulator.SystemState): as a word, and as
# the cockpit's badge.
SYSTEM = {"optimal": "green", "stressed": "yellow1", "degraded": "dark_orange",
          "critical": "bold red"}
SYSTEM_BADGE = {
    "optimal": "bold black on green",
    "stressed": "bold black on yellow1",
    "degraded": "bold black on dark_orange",
    "critical": "bold white on red",
}

# A provider's status light (engine.health.Light).
LIGHT = {"green": "green", "orange": "dark_orange", "red": "red", "grey": "grey50"}

# A provider's API key (engine.keys.KeyState).
KEY = {"present": "green", "not needed": "green", "missing": "grey50", "unavailable": "red",
       "unreadable": "red"}

# A veille item's label (engine.veille.classifier.LABELS): as a word, and as the cockpit's
# badge (its short word and style).
VEILLE_LABEL = {"price_change": "cyan", "outage": "red", "new_offer": "green",
                "geopolitical_risk": "magenta", "noise": "grey50"}
VEILLE_BADGE = {"price_change": ("PRICE", "bold black on cyan"),
                "outage": ("OUTAGE", "bold white on red"),
                "new_offer": ("OFFER", "bold black on green"),
                "geopolitical_risk": ("GEO", "bold white on magenta"),
                "noise": ("noise", "grey50")}

# A veille source's last poll (engine.veille.watch.SourceStatus.outcome).
SOURCE = {"new": "green", "not_modified": "green", "error": "red", "never": "grey50"}
