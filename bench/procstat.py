"""Process CPU time from /proc/<pid>/stat (user + system, all threads)."""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def parse_stat(text: str) -> tuple[int, int]:
    """(utime, stime) in clock ticks from the text of /proc/<pid>/stat.

    The command name (field 2) is in parentheses and may hold spaces, so the
    fields are counted from the last ')'.
    """
    end = text.rfind(")")
    if end < 0:
        raise ValueError("/proc/<pid>/stat: no ')' after the command name")
    fields = text[end + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    if len(fields) < 13:
        raise ValueError(f"/proc/<pid>/stat: {len(fields) + 2} fields, expected at least 15")
    return int(fields[11]), int(fields[12])


def cpu_seconds(pid: int) -> float:
    utime, stime = parse_stat(Path(f"/proc/{pid}/stat").read_text())
    return (utime + stime) / TICKS
