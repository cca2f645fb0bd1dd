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
