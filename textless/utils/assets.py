"""Where the data that ships inside the package lives, and the short names users give it.

``starter`` names the starter pipeline (`textless/assets/starter`: tokenizer, unit LM, vocoder, and the bundled corpus
as units) wherever a command takes one of those parts: ``tokenizer=starter``, ``lm=starter``, ``vocoder=starter``,
``pipeline=starter``.
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
STARTER_DIR = ASSETS_DIR / "starter"
STARTER = "starter"


def starter_part(spec: str | Path, part: str = "") -> Path:
    """`spec` as a path; ``"starter"`` is the starter pipeline's `part` (its directory when `part` is "")."""
    return STARTER_DIR / part if str(spec) == STARTER else Path(spec)
