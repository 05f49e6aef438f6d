"""A streamed body without Content-Length is cut off at the form's body limit even when no part
passes a limit of its own: here, bytes after the closing boundary (api/multipart.py, `read_form`)."""

from __future__ import annotations

from collections.abc import Iterator

from tests.api.conftest import ApiEnv, asgi_request

MB = 1024 * 1024


def test_an_endless_epilogue_is_refused_once_the_body_passes_its_limit(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    boundary = "roomfitboundary"
    form = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nsofa\r\n--{boundary}--\r\n'
    ).encode()
    consumed = [0]

    def body() -> Iterator[bytes]:
        consumed[0] += len(form)
        yield form
        for _ in range(400):  # 400 MB after the form's end, unless the reader stops first
            consumed[0] += MB
            yield b"\0" * MB

    headers = {**env.a.auth(), "Content-Type": f"multipart/form-data; boundary={boundary}"}
    status, problem = asgi_request(env, "POST", "/v1/subjects", headers, body())
    assert (status, problem["code"]) == (413, "payload_too_large")
    assert consumed[0] < 400 * MB
