"""The tree's two structural rules, checked on every run — and each check shown to fail on bad code.

1. Layers: api → core ← worker → models, and models imports none of the others. The contracts are
   import-linter's, declared in pyproject.toml; `lint-imports` reads them.
2. One owner per state: only the domain modules assign a status to a subject, preview, job or
   webhook delivery (`row.status = …`, `Subject(status=…)`, `update(Job).values(status=…)`).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("api", "core", "worker", "models", "cli")
# The modules that own the transitions of a domain's rows (see each one's docstring).
DOMAIN_MODULES = frozenset({"core/subjects.py", "core/previews.py", "core/job_state.py", "core/webhooks.py"})
ROW_CLASSES = frozenset({"Subject", "Preview", "Job", "WebhookDelivery"})


# --- rule 2: status writes ------------------------------------------------------------------
def status_writes(source: str) -> list[str]:
    """Every place in `source` that writes a row's status, as `line: what`.

    Attribute assignments on `self` are not row writes (an exception's own `status`, say)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            for sub in ast.walk(target):
                if (
                    isinstance(sub, ast.Attribute)
                    and sub.attr == "status"
                    and not (isinstance(sub.value, ast.Name) and sub.value.id == "self")
                ):
                    found.append(f"{node.lineno}: assigns {ast.unparse(sub)}")
        if isinstance(node, ast.Call):
            func = node.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            keywords = {k.arg for k in node.keywords}
            if "status" in keywords and (name in ROW_CLASSES or name == "values"):
                found.append(f"{node.lineno}: {name}(status=...)")
            if (
                name == "setattr"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value == "status"
            ):
                found.append(f"{node.lineno}: setattr(..., 'status', ...)")
    return found


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_only_domain_modules_write_statuses() -> None:
    offenders = {
        rel: hits
        for path in _modules()
        if (rel := path.relative_to(ROOT).as_posix()) not in DOMAIN_MODULES
        and (hits := status_writes(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}, f"status written outside {sorted(DOMAIN_MODULES)}: {offenders}"


def test_the_domain_modules_really_write_statuses() -> None:
    # If these found nothing, the scan above would be looking at the wrong things.
    for rel in ("core/subjects.py", "core/previews.py", "core/job_state.py"):
        assert status_writes((ROOT / rel).read_text(encoding="utf-8")), rel


def test_status_scan_catches_a_route_that_assigns_a_status() -> None:
    route = textwrap.dedent(
        """
        @router.post("/v1/subjects/{subject_id}/publish")
        def publish(subject_id: str, repo: RepoDep) -> SubjectOut:
            subject = repo.get(Subject, subject_id)
            subject.status = "ready"
            repo.add(Job(id="job_1", kind="train", status="queued"))
            session.execute(update(Preview).values(status="failed"))
            setattr(subject, "status", "failed")
            return SubjectOut.of(subject)

        class ApiError(Exception):
            def __init__(self, status: int) -> None:
                self.status = status
        """
    )
    hits = sorted(status_writes(route), key=lambda h: int(h.split(":")[0]))
    assert [h.split(": ", 1)[1] for h in hits] == [
        "assigns subject.status",
        "Job(status=...)",
        "values(status=...)",
        "setattr(..., 'status', ...)",
    ]


# --- rule 1: layers -------------------------------------------------------------------------
def _lint_imports(cwd: Path, config: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is a dev dependency (pyproject.toml)"
    return subprocess.run(
        [exe, "--config", str(config), "--no-cache"],
        cwd=cwd,
        env={"PYTHONPATH": str(cwd), "PATH": str(Path(sys.executable).parent)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_layers_hold() -> None:
    done = _lint_imports(ROOT, ROOT / "pyproject.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("api/routes.py", "from models import painter", "api imports core only"),
        ("models/painter.py", "import core.settings", "models imports none"),
        ("core/settings.py", "from api import routes", "core imports neither"),
        ("worker/tasks.py", "import api.routes", "worker imports core and models"),
    ],
)
def test_layer_contracts_fail_on_a_bad_import(tmp_path: Path, module: str, line: str, broken: str) -> None:
    """The same contracts, on a small tree of the same packages with one import across a layer."""
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    for rel in ("api/routes.py", "models/painter.py", "core/settings.py", "worker/tasks.py"):
        (tmp_path / rel).write_text("import core\n" if rel.startswith(("api", "worker")) else "")
    (tmp_path / module).write_text(f"{line}\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    done = _lint_imports(tmp_path, tmp_path / "pyproject.toml")
    assert done.returncode != 0, done.stdout
    assert "1 broken" in done.stdout, done.stdout
    broken_lines = [ln for ln in done.stdout.splitlines() if ln.endswith("BROKEN")]
    assert len(broken_lines) == 1 and broken_lines[0].startswith(broken), done.stdout


# --- every folder says what lives in it -----------------------------------------------------
MAX_MODULE_LINES = 400


def _readme(pkg: str) -> str:
    return (ROOT / pkg / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("pkg", PACKAGES)
def test_each_module_is_named_in_its_folders_readme(pkg: str) -> None:
    readme = _readme(pkg)
    missing = []
    for path in sorted((ROOT / pkg).rglob("*.py")):
        rel = path.relative_to(ROOT / pkg)
        if path.name == "__init__.py":
            continue
        named = f"`{path.name}`" in readme or f"`{rel.as_posix()}`" in readme
        if not named and len(rel.parts) > 1:
            named = f"`{rel.parent.as_posix()}/*.py`" in readme
        if not named:
            missing.append(rel.as_posix())
    assert missing == [], f"{pkg}/README.md does not say what these are"


@pytest.mark.parametrize("pkg", ["api", "core", "worker", "models"])
def test_modules_stay_small_or_say_why(pkg: str) -> None:
    readme_lines = _readme(pkg).splitlines()
    too_long = {}
    for path in sorted((ROOT / pkg).rglob("*.py")):
        count = len(path.read_text(encoding="utf-8").splitlines())
        said = any(f"`{path.name}`" in line and str(MAX_MODULE_LINES) in line for line in readme_lines)
        if count > MAX_MODULE_LINES and not said:
            too_long[path.relative_to(ROOT).as_posix()] = count
    assert too_long == {}, f"over {MAX_MODULE_LINES} lines with no reason in the README"


def test_root_readme_names_the_tree() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    folders = {f.split("/", 1)[0] for f in tracked if "/" in f and not f.startswith(".")}
    named = {w.strip("`").rstrip("/") for w in section.split() if w.strip("`,.;:()").endswith("/")}
    named = {n.strip("`,.;:()").rstrip("/") for n in named}
    assert folders - named == set(), "folders the README's map leaves out"
    assert {n for n in named if "/" not in n and not (ROOT / n).is_dir()} == set(), "named, not there"
