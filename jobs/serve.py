"""Serve a model behind an OpenAI-compatible API; the code interpreter runs on the server.

    python jobs/serve.py --config configs/demo.yaml model.path=runs/demo/final serve.port=8000
    ray job submit -- python jobs/serve.py --config configs/<recipe>.yaml model.path=... serve.host=0.0.0.0

Prints the URL and an `openai` client snippet, then serves until Ctrl-C (or `ray job stop`),
and removes the application (and Serve itself when this job started Ray).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time

from actors.runtime import init_ray
from r1ci.config import ConfigError, add_cli, from_cli
from r1ci.models import resolve_model

log = logging.getLogger("r1ci.serve")

SNIPPET = """\
from openai import OpenAI
client = OpenAI(base_url="{url}", api_key="unused")
reply = client.chat.completions.create(
    model="{model}", messages=[{{"role": "user", "content": "What is 12345 * 6789? Check it with Python."}}])
print(reply.choices[0].message.content)   # reasoning, code, Code Execution Results, <<<answer>>>"""


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM (`ray job stop`) leaves through the same clean path as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cli(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        cfg = from_cli(args)
        model_dir = resolve_model(cfg.model.path, cfg.model.data_dir)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    started = init_ray(cfg.run.ray_address, cfg.run.ray_num_cpus)

    from ray import serve

    from r1ci.serving import deploy

    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a shell starts background jobs with it ignored
        signal.signal(sig, _stop)
    try:
        try:
            url = deploy(cfg, model_dir)
        except RuntimeError as exc:  # a replica could not start (its traceback is in the Ray logs)
            print(f"error: the server did not start: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 1
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
