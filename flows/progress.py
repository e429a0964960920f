"""Training progress in the Prefect UI while a run trains (``flows.pretrain.run_training``).

Two artifacts of the flow run, keyed by the run directory's name:

- ``pretrain-progress-<name>``: a progress artifact, percent of the planned steps done,
  updated in place (``update_progress_artifact``) at every new ``metrics.jsonl`` row;
- ``pretrain-metrics-<name>``: a table (step, tokens, train loss, val loss, predicted val loss
  at those tokens, tokens/s, MFU, lr) of the last ``TABLE_ROWS`` rows, one new version at most
  every ``table_every_s`` seconds while rows arrive (each version is stored: a long run must not
  write thousands), and a last one when training ends.

Outside a Prefect run (``sluice demo --local``) nothing is published.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from flows.artifacts import artifact_key

TABLE_COLUMNS = ("step", "tokens", "train_loss", "val_loss", "predicted_val_loss",
                 "tokens_per_s", "mfu", "lr")  # fmt: skip
TABLE_ROWS = 500


def _in_prefect_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def predicted_curve(out_dir: Path) -> tuple[list[float], list[float]] | None:
    """(tokens, predicted loss) of ``prediction.json`` in ``out_dir``; None without one or
    when the law is not identified (no number to compare with)."""
    if not (out_dir / "prediction.json").exists():
        return None
    from train.report import read_prediction

    prediction = read_prediction(out_dir)
    if not prediction.identified or prediction.loss is None:
        return None
    points = sorted((p.tokens, p.loss) for p in prediction.curve) or [
        (prediction.tokens, prediction.loss)
    ]
    return [float(t) for t, _ in points], [float(v) for _, v in points]


def _number(value: Any, digits: int = 4) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        return value
    return round(value, digits) if math.isfinite(value) else None


class TrainingProgress:
    """Publishes a training run's ``metrics.jsonl`` rows as it grows (see module doc)."""

    def __init__(self, out_dir: str | Path, total_steps: int, table_every_s: float = 30.0):
        self.out = Path(out_dir)
        self.total_steps = max(int(total_steps), 1)
        self.table_every_s = table_every_s
        self.rows: list[dict[str, Any]] = []
        self.enabled = _in_prefect_run()
        self.progress_id = None
        self.last_table = -math.inf
        self.table_versions = 0
        self.curve = predicted_curve(self.out)
        name = self.out.name
        self.progress_key = artifact_key("pretrain-progress", name)
        self.table_key = artifact_key("pretrain-metrics", name)
        if self.enabled:
            from prefect.artifacts import create_progress_artifact

            self.progress_id = create_progress_artifact(
                progress=0.0,
                key=self.progress_key,
                description=f"training {self.out}: percent of {self.total_steps} steps",
            )

    def predicted(self, tokens: Any) -> float | None:
        """The predicted val loss at ``tokens`` (interpolated on the law's curve)."""
        if self.curve is None or not isinstance(tokens, int | float):
            return None
        import numpy as np

        return float(np.interp(tokens, *self.curve))

    def table_rows(self) -> list[dict[str, Any]]:
        out = []
        for row in self.rows[-TABLE_ROWS:]:
            values = {**row, "predicted_val_loss": self.predicted(row.get("tokens"))}
            out.append({k: _number(values.get(k), 6 if k == "lr" else 4) for k in TABLE_COLUMNS})
        return out

    def update(self, rows: list[dict[str, Any]], final: bool = False) -> None:
        """Add new metric rows; move the progress bar; publish the table when due."""
        self.rows.extend(r for r in rows if isinstance(r.get("step"), int))
        if not self.enabled or not (rows or final):
            return
        from prefect.artifacts import create_table_artifact, update_progress_artifact

        step = self.rows[-1]["step"] if self.rows else 0
        done = 100.0 if final else min(100.0, 100.0 * step / self.total_steps)
        update_progress_artifact(artifact_id=self.progress_id, progress=done)
        now = time.monotonic()
        if self.rows and (final or now - self.last_table >= self.table_every_s):
            create_table_artifact(
                table=self.table_rows(),
                key=self.table_key,
                description=f"training metrics of {self.out} (step {step}/{self.total_steps})",
            )
            self.last_table = now
            self.table_versions += 1
