"""How long Airflow takes to parse the DAG file, in fresh processes without a .pyc cache.

Airflow's scheduler re-parses DAG files all the time and fails a file that takes longer than
``[core] dagbag_import_timeout`` (30 s by default). Each run starts a fresh interpreter of the
Airflow extra's venv (``make airflow-venv``) with ``PYTHONDONTWRITEBYTECODE=1`` and loads a DAG
folder holding ``pipeline/airflow_dag.py``; it prints the DagBag's own parse time of the file and
the whole process' time (Airflow's import included), per run and the median.

    python benchmarks/dag_parse_bench.py --runs 5
    lcron bench dag_parse -- --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_PYTHON = ROOT / ".venv-airflow" / "bin" / "python"
TIMEOUT_S = 30.0  # Airflow's default dagbag_import_timeout

LOAD = """
import json, sys
from airflow.models import DagBag
bag = DagBag(dag_folder=sys.argv[1], include_examples=False)
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "parse_s": sum(s.duration.total_seconds() for s in bag.dagbag_stats),
}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    if not AIRFLOW_PYTHON.exists():  # an optional extra: `make bench` goes on without it
        print("skipped: needs the Airflow extra (make airflow-venv)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dags = tmp / "dags"
        (dags / "configs").mkdir(parents=True)
        shutil.copy(ROOT / "pipeline" / "airflow_dag.py", dags)
        config = json.loads((ROOT / "pipeline" / "configs" / "airflow.json").read_text())
        config["output_dir"] = str(tmp / "out")
        config["data"]["input_base"] = str(tmp / "logs")
        (dags / "configs" / "airflow.json").write_text(json.dumps(config))
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(tmp / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp / 'airflow.db'}",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        parse, process = [], []
        for run in range(1, args.runs + 1):
            started = time.monotonic()
            proc = subprocess.run(
                [str(AIRFLOW_PYTHON), "-c", LOAD, str(dags)],
                capture_output=True,
                text=True,
                env=env,
                timeout=600,
            )
            process.append(time.monotonic() - started)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            loaded = json.loads(proc.stdout.strip().splitlines()[-1])
            if loaded["errors"]:
                print(loaded["errors"], file=sys.stderr)
                return 1
            parse.append(loaded["parse_s"])
            print(f"run {run}: DAG file {parse[-1]:.2f} s, process {process[-1]:.1f} s")
    median = statistics.median(parse)
    print(
        f"median over {args.runs} runs: DAG file {median:.2f} s"
        f" ({median / TIMEOUT_S:.1%} of the {TIMEOUT_S:.0f} s timeout),"
        f" process {statistics.median(process):.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
