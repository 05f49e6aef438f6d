"""No code written twice: runs of six or more identical or same-shape lines in the service's packages.

Two places that share six lines (the same tokens, or the same but for strings, numbers and a
consistent renaming of names) are one idea written twice; they should become one function. Where a
pair must stay — declarations whose shape is all they share, such as FastAPI route decorators —
one side carries a comment `# alike: <why>` in the run or on the five lines above it, and the
pair passes. Tests and migrations are left out: a test reads best whole.

Lines that carry no code are passed over before runs are counted: blank lines, comments, import
statements, lines of at most one name among literals and punctuation (docstrings, list items,
`keyword=value,` in a declaration), and the
inner lines of a multi-line string. A block of one file that repeats itself (a list of small alike
classes) counts as one pair, explained by one comment anywhere in it.
"""

from __future__ import annotations

import io
import keyword
import textwrap
import tokenize
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("api", "core", "worker", "models", "cli")
RUN = 6
TOO_COMMON = 8  # a run in more places than this is an idiom of the language, not a copy
MARKER = "# alike:"
LOOK_BACK = 5  # lines above a run where its marker may stand
_DATA = {"S", "0", "=", "-", "*", *"()[]{},:;"}
_SKIPPED_TOKENS = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}


@dataclass(frozen=True)
class Place:
    path: str
    first: int  # first and last source line of the run (1-based)
    last: int

    def __str__(self) -> str:
        return f"{self.path}:{self.first}-{self.last}"


def code_lines(source: str) -> list[tuple[int, tuple[str, ...]]]:
    """(line number, tokens) of every line that carries code; strings and numbers blanked, names
    kept (prefixed `$`) so that a run can be compared up to a consistent renaming."""
    shapes: dict[int, list[str]] = defaultdict(list)
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return []
    in_import, line_start = False, True
    for tok in tokens:
        if tok.type == tokenize.NEWLINE:
            in_import, line_start = False, True
        if tok.type in _SKIPPED_TOKENS or tok.type == tokenize.ENDMARKER:
            continue
        if line_start:
            in_import, line_start = tok.string in ("import", "from"), False
        if in_import:
            continue
        if tok.type == tokenize.NAME and not keyword.iskeyword(tok.string):
            shape = "$" + tok.string
        elif tok.type == tokenize.STRING or tok.type in _fstring_parts():
            shape = "S"
        elif tok.type == tokenize.NUMBER:
            shape = "0"
        else:
            shape = tok.string
        shapes[tok.start[0]].append(shape)
    out = []
    for number, parts in sorted(shapes.items()):
        # Thin: at most one name, the rest literals and punctuation (`)`, `"a",`, `Subject,`,
        # `num_layers=4,`, `"sofa": ("couch",),`): data in a declaration, not logic.
        names = sum(p[0] == "$" for p in parts)
        if names <= 1 and all(p[0] == "$" or p in _DATA for p in parts):
            continue
        out.append((number, tuple(parts)))
    return out


def run_shape(run: list[tuple[int, tuple[str, ...]]]) -> str:
    """The run with each name replaced by the order of its first appearance: two runs have the
    same shape when one is the other with names consistently renamed (and other literals)."""
    order: dict[str, str] = {}
    lines = []
    for _, parts in run:
        lines.append(" ".join(order.setdefault(p, f"N{len(order)}") if p[0] == "$" else p for p in parts))
    return "\n".join(lines)


def _fstring_parts() -> set[int]:
    return {
        getattr(tokenize, n)
        for n in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END")
        if hasattr(tokenize, n)
    }


def repeated_runs(files: dict[str, str]) -> list[tuple[Place, Place]]:
    """Pairs of places sharing a run of RUN same-shape code lines, overlapping windows merged."""
    lines = {path: code_lines(text) for path, text in files.items()}
    windows: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for path, code in lines.items():
        for i in range(len(code) - RUN + 1):
            windows[run_shape(code[i : i + RUN])].append((path, i))
    pairs: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for places in windows.values():
        if len(places) < 2 or len(places) > TOO_COMMON:
            continue
        for a in range(len(places)):
            for b in range(a + 1, len(places)):
                (pa, ia), (pb, ib) = places[a], places[b]
                if pa == pb and abs(ia - ib) < RUN:
                    continue  # a run overlapping itself (e.g. a list of alike lines)
                pairs[(pa, pb)].append((ia, ib))
    found = []
    for (pa, pb), starts in pairs.items():
        # Merge the windows of one long run (both sides advancing together) into one pair.
        starts.sort()
        run_a, run_b, end_a, end_b = starts[0][0], starts[0][1], starts[0][0], starts[0][1]
        for ia, ib in [*starts[1:], (None, None)]:
            if ia is not None and ia == end_a + 1 and ib == end_b + 1:
                end_a, end_b = ia, ib
                continue
            la, lb = lines[pa], lines[pb]
            found.append(
                (
                    Place(pa, la[run_a][0], la[end_a + RUN - 1][0]),
                    Place(pb, lb[run_b][0], lb[end_b + RUN - 1][0]),
                )
            )
            if ia is not None:
                run_a, run_b, end_a, end_b = ia, ib, ia, ib
    return _merge_self_repeats(found)


def _merge_self_repeats(pairs: list[tuple[Place, Place]]) -> list[tuple[Place, Place]]:
    """Pairs inside one file whose places overlap are one repeating block: report it once."""
    blocks: list[list[Place]] = []  # per block: [path, first, last] kept as a Place
    other = []
    for a, b in pairs:
        if a.path != b.path:
            other.append((a, b))
            continue
        lo, hi = min(a.first, b.first), max(a.last, b.last)
        joined = [blk for blk in blocks if blk[0].path == a.path and blk[0].first <= hi and lo <= blk[0].last]
        for blk in joined:
            blocks.remove(blk)
            lo, hi = min(lo, blk[0].first), max(hi, blk[0].last)
        blocks.append([Place(a.path, lo, hi)])
    return other + [(blk[0], blk[0]) for blk in blocks]


def explained(place: Place, text: str) -> bool:
    source_lines = text.splitlines()
    window = source_lines[max(0, place.first - 1 - LOOK_BACK) : place.last]
    return any(MARKER in line for line in window)


def unexplained(files: dict[str, str]) -> list[str]:
    return [
        f"{a} ~ {b}"
        for a, b in repeated_runs(files)
        if not (explained(a, files[a.path]) or explained(b, files[b.path]))
    ]


def test_no_code_is_written_twice() -> None:
    files = {
        p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8")
        for pkg in PACKAGES
        for p in sorted((ROOT / pkg).rglob("*.py"))
    }
    assert unexplained(files) == [], "same code in two places; share it, or say why with '# alike:'"


# --- the check itself, on small trees ----------------------------------------------------------
_ORIGINAL = textwrap.dedent(
    """
    def load(path):
        data = read(path)
        if not data:
            raise ValueError("empty")
        rows = parse(data, strict=True)
        rows = [r for r in rows if r.ok]
        total = sum(r.size for r in rows)
        return rows, total
    """
)


def test_a_copy_with_other_names_is_found() -> None:
    renamed = (
        _ORIGINAL.replace("load", "fetch")
        .replace("data", "blob")
        .replace("rows", "items")
        .replace('"empty"', '"nothing"')
    )
    found = unexplained({"a.py": _ORIGINAL, "b.py": "import os\n\n" + renamed})
    assert found == ["a.py:2-9 ~ b.py:4-11"]


def test_a_copy_inside_one_file_is_found() -> None:
    assert len(unexplained({"a.py": _ORIGINAL + "\n" + _ORIGINAL.replace("load", "again")})) == 1


def test_a_marked_pair_and_short_or_different_runs_pass() -> None:
    marked = "# alike: the same steps on purpose\n" + _ORIGINAL
    assert unexplained({"a.py": _ORIGINAL, "b.py": marked}) == []
    five_lines = "\n".join(_ORIGINAL.splitlines()[:6])  # def + 5 lines: below the run length
    assert unexplained({"a.py": five_lines, "b.py": five_lines}) == []
    other = _ORIGINAL.replace("rows = parse(data, strict=True)", "for row in parse(data):\n        pass")
    assert unexplained({"a.py": _ORIGINAL, "b.py": other}) == []
