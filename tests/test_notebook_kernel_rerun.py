"""A notebook cell showing a ConfigPanel, run three times in a real IPython kernel: the comm traffic of a re-run.

A re-run closes the panel the cell showed and opens a new one.  In CI the kernel-to-browser pipe dropped
300 messages of such a re-run (~1,700 comm messages in half a second; issue 15), and the new panel named
models the browser never got.  Here every IOPub message of the kernel is read (a jupyter_client, as the
server reads them) and its sequence number checked: none is lost, every re-run closes exactly what the
previous run opened, and a re-run stays well under the ~1,000-message bursts that overflowed.
"""

from __future__ import annotations

import os
import queue
import re
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("ipywidgets")
jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

from jupyter_client.manager import start_new_kernel  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CELL = "from merlin_kit.notebook import ConfigPanel\npanel = ConfigPanel(live=False)\ndisplay(panel)"


class IOPubReader:
    """Reads the kernel's IOPub stream in a thread: (sequence number, msg_type, comm id, execute request id)."""

    def __init__(self, client) -> None:
        self.client = client
        self.messages: list[tuple[int, str, str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.client.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                continue
            seq = re.search(r"_(\d+)$", msg["header"]["msg_id"])
            self.messages.append((int(seq.group(1)) if seq else -1, msg["header"]["msg_type"],
                                  msg["content"].get("comm_id", ""), msg["parent_header"].get("msg_id", "")))

    def settle(self, quiet: float = 1.5, limit: float = 60) -> None:
        """Wait until the kernel has sent nothing for ``quiet`` seconds, then stop reading."""
        end, seen = time.monotonic() + limit, -1
        while seen != len(self.messages) and time.monotonic() < end:
            seen = len(self.messages)
            time.sleep(quiet)
        self._stop.set()
        self._thread.join(5)


@pytest.mark.timeout(180)
def test_rerunning_a_panel_cell_loses_no_kernel_message_and_sends_a_small_burst():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(ROOT))
    try:
        reader = IOPubReader(kc)
        cell_id = str(uuid.uuid4())
        runs = []
        for _ in range(3):
            msg = kc.session.msg("execute_request", {
                "code": CELL, "silent": False, "store_history": True, "user_expressions": {},
                "allow_stdin": False, "stop_on_error": True}, metadata={"cellId": cell_id})  # JupyterLab sends it
            kc.shell_channel.send(msg)
            reply = kc.get_shell_msg(timeout=120)
            assert reply["content"]["status"] == "ok", reply["content"]
            runs.append(msg["header"]["msg_id"])
        reader.settle()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)

    iopub = sorted(s for s, *_ in reader.messages if s >= 0)
    # the session numbers every message it sends; IOPub skips only the shell's replies (one per execute request)
    gaps = [(a, b) for a, b in zip(iopub, iopub[1:]) if b - a > 2]
    assert not gaps, f"IOPub messages lost between sequence numbers {gaps[:5]}"
    per_run = [Counter(t for _, t, _, parent in reader.messages if parent == run) for run in runs]
    opened = [{c for _, t, c, parent in reader.messages if parent == run and t == "comm_open"} for run in runs]
    closed = [{c for _, t, c, parent in reader.messages if parent == run and t == "comm_close"} for run in runs]
    assert closed[0] == set() and closed[1] == opened[0] and closed[2] == opened[1], "a re-run closes what ran before"
    for counts in per_run[1:]:
        burst = counts["comm_open"] + counts["comm_close"] + counts["comm_msg"]
        assert burst <= 1100, f"a re-run sent {burst} comm messages: {dict(counts)}"
