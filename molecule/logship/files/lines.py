#!/usr/bin/python3
"""The lines of the logship scenario, one home for writing them and for finding them.

On the shipper: ``lines.py write PHASE MARKER`` logs "PHASE MARKER" to the journal (tag
logship-verify) and appends PHASE's line to each JSON-lines stream's file, as the exports do
(one write, O_APPEND).
On the collector: ``lines.py check MARKER PHASE...`` exits 0 once each phase's journal line is
in messages.log and each stream's line is, byte for byte, in that stream's file and in no other
stream's; otherwise it says what is missing or misfiled.
"""

import json
import os
import re
import subprocess
import sys

# stream name: the file on the shipper (the role's default globs); the collector writes <name>.jsonl
STREAMS = {"txlog": "/var/log/sluis/txlog.jsonl", "audit": "/var/log/sluis-audit/audit.jsonl"}
COLLECTED = "/var/log/sluis-collector/shipper"
# The exports' longest line, without its newline: every line is padded to it.
LINE_BYTES = 64 * 1024


def line(stream: str, phase: str, marker: str) -> str:
    # JSON escapes (quote, backslash, \\u) must arrive as written, like any exported field.
    document = {"marker": f"{phase}-{marker}", "stream": stream, "grant_hash": '$1$3$x "\\ \u00e9'}
    short = json.dumps({**document, "pad": ""}, separators=(",", ":"))
    return json.dumps({**document, "pad": "x" * (LINE_BYTES - len(short))}, separators=(",", ":"))


def write(phase: str, marker: str) -> None:
    subprocess.run(["logger", "--tag", "logship-verify", f"{phase} {marker}"], check=True)
    for stream, path in STREAMS.items():
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, (line(stream, phase, marker) + "\n").encode("ascii"))
        finally:
            os.close(fd)


def read(name: str) -> list[str]:
    try:
        with open(f"{COLLECTED}/{name}", encoding="utf-8") as file:
            return file.read().splitlines()
    except FileNotFoundError:
        return []


def check(marker: str, phases: list[str]) -> str:
    journal = read("messages.log")
    collected = {stream: read(f"{stream}.jsonl") for stream in STREAMS}
    wrong = [
        f"journal line {phase}"
        for phase in phases
        if not any(
            re.search(rf" logship-verify\[\d+\] {phase} {marker}$", entry) for entry in journal
        )
    ]
    for phase in phases:
        for stream in STREAMS:
            expected = line(stream, phase, marker)
            if expected not in collected[stream]:
                near = [got for got in collected[stream] if f"{phase}-{marker}" in got]
                wrong.append(
                    f"{stream} line {phase}" + (f" (changed: {len(near[0])} bytes)" if near else "")
                )
            wrong += [
                f"{stream} line {phase} also in {other}.jsonl"
                for other in STREAMS
                if other != stream and expected in collected[other]
            ]
            if any(expected in entry for entry in journal):
                wrong.append(f"{stream} line {phase} also in messages.log")
    return f"not (yet) at the collector as sent: {', '.join(wrong)}" if wrong else ""


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3])
    else:
        sys.exit(check(sys.argv[2], sys.argv[3:]) or 0)
