"""The problem-code registry (api/problems.py) is the one list of error codes: api/README.md's table
says the same, and no code in api/ raises or writes a code outside it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import api.problems as problems_module
from api.problems import REGISTRY, Problem

API = Path(__file__).resolve().parents[2] / "api"
_ROW = re.compile(r"^\|\s*`([a-z_0-9]+)`\s*\|\s*(\d{3})\s*\|\s*([^|]+?)\s*\|")


def _readme_rows() -> list[tuple[str, int, str]]:
    text = (API / "README.md").read_text(encoding="utf-8")
    section = text.split("## Error codes", 1)[1]
    return [(m[1], int(m[2]), m[3]) for line in section.splitlines() if (m := _ROW.match(line))]


def test_readme_table_is_the_registry() -> None:
    rows = _readme_rows()
    assert [code for code, _, _ in rows].count("not_found") == 1
    assert sorted(rows) == sorted((p.code, p.status, p.title) for p in REGISTRY.values())


def test_registry_entries_are_module_constants_and_used() -> None:
    constants = {name: v for name, v in vars(problems_module).items() if isinstance(v, Problem)}
    assert {p.code for p in constants.values()} == set(REGISTRY)
    assert all(name == p.code.upper() for name, p in constants.items())
    # Each entry is raised or answered somewhere (beyond its own definition).
    used: set[str] = set()
    for tree in _trees().values():
        used |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    assert sorted(set(constants) - used) == []


def _trees() -> dict[str, ast.Module]:
    return {
        path.relative_to(API).as_posix(): ast.parse(path.read_text(encoding="utf-8"))
        for path in sorted(API.rglob("*.py"))
    }


def _called(node: ast.Call) -> str:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def offenders(trees: dict[str, ast.Module]) -> list[str]:
    """Every place that makes an error or a problem body with a code not taken from the registry."""
    found: list[str] = []
    for rel, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _called(node) == "ApiError":
                # Only Problem.__call__ builds one, from itself; anything else names a code by hand.
                first = node.args[0] if node.args else None
                if not (rel == "problems.py" and isinstance(first, ast.Name) and first.id == "self"):
                    found.append(f"{rel}:{node.lineno}: ApiError(...) built by hand")
            if isinstance(node, ast.Call) and _called(node) == "Problem" and node.args:
                code = node.args[0]
                if isinstance(code, ast.Constant):
                    found.append(f"{rel}:{node.lineno}: Problem({code.value!r}) outside the registry")
            if isinstance(node, ast.Call) and _called(node) == "_register" and node.args:
                code = node.args[0]
                if not (isinstance(code, ast.Constant) and code.value in REGISTRY):
                    found.append(f"{rel}:{node.lineno}: _register of a code the registry lacks")
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if (
                        isinstance(key, ast.Constant)
                        and key.value == "code"
                        and isinstance(value, ast.Constant)
                        and value.value not in REGISTRY
                    ):
                        found.append(f"{rel}:{node.lineno}: problem body with code {value.value!r}")
    return found


def test_no_code_outside_the_registry() -> None:
    assert offenders(_trees()) == []


def test_the_scan_catches_codes_by_hand() -> None:
    bad = ast.parse(
        "raise ApiError(409, 'subject_gone', 'no')\n"
        "GONE = Problem('gone', 410, 'Gone')\n"
        "body = {'code': 'origin_refused', 'status': 403}\n"
        "ok = {'code': 'not_found'}\n"
    )
    assert {line.split(": ", 1)[1] for line in offenders({"routes/x.py": bad})} == {
        "ApiError(...) built by hand",
        "Problem('gone') outside the registry",
        "problem body with code 'origin_refused'",
    }


def test_problem_documents_come_from_the_registry() -> None:
    error = REGISTRY["subject_not_ready"]("subject sub_1 is training")
    assert (error.status, error.code) == (409, "subject_not_ready")
    assert REGISTRY["subject_not_ready"].document(error.detail) == {
        "type": "https://roomfit.dev/problems/subject_not_ready",
        "title": "Subject not ready",
        "status": 409,
        "detail": "subject sub_1 is training",
        "code": "subject_not_ready",
    }
