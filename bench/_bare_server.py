"""The node's HTTP server set-up with nothing behind it: the yardstick for the API's figures.

``constant_app`` reads each request and answers 200 with a fixed small JSON body; served with
``node.api.serve_api`` (the node's own Hypercorn configuration), it is what one request costs
with this server before the node does anything. ``BareServer`` runs it on 127.0.0.1 on a thread
of its own (its own trio loop), for benchmarks whose clients block the main thread.
"""

from __future__ import annotations

import threading

import trio

BODY = b'{"origin":1,"seq":1,"ack":"local"}'


async def constant_app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})


class BareServer:
    """``with BareServer() as port:`` serves ``constant_app`` on 127.0.0.1:port until the block ends."""

    def __init__(self) -> None:
        self._port: int | None = None
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bare-http-server", daemon=True)

    def _run(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # reported to the caller of __enter__
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        from node.api import serve_api

        self._token, self._stop = trio.lowlevel.current_trio_token(), trio.Event()
        async with trio.open_nursery() as nursery:
            self._port = await nursery.start(serve_api, constant_app, "127.0.0.1", 0, self._stop.wait)
            self._ready.set()

    def __enter__(self) -> int:
        self._thread.start()
        if not self._ready.wait(30) or self._port is None:
            raise RuntimeError(f"the bare server did not start: {self._error!r}")
        return self._port

    def __exit__(self, *exc) -> None:
        if self._token is not None and self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(30)
