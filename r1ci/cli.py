"""The one entry every job shares: config and overrides, logging, and how a job ends.

A job's own lines and progress bars go to the console; everything logged (r1ci's INFO lines
and, through `actors.runtime.init_ray`, every Ray worker's output: vLLM, DeepSpeed, Ray)
goes to files under the job's `logs/` folder, and `--verbose` shows it all on the console too.
A `UserError` ends the job with one line and exit code 2, Ctrl-C with 130 (rerun to continue
where a job resumes), and anything else, being a bug, with its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from r1ci.config import Config, add_cli, from_cli
from r1ci.errors import UserError
from r1ci.tasks.bbh import set_data_dir

CONSOLE_FORMAT = "%(levelname)s %(name)s: %(message)s"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def setup_logging(log_file: Path | None, verbose: bool) -> None:
    """INFO and up into `log_file`; on the console warnings only, or everything with `verbose`.
    Replaces the handlers an earlier job in this process added and leaves any others (pytest's)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "r1ci_job", False)]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter(CONSOLE_FORMAT))
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file)
        to_file.setFormatter(logging.Formatter(FILE_FORMAT))
        handlers.append(to_file)
    for handler in handlers:
        handler.r1ci_job = True  # type: ignore[attr-defined]
        root.addHandler(handler)


def job_main(
    doc: str,
    name: str,
    work: Callable[..., Any],
    output_dir: Callable[[Config], str],
    add_args: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: list[str] | None = None,
) -> int:
    """Parse `--config FILE`, overrides, `--verbose` and the job's own flags (`add_args`), point
    the tasks at `model.data_dir`, then call `work(cfg, show_progress=..., verbose=..., <own flags>)`. Logs go to
    `output_dir(cfg)/logs/<name>.log`. A dict that `work` returns is printed as one JSON line.
    Returns the exit code (0 done, 2 user error, 130 interrupted)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cli(parser)
    if add_args is not None:
        add_args(parser)
    args = parser.parse_args(argv)
    own = {k: v for k, v in vars(args).items() if k not in ("config", "help_config", "overrides", "verbose")}
    try:
        cfg = from_cli(args)
        set_data_dir(cfg.model.data_dir)
        setup_logging(Path(output_dir(cfg)).expanduser() / "logs" / f"{name}.log", args.verbose)
        summary = work(cfg, show_progress=sys.stderr.isatty(), verbose=args.verbose, **own)
    except UserError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    if isinstance(summary, dict):
        print(json.dumps(summary))
    return 0
