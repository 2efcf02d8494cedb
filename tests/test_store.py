import json
import multiprocessing

from bench.core.records import RunRecord, Status
from bench.core.store import Store


def make(i: int, status=Status.OK) -> RunRecord:
    return RunRecord(
        f"k{i}", f"cell{i}", {"i": i}, "train", status, "t0", "t1", 0.5, metrics={"x": "y" * 2000}
    )


def test_append_and_read_back(tmp_path):
    store = Store(tmp_path)
    store.append(make(1))
    store.append(make(2, Status.OOM))
    assert [(r.cell_key, r.status) for r in store.records()] == [("k1", Status.OK), ("k2", Status.OOM)]
    assert all(json.loads(line) for line in store.path.read_text().splitlines())


def test_torn_last_line_is_skipped_with_a_warning_and_the_next_append_starts_clean(tmp_path, capsys):
    store = Store(tmp_path)
    store.append(make(1))
    with open(store.path, "a") as fh:
        fh.write('{"cell_key": "half')  # a writer killed mid-line
    assert [r.cell_key for r in store.records()] == ["k1"]
    assert f"{store.path}:2: skipped unreadable record" in capsys.readouterr().err
    store.append(make(3))
    assert [r.cell_key for r in store.records()] == ["k1", "k3"]


def _writer(root, start):
    store = Store(root)
    for i in range(start, start + 40):
        store.append(make(i))


def test_concurrent_writers_never_interleave_lines(tmp_path):
    procs = [multiprocessing.Process(target=_writer, args=(tmp_path, n * 100)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    records = Store(tmp_path).records()
    assert len(records) == 120 and len({r.cell_key for r in records}) == 120


def test_unwritable_results_dir_is_a_clear_error(tmp_path):
    import pytest

    from bench.core.store import StoreError

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="not writable"):
        Store(blocker / "results").check_writable()
