from unfork.sdg.journal import Journal, RequestLog, read_lines


def test_journal_round_trip_and_unfinished_unit_is_dropped(tmp_path):
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    j.append_unit(0, [{"status": "accepted", "row": {"q": "a"}}, {"status": "rejected", "reason": "x"}])
    j.append_unit(2, [{"status": "accepted", "row": {"q": "b"}}])
    j.close()
    # a unit whose closing record never made it, then a torn line
    with open(path, "a") as fh:
        fh.write('{"unit": 1, "status": "accepted", "row": {"q": "lost"}}\n{"unit": 1, "do')
    j2 = Journal(path)
    assert sorted(j2.units) == [0, 2]
    assert [s["row"]["q"] for s in j2.samples("accepted")] == ["a", "b"]
    assert [s["reason"] for s in j2.samples("rejected")] == ["x"]
    j2.append_unit(1, [{"status": "accepted", "row": {"q": "again"}}])
    j2.close()
    records, _ = read_lines(path)
    assert [r["row"]["q"] for r in records if r.get("status") == "accepted"] == ["a", "b", "again"]
    assert path.read_bytes().endswith(b'"done":true}\n')


def test_request_log_keeps_replies_and_survives_a_torn_tail(tmp_path):
    path = tmp_path / "requests.jsonl"
    log = RequestLog(path)
    log.put("k1", {"text": "hello", "finish_reason": "stop"})
    log.close()
    with open(path, "a") as fh:
        fh.write('{"key": "k2", "text": "half')
    log2 = RequestLog(path)
    assert log2.get("k1")["text"] == "hello" and log2.get("k2") is None
    log2.put("k2", {"text": "whole"})
    log2.close()
    assert RequestLog(path).get("k2")["text"] == "whole"
