"""Executing a run's notebooks: papermill, in one Python kernel that the run's notebooks share.

Starting a kernel and importing what a chapter imports (torch, pandas, seaborn, punl) takes about
3.5 s on the 2-core reference machine, more than the cells of a small chapter. A run's notebooks
therefore execute one after another in one kernel (:class:`SharedKernel`). Before each notebook
the kernel is reset (:data:`RESET`): its open figures closed, its namespace emptied and its cell
count back at one (IPython's ``reset`` with a new session). A notebook thus sees no name another
one defined, and a notebook that forgot an import fails here as it would alone. What stays is
what an import leaves (loaded modules and their settings), which is the time saved;
``tests/test_book.py`` checks that every chapter's outputs are the same as when its notebook runs
alone in a fresh kernel.

Kernels talk to papermill over IPC sockets (files in Jupyter's runtime folder) rather than TCP, so
the terminal shows progress and results, not a warning per kernel.
"""
from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

#: What runs in the kernel before each notebook: every figure closed, then IPython's reset with a
#: new session (the namespace emptied, the cell count back at one, a fresh history), then the
#: garbage the emptied namespace left collected and what survives (modules and their caches)
#: frozen out of the collector's reach (``gc.freeze``). Without the freeze every collection
#: walks everything torch and pandas loaded, about 0.2 s a notebook; with it only what the
#: notebooks made since. The calls are spelt as expressions so that they leave no name behind.
RESET = """import matplotlib.pyplot
matplotlib.pyplot.close("all")
get_ipython().reset(new_session=True)
__import__("gc").collect()
__import__("gc").freeze()
"""


def ipc_kernel_manager():
    """A kernel manager class whose kernels use IPC transport, and which keeps the clients it
    hands out (:meth:`client`) so that their channels can be closed (:meth:`close_clients`)."""
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            # each kernel its own socket prefix: the default ("kernel-ipc" in the working
            # directory) is shared by kernels started side by side, whose messages then cross;
            # short, in the temporary folder, to stay within the 107 bytes of a socket path
            ip = str(Path(tempfile.gettempdir()) / f"punl-{uuid.uuid4().hex[:12]}-ipc")
            super().__init__(**{"transport": "ipc", "ip": ip, **kwargs})
            self.handed_out = []

        def client(self, **kwargs):
            kc = super().client(**kwargs)
            self.handed_out.append(kc)
            return kc

        def close_clients(self) -> None:
            while self.handed_out:
                self.handed_out.pop().stop_channels()

    return IPCKernelManager


class KernelResetError(RuntimeError):
    """The shared kernel did not reset between two notebooks."""


class SharedKernel:
    """One ``python3`` kernel, started in ``cwd``, that executes notebooks one after another.

    Use as a context manager; :attr:`manager` goes to papermill as ``km``, and :meth:`reset`
    runs before each notebook. The kernel is shut down on leaving, also on an error."""

    def __init__(self, cwd: Path):
        self.cwd = Path(cwd)
        self.manager = None

    def __enter__(self) -> SharedKernel:
        from jupyter_core.utils import run_sync
        self.manager = ipc_kernel_manager()(kernel_name="python3")
        run_sync(self.manager.start_kernel)(cwd=str(self.cwd))
        return self

    def reset(self, timeout: float = 120) -> None:
        """Run :data:`RESET` in the kernel; :class:`KernelResetError` when it fails."""
        from jupyter_core.utils import run_sync
        kc = self.manager.client()
        kc.start_channels()
        try:
            run_sync(kc.wait_for_ready)(timeout=timeout)
            reply = run_sync(kc.execute_interactive)(RESET, store_history=False, timeout=timeout,
                                                     output_hook=lambda msg: None)
        finally:
            self.manager.close_clients()
        if reply["content"]["status"] != "ok":
            content = reply["content"]
            raise KernelResetError(f"the notebooks' kernel did not reset: "
                                   f"{content.get('ename')}: {content.get('evalue')}")

    def after_notebook(self) -> None:
        """Close the channels papermill's client opened (the kernel stays)."""
        self.manager.close_clients()

    def __exit__(self, error_type, *exc) -> None:
        from jupyter_core.utils import run_sync
        self.manager.close_clients()
        try:
            run_sync(self.manager.shutdown_kernel)(now=False)   # as papermill's kernels end
        except Exception:
            if error_type is None:        # a kernel that died with the error is not a second one
                raise
