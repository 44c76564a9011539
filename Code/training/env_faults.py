"""Faults of the machine, each one line naming the problem and its fix: a full disk (or a file-size limit),
a busy rendezvous port.

    python3 -m Code.training.env_faults port [PORT]   # the launcher: PORT free -> it; busy -> error line, exit 2;
                                                      # no PORT -> a free one is picked and printed

Standard library only: the launcher runs it before any rank starts.
"""

from __future__ import annotations

import errno
import signal
import socket
import sys
from pathlib import Path

from Code.processes import free_port

NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def keep_write_errors() -> None:
    """A file-size limit (`ulimit -f`) kills a writing process with SIGXFSZ and no word; ignored, the write fails
    with EFBIG instead, which `disk_message` turns into one line."""
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) if Path(folder).is_dir() else 0


def _write_failure(exc: BaseException | None) -> bool:
    """A failed write: ENOSPC/EFBIG/EDQUOT, or torch's serializer's RuntimeError, which hides the errno
    ("file write failed", "iostream error", then "unexpected pos" when it closes the cut file), here or in the
    exception it was raised while handling."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            return True
        text = str(exc).lower()
        if isinstance(exc, RuntimeError) and (("write" in text and "failed" in text) or "iostream error" in text
                                              or "unexpected pos" in text):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def disk_message(exc: BaseException, out_dir: str | Path, need_bytes: int | None = None) -> str | None:
    """One line for a write that failed for lack of space or a file-size limit (None: another error).
    `need_bytes`: what the failed write needed, e.g. the size of the last whole checkpoint."""
    if not _write_failure(exc):
        return None
    import resource
    import shutil

    where = getattr(exc, "filename", None) or out_dir
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    free = shutil.disk_usage(Path(out_dir) if Path(out_dir).exists() else ".").free
    if getattr(exc, "errno", None) == errno.EFBIG or (limit != resource.RLIM_INFINITY and not
                                                       (getattr(exc, "errno", None) == errno.ENOSPC)):
        why = f"the file-size limit (ulimit -f: {limit} bytes) was reached"
    else:
        why = f"no space left on the device ({free / 2**20:.1f} MiB free)"
    need = f", about {need_bytes / 2**20:.1f} MiB needed" if need_bytes else ""
    return (f"{why} writing {where}{need}; nothing half-written was kept (older checkpoints are intact): "
            "free space or raise the limit, then resume with --resume (RESUME=1), or pass another --out-dir")


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "port":
        print("usage: python3 -m Code.training.env_faults port [PORT]", file=sys.stderr)
        return 2
    if len(argv) < 2 or not argv[1]:
        print(free_port())
        return 0
    try:
        port = int(argv[1])
    except ValueError:
        print(f"error: MASTER_PORT={argv[1]!r} is not a port number: set MASTER_PORT to a free port "
              f"(e.g. {free_port()}) or unset it to have one picked", file=sys.stderr)
        return 2
    if not port_free(port):
        print(f"error: MASTER_PORT {port} is in use (another run, or a process left behind): set MASTER_PORT to a "
              f"free port (e.g. MASTER_PORT={free_port()}) or unset it to have one picked", file=sys.stderr)
        return 2
    print(port)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
