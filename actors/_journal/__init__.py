"""The durable dirty journal: a segmented write-ahead log with group commit.

The codec (:mod:`._codec`) and scanner (:mod:`._scan`) are pure; :class:`Journal` is the
trio shell that does all of its I/O through a :class:`FileSystem`.
"""

from ._backend import JournalBackend, JournalStatistics, OpenJournal, Replay
from ._codec import JournalRecord, RecordKind, SegmentHeader
from ._fs import FileSystem, OsFileSystem, SimulatedCrash, SimulatedFileSystem
from ._journal import Journal, file_journals, run_io
from ._recovery import RecoveryReport, RepairReport
from ._scan import JournalScan, TornTail, scan_journal, scan_segment

__all__ = [
    "FileSystem",
    "Journal",
    "JournalBackend",
    "JournalRecord",
    "JournalScan",
    "JournalStatistics",
    "OpenJournal",
    "OsFileSystem",
    "RecordKind",
    "RecoveryReport",
    "RepairReport",
    "Replay",
    "SegmentHeader",
    "SimulatedCrash",
    "SimulatedFileSystem",
    "TornTail",
    "file_journals",
    "run_io",
    "scan_journal",
    "scan_segment",
]
