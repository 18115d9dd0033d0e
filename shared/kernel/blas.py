"""One BLAS thread per process: the platform's processes share the machine's cores.

``marketplace up`` runs several processes that may multiply matrices (the HTTP server's workers
and the local worker pool embed memory queries with numpy; the supervisor runs the scheduler's
jobs). A multi-threaded BLAS in each would start one thread per core in every process: N
processes x N cores threads fighting for N cores, and for the embedder's small products waking
the threads costs more than the arithmetic (one short query: ~18 ms on one thread, 100-200 ms
multi-threaded on a loaded 2-core machine; docs/MEMORY.md). One thread per process is what a
server under load wants: the processes are the parallelism.

The BLAS libraries read these variables once, when numpy is first imported, so they are set in
the environment of each process before it starts (``pin_blas_threads`` on the child's env), or
at the top of the parent before anything imports numpy. A value the operator set is kept.
"""

from __future__ import annotations

from collections.abc import MutableMapping

#: OpenBLAS (numpy's wheels), OpenMP (libgomp builds), MKL, Accelerate (macOS).
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def pin_blas_threads(env: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Set every BLAS thread-count variable to 1 in ``env`` unless already set; returns ``env``."""
    for name in BLAS_THREAD_VARIABLES:
        env.setdefault(name, "1")
    return env
