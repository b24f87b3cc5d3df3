"""The page's classic scripts share one global scope: a top-level name declared in two of them makes the later
file's declaration replace (or, for const/let, break) the earlier one's, silently."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

STATIC = Path(__file__).resolve().parents[2] / "library" / "gui" / "static"
TOP_LEVEL = re.compile(r"^(?:async\s+)?(?:function\s*\*?\s*|class\s+|(?:const|let|var)\s+)([A-Za-z_$][\w$]*)", re.M)


def _page_scripts() -> list[Path]:
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    names = re.findall(r'<script src="/static/([\w./-]+\.js)"', page)
    return [STATIC / name for name in names if not name.startswith("vendor/")]


def test_the_page_loads_its_own_scripts():
    scripts = _page_scripts()
    assert {path.name for path in scripts} == {path.name for path in STATIC.glob("*.js")}


def test_no_two_scripts_declare_the_same_top_level_name():
    declared: dict[str, list[str]] = defaultdict(list)
    for path in _page_scripts():
        names = TOP_LEVEL.findall(path.read_text(encoding="utf-8"))
        assert names, f"no top-level declaration found in {path.name}"  # the pattern reads every script
        for name in names:
            declared[name].append(path.name)
    assert {name: files for name, files in declared.items() if len(files) > 1} == {}
