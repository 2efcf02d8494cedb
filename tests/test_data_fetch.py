"""`bench data fetch`: real downloads over HTTP from a server on 127.0.0.1 (no other network).

A mirror of ../shared/data (a few small files, one corrupted) is served by http.server in a thread; the
CLI fetches from it, checks every sha256, refuses the corrupted file, resumes, and offline (a closed
127.0.0.1 port) says what to put where. The upstream path (pinned GitHub files + conversions) is checked
against the real upstream bytes where the repositories are on this machine (/work/.mirror).
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import socket
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.__main__ import main
from bench.core.sources import SourceError, all_sources, parse_sources, sources_for
from bench.core.tasks import builtin_tasks
from bench.fetching.conversions import CONVERSIONS
from bench.fetching.fetch import GITHUB_RAW, fetch, select_sources

GIT_MIRRORS = Path("/work/.mirror")
MIRRORED = ("fpb/test.jsonl", "fpb/train.jsonl", "fiqa_sa/train.jsonl", "nwgi/test.jsonl")


class Served:
    """A folder served over HTTP on 127.0.0.1, with the paths asked for."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        requests = self.requests

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args):  # quiet: the test reads `requests` instead
                requests.append(self.path)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def loopback_direct(monkeypatch) -> None:
    """Requests to 127.0.0.1 go straight there even where an HTTP proxy is configured."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


@pytest.fixture
def mirror(tmp_path, data_dir, monkeypatch):
    """A mirror laid out like the data folder: real copies, and fiqa_sa/test.jsonl with one byte changed."""
    monkeypatch.delenv("BENCH_DATA_MIRROR", raising=False)
    loopback_direct(monkeypatch)
    root = tmp_path / "mirror"
    for rel in MIRRORED:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_dir / rel, root / rel)
    corrupted = bytearray((data_dir / "fiqa_sa/test.jsonl").read_bytes())
    corrupted[100] ^= 0x20
    (root / "fiqa_sa/test.jsonl").write_bytes(bytes(corrupted))
    served = Served(root)
    yield served
    served.close()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_from_mirror_checks_hashes_and_resumes(mirror, tmp_path, data_dir, capsys):
    out = tmp_path / "data"
    assert main(["data", "fetch", "fpb", "--data-dir", str(out), "--mirror", mirror.url]) == 0
    for rel in ("fpb/test.jsonl", "fpb/train.jsonl"):
        assert sha(out / rel) == sha(data_dir / rel)
    assert sorted(mirror.requests) == ["/fpb/test.jsonl", "/fpb/train.jsonl"]
    assert "2 fetched, 0 already present" in capsys.readouterr().out
    # A second fetch finds both files in place with the right sha256 and downloads nothing.
    assert main(["data", "fetch", "fpb", "--data-dir", str(out), "--mirror", mirror.url]) == 0
    assert len(mirror.requests) == 2
    assert "0 fetched, 2 already present" in capsys.readouterr().out
    # And bench reads what was fetched.
    assert main(["data", "--data-dir", str(out)]) == 0
    assert "fpb         train   3634  test  1212" in capsys.readouterr().out


def test_corrupted_file_is_refused(mirror, tmp_path, capsys, monkeypatch):
    out = tmp_path / "data"
    monkeypatch.setenv("BENCH_DATA_MIRROR", mirror.url)  # the environment variable works as --mirror
    assert main(["data", "fetch", "fiqa_sa", "--data-dir", str(out)]) == 2
    err = capsys.readouterr().err
    expected = next(s.sha256 for s in sources_for("fiqa_sa") if s.path == "fiqa_sa/test.jsonl")
    got = sha(mirror.root / "fiqa_sa/test.jsonl")
    assert "fiqa_sa/test.jsonl: refused" in err
    assert f"expected {expected}" in err and f"is {got}" in err
    assert f"nothing was written to {out / 'fiqa_sa/test.jsonl'}" in err
    assert "Traceback" not in err
    assert not (out / "fiqa_sa/test.jsonl").exists()
    assert [p.name for p in (out / "fiqa_sa").iterdir()] == ["train.jsonl"]  # the good one landed, no .part


def test_a_different_file_in_place_is_left_alone(mirror, tmp_path, capsys):
    out = tmp_path / "data"
    (out / "fpb").mkdir(parents=True)
    (out / "fpb/test.jsonl").write_text("my own file\n")
    assert main(["data", "fetch", "fpb", "--data-dir", str(out), "--mirror", mirror.url]) == 2
    assert "is already there but is not the file this source names" in capsys.readouterr().err
    assert (out / "fpb/test.jsonl").read_text() == "my own file\n"
    assert (out / "fpb/train.jsonl").is_file()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_says_what_to_put_where(tmp_path, capsys, monkeypatch):
    loopback_direct(monkeypatch)
    out = tmp_path / "data"
    code = main(["data", "fetch", "fpb", "nwgi", "--data-dir", str(out),
                 "--mirror", f"http://127.0.0.1:{closed_port()}"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot reach 127.0.0.1" in err and f"Put these files in {out}" in err
    for source in select_sources(["fpb", "nwgi"]):
        assert f"  {source.path}  sha256 {source.sha256 or 'unknown'}  (" in err
    assert "fpb/test.jsonl  sha256 c9d0ea01a0e9" in err
    assert "nwgi/train.jsonl  sha256 unknown  (not fetchable: FinLoRA's NWGI train split" in err
    assert not list(out.rglob("*.jsonl"))


def test_not_fetchable_file_is_a_note(mirror, tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["data", "fetch", "nwgi", "--data-dir", str(out), "--mirror", mirror.url]) == 0
    printed = capsys.readouterr().out
    assert f"not fetchable: put the file at {out / 'nwgi/train.jsonl'} (sha256 unknown)" in printed
    assert (out / "nwgi/test.jsonl").is_file()
    assert "/nwgi/train.jsonl" not in mirror.requests  # no sha256 to check it by: never fetched


def test_unknown_task_and_no_folder_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BENCH_DATA", raising=False)
    assert main(["data", "fetch", "fbp", "--data-dir", str(tmp_path)]) == 2
    assert "unknown task 'fbp'" in capsys.readouterr().err
    assert main(["data", "fetch", "fpb"]) == 2
    assert "pass --data-dir DIR or set BENCH_DATA" in capsys.readouterr().err


def test_training_set_names_fetch_their_tasks():
    assert {s.path for s in select_sources(["xbrl"])} == {
        "xbrl_tags/test.jsonl",
        "xbrl_tags/train.jsonl",
        "xbrl_value/test.jsonl",
        "xbrl_value/train.jsonl",
    }


def test_every_task_has_sources_and_every_conversion_exists():
    table = all_sources()
    assert set(table) == set(builtin_tasks())
    by_path: dict[str, set] = {}
    for sources in table.values():
        for s in sources:
            by_path.setdefault(s.path, set()).add(s)
    assert all(len(same) == 1 for same in by_path.values())  # a file two tasks share is declared alike
    for task, sources in table.items():
        assert sources, task
        folder = builtin_tasks()[task].folder_name
        for s in sources:
            assert s.conversion is None or s.conversion in CONVERSIONS, s
            assert s.fetchable or s.note, s
            assert s.path.split("/")[0] == folder, s


def test_declared_hashes_are_those_of_the_data_folder(data_dir):
    pinned = {s.path: s for sources in all_sources().values() for s in sources if s.sha256}.values()
    assert len(pinned) == 15
    for s in pinned:
        assert sha(data_dir / s.path) == s.sha256, s.path


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"fpb": {"sources": [{"path": "fpb/t.jsonl", "sha256": "abc"}]}}, "'sha256' must be 64"),
        ({"fpb": {"sources": [{"path": "/etc/x", "sha256": "0" * 64}]}}, "'path' must be a relative"),
        ({"fpb": {"sources": [{"path": "a", "sha256": "0" * 64, "ulr": "x"}]}}, "unknown key 'ulr'"),
        ({"fpb": {"sources": [{"path": "a", "sha256": "0" * 64, "url": "http://x"}]}}, "https://"),
        ({"fpb": {"sources": [{"path": "a", "sha256": "0" * 64, "conversion": "c"}]}}, "needs 'inputs'"),
        ({"fpb": {"sources": [{"path": "a"}]}}, "needs a 'note' saying why"),
        ({"fpb": []}, "key 'fpb': needs a 'sources:' list"),
        ({"fpb": {"sources": "x"}}, "key 'fpb': needs a 'sources:' list"),
    ],
)
def test_bad_source_declarations_name_the_key(doc, message):
    with pytest.raises(SourceError, match=message):
        parse_sources(doc, "x.yaml")


def _git_mirror(url: str) -> tuple[Path, str, str]:
    owner, repo, commit, path = url[len(GITHUB_RAW) + 1 :].split("/", 3)
    return GIT_MIRRORS / f"{owner}+{repo}" / "repo", commit, path


def _upstream_urls() -> list[str]:
    sources = {s.path: s for ss in all_sources().values() for s in ss}.values()
    return sorted({u for s in sources for u in ([s.url] if s.url else [i.url for i in s.inputs])})


def _have_upstream() -> bool:
    return all(_git_mirror(u)[0].is_dir() for u in _upstream_urls())


@pytest.mark.skipif(not _have_upstream(), reason="upstream repositories not under /work/.mirror")
def test_upstream_bytes_give_the_data_folder_files(tmp_path, data_dir, monkeypatch):
    """Every fetchable file from the real upstream bytes (raw GitHub's layout served from the git
    repositories on this machine): byte copies and every conversion reproduce the data folder."""
    loopback_direct(monkeypatch)
    raw = tmp_path / "raw"
    for url in _upstream_urls():
        git_dir, commit, path = _git_mirror(url)
        target = raw / url[len(GITHUB_RAW) + 1 :]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(subprocess.run(["git", "-C", str(git_dir), "show", f"{commit}:{path}"],
                                          check=True, capture_output=True).stdout)  # fmt: skip
    served = Served(raw)
    try:
        fetchable = [s for s in select_sources([]) if s.fetchable]
        fetch(fetchable, tmp_path / "data", upstream=served.url, echo=lambda line: None)
    finally:
        served.close()
    for s in fetchable:
        assert sha(tmp_path / "data" / s.path) == sha(data_dir / s.path), s.path
