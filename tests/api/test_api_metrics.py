"""The API's own /metrics (api.app.MetricsMiddleware, api.scrape): scraped before and after a known
set of requests, each counter and histogram count moves by exactly those requests, the fast read
path included; labels are route templates and known methods, never raw paths or made-up methods;
and with several processes on one port (multiprocess mode) a scrape sums them all."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from api.app import METHODS
from api.scrape import MULTIPROC_ENV, prepare_multiprocess
from core.ids import new_id
from tests.api.conftest import ApiEnv, create_preview, ready_subject

ROOT = Path(__file__).resolve().parents[2]
PREVIEW = "/v1/previews/{preview_id}"
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _series(text: str) -> Series:
    out: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in out, f"{key} twice"
            out[key] = sample.value
    return out


def _http(series: Series, name: str) -> dict[tuple[str, ...], float]:
    """`roomfit_http_*` samples by their labels' values (method, route[, status])."""
    return {tuple(v for _, v in labels): value for (n, labels), value in series.items() if n == name}


def _moved(before: Series, after: Series, name: str) -> dict[tuple[str, ...], float]:
    """The samples of `name` that moved, by how much."""
    was = _http(before, name)
    deltas = {labels: value - was.get(labels, 0.0) for labels, value in _http(after, name).items()}
    return {labels: delta for labels, delta in deltas.items() if delta}


def test_counters_and_histogram_counts_move_by_exactly_the_requests_made(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    subject_id = ready_subject(env, env.a)
    client = env.client
    before = _series(client.get("/metrics").text)

    previews = [create_preview(env, env.a, subject_id)["id"] for _ in range(2)]  # 2 POSTs
    for _ in range(3):  # the fast read path (api.fast_reads)
        assert client.get(f"/v1/previews/{previews[0]}", headers=env.a.auth()).status_code == 200
    missing = new_id("prv")
    assert client.get(f"/v1/previews/{missing}", headers=env.a.auth()).status_code == 404
    assert client.get(f"/v1/previews/{previews[1]}").status_code == 401
    stray = f"/no-such-page/{new_id('x')}"
    assert client.get(stray).status_code == 404
    assert client.request("BREW", "/healthz").status_code == 405

    after = _series(client.get("/metrics").text)
    assert _moved(before, after, "roomfit_http_requests_total") == {
        ("GET", "/metrics", "200"): 1,  # the first scrape, counted once it was answered
        ("POST", "/v1/previews", "202"): 2,
        ("GET", PREVIEW, "200"): 3,
        ("GET", PREVIEW, "404"): 1,
        ("GET", PREVIEW, "401"): 1,
        ("GET", "unmatched", "404"): 1,
        ("other", "/healthz", "405"): 1,
    }
    assert _moved(before, after, "roomfit_http_request_seconds_count") == {
        ("GET", "/metrics"): 1,
        ("POST", "/v1/previews"): 2,
        ("GET", PREVIEW): 5,
        ("GET", "unmatched"): 1,
        ("other", "/healthz"): 1,
    }

    # Bounded labels: the exact `moved` above has route templates and known methods only, whatever
    # paths and methods were sent; and no raw id or made-up method appears anywhere.
    assert {method for method, _, _ in _http(after, "roomfit_http_requests_total")} <= METHODS | {"other"}
    assert not any(raw in repr(after) for raw in (missing, previews[0], stray, "BREW"))


# Two API processes serve requests (forked, as uvicorn's workers are separate processes) and a
# third answers the scrape: in multiprocess mode its /metrics sums what all of them counted. No
# request here reads the database, so none is made.
SEVERAL_PROCESSES = """
import os, sys
from pathlib import Path
from fastapi.testclient import TestClient
from api import scrape
from api.app import create_app
from tests.api.conftest import make_settings

folder = Path(sys.argv[1])
app = create_app(make_settings(folder, f"sqlite:///{folder / 'roomfit.db'}"))
for requests in (2, 3):
    pid = os.fork()
    if pid == 0:
        with TestClient(app) as client:
            codes = [client.get("/healthz").status_code for _ in range(requests)]
        os._exit(0 if codes == [200] * requests else 1)
    assert os.waitpid(pid, 0)[1] == 0
sys.stdout.write(scrape.latest().decode())
"""


def test_several_processes_on_one_port_are_summed_in_every_scrape(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMFIT_")}
    folder = tmp_path / "multiproc"
    folder.mkdir()
    env.update(PYTHONPATH=str(ROOT), **{MULTIPROC_ENV: str(folder)})
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SEVERAL_PROCESSES), str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    series = _series(done.stdout)
    assert _http(series, "roomfit_http_requests_total")[("GET", "/healthz", "200")] == 5
    assert _http(series, "roomfit_http_request_seconds_count")[("GET", "/healthz")] == 5
    # The ops gauges come once, from the process that answers (no schema here: "not read", 0).
    assert series[("roomfit_ops_metrics_up", ())] == 0


def test_serve_prepares_the_folder_before_its_workers_start(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(MULTIPROC_ENV, "")  # so that the test's own setting is undone after it
    monkeypatch.delenv(MULTIPROC_ENV)
    assert prepare_multiprocess(1, tmp_path / "unused") is None  # one process: the default registry
    assert not (tmp_path / "unused").exists() and MULTIPROC_ENV not in os.environ

    folder = tmp_path / "multiproc"
    folder.mkdir()
    (folder / "counter_12345.db").write_bytes(b"a previous run's counts")
    (folder / "keep.txt").write_text("not ours")
    assert prepare_multiprocess(4, folder) == folder
    assert os.environ[MULTIPROC_ENV] == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]
