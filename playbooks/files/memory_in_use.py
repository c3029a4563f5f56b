#!/usr/bin/env python3
"""Print, as JSON, the memory this host's processes use: the sum of their proportional set sizes
(a page that several processes share counts once, split among them), from
/proc/<pid>/smaps_rollup. It reads the same on a machine and in a container (its own PID
namespace), and counts no page cache."""

import json
from pathlib import Path

total_bytes = processes = 0
for process in Path("/proc").iterdir():
    if not process.name.isdigit():
        continue
    try:
        with (process / "smaps_rollup").open(encoding="ascii") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    total_bytes += int(line.split()[1]) * 1024  # the kernel writes kB
                    processes += 1
                    break
    except OSError:  # the process has ended since the listing
        continue
print(json.dumps({"pss_bytes": total_bytes, "processes": processes}))
