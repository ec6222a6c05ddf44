"""Draws one PNG per result table in docs/results/ (srcnn.png, vid4.png, transfer.png), next to its JSON.

Each figure says in its footer which command made the numbers, on which machine and when (from the JSON),
and which command drew it. The data extraction (``figure_spec``: JSON -> the plotted series, plain dicts
and lists, missing values as None) is kept apart from the drawing (``draw``) so that it can be tested
without matplotlib, which is an optional dependency (``pip install magmasr[plots]``).

Usage: python benchmarks/plot_results.py [--results docs/results] [--out docs/results]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from magmasr._files import default_permissions

TABLES = ("srcnn", "vid4", "transfer")
DPI = 100
WIDTH_IN = 11.0          # figure width, inches
PANEL_HEIGHT_IN = 3.6    # height of one row of panels, inches
CHROME_HEIGHT_IN = 1.1   # title, legend and footer, inches
TRANSFER_ROWS = ("bicubic", "pretrained", "scratch", "finetune_all", "transfer_12", "scratch_nonlinear",
                 "transfer_13")
LEGEND_ROW_IN = 0.2         # the height of each further legend row, inches
PUBLISHED = "published (paper)"  # the legend label of the published figures' markers
MATPLOTLIB_MISSING = "pip install matplotlib (or pip install magmasr[plots])"

# title, ylabel, decimals, groups, series {label: [value | None]}, markers {label: [...]}, and optionally
# errors {label: [standard deviation | None]} for series that are means over several runs (drawn as error bars).
Panel = dict[str, Any]


# ------------------------------------------------------------------------------------------ extraction
def _value(row: dict, key: str) -> float | None:
    """The number under ``key``, None when absent or null (a gap in the plot, never a zero)."""
    v = row.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{key!r} is {v!r}, not a number")
    return float(v)


def _by_scale(rows: list[dict], key: str, series: dict[str, str], markers: dict[str, str],
              what: str) -> list[Panel]:
    """One PSNR panel per distinct ``row[key]`` (in order of appearance), groups = the scales ascending."""
    panels = []
    for name in dict.fromkeys(r[key] for r in rows):
        sub = sorted((r for r in rows if r[key] == name), key=lambda r: int(r["scale"]))
        panel: Panel = {"title": f"{what}{name}", "ylabel": "PSNR (dB)", "decimals": 2,
                        "groups": [f"x{int(r['scale'])}" for r in sub],
                        "series": {}, "markers": {}}
        for k, label in series.items():  # a column no row has is left out (a gap where only some rows lack it)
            values = [_value(r, k) for r in sub]
            if any(v is not None for v in values):
                panel["series"][label] = values
        for k, label in markers.items():
            values = [_value(r, k) for r in sub]
            if any(v is not None for v in values):
                panel["markers"][label] = values
        panels.append(panel)
    return panels


def _srcnn(doc: dict) -> tuple[str, list[Panel], int]:
    panels = _by_scale(doc["rows"], "dataset",
                       {"bicubic": "bicubic",
                        "srcnn_915_91img_imported": "SRCNN 9-1-5, 91 images (authors' weights)",
                        "ours_915": "SRCNN 9-1-5 (magmasr's weights)",
                        "srcnn_955_imported": "SRCNN 9-5-5, ImageNet (authors' weights)",
                        "ours": "SRCNN 9-5-5 (magmasr's weights)",
                        "ours_ensemble": "SRCNN 9-5-5 (magmasr's weights) + self-ensemble"},
                       {"published_bicubic": "bicubic", "published_955": "SRCNN 9-5-5, ImageNet (authors' weights)"}, "")
    return "SRCNN paper table: mean PSNR (Y) on Set5 and Set14", panels, len(panels)


def _vid4(doc: dict) -> tuple[str, list[Panel], int]:
    panels = _by_scale(doc["rows"], "sequence",
                       {"bicubic": "bicubic", "srcnn_955": "SRCNN 9-5-5 (single frame, authors' weights)",
                        "srcnn_ours": "SRCNN (single frame, magmasr's weights)",
                        "tdsrnet_imported": "3DSRnet (authors' weights)",
                        "tdsrnet_ours": "3DSRnet (magmasr's weights)",
                        "tdsrnet_ours_ensemble": "3DSRnet (magmasr's weights) + self-ensemble",
                        "tdsrnet_poster_ours": "3DSRnet, the poster's (magmasr's weights)"}, {}, "Vid4 ")
    return "3DSRnet paper table: mean PSNR (Y) on Vid4, the authors' test.m protocol", panels, len(panels)


def _transfer(doc: dict) -> tuple[str, list[Panel], int]:
    results = doc["results"]
    if not isinstance(results, dict) or not results:
        raise ValueError("'results' is not a non-empty object")
    metric_panels: dict[str, list[Panel]] = {"psnr": [], "ssim": []}
    for domain, res in results.items():
        rows = res["rows"]
        names = [n for n in TRANSFER_ROWS if n in rows] + [n for n in rows if n not in TRANSFER_ROWS]
        for metric, ylabel, decimals in (("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 3)):
            panel: Panel = {"title": f"{domain}: {metric.upper()}", "ylabel": ylabel, "decimals": decimals,
                            "groups": names, "series": {ylabel: [_value(rows[n], metric) for n in names]},
                            "markers": {}}
            errors = [_value(rows[n], f"{metric}_std") for n in names]  # trained rows over several seeds
            if any(e is not None for e in errors):
                panel["errors"] = {ylabel: errors}
            metric_panels[metric].append(panel)
    # Grid row-major: the PSNR panels of every domain on the first row, the SSIM panels below.
    return ("Transfer learning on scarce-data domains (x3, Y channel)",
            metric_panels["psnr"] + metric_panels["ssim"], len(results))


def figure_spec(name: str, doc: dict, command: str) -> dict[str, Any]:
    """What one figure shows, as plain data: title, footer, number of panel columns and the panels.

    ``name`` is the table (one of TABLES), ``doc`` its parsed JSON, ``command`` the command drawing it.
    Raises KeyError, TypeError or ValueError when ``doc`` does not have the table's structure."""
    for key in ("date", "card", "command"):
        if not isinstance(doc[key], str):
            raise ValueError(f"{key!r} is not a string")
    if name != "transfer" and not (isinstance(doc["rows"], list) and doc["rows"]):
        raise ValueError("'rows' is not a non-empty list")
    title, panels, ncols = {"srcnn": _srcnn, "vid4": _vid4, "transfer": _transfer}[name](doc)
    footer = (f"Numbers: `{doc['command']}` on {doc['card']}, {doc['date']}.   "
              f"Figure: `{command}`.")
    return {"title": title, "footer": footer, "ncols": ncols, "panels": panels}


def read_spec(path: Path, command: str) -> dict[str, Any]:
    """The figure spec of the table in ``path`` (its stem names the table); SystemExit when malformed."""
    try:
        return figure_spec(path.stem, json.loads(path.read_text()), command)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        detail = f"missing key {e}" if isinstance(e, KeyError) else str(e)
        raise SystemExit(f"{path}: malformed {path.stem} results ({detail})") from None


# --------------------------------------------------------------------------------------------- drawing
def new_figure(width_in: float, height_in: float):
    """A matplotlib Figure on the non-interactive Agg canvas (no pyplot state); SystemExit without
    matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise SystemExit(MATPLOTLIB_MISSING) from None
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: Path) -> None:
    """Writes ``fig`` as a PNG at DPI, atomically: a temporary file in the same folder, then os.replace."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=DPI)
        default_permissions(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def frame(fig, title: str, footer: str, legend: dict) -> None:
    """Title (and the legend, if any) in a strip at the top, the footer in a strip at the bottom; the
    constrained layout of the axes keeps out of both."""
    height = fig.get_figheight()
    rows = 0
    if legend:
        # As few rows as fit the figure's width, the entries balanced over them (6 entries: 2 rows of 3).
        renderer = fig.canvas.get_renderer()
        for rows in range(1, len(legend) + 1):
            ncols = math.ceil(len(legend) / rows)
            leg = fig.legend(legend.values(), legend.keys(), loc="upper center",
                             bbox_to_anchor=(0.5, 1 - 0.38 / height), ncols=ncols, fontsize=8, frameon=False)
            if leg.get_window_extent(renderer).width <= 0.98 * fig.bbox.width or ncols == 1:
                break
            leg.remove()
    top, bottom = (0.75 + LEGEND_ROW_IN * (rows - 1) if legend else 0.45) / height, 0.3 / height
    fig.get_layout_engine().set(rect=(0, bottom, 1, 1 - top - bottom))  # left, bottom, width, height
    fig.text(0.5, 1 - 0.08 / height, title, ha="center", va="top", fontsize=12)
    fig.text(0.5, 0.1 / height, footer, ha="center", va="bottom", fontsize=7, color="#444444")


def figure_inches(spec: dict[str, Any]) -> tuple[float, float]:
    """(width, height) in inches of the figure drawn for ``spec``."""
    rows = math.ceil(len(spec["panels"]) / spec["ncols"])
    return WIDTH_IN, CHROME_HEIGHT_IN + PANEL_HEIGHT_IN * rows


def _draw_panel(ax, panel: Panel, colors: dict[str, str]) -> None:
    """Grouped bars with their values written above them; None values leave a gap. The y axis starts just
    below the smallest value, so that differences of a few tenths of a dB stay visible."""
    groups, series, errors = panel["groups"], panel["series"], panel.get("errors", {})
    width = 0.8 / len(series)
    values = [v for vs in (*series.values(), *panel["markers"].values()) for v in vs if v is not None]
    for label, es in errors.items():  # the axis takes in the error bars' ends
        values += [v + sign * e for v, e in zip(series[label], es) if v is not None and e is not None
                   for sign in (-1, 1)]
    xs = {label: [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
          for i, label in enumerate(series)}
    for label, vs in series.items():
        bars = ax.bar(xs[label], [math.nan if v is None else v for v in vs], width * 0.92, label=label,
                      color=colors[label])
        if label in errors:  # mean ± sample standard deviation over seeds
            es = errors[label]
            ax.errorbar(xs[label], [math.nan if v is None else v for v in vs],
                        yerr=[math.nan if e is None else e for e in es], fmt="none", ecolor="black",
                        elinewidth=1, capsize=3, zorder=3)
        ax.bar_label(bars, labels=["" if v is None else f"{v:.{panel['decimals']}f}" for v in vs],
                     rotation=90, padding=2 + (12 if label in errors else 0), fontsize=7)
    for label, vs in panel["markers"].items():
        ax.scatter(xs[label], [math.nan if v is None else v for v in vs], marker="_", s=160, linewidths=2,
                   color="black", zorder=3, label=PUBLISHED)
    if values:
        lo, hi = min(values), max(values)
        span = max(hi - lo, 10 ** -panel["decimals"] * 10)
        ax.set_ylim(lo - 0.35 * span, hi + 0.3 * span)
    ax.set_xticks(range(len(groups)), groups, rotation=20 if len(groups) > 4 else 0, fontsize=8)
    ax.set_ylabel(panel["ylabel"])
    ax.set_title(panel["title"], fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def draw(spec: dict[str, Any], path: Path) -> None:
    """Draws the figure described by ``spec`` (see figure_spec) into the PNG ``path``."""
    fig = new_figure(*figure_inches(spec))
    nrows = math.ceil(len(spec["panels"]) / spec["ncols"])
    axes = fig.subplots(nrows, spec["ncols"], squeeze=False).ravel()
    palette = ["#9e9e9e", "#4c72b0", "#8fb0d9", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3"]
    labels = list(dict.fromkeys(label for p in spec["panels"] for label in p["series"]))
    colors = {label: palette[i % len(palette)] for i, label in enumerate(labels)}
    for ax, panel in zip(axes, spec["panels"]):
        _draw_panel(ax, panel, colors)
    for ax in axes[len(spec["panels"]):]:
        ax.set_visible(False)
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    handles = dict(sorted(handles.items(), key=lambda item: item[0] == PUBLISHED))  # the markers last
    frame(fig, spec["title"], spec["footer"], handles if len(handles) > 1 else {})
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(__file__).resolve().parents[1] / "docs" / "results"
    ap.add_argument("--results", type=Path, default=default, help="folder of the result JSON files")
    ap.add_argument("--out", type=Path, default=None, help="folder for the PNGs (default: --results)")
    a = ap.parse_args(argv)
    out = a.out or a.results
    found = [a.results / f"{name}.json" for name in TABLES if (a.results / f"{name}.json").is_file()]
    if not found:
        raise SystemExit(f"{a.results}: none of {', '.join(n + '.json' for n in TABLES)} found")
    if not out.is_dir():
        raise SystemExit(f"{out}: no such folder for the figures")
    command = " ".join(["python benchmarks/plot_results.py", *map(shlex.quote, argv)])
    specs = [(path, read_spec(path, command)) for path in found]  # every JSON checked before drawing any
    for path, spec in specs:
        draw(spec, out / f"{path.stem}.png")
        print(f"{path} -> {out / (path.stem + '.png')}")


if __name__ == "__main__":
    main()
