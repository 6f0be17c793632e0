"""Physical integrity of a restored instance: pg_amcheck and a full pg_dump read.

pg_amcheck --heapallindexed checks every heap and B-tree index against each
other; pg_dump to /dev/null reads every row of every table.  Any line either
reports becomes a finding, and any finding fails the drill.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pitrflow import procs
from pitrflow.engines.postgres.binaries import PgBinaries
from pitrflow.engines.postgres.drill.access import ScratchAccess, databases


@dataclass
class IntegrityReport:
    findings: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    amcheck_seconds: float = 0.0
    dump_seconds: float = 0.0

    @property
    def success(self) -> bool:
        return not self.findings


def _conn_args(access: ScratchAccess) -> list[str]:
    return ["-h", str(access.socket_dir), "-p", str(access.port), "-U", access.superuser]


def check_integrity(access: ScratchAccess, bins: PgBinaries, run_as: str | None,
                    timeout: float) -> IntegrityReport:
    report = IntegrityReport(databases=databases(access))
    started = time.monotonic()
    lines: list[str] = []
    result = procs.run(
        [bins.tool("pg_amcheck"), *_conn_args(access), "--all", "--heapallindexed",
         "--install-missing", "--no-strict-names"],
        user=run_as, timeout=timeout, check=False, what="pg_amcheck", line_sink=lines.append)
    findings = [line for line in (result.stdout_text.splitlines() + lines) if line.strip()]
    if result.returncode != 0 and not findings:
        findings.append(f"pg_amcheck exited with status {result.returncode}")
    report.findings.extend(f"pg_amcheck: {line}" for line in findings)
    report.amcheck_seconds = time.monotonic() - started
    started = time.monotonic()
    for db in report.databases:
        dump_lines: list[str] = []
        dumped = procs.run([bins.tool("pg_dump"), *_conn_args(access), "-d", db, "-f",
                            "/dev/null"], user=run_as, timeout=timeout, check=False,
                           what="pg_dump", line_sink=dump_lines.append)
        if dumped.returncode != 0:
            why = procs.most_telling_line(dump_lines) or f"status {dumped.returncode}"
            report.findings.append(f"pg_dump {db}: {why}")
    report.dump_seconds = time.monotonic() - started
    return report
