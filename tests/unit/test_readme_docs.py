"""Every document (docs/*.md, roles/*/README.md) is linked from the README's documentation."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_doc_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([^)#]+)", readme))
    docs = sorted(
        str(path.relative_to(ROOT))
        for path in [*ROOT.glob("docs/*.md"), *ROOT.glob("roles/*/README.md")]
    )
    assert docs, "no documents found"
    missing = [doc for doc in docs if doc not in linked]
    assert not missing, f"README.md links none of {missing}"
