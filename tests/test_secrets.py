"""The API key is written nowhere, and the files a run writes are its owner's and safe.

Each run goes through the real CLI in-process, against the sandbox (or a small aiohttp
server) on 127.0.0.1, with the key in GIVEBUTTER_API_KEY. Afterwards stdout, stderr, the
log records and every byte of every file under the test's folder (results CSV, summary
JSON, the ledger and its journal, anything written to HOME) are searched for the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from importer.cli import main
from importer.sandbox import Faults, SandboxSettings, sandbox_in_thread
from tests.hostile.make_corpus import GOOD_ROWS, MAPPING, csv_text

KEY = "gb_live_SECRET123xyz"
ROWS = [
    *GOOD_ROWS,
    ("10004", "meeting", "Site visit", "Toured the garden", "03/04/2024"),
    ("10050", "note", "Archived contact", "The sandbox answers 403", "03/05/2024"),
]


@dataclass
class Outputs:
    """Everything one run said or wrote."""

    code: int
    stdout: str
    stderr: str
    logs: str
    files: dict[Path, bytes]
    results: str

    def assert_no_key(self) -> None:
        for secret in (KEY, KEY.removeprefix("gb_live_")):
            assert secret not in self.stdout
            assert secret not in self.stderr
            assert secret not in self.logs
            for path, data in self.files.items():
                assert secret.encode() not in data, f"the key is in {path}"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The run's whole world: input, outputs, HOME and the working folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / "data"))
    monkeypatch.delenv("GIVEBUTTER_BASE_URL", raising=False)
    for name in ("home", "in", "out", "cwd"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    (tmp_path / "in" / "activities.csv").write_text(csv_text(ROWS), encoding="utf-8")
    (tmp_path / "in" / "mapping.yaml").write_text(MAPPING, encoding="utf-8")
    return tmp_path


def has_ledger_option(capsys: pytest.CaptureFixture[str]) -> bool:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    return "--ledger" in capsys.readouterr().out


@pytest.fixture
def send(
    folder: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., Outputs]:
    """Import `in/activities.csv` to `base_url` with `key` in the environment."""
    caplog.set_level(logging.DEBUG)
    ledger = has_ledger_option(capsys)

    def run(base_url: str, *, key: str = KEY, extra: tuple[str, ...] = ()) -> Outputs:
        monkeypatch.setenv("GIVEBUTTER_API_KEY", key)
        out = folder / "out"
        argv = ["run", str(folder / "in" / "activities.csv"), "-m", str(folder / "in/mapping.yaml")]
        argv += ["--base-url", base_url, "--results", str(out / "results.csv"), "-q"]
        argv += ["--summary-json", str(out / "summary.json"), "--rate", "50/s", "--timeout", "5"]
        if ledger:
            argv += ["--ledger", str(out / "ledger.sqlite")]
        code = main([*argv, *extra])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        files = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
        results = out / "results.csv"
        text = results.read_text(encoding="utf-8") if results.exists() else ""
        return Outputs(code, captured.out, captured.err, caplog.text, files, text)

    return run


# -- the key ------------------------------------------------------------------------------------


def test_a_successful_import_writes_the_key_nowhere(send: Callable[..., Outputs]) -> None:
    with sandbox_in_thread(SandboxSettings(api_key=KEY, limits=())) as sandbox:
        outputs = send(sandbox.base_url)
        stored = sandbox.store.count_activities()
    assert outputs.code == 1  # the archived contact's row fails with 403
    assert stored == 4
    assert outputs.results.count(',"created",') == 4
    outputs.assert_no_key()


def test_the_ledger_of_a_run_holds_no_key(
    send: Callable[..., Outputs], folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not has_ledger_option(capsys):
        pytest.skip("`run` has no --ledger option yet")
    with sandbox_in_thread(SandboxSettings(api_key=KEY, limits=())) as sandbox:
        outputs = send(sandbox.base_url)
    assert (folder / "out" / "ledger.sqlite").exists()
    outputs.assert_no_key()


def test_a_refused_key_stops_the_run_and_is_written_nowhere(
    send: Callable[..., Outputs],
) -> None:
    with sandbox_in_thread(SandboxSettings(limits=())) as sandbox:  # it takes another key
        outputs = send(sandbox.base_url)
        stored = sandbox.store.count_activities()
    assert outputs.code == 2
    assert "the API refused the key: 401 Unauthorized" in outputs.stderr
    assert stored == 0
    outputs.assert_no_key()


def test_server_errors_write_the_key_nowhere(send: Callable[..., Outputs]) -> None:
    faults = Faults(error_rate=0.4, store_then_fail_rate=0.3, seed=7)
    with sandbox_in_thread(SandboxSettings(api_key=KEY, limits=(), faults=faults)) as sandbox:
        outputs = send(sandbox.base_url, extra=("--max-attempts", "2"))
        inflicted = sum(sandbox.stats.faults.values())
    assert inflicted > 0
    assert outputs.code in (1, 2)
    outputs.assert_no_key()


def test_dropped_connections_write_the_key_nowhere(send: Callable[..., Outputs]) -> None:
    faults = Faults(drop_rate=0.5, seed=3)
    with sandbox_in_thread(SandboxSettings(api_key=KEY, limits=(), faults=faults)) as sandbox:
        outputs = send(sandbox.base_url, extra=("--max-attempts", "2"))
        inflicted = sum(sandbox.stats.faults.values())
    assert inflicted > 0
    assert outputs.code in (1, 2)
    outputs.assert_no_key()


def closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_api_writes_the_key_nowhere(send: Callable[..., Outputs]) -> None:
    outputs = send(f"http://127.0.0.1:{closed_port()}/v1", extra=("--max-attempts", "1"))
    assert outputs.code == 2
    assert "cannot reach the API at http://127.0.0.1:" in outputs.stderr
    outputs.assert_no_key()


# -- where the key may go -----------------------------------------------------------------------


@pytest.fixture
def requests_made(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every URL an aiohttp session is asked for (the request is then made as usual)."""
    urls: list[str] = []
    request = aiohttp.ClientSession._request

    def spy(self: aiohttp.ClientSession, method: str, url: object, **kwargs: object) -> object:
        urls.append(f"{method} {url}")
        return request(self, method, url, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(aiohttp.ClientSession, "_request", spy)
    return urls


def test_plain_http_to_another_host_is_refused_before_any_request(
    send: Callable[..., Outputs], requests_made: list[str]
) -> None:
    outputs = send("http://192.0.2.1/v1")  # TEST-NET-1: never routed, and never tried
    assert outputs.code == 2
    assert "is plain http: the API key would travel unencrypted" in outputs.stderr
    assert requests_made == []
    outputs.assert_no_key()


@contextlib.contextmanager
def serving(app: web.Application) -> Iterator[str]:
    """Serve `app` on a free loopback port from a thread; give its root URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(app)

    async def start() -> int:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return int(runner.addresses[0][1])

    try:
        port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def redirecting_api(elsewhere_hits: list[str]) -> web.Application:
    """An API that takes the key, then answers every POST with a 307 to /elsewhere."""

    async def contacts(request: web.Request) -> web.Response:
        return web.json_response({"data": [], "meta": {"total": 0}})

    async def create(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(location="/elsewhere/activities")

    async def elsewhere(request: web.Request) -> web.Response:
        elsewhere_hits.append(request.headers.get("Authorization", ""))
        return web.json_response({"id": 1}, status=201)

    app = web.Application()
    app.router.add_get("/v1/contacts", contacts)
    app.router.add_post("/v1/contacts/{contact}/activities", create)
    app.router.add_route("*", "/elsewhere/activities", elsewhere)
    return app


def test_a_post_redirect_is_not_followed(send: Callable[..., Outputs]) -> None:
    hits: list[str] = []
    with serving(redirecting_api(hits)) as root:
        outputs = send(f"{root}/v1")
    assert hits == []
    assert outputs.code == 1
    assert outputs.results.count("307 Temporary Redirect: redirect to") == len(ROWS)
    outputs.assert_no_key()


# -- the files a run writes ---------------------------------------------------------------------


def dry_run(folder: Path, *extra: str) -> int:
    source = folder / "in" / "activities.csv"
    return main(["run", str(source), "-m", str(folder / "in/mapping.yaml"), "--dry-run", *extra])


def test_the_results_path_may_not_be_the_input(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = folder / "in" / "activities.csv"
    before = source.read_bytes()
    code = dry_run(folder, "--results", str(source), "--force")
    assert code == 2
    assert "the results path is the input file" in capsys.readouterr().err
    assert source.read_bytes() == before


def test_an_existing_results_file_is_not_overwritten_without_force(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = folder / "out" / "results.csv"
    results.write_text("keep me\n", encoding="utf-8")
    code = dry_run(folder, "--results", str(results))
    assert code == 2
    assert "already exists (use --force to replace it)" in capsys.readouterr().err
    assert results.read_text(encoding="utf-8") == "keep me\n"


def test_force_replaces_an_existing_results_file(folder: Path) -> None:
    results = folder / "out" / "results.csv"
    results.write_text("replace me\n", encoding="utf-8")
    assert dry_run(folder, "--results", str(results), "--force") == 0
    assert results.read_text(encoding="utf-8").startswith("row,")


def test_the_default_results_name_is_timestamped_in_the_working_folder(folder: Path) -> None:
    assert dry_run(folder) == 0
    (written,) = (folder / "cwd").iterdir()
    assert written.name.startswith("activities-results-")
    assert written.suffix == ".csv"


def test_files_a_run_writes_are_readable_by_their_owner_only(
    send: Callable[..., Outputs], folder: Path
) -> None:
    with sandbox_in_thread(SandboxSettings(api_key=KEY, limits=())) as sandbox:
        send(sandbox.base_url)
    written = [path for path in (folder / "out").iterdir() if path.is_file()]
    assert {path.name for path in written} >= {"results.csv", "summary.json"}
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
