"""Starting or joining Ray, with every socket on 127.0.0.1 when r1ci starts Ray itself, and
every Ray worker's own output (vLLM, DeepSpeed, Ray) in the job's log folder instead of the console."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import ray

log = logging.getLogger(__name__)

# Environment every r1ci process gets when Ray is started locally: loopback only, no
# token auth prompt, vLLM's engine queue on loopback too.
LOCAL_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "VLLM_HOST_IP": "127.0.0.1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TOKENIZERS_PARALLELISM": "false",
}


def set_local_env() -> None:
    for key, value in LOCAL_ENV.items():
        os.environ.setdefault(key, value)


WORKER_LOG_DIR = "R1CI_WORKER_LOG_DIR"


def worker_output_to_file() -> None:
    """Ray's `worker_process_setup_hook`: this worker's stdout and stderr (and those of the
    processes it starts, such as vLLM's engine core) go to `<log dir>/worker-<pid>.log`."""
    log_dir = os.environ.get(WORKER_LOG_DIR)
    if not log_dir:
        return
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(log_dir) / f"worker-{os.getpid()}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for stream in (1, 2):
        os.dup2(fd, stream)
    os.close(fd)


def _auto_cluster_reachable(timeout_s: float = 2.0) -> bool:
    """Whether `address="auto"` names a cluster whose GCS answers, at the address `ray.init`
    would use. Ray finds it in RAY_ADDRESS or in the address file a `ray start` leaves in its
    temp folder; a stale one (that cluster is gone) made `ray.init` retry for minutes instead
    of starting a local Ray."""
    import socket

    from ray._private.services import canonicalize_bootstrap_address

    try:
        found = canonicalize_bootstrap_address("auto")
    except ConnectionError:
        return False
    if not found:
        return False
    host, _, port = found.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
        return True
    except (OSError, ValueError):
        log.info("the Ray cluster at %s (from RAY_ADDRESS or Ray's address file) does not answer; starting a local one", found)
        return False


def init_ray(address: str = "auto", num_cpus: int = 0, log_dir: str | Path | None = None, verbose: bool = False) -> str:
    """Join a running cluster (`address="auto"` or an address) or start a local one on 127.0.0.1.

    A local Ray started with `log_dir` writes every worker's output there and keeps the
    console for the job's own lines (`verbose` shows the workers' output as well). A joined
    cluster keeps Ray's own log handling (`ray job logs`). Returns "joined" or "local"; a job
    launched by `ray job submit` always joins.
    """
    if ray.is_initialized():
        return "joined"
    if address == "auto" and not _auto_cluster_reachable():
        address = "local"  # no cluster, or a dead one's address left in Ray's temp folder
    if address != "local":
        try:
            ray.init(address=address, log_to_driver=True)
            print(f"joined Ray cluster at {address}", file=sys.stderr)
            return "joined"
        except ConnectionError:
            if address != "auto":
                raise SystemExit(f"could not reach the Ray cluster at '{address}': is `ray start --head` running there?")
    set_local_env()
    # Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, at import: the processes it starts
    # now see the variable, this one needs the constant itself, or the node registers (and
    # its servers bind) the public interface.
    ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
    env_vars = dict(LOCAL_ENV)
    runtime_env: dict = {"env_vars": env_vars}
    if log_dir is not None and not verbose:
        env_vars[WORKER_LOG_DIR] = str(Path(log_dir).expanduser().resolve())
        runtime_env["worker_process_setup_hook"] = "actors.runtime.worker_output_to_file"
    ray.init(
        num_cpus=num_cpus or None,
        include_dashboard=False,
        runtime_env=runtime_env,
        log_to_driver=verbose or log_dir is None,
        logging_level=logging.INFO if verbose or log_dir is None else logging.WARNING,
    )
    log.info("started a local Ray on 127.0.0.1%s", f"; worker output in {log_dir}" if log_dir and not verbose else "")
    return "local"


def node_ip() -> str:
    """The address Ray registered for this worker's node (127.0.0.1 for a local r1ci Ray).

    `ray.util.get_node_ip_address()` guesses from the routing table and would bind the
    public interface even when the node itself was started on loopback.
    """
    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node["NodeID"] == node_id:
            return node["NodeManagerAddress"]
    return ray.util.get_node_ip_address()
