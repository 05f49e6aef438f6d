"""Print the requirements of the API image: pyproject.toml's dependencies without the machine learning.

The API process (`roomfit serve`, and `roomfit migrate`, which runs from the same image) imports
`api/`, `core/` and `cli/` only; torch, diffusers and the rest are imported by the workers alone
(`tests/test_deploy_schemas.py` starts the API and runs a migration with them blocked). Leaving them
out keeps the API image a few hundred MB instead of several GB. deploy/Dockerfile.api installs what
this prints, then the project itself with `--no-deps`.

    python deploy/api_requirements.py [pyproject.toml] > requirements.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

# Distribution names (as in pyproject.toml) that only the workers import; each is also the name
# it is imported by.
WORKER_ONLY = frozenset(
    {"torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "torchmetrics"}
)


def requirement_name(requirement: str) -> str:
    """`uvicorn[standard]>=0.30,<1` -> `uvicorn` (normalised: lower case, `-` for `_` and `.`)."""
    name = re.split(r"[\s<>=!~\[;@(]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def api_requirements(pyproject: Path) -> list[str]:
    dependencies = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    return [dep for dep in dependencies if requirement_name(dep) not in WORKER_ONLY]


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("pyproject.toml")
    print("\n".join(api_requirements(path)))
