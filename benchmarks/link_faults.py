"""A real HTTP transport whose first response for a named file breaks after N bytes, as a dropped link would.

Used by the deployment benchmark (resume after a cut) and the deployer's tests.
"""

from __future__ import annotations

import httpx


class _CutStream(httpx.SyncByteStream):
    """Passes bytes through, then raises ReadError after `limit` bytes."""

    def __init__(self, inner: httpx.SyncByteStream, limit: int) -> None:
        self.inner, self.limit = inner, limit

    def __iter__(self):  # type: ignore[no-untyped-def]
        passed = 0
        for chunk in self.inner:
            if passed + len(chunk) >= self.limit:
                yield chunk[: self.limit - passed]
                raise httpx.ReadError("link cut on purpose")
            passed += len(chunk)
            yield chunk

    def close(self) -> None:
        self.inner.close()


class CutTransport(httpx.BaseTransport):
    """Real HTTP, except that the first response for each named file breaks after its byte count."""

    def __init__(self, cut_after: dict[str, int]) -> None:
        self.inner = httpx.HTTPTransport()
        self.cut_after = dict(cut_after)
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = self.inner.handle_request(request)
        limit = self.cut_after.pop(request.url.path.rsplit("/", 1)[-1], None)
        if limit is None:
            return response
        return httpx.Response(response.status_code, headers=response.headers,
                              stream=_CutStream(response.stream, limit), extensions=response.extensions)

    def close(self) -> None:
        self.inner.close()
