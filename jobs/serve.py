"""Serve a model behind an OpenAI-compatible API; the code interpreter runs on the server.

    python jobs/serve.py --config configs/demo.yaml model.path=runs/demo/final serve.port=8000
    ray job submit -- python jobs/serve.py --config configs/<recipe>.yaml model.path=... serve.host=0.0.0.0

Prints the URL and an `openai` client snippet, then serves until Ctrl-C (or `ray job stop`),
and removes the application (and Serve itself when this job started Ray). The engine runs in
the ingress replica, or with `serve.engine=llm_server` in ray.serve.llm's LLMServer deployment.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from actors.runtime import init_ray
from r1ci.cli import job_main
from r1ci.config import Config
from r1ci.errors import UserError
from r1ci.models import resolve_model

SNIPPET = """\
from openai import OpenAI
client = OpenAI(base_url="{url}", api_key="unused")
reply = client.chat.completions.create(
    model="{model}", messages=[{{"role": "user", "content": "What is 12345 * 6789? Check it with Python."}}])
print(reply.choices[0].message.content)   # reasoning, code, Code Execution Results, <<<answer>>>"""


class ServerDidNotStart(UserError):
    """A replica could not start (a model that does not load, too little memory, a port in use)."""


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM (`ray job stop`) leaves through the same clean path as Ctrl-C


def run_server(cfg: Config, show_progress: bool = True, verbose: bool = False) -> None:
    """Deploy the application on a local or joined Ray and serve until interrupted."""
    model_dir = resolve_model(cfg.model.path, cfg.model.data_dir)
    logs = Path(cfg.run.output_dir) / "logs"
    started = init_ray(cfg.run.ray_address, cfg.run.ray_num_cpus, log_dir=logs, verbose=verbose)

    from ray import serve

    from actors.serve import deploy

    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a shell starts background jobs with it ignored
        signal.signal(sig, _stop)
    try:
        try:
            url = deploy(cfg, model_dir)
        except RuntimeError as exc:
            raise ServerDidNotStart(f"the server did not start: {str(exc).splitlines()[0]} "
                                    f"(the replica's traceback is in the Ray logs, {logs})") from None
        print(f"serving {cfg.model.path} as '{cfg.serve.model_name}' at {url}  (Ctrl-C stops)\n")
        print(SNIPPET.format(url=url, model=cfg.serve.model_name), flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping the server", flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second signal during cleanup ends the job at once
            signal.signal(sig, signal.SIG_DFL)
        if started == "local":
            serve.shutdown()  # this job owns Serve and the Ray it runs on
        else:
            serve.delete(cfg.serve.app_name)  # other applications on a shared cluster keep running


def main(argv: list[str] | None = None) -> int:
    return job_main(__doc__, "serve", run_server, lambda cfg: cfg.run.output_dir, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
