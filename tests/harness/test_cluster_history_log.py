"""The cluster suite's instance logs, read back as a history (``read_history``)."""

from __future__ import annotations

import json
from pathlib import Path

from writebehind.harness._cluster_run import read_history


def test_each_invocation_meets_its_answer_and_an_unanswered_write_is_unknown(
    tmp_path: Path,
) -> None:
    lines = [
        {"e": "i", "t": 1.0, "id": 0, "k": "k1", "op": "w", "v": b"A:1".hex()},
        {"e": "i", "t": 1.1, "id": 1, "k": "k1", "op": "r", "v": None},
        {"e": "c", "t": 1.2, "id": 0, "o": "ok", "ver": 7, "p": 2},
        {"e": "c", "t": 1.3, "id": 1, "o": "ok", "v": b"A:1".hex(), "ep": 4},
        {"e": "i", "t": 1.4, "id": 2, "k": "k2", "op": "r", "v": None},
        {"e": "c", "t": 1.5, "id": 2, "o": "ok", "v": None},
        {"e": "i", "t": 1.6, "id": 3, "k": "k2", "op": "w", "v": b"A:2".hex()},
    ]
    log = tmp_path / "A0.log"
    # The last line was cut by a kill: it never happened.
    log.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"e": "i", "t"')
    write, read, absent, cut = read_history([log])
    assert (write.kind, write.value, write.version, write.partition) == ("write", b"A:1", 7, 2)
    assert (read.kind, read.value, read.served) == ("read", b"A:1", 4)
    assert (absent.value, absent.served) == (None, None)  # another member may have answered
    assert (cut.outcome, cut.complete, cut.process) == ("unknown", None, "A0")
