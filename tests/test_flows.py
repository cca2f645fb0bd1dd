"""The Prefect flow's DVC task: output captured, failures raised with DVC's message."""

import pytest

from flows.pipeline import DvcFailed, run_dvc


def test_run_dvc_returns_output(tmp_path):
    assert "DVC version" in run_dvc.fn(["doctor"], str(tmp_path))


def test_run_dvc_raises_with_the_error(tmp_path):
    with pytest.raises(DvcFailed, match="not a DVC repository|you are not inside of a DVC repository"):
        run_dvc.fn(["status"], str(tmp_path))


def test_the_retraining_flow_reads_metrics_without_the_reports_plotting_stack():
    """flows/retrain.py compares metrics files: it imports neither matplotlib nor scikit-learn (the report's)."""
    import subprocess
    import sys

    code = "import sys, flows.retrain; print(sorted(m for m in ('matplotlib', 'sklearn') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


class FakeDvc:
    """subprocess.Popen for `python -m dvc ...`: records each command; `repro ... download` fails `failures` times."""

    def __init__(self, failures: int):
        import subprocess

        self.failures, self.calls, self.popen = failures, [], subprocess.Popen

    def __call__(self, *args, **kwargs):
        import sys

        command = args[0] if args else kwargs.get("args")
        if list(command[:3]) != [sys.executable, "-m", "dvc"]:  # Prefect's own processes
            return self.popen(*args, **kwargs)
        args = command[3:]
        self.calls.append(" ".join(args))
        failing = args[-1:] == ["download"] and self.failures > 0
        self.failures -= failing
        output = '{"reports/metrics.json": {"data": {}}}\n' if args[:2] == ["metrics", "show"] else "ok\n"
        return type("Process", (), {"stdout": iter([output]), "returncode": int(failing),
                                    "wait": lambda self: self.returncode})()


def test_the_download_step_alone_is_retried(monkeypatch, prefect_api):
    import flows.pipeline

    fake = FakeDvc(failures=2)
    monkeypatch.setattr(flows.pipeline.subprocess, "Popen", fake)
    monkeypatch.setattr(flows.pipeline, "DOWNLOAD_RETRY_DELAYS_S", (0, 0, 0))
    flows.pipeline.pipeline(".", force=True)
    assert fake.calls == ["repro --force download"] * 3 + ["repro --force --downstream prepare", "metrics show --json"]
    fake = FakeDvc(failures=4)  # more failures than retries: the flow fails, nothing after download runs
    monkeypatch.setattr(flows.pipeline.subprocess, "Popen", fake)
    with pytest.raises(DvcFailed, match="repro download exited with 1"):
        flows.pipeline.pipeline(".")
    assert fake.calls == ["repro download"] * 4
