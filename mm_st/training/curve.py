"""``training_curve.png``: the training loss and the evaluation metric over steps, drawn with Pillow.

Example:
    >>> import tempfile, os
    >>> from mm_st.training.curve import save_training_curve
    >>> history = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 2, "eval_xtd_recall_at_1": 0.1}]
    >>> path = save_training_curve(history, os.path.join(tempfile.mkdtemp(), "curve.png"), "eval_xtd_recall_at_1")
    >>> from PIL import Image; Image.open(path).size
    (900, 640)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

WIDTH, PANEL, MARGIN = 900, 320, 60


def _panel(draw: ImageDraw.ImageDraw, top: int, points: list[tuple[float, float]], title: str, color: str,
           x_range: tuple[float, float]) -> None:
    left, right, bottom = MARGIN + 10, WIDTH - 20, top + PANEL - 40
    draw.text((left, top + 8), title, fill="black")
    draw.rectangle((left, top + 28, right, bottom), outline="gray")
    if not points:
        draw.text((left + 10, top + 40), "no values logged", fill="gray")
        return
    x0, x1 = x_range
    ys = [y for _, y in points]
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5

    def xy(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / max(x1 - x0, 1e-12) * (right - left),
                bottom - (y - y0) / (y1 - y0) * (bottom - top - 36))

    for value in (y0, (y0 + y1) / 2, y1):
        _, ty = xy(x0, value)
        draw.text((4, ty - 6), f"{value:.4g}", fill="black")
    for value in (x0, (x0 + x1) / 2, x1):
        tx, _ = xy(value, y0)
        draw.text((tx - 10, bottom + 4), f"{value:.0f}", fill="black")
    scaled = [xy(x, y) for x, y in points]
    if len(scaled) > 1:
        draw.line(scaled, fill=color, width=2)
    for px, py in scaled:
        draw.ellipse((px - 3, py - 3, px + 3, py + 3), outline=color)


def save_training_curve(log_history: list[dict[str, Any]], path: str | Path, metric: str | None = None) -> Path:
    """Draw ``loss`` (and ``metric`` when logged) against ``step`` from a trainer's ``state.log_history``."""
    loss = [(float(e["step"]), float(e["loss"])) for e in log_history if "loss" in e and "step" in e]
    evals = [(float(e["step"]), float(e[metric])) for e in log_history if metric and metric in e and "step" in e]
    steps = [x for x, _ in loss + evals] or [0.0, 1.0]
    x_range = (min(steps), max(steps))
    image = Image.new("RGB", (WIDTH, 2 * PANEL), "white")
    draw = ImageDraw.Draw(image)
    _panel(draw, 0, loss, "training loss (x: optimizer step)", "#1f77b4", x_range)
    _panel(draw, PANEL, evals, f"{metric or 'evaluation'} (x: optimizer step)", "#d62728", x_range)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
