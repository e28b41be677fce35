from harness.results.records import FoldRecord, RecordStore, read_records


def _record(fold, trial=0, config="c1"):
    return FoldRecord(
        candidate="m", search_id="m-1", config_id=config, trial=trial, repeat=0, fold=fold,
        params={"lr": 0.1}, tuned={"lr": 0.1}, metrics={"accuracy": 0.5}, fit_seconds=1.0,
        epochs_run=1, train_size=10, val_size=5,
    )


def test_append_never_writes_a_key_twice(tmp_path):
    store = RecordStore(tmp_path)
    assert store.append(_record(0))
    assert not store.append(_record(0, trial=3))  # same configuration and fold from a retried trial
    assert not RecordStore(tmp_path).append(_record(0))  # and not after a restart either
    assert len(read_records(tmp_path / "records.jsonl")) == 1


def test_torn_last_line_is_ignored_and_not_glued_to_the_next(tmp_path):
    store = RecordStore(tmp_path)
    store.append(_record(0))
    with store.path.open("a") as fh:
        fh.write('{"candidate": "m", "search_')  # a crash in the middle of a write
    store = RecordStore(tmp_path)
    assert [r.fold for r in store.all()] == [0]
    store.append(_record(1))
    assert [r.fold for r in read_records(store.path)] == [0, 1]
