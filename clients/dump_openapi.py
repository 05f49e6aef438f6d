"""Write the API's OpenAPI document (what `/openapi.json` answers) to a file, without a server.

    python clients/dump_openapi.py clients/openapi.json

`make client` runs this, then generates clients/python/roomfit_client from the file. The app is
built with embedded-mode settings in a temporary folder and nothing of the environment
(`ROOMFIT_*`, `.env`): the document does not depend on the deployment, and nothing is connected.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def document() -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    for name in [n for n in os.environ if n.startswith("ROOMFIT_")]:
        del os.environ[name]
    from api.app import create_app
    from core.settings import Settings

    with tempfile.TemporaryDirectory() as folder:
        app = create_app(Settings(_env_file=None, var_dir=Path(folder)))  # type: ignore[call-arg]
        return app.openapi()


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT.json")
    Path(sys.argv[1]).write_text(dumps(document()), encoding="utf-8")
