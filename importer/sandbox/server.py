"""Ways to run the sandbox: in the current event loop, in a thread, or as a command.

- `async with running_sandbox(settings) as sandbox:` serves on 127.0.0.1 (a free port unless
  told) in the running loop; `sandbox.base_url` is `http://127.0.0.1:PORT/v1`.
- `with sandbox_in_thread(settings) as sandbox:` the same in a background thread with its own
  loop, for synchronous code (the CLI in-process) that talks to it.
- `serve_forever(settings, host, port, on_ready)` for `givebutter-import sandbox`: serves
  until SIGINT or SIGTERM, then returns.

Each listens on a loopback address only; any other host is refused with a `ConfigError`.
On leaving, each stops listening, wakes any request still waiting out latency or a slow
answer (it is answered 503, or its late answer is sent at once), closes every connection and
closes the store it opened. A store passed in by the caller is left open: the caller owns it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future

from aiohttp import web

from importer.errors import ConfigError
from importer.sandbox.app import STATS_PATH, SandboxState, build_app
from importer.sandbox.seed import seed_store
from importer.sandbox.settings import DEFAULT_HOST, DEFAULT_PORT, SandboxSettings
from importer.sandbox.stats import SandboxStats
from importer.sandbox.store import SandboxStore

_SHUTDOWN_TIMEOUT = 5.0  # seconds a request in progress may take to finish on close


class Sandbox:
    """A running sandbox: where it answers, the key it takes, and what it holds and saw."""

    def __init__(self, state: SandboxState, host: str, port: int) -> None:
        self.settings: SandboxSettings = state.settings
        self.store: SandboxStore = state.store
        self.stats: SandboxStats = state.stats
        self.host = host
        self.port = port
        shown = f"[{host}]" if ":" in host else host
        self.root_url = f"http://{shown}:{port}"
        self.base_url = f"{self.root_url}/v1"
        self.stats_url = f"{self.root_url}{STATS_PATH}"

    @property
    def api_key(self) -> str:
        return self.settings.api_key

    def max_admitted_in(self, seconds: float) -> int:
        """The most requests the rate limit admitted in any interval of `seconds`."""
        return self.stats.max_admitted_in(seconds)

    def __repr__(self) -> str:
        return f"<Sandbox {self.base_url}>"


def loopback_host(host: str) -> str:
    """The address to bind for `host`, which must be a loopback one ("localhost" is
    127.0.0.1); any other host is a `ConfigError`: the sandbox is not for the network."""
    address = DEFAULT_HOST if host.strip().lower() == "localhost" else host.strip()
    try:
        is_loopback = ipaddress.ip_address(address).is_loopback
    except ValueError:
        is_loopback = False
    if not is_loopback:
        raise ConfigError(f"the sandbox listens on loopback addresses only, not {host!r}")
    return address


@contextlib.asynccontextmanager
async def running_sandbox(
    settings: SandboxSettings | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = 0,
    store: SandboxStore | None = None,
) -> AsyncIterator[Sandbox]:
    """Serve a sandbox in the running loop until the block ends (port 0: any free port).

    Without `store`, it opens one from `settings.db_path` (memory if None), seeds it if it
    has no contacts, and closes it at the end. With `store`, it seeds it the same way but
    leaves it open.
    """
    settings = settings or SandboxSettings()
    address = loopback_host(host)
    owned = store is None
    store = SandboxStore(settings.db_path) if store is None else store
    try:
        seed_store(store, settings.contacts)
        state = SandboxState(settings, store)
        runner = web.AppRunner(
            build_app(state), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, address, port)
            await site.start()
            yield Sandbox(state, address, runner.addresses[0][1])
        finally:
            state.closing.set()
            await runner.cleanup()
    finally:
        if owned:
            store.close()


@contextlib.contextmanager
def sandbox_in_thread(
    settings: SandboxSettings | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = 0,
    store: SandboxStore | None = None,
    start_timeout: float = 30.0,
) -> Iterator[Sandbox]:
    """`running_sandbox` in a background thread with its own event loop.

    Gives the sandbox once it answers; when the block ends, stops it and waits for the
    thread. An error while starting (a port in use) is raised here.
    """
    started: Future[tuple[Sandbox, asyncio.AbstractEventLoop, asyncio.Event]] = Future()
    failure: list[BaseException] = []

    async def serve() -> None:
        stop = asyncio.Event()
        async with running_sandbox(settings, host=host, port=port, store=store) as sandbox:
            started.set_result((sandbox, asyncio.get_running_loop(), stop))
            await stop.wait()

    def main() -> None:
        try:
            asyncio.run(serve())
        except BaseException as error:  # handed to the caller's thread, never swallowed
            if started.done():
                failure.append(error)
            else:
                started.set_exception(error)

    thread = threading.Thread(target=main, name="givebutter-sandbox", daemon=True)
    thread.start()
    try:
        sandbox, loop, stop = started.result(timeout=start_timeout)
    except BaseException:
        thread.join(timeout=start_timeout)
        raise
    try:
        yield sandbox
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join()
        if failure:
            raise failure[0]


def serve_forever(
    settings: SandboxSettings | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve a sandbox until SIGINT or SIGTERM, then shut it down cleanly and return.

    `on_ready(base_url)` is called once it answers (by default the URL is printed). Must run
    in the main thread (it installs signal handlers). A non-loopback host or a port that
    cannot be bound is a `ConfigError`.
    """
    address = loopback_host(host)
    asyncio.run(_serve_until_signalled(settings, address, port, on_ready or print))


async def _serve_until_signalled(
    settings: SandboxSettings | None, host: str, port: int, on_ready: Callable[[str], None]
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with contextlib.AsyncExitStack() as stack:
            try:
                sandbox = await stack.enter_async_context(
                    running_sandbox(settings, host=host, port=port)
                )
            except OSError as error:
                raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror}") from error
            except sqlite3.Error as error:
                path = settings.db_path if settings else None
                raise ConfigError(f"cannot open the sandbox database {path}: {error}") from error
            on_ready(sandbox.base_url)
            await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
