"""Starting or joining Ray, with every socket on 127.0.0.1 when r1ci starts Ray itself."""

from __future__ import annotations

import logging
import os

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


def init_ray(address: str = "auto", num_cpus: int = 0) -> str:
    """Join a running cluster (`address="auto"` or an address) or start a local one on 127.0.0.1.

    Returns "joined" or "local". A job launched by `ray job submit` always joins.
    """
    if ray.is_initialized():
        return "joined"
    if address != "local":
        try:
            ray.init(address=address, log_to_driver=True)
            log.info("joined Ray cluster at %s", address)
            return "joined"
        except ConnectionError:
            if address != "auto":
                raise SystemExit(f"could not reach the Ray cluster at '{address}': is `ray start --head` running there?")
    set_local_env()
    # Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, at import: the processes it starts
    # now see the variable, this one needs the constant itself, or the node registers (and
    # its servers bind) the public interface.
    ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(
        num_cpus=num_cpus or None,
        include_dashboard=False,
        runtime_env={"env_vars": dict(LOCAL_ENV)},
    )
    log.info("started a local Ray on 127.0.0.1")
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
