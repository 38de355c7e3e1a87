"""The shared job entry: exit codes, one-line user errors, tracebacks for bugs, logs in files."""

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from r1ci.cli import job_main
from r1ci.errors import MissingInput

ROOT = Path(__file__).resolve().parents[1]


def _run(work, tmp_path, *argv):
    return job_main("doc", "demo", work, lambda cfg: str(tmp_path), argv=["--config", str(ROOT / "configs/demo.yaml"), *argv])


def test_a_user_error_is_one_line_and_exit_code_2(tmp_path, capsys):
    def work(cfg, **_):
        raise MissingInput("no SFT data at 'x': run jobs/synthesize.py first")

    assert _run(work, tmp_path) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["demo: error: no SFT data at 'x': run jobs/synthesize.py first"]


def test_a_bad_override_is_a_user_error_before_any_work(tmp_path, capsys):
    called = []
    assert _run(lambda cfg, **_: called.append(1), tmp_path, "learner.zero_stage=7") == 2
    assert called == [] and "learner.zero_stage: 7 is not one of 1, 2, 3" in capsys.readouterr().err


def test_a_bug_is_not_turned_into_a_user_error(tmp_path):
    def work(cfg, **_):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        _run(work, tmp_path)


def test_own_flags_and_the_summary_reach_the_job(tmp_path, capsys):
    seen = {}

    def work(cfg, show_progress, verbose, resume):
        seen.update(resume=resume, verbose=verbose, steps=cfg.run.steps)
        return {"steps": cfg.run.steps}

    code = job_main("doc", "demo", work, lambda cfg: str(tmp_path),
                    add_args=lambda p: p.add_argument("--resume", action="store_true"),
                    argv=["--config", str(ROOT / "configs/demo.yaml"), "--resume", "run.steps=2"])
    assert code == 0 and seen == {"resume": True, "verbose": False, "steps": 2}
    assert capsys.readouterr().out.strip() == '{"steps": 2}'


def test_info_lines_go_to_the_log_file_and_only_warnings_to_the_console(tmp_path, capsys):
    def work(cfg, **_):
        logging.getLogger("r1ci.x").info("an info line")
        logging.getLogger("r1ci.x").warning("a warning line")

    assert _run(work, tmp_path) == 0
    err = capsys.readouterr().err
    assert "a warning line" in err and "an info line" not in err
    text = (tmp_path / "logs" / "demo.log").read_text()
    assert "an info line" in text and "a warning line" in text


@pytest.mark.slow
def test_ray_worker_output_goes_to_the_log_folder_not_the_console(tmp_path):
    script = textwrap.dedent(f"""
        import ray
        from actors.runtime import init_ray
        init_ray("local", 1, log_dir={str(tmp_path)!r})

        @ray.remote(num_cpus=0)
        def noisy():
            print("vllm-like line from a worker", flush=True)
            return 1

        assert ray.get(noisy.remote(), timeout=120) == 1
        ray.shutdown()
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "vllm-like line" not in proc.stdout + proc.stderr
    logged = "".join(p.read_text() for p in tmp_path.glob("worker-*.log"))
    assert "vllm-like line from a worker" in logged


def test_a_job_keeps_logging_handlers_it_did_not_add(tmp_path):
    # pytest's caplog, or an application embedding a job, must keep seeing its records.
    import logging

    from r1ci.cli import setup_logging

    theirs = logging.Handler()
    logging.getLogger().addHandler(theirs)
    try:
        setup_logging(tmp_path / "a.log", verbose=False)
        setup_logging(tmp_path / "b.log", verbose=False)
        root = logging.getLogger().handlers
        assert theirs in root
        assert sum(getattr(h, "r1ci_job", False) for h in root) == 2  # console + b.log, a.log closed
    finally:
        logging.getLogger().removeHandler(theirs)


def test_every_job_reads_bigbench_files_from_the_configs_data_dir(tmp_path, monkeypatch):
    # One config, one place: synthesis, profiling and RL used to look in different folders.
    from r1ci.tasks import bbh

    monkeypatch.setattr(bbh, "_DATA_DIR", None)
    seen = []
    assert _run(lambda cfg, **_: seen.append(bbh.bigbench_dir()), tmp_path, f"model.data_dir={tmp_path / 'd'}") == 0
    assert seen == [tmp_path / "d" / "bigbench"]
