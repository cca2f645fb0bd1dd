"""The Prefect flows: the DVC task (output captured, failures raised with DVC's message), the pipeline's
retried download, the folds of leave-one-session-out."""

import json
import sys

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


FOLD_STAGE = """import json, pathlib, yaml
session = yaml.safe_load(open("params.yaml"))["data"]["test_session"]
pathlib.Path("reports").mkdir(exist_ok=True)
json.dump({"iemocap": {"mer": {"acc": 10.0 * session, "ua": 50.0 + session}}}, open("reports/metrics.json", "w"))
"""


def test_the_folds_flow_runs_each_session_once_and_writes_their_mean(tmp_path, prefect_api, monkeypatch):
    """Two folds of a one-stage DVC project (what is under test is the machinery around `dvc exp run`): each
    fold an experiment, their metrics and mean in reports/folds.json, the workspace untouched, a second call
    runs nothing."""
    from conftest import sh

    from flows.folds import folds

    (tmp_path / "train.py").write_text(FOLD_STAGE)
    (tmp_path / "params.yaml").write_text("data:\n  test_session: 1\n")
    (tmp_path / "dvc.yaml").write_text("stages:\n  train:\n    cmd: python train.py\n    deps: [train.py]\n"
                                       "    params: [data.test_session]\n    metrics:\n"
                                       "      - reports/metrics.json:\n          cache: false\n")
    sh(tmp_path, "git", "init", "-q")
    sh(tmp_path, sys.executable, "-m", "dvc", "init", "-q")
    sh(tmp_path, sys.executable, "-m", "dvc", "repro", "-q")
    sh(tmp_path, "git", "add", "-A")
    sh(tmp_path, "git", "commit", "-qm", "baseline")
    result = folds(str(tmp_path), sessions=(2, 4))
    assert result["folds"] == {"2": {"iemocap": {"mer": {"acc": 20.0, "ua": 52.0}}},
                               "4": {"iemocap": {"mer": {"acc": 40.0, "ua": 54.0}}}}
    # two folds: t(0.975, df=1) = 12.706 (a t table), so the 95 % interval's half-width is 12.706 x std / sqrt(2)
    assert result["mean"]["iemocap"]["mer"] == {"acc": 30.0, "acc_std": pytest.approx(14.1421356), "ua": 53.0,
                                                "ua_std": pytest.approx(1.4142136),
                                                "acc_ci95": pytest.approx(12.706 * 14.1421356 / 2 ** 0.5, rel=1e-4),
                                                "ua_ci95": pytest.approx(12.706 * 1.4142136 / 2 ** 0.5, rel=1e-4)}
    assert json.loads((tmp_path / "reports" / "folds.json").read_text()) == json.loads(json.dumps(result))
    assert "test_session: 1" in (tmp_path / "params.yaml").read_text()  # the workspace is as it was
    names = sh(tmp_path, sys.executable, "-m", "dvc", "exp", "ls", "--name-only")
    assert sorted(names.split()) == ["fold-s2", "fold-s4"]
    import flows.pipeline

    calls, real = [], flows.pipeline.subprocess.Popen
    monkeypatch.setattr(flows.pipeline.subprocess, "Popen", lambda args, **kw: calls.append(args[3:]) or real(args, **kw))
    assert folds(str(tmp_path), sessions=(2, 4))["folds"] == result["folds"]
    assert calls == [["exp", "show", "--json"], ["exp", "show", "--json"]]  # no fold ran again
