"""Native runtimes' log lines go to /dev/null only in a process deploycomp owns, and
overlapping silences give fd 2 back as it was."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_a_library_process_keeps_its_stderr():
    """A service importing deploycomp: its stderr is its own (every other thread's lines
    went to /dev/null while a TFLite bundle loaded, and overlapping loads left it there)."""
    proc = _run("""
        import os
        from deploycomp.quiet import native_stderr_quiet
        before = os.readlink("/proc/self/fd/2")
        with native_stderr_quiet():
            os.write(2, b"seen\\n")
            assert os.readlink("/proc/self/fd/2") == before
    """)
    assert proc.returncode == 0, proc.stderr
    assert "seen" in proc.stderr


def test_overlapping_silences_in_an_owned_process_restore_stderr():
    """The command line's process: silences from several threads share one redirection,
    and the last one out restores the original fd 2 (one had saved another's /dev/null
    and restored that, for good)."""
    proc = _run("""
        import os, threading, time
        from deploycomp.quiet import native_stderr_quiet, own_process
        own_process()
        before = os.readlink("/proc/self/fd/2")
        def quiet():
            for _ in range(200):
                with native_stderr_quiet():
                    with native_stderr_quiet():
                        os.write(2, b"hidden\\n")
                        time.sleep(0.0005)
        threads = [threading.Thread(target=quiet) for _ in range(6)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert os.readlink("/proc/self/fd/2") == before, os.readlink("/proc/self/fd/2")
        os.write(2, b"back\\n")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "back"
    assert os.path.exists("/proc/self/fd/2")
