"""Moving bytes between a tool's pipe and the repository, with the checks a safe result needs.

Backup: the dump tool's stdout goes into a ``StreamBackup``; success needs both the end of the stream
and a zero exit status, checked after the stream ends (a tool that dies half-way closes its stdout like
one that finished). Restore: verified chunks go into the tool's stdin; the repository's final
whole-stream check can only fail after the last byte was handed on, so the caller must treat the
target as unverified until this returns, and the tool is killed, not given EOF, when the stream fails.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from app.agent.apps.errors import DumpFailed, RestoreFailed
from app.agent.apps.proc import Tool
from app.chunkstore.cdc import iter_blocks
from app.chunkstore.streams import StreamBackup

#: Bytes of the start and end of a dump kept for format checks (magic numbers, completion markers).
EDGE_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Pumped:
    size: int
    head: bytes  # the first EDGE_BYTES of the output
    tail: bytes  # the last EDGE_BYTES
    stderr: str  # bounded; warnings a successful tool printed


def pump_dump(
    args: Sequence[str],
    backup: StreamBackup,
    *,
    env: Mapping[str, str] | None = None,
    cancel: threading.Event | None = None,
) -> Pumped:
    """Run the dump tool and write its stdout into ``backup`` (not finished here).

    Raises ``DumpFailed`` when the tool exits non-zero or is cancelled; chunkstore errors (and
    ``BackupCancelled`` from the stream) propagate after the tool was killed.
    """
    head = bytearray()
    tail = bytearray()
    size = 0
    with Tool(args, env=env, cancel=cancel) as tool:
        for block in iter_blocks(tool.stdout):
            backup.write(block)
            size += len(block)
            if len(head) < EDGE_BYTES:
                head += bytes(block[: EDGE_BYTES - len(head)])
            tail += block
            if len(tail) > 2 * EDGE_BYTES:
                del tail[: len(tail) - EDGE_BYTES]
        returncode = tool.wait()
        stderr = tool.stderr()
        if tool.cancelled:
            raise DumpFailed(f"{tool.name} was cancelled", stderr=stderr)
        if returncode != 0:
            raise DumpFailed(tool.failure(returncode), stderr=stderr)
    return Pumped(size=size, head=bytes(head), tail=bytes(tail[-EDGE_BYTES:]), stderr=stderr)


def feed_restore(
    args: Sequence[str],
    chunks: Iterable[bytes],
    *,
    env: Mapping[str, str] | None = None,
    cancel: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
) -> str:
    """Run the restore tool with ``chunks`` (a verified stream) on its stdin; return its stderr.

    Raises ``RestoreFailed`` when the tool fails or is cancelled. A chunkstore error from ``chunks``
    (a damaged chunk, or the whole-stream check at the end) propagates after the tool was killed: it
    never sees a clean end of input for a stream that did not verify.
    """
    done = 0
    with Tool(args, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, cancel=cancel) as tool:
        closed = False
        for chunk in chunks:  # keep reading after the tool stopped: the stream must verify to its end
            if not closed:
                try:
                    tool.stdin.write(chunk)
                except BrokenPipeError:
                    closed = True
                    returncode = tool.wait()
                    if returncode != 0 or tool.cancelled:
                        raise RestoreFailed(_why(tool, returncode), stderr=tool.stderr()) from None
            done += len(chunk)
            if progress is not None:
                progress(done)
            if cancel is not None and cancel.is_set():
                raise RestoreFailed("restore cancelled")
        if not closed:
            with contextlib.suppress(BrokenPipeError):
                tool.stdin.close()
        returncode = tool.wait()
        if returncode != 0 or tool.cancelled:
            raise RestoreFailed(_why(tool, returncode), stderr=tool.stderr())
        return tool.stderr()


def _why(tool: Tool, returncode: int) -> str:
    return f"{tool.name} was cancelled" if tool.cancelled else tool.failure(returncode)
