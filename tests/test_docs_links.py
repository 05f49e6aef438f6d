"""The repository's docs stand on their own, and say what the code does.

1. Links: every relative link in every Markdown file of the repository (inline links, images,
   reference definitions, HTML `href`/`src`) names a file or folder of the repository, never a path
   outside its root (a clone has nothing there), and every `#anchor` names a heading of its page
   (GitHub's slugs). Absolute `http(s)` and `mailto` links are allowed; other schemes are not.
2. Photo counts: README.md, docs/api.md, the OpenAPI document and the API itself agree on how many
   photos a subject takes.

Each check is also run on a small tree or text with one fault, and shown to fail.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from tests.api.conftest import ApiEnv, build_env, make_settings, photos_files

ROOT = Path(__file__).resolve().parent.parent
ALLOWED_SCHEMES = frozenset({"http", "https", "mailto"})


# --- the repository's files ----------------------------------------------------------------------
def repository_files(root: Path) -> set[str]:
    """Every file a clone has, or will have once committed: tracked, plus new files git does not
    ignore (so a page written in this change is checked too). Never `.venv/`, `var/` or the like."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {p for p in out.split("\0") if p and (root / p).exists()}  # a deleted, uncommitted file is gone


# --- reading Markdown ------------------------------------------------------------------------------
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_CODE_SPAN = re.compile(r"(`+)(?!`)(?:(?!\n[ \t]*\n).)*?(?<!`)\1(?!`)", re.S)  # within a paragraph


def _blank(match: re.Match[str]) -> str:
    """The match replaced by spaces, its newlines kept: line numbers stay right."""
    return re.sub(r"[^\n]", " ", match.group(0))


def prose(text: str) -> str:
    """The text without fenced code blocks, HTML comments and code spans (no links live there)."""
    lines, fence = [], ""
    for line in text.split("\n"):
        opening = _FENCE.match(line)
        if fence:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = ""
            lines.append("")
        elif opening:
            fence = opening.group(1)
            lines.append("")
        else:
            lines.append(line)
    text = _COMMENT.sub(_blank, "\n".join(lines))
    return _CODE_SPAN.sub(_blank, text)


def _destination(text: str, start: int) -> str:
    """The link destination that starts at `start` (just after `](`): `<...>`, or up to the first
    space or unbalanced `)`."""
    if text.startswith("<", start):
        end = text.find(">", start)
        return text[start + 1 : end] if end != -1 else ""
    depth, i = 0, start
    while i < len(text) and not text[i].isspace():
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            if depth == 0:
                break
            depth -= 1
        i += 1
    return text[start:i]


_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:[ \t]*<?([^\s>]+)>?", re.M)
_AUTOLINK = re.compile(r"<([A-Za-z][A-Za-z0-9+.-]{1,31}:[^\s<>]*)>")
_HTML_ATTRIBUTE = re.compile(r"""<[A-Za-z][^>]*?\s(?:href|src)\s*=\s*["']([^"']*)["']""", re.S)


def links(text: str) -> list[tuple[int, str]]:
    """(line, destination) of every link and image of a Markdown text, outside code."""
    text = prose(text)
    found = [(m.end(), _destination(text, m.end())) for m in re.finditer(r"\]\(", text)]
    for pattern in (_REFERENCE, _AUTOLINK, _HTML_ATTRIBUTE):
        found += [(m.start(1), m.group(1)) for m in pattern.finditer(text)]
    return sorted((text.count("\n", 0, at) + 1, target.strip()) for at, target in found)


_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_HTML_ID = re.compile(r"""<a\s[^>]*?(?:name|id)\s*=\s*["']([^"']+)["']""")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (links and tags reduced to their text), lowercased,
    punctuation removed (letters, digits, `_`, `-` and spaces kept), spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor of a page: its headings' slugs (a repeated one gets `-1`, `-2`, … as on GitHub)
    and explicit `<a name=…>` / `<a id=…>`."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    lines = prose(text).split("\n")
    for i, line in enumerate(lines):
        atx = _ATX.match(line)
        heading = atx.group(2) if atx else None
        underlined = i + 1 < len(lines) and bool(_SETEXT.match(lines[i + 1]))
        if heading is None and underlined and line.strip() and not re.match(r"^\s*([-*+>|]|\d+\.)", line):
            heading = line.strip()
        if heading is None:
            continue
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    found |= set(_HTML_ID.findall(text))
    return found


# --- checking ------------------------------------------------------------------------------------
@dataclass
class LinkReport:
    broken: list[tuple[str, int, str, str]] = field(default_factory=list)  # page, line, target, why
    external: list[str] = field(default_factory=list)  # "page:line: url", allowed
    checked: int = 0

    def __str__(self) -> str:
        return "\n".join(f"{page}:{line}: ({target}) {why}" for page, line, target, why in self.broken)


def _problem(
    root: Path, files: set[str], page: str, target: str, text_of: Callable[[str], str]
) -> str | None:
    """Why `target`, linked from `page`, is broken; None when it is fine."""
    if not target:
        return "an empty link"
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", target)
    if scheme or target.startswith("//"):
        name = scheme.group(1).lower() if scheme else ""
        return None if name in ALLOWED_SCHEMES else f"scheme {name or '//'!r} is not allowed"
    path, _, fragment = target.partition("#")
    path = unquote(path.split("?", 1)[0])
    if not path:
        rel = page
    else:
        joined = path.lstrip("/") if path.startswith("/") else f"{Path(page).parent.as_posix()}/{path}"
        rel = os.path.normpath(joined).replace(os.sep, "/")
        if rel == ".." or rel.startswith("../") or os.path.isabs(rel):
            return "points outside the repository"
        inside = (root / rel).resolve()
        if not inside.is_relative_to(root.resolve()):
            return "points outside the repository (through a link)"
    if rel != "." and rel not in files and not any(f.startswith(f"{rel}/") for f in files):
        return "exists here but not in the repository" if (root / rel).exists() else "no such file or folder"
    if fragment:
        if rel.endswith(".md"):
            if unquote(fragment) not in anchors(text_of(rel)):
                return f"no heading #{fragment} in {rel}"
        elif not re.fullmatch(r"L\d+(-L\d+)?", fragment):
            return f"#{fragment}: only Markdown pages have heading anchors"
    return None


def check_links(root: Path, repository: Iterable[str]) -> LinkReport:
    files = set(repository)
    texts: dict[str, str] = {}

    def text_of(rel: str) -> str:
        if rel not in texts:
            texts[rel] = (root / rel).read_text(encoding="utf-8")
        return texts[rel]

    report = LinkReport()
    for page in sorted(f for f in files if f.lower().endswith(".md")):
        for line, target in links(text_of(page)):
            report.checked += 1
            if re.match(r"^(https?|mailto):", target, re.I):
                report.external.append(f"{page}:{line}: {target}")
            why = _problem(root, files, page, target, text_of)
            if why:
                report.broken.append((page, line, target, why))
    return report


def test_every_link_stays_inside_the_repository() -> None:
    report = check_links(ROOT, repository_files(ROOT))
    assert report.checked > 20, "the scan found almost no links: it is looking at the wrong things"
    assert report.broken == [], f"broken or escaping links:\n{report}"


def test_the_link_check_fails_on_a_broken_tree(tmp_path: Path) -> None:
    pages = {
        "README.md": (
            "# The tree\n"
            "\n"
            "## Where things are\n"
            "\n"
            "[API](docs/api.md), [docs](docs/), [a map](docs/map.md), [design](../shared/DESIGN.md),\n"
            "[sly](docs/../../x.md), ![a shot](docs/shot.png), ![gone](docs/gone.png), [new](docs/new.md),\n"
            "[here](#where-things-are), [none](#what-is-not-there), [r](docs/api.md#rules-for-every-call),\n"
            "[no rule](docs/api.md#rules), [web](https://example.com/x), [js](javascript:alert(1)).\n"
            '<img src="docs/missing.png"> `[in code](../code.md)` <!-- [commented](../c.md) -->\n'
            "\n"
            "[ref]: ../outside.md\n"
            "\n"
            "```\n"
            "[fenced](../fenced.md)\n"
            "```\n"
        ),
        "docs/api.md": "# API\n\n## Rules for every call\n\nBack to [the root](../README.md#the-tree).\n",
        "docs/shot.png": "",
        "docs/new.md": "",
    }
    for rel, text in pages.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    report = check_links(tmp_path, pages)
    assert {(line, target) for _, line, target, _ in report.broken} == {
        (5, "docs/map.md"),
        (5, "../shared/DESIGN.md"),
        (6, "docs/../../x.md"),
        (6, "docs/gone.png"),
        (7, "#what-is-not-there"),
        (8, "docs/api.md#rules"),
        (8, "javascript:alert(1)"),
        (9, "docs/missing.png"),
        (11, "../outside.md"),
    }, str(report)
    assert report.external == ["README.md:8: https://example.com/x"]
    # On disk but not in the repository (ignored, say): a clone would not have it.
    not_tracked = {k: v for k, v in pages.items() if k != "docs/new.md"}
    report = check_links(tmp_path, not_tracked)
    assert ("README.md", 6, "docs/new.md", "exists here but not in the repository") in report.broken


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Jobs: how a job is never lost", "jobs-how-a-job-is-never-lost"),
        ("`api/` — the REST API (v1)", "api--the-rest-api-v1"),
        ("Adapter file (format version 1)", "adapter-file-format-version-1"),
        ("The [method](docs/method.md), in short", "the-method-in-short"),
        ("snake_case & *emphasis*", "snake_case--emphasis"),
    ],
)
def test_slugs_follow_github(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_repeated_headings_get_numbered_anchors() -> None:
    page = "# Notes\n\n## Notes\n\nSetext\n------\n\n```\n# not a heading\n```\n"
    assert anchors(page) == {"notes", "notes-1", "setext"}


# --- photo counts --------------------------------------------------------------------------------
_PHOTO_RANGE = re.compile(r"\b(\d+)\s*(?:–|—|-|to)\s*(\d+)\s+(?:product\s+)?photos\b", re.I)


def photo_ranges(text: str) -> list[tuple[int, int, int]]:
    """(line, min, max) of every "N–M photos" / "N to M product photos" in a text."""
    return [
        (text.count("\n", 0, m.start()) + 1, int(m.group(1)), int(m.group(2)))
        for m in _PHOTO_RANGE.finditer(text)
    ]


def api_photos_row(api_md: str) -> tuple[int, int]:
    """The min and max of the `photos` field in docs/api.md's subject form table."""
    rows = [ln for ln in api_md.splitlines() if re.match(r"^\|\s*`photos`\s*\|", ln)]
    assert len(rows) == 1, f"docs/api.md: expected one `photos` row, found {rows}"
    found = re.search(r"(\d+)\s*[–-]\s*(\d+)\s+files", rows[0])
    assert found, f"docs/api.md's `photos` row states no count: {rows[0]}"
    return int(found.group(1)), int(found.group(2))


def stated_counts(readme: str, api_md: str, others: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Every photo count the docs state, by place: README's and every other page's "N–M photos",
    docs/api.md's form row. README must state one."""
    readme_ranges = photo_ranges(readme)
    assert readme_ranges, "README.md states no photo count"
    stated = {f"README.md:{line}": (lo, hi) for line, lo, hi in readme_ranges}
    stated["docs/api.md `photos` row"] = api_photos_row(api_md)
    for page, text in others.items():
        stated |= {f"{page}:{line}": (lo, hi) for line, lo, hi in photo_ranges(text)}
    return stated


def openapi_counts(spec: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """The counts POST /v1/subjects states in the OpenAPI document: the schema's minItems/maxItems,
    the field's description and the operation's summary."""
    post = spec["paths"]["/v1/subjects"]["post"]
    photos = post["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]["photos"]
    counts = {"openapi photos minItems/maxItems": (photos["minItems"], photos["maxItems"])}
    for name, text in (("description", photos.get("description", "")), ("summary", post["summary"])):
        [(_, lo, hi)] = photo_ranges(text) or [(0, -1, -1)]
        counts[f"openapi photos {name}"] = (lo, hi)
    return counts


@pytest.fixture
def api_env(tmp_path: Path) -> Iterator[ApiEnv]:
    yield from build_env(make_settings(tmp_path, f"sqlite:///{tmp_path / 'roomfit.db'}"))


def _create(env: ApiEnv, files: list[Any]) -> Any:
    return env.client.post("/v1/subjects", headers=env.a.auth(), data={"name": "sofa"}, files=files)


def enforced_counts(env: ApiEnv) -> tuple[int, int]:
    """What the API really takes: the constant the route enforces, checked by asking at both ends."""
    from api.services.subjects import MAX_PHOTOS

    none = _create(env, [("other", ("x.txt", b"x", "text/plain"))])
    assert none.status_code == 422 and "photo" in none.json()["detail"], none.text
    too_many = _create(env, photos_files(MAX_PHOTOS + 1))
    assert too_many.status_code == 422 and too_many.json()["code"] == "too_many_photos", too_many.text
    for count in (1, MAX_PHOTOS):
        assert _create(env, photos_files(count)).status_code == 202, f"{count} photos refused"
    return 1, MAX_PHOTOS


def test_photo_counts_agree(api_env: ApiEnv) -> None:
    files = repository_files(ROOT)
    others = {
        p: (ROOT / p).read_text(encoding="utf-8")
        for p in sorted(files)
        if p.endswith(".md") and p not in {"README.md", "docs/api.md"}
    }
    stated = stated_counts(
        (ROOT / "README.md").read_text(encoding="utf-8"),
        (ROOT / "docs/api.md").read_text(encoding="utf-8"),
        others,
    )
    stated |= openapi_counts(api_env.client.get("/openapi.json").json())
    enforced = enforced_counts(api_env)
    wrong = {place: f"{lo}–{hi}" for place, (lo, hi) in stated.items() if (lo, hi) != enforced}
    assert wrong == {}, f"the API takes {enforced[0]}–{enforced[1]} photos; these say otherwise"


def test_the_photo_count_check_fails_on_a_wrong_count() -> None:
    readme = "A shop uploads 1–8 photos.\n\n```\n# a subject from 2-8 product photos\n```\n"
    api_md = "| `photos` | required, 1–9 files (2+ recommended) | JPEG |\n"
    stated = stated_counts(readme, api_md, {"docs/x.md": "from 1 to 8 photos"})
    assert stated == {
        "README.md:1": (1, 8),
        "README.md:4": (2, 8),  # a count in a code block is still a count a reader sees
        "docs/api.md `photos` row": (1, 9),
        "docs/x.md:1": (1, 8),
    }
    with pytest.raises(AssertionError, match="no photo count"):
        stated_counts("Upload photos.", api_md, {})
    spec = {
        "paths": {
            "/v1/subjects": {
                "post": {
                    "summary": "Create a subject from 2-8 product photos",
                    "requestBody": {
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "properties": {
                                        "photos": {"minItems": 1, "maxItems": 8, "description": "some photos"}
                                    }
                                }
                            }
                        }
                    },
                }
            }
        }
    }
    assert openapi_counts(spec) == {
        "openapi photos minItems/maxItems": (1, 8),
        "openapi photos description": (-1, -1),  # states no count: never equal to the enforced one
        "openapi photos summary": (2, 8),
    }


MASK_SECTION = "Masks: which pixels paint"


def test_the_mask_rule_is_written_once_and_everyone_points_at_it(api_env: ApiEnv) -> None:
    """docs/api.md states the rule in one section; the OpenAPI text states the same thresholds and
    names that section; the README links to it instead of stating a rule of its own."""
    api_md = (ROOT / "docs/api.md").read_text(encoding="utf-8")
    assert api_md.count(f"## {MASK_SECTION}") == 1
    section = api_md.split(f"## {MASK_SECTION}", 1)[1].split("\n## ", 1)[0]
    assert "**128 or more**" in section and "unless it is **black**" in section
    spec = api_env.client.get("/openapi.json").json()
    forms = [
        body["content"]["multipart/form-data"]["schema"]
        for path in spec["paths"].values()
        for op in path.values()
        if isinstance(op, dict) and "multipart/form-data" in op.get("requestBody", {}).get("content", {})
        for body in [op["requestBody"]]
    ]
    [mask] = [form["properties"]["mask"] for form in forms if "mask" in form["properties"]]
    text = " ".join(mask["description"].split())
    assert MASK_SECTION in text and "alpha >= 128" in text and "not black" in text
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/api.md#" + slug(MASK_SECTION) in readme
    assert "non-zero = put the product here" not in readme  # the old, wrong rule
