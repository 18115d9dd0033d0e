"""One BLAS thread per process in what ``marketplace up`` starts (shared/kernel/blas.py)."""

from __future__ import annotations

from pathlib import Path

from functions.serve import GatewayServer
from runtime.pool import BLAS_THREAD_VARIABLES as POOL_VARIABLES
from runtime.pool import WorkerPool
from shared.kernel.blas import BLAS_THREAD_VARIABLES, pin_blas_threads


def test_pinning_sets_one_thread_and_keeps_what_the_operator_chose() -> None:
    env = pin_blas_threads({"OMP_NUM_THREADS": "4", "PATH": "/bin"})
    assert env["OMP_NUM_THREADS"] == "4" and env["OPENBLAS_NUM_THREADS"] == "1" and env["PATH"] == "/bin"
    assert all(env[name] for name in BLAS_THREAD_VARIABLES)


def test_the_http_server_and_the_worker_pool_start_their_processes_with_one_blas_thread(tmp_path: Path) -> None:
    assert POOL_VARIABLES == BLAS_THREAD_VARIABLES  # the data plane keeps its own copy of the names
    server = GatewayServer("127.0.0.1", 1, workers=2, threads=4, env={"MARKETPLACE_DATA_DIR": str(tmp_path)})
    pool = WorkerPool(tmp_path, "http://127.0.0.1:1", processes=2, env={"PATH": "/bin", "MKL_NUM_THREADS": "2"})
    for env, mkl in ((server._env, "1"), (pool.environment(), "2")):
        assert env["OPENBLAS_NUM_THREADS"] == "1" and env["OMP_NUM_THREADS"] == "1"
        assert env["MKL_NUM_THREADS"] == mkl
