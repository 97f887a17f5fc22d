"""Request bodies received straight from the socket into the application's buffer.

gunicorn's `Body` has no `readinto`, so werkzeug's stream reads through `Body.read`, and a 13 MB
body was copied six times on its way (1 MiB receives, gunicorn's buffers, werkzeug's bytearray and
its bytes copy): about 50 ms, where the socket alone delivers it in under 8 ms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from gunicorn.http.body import Body, LengthReader
from gunicorn.http.unreader import SocketUnreader

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class ReceivingBody:
    """gunicorn's body of a request with a Content-Length, plus `readinto`.

    `readinto` first hands out what gunicorn already read ahead with the headers, then receives
    into the caller's buffer, and keeps gunicorn's count of what is left, so the connection is
    reused as before. Everything else (`read`, `readline`, iteration) is gunicorn's own.
    """

    def __init__(self, body: Body) -> None:
        self._body = body
        self._reader: LengthReader = body.reader
        self._unreader: SocketUnreader = body.reader.unreader

    @staticmethod
    def fits(body: object) -> bool:
        """Only a body of declared length read from a socket, as gunicorn builds it, is received directly."""
        return (type(body) is Body and type(body.reader) is LengthReader
                and isinstance(body.reader.unreader, SocketUnreader))

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._body.buf.tell():  # something was read with `read` before: gunicorn's own path
            data = self._body.read(len(view))
            view[:len(data)] = data
            return len(data)
        wanted = min(len(view), self._reader.length)
        if wanted <= 0:
            return 0
        held = self._unreader.take_buffered()
        try:
            if held:
                count = min(len(held), wanted)
                view[:count] = held[:count]
                if len(held) > count:  # a pipelined next request: gunicorn's again
                    self._unreader.unread(held[count:])
            else:
                count = self._unreader.sock.recv_into(view[:wanted])
        except BaseException:
            self._body.failed = True  # where the next request starts is unknown: don't reuse the connection
            raise
        self._reader.length -= count
        return count

    def __getattr__(self, name: str) -> Any:
        return getattr(self._body, name)

    def __iter__(self) -> Any:
        return iter(self._body)


def receive_bodies_directly(app: WsgiApp) -> WsgiApp:
    """The WSGI `app`, given a `wsgi.input` with `readinto` (see `ReceivingBody`) where it can have one."""

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if ReceivingBody.fits(environ.get("wsgi.input")):
            environ["wsgi.input"] = ReceivingBody(environ["wsgi.input"])
        return app(environ, start_response)

    return wsgi
