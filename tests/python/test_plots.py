"""Tests of the figure scripts benchmarks/plot_results.py and benchmarks/gallery.py: the series plotted are
the numbers of the JSON, gaps stay gaps, bad input fails with a clear message, the PNGs are written whole and
at the expected size, the gallery's crop is the most detailed window and its PSNR labels are right."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from magmasr import image as im
from magmasr import metrics
from magmasr.cli import shipped_weights
from magmasr.sr import ImageSR

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))  # the scripts import each other as top-level modules
import gallery  # noqa: E402
import plot_results  # noqa: E402

STAMP = {"date": "2026-01-02", "card": "CPU (test)", "command": "python make_numbers.py"}


def _srcnn_doc() -> dict:
    """Rows out of scale order; 'ours' absent in one row and null in another."""
    rows = []
    for d, dataset in enumerate(("Set14", "Set5")):
        for scale in (4, 2, 3):
            base = 10 * d + scale
            rows.append({"dataset": dataset, "scale": scale, "bicubic": base + 0.1, "srcnn_955_imported": base + 0.2,
                         "srcnn_915_91img_imported": base + 0.3, "ours_915": base + 0.35, "ours": base + 0.4,
                         "published_bicubic": base + 0.15,
                         "published_955": base + 0.25})
    del rows[0]["ours"]          # Set14 x4
    rows[4]["ours"] = None       # Set5 x2
    return {**STAMP, "rows": rows}


def _write(folder, name: str, doc) -> None:
    (folder / f"{name}.json").write_text(json.dumps(doc) if not isinstance(doc, str) else doc)


def _png_shape(path) -> tuple[int, ...]:
    import imageio.v3 as iio

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return iio.imread(path).shape


# ---------------------------------------------------------------------------------------------------
# plot_results: extraction
# ---------------------------------------------------------------------------------------------------

def test_srcnn_series_hold_every_number_in_scale_order():
    """One panel per dataset in file order, groups x2 x3 x4 whatever the row order, each method's value of
    (dataset, scale) at its group's index, the published figures as markers on their methods."""
    spec = plot_results.figure_spec("srcnn", _srcnn_doc(), "python plot.py")
    assert [p["title"] for p in spec["panels"]] == ["Set14", "Set5"]
    for d, panel in enumerate(spec["panels"]):
        assert panel["groups"] == ["x2", "x3", "x4"]
        series = list(panel["series"].values())
        for i, scale in enumerate((2, 3, 4)):
            base = 10 * d + scale   # the 9-1-5s, then the 9-5-5s, the authors' before ours
            assert [s[i] for s in series[:4]] == pytest.approx([base + 0.1, base + 0.3, base + 0.35, base + 0.2])
        markers = panel["markers"]
        assert markers["bicubic"] == pytest.approx([10 * d + s + 0.15 for s in (2, 3, 4)])
        label = "SRCNN 9-5-5, ImageNet (authors' weights)"   # the marker sits on the series of the same method
        assert label in panel["series"]
        assert markers[label] == pytest.approx([10 * d + s + 0.25 for s in (2, 3, 4)])
    assert list(spec["panels"][0]["series"])[0] == "bicubic"


def test_missing_or_null_ours_is_a_gap_not_a_zero():
    """'ours' absent (Set14 x4) or null (Set5 x2) becomes None at exactly that place; the others stay."""
    spec = plot_results.figure_spec("srcnn", _srcnn_doc(), "python plot.py")
    set14, set5 = (p["series"]["SRCNN 9-5-5 (magmasr's weights)"] for p in spec["panels"])
    assert set14 == [pytest.approx(2.4), pytest.approx(3.4), None]
    assert set5 == [None, pytest.approx(13.4), pytest.approx(14.4)]


def test_footer_names_the_source_command_card_date_and_the_plot_command():
    spec = plot_results.figure_spec("srcnn", _srcnn_doc(), "python benchmarks/plot_results.py --out x")
    for text in (*STAMP.values(), "python benchmarks/plot_results.py --out x"):
        assert text in spec["footer"]


def test_vid4_series_per_sequence_and_scale():
    """A series per column present in some row (ours only at x4: gaps elsewhere; a column in no row: no series)."""
    rows = [{"scale": s, "sequence": q, "bicubic": s + k, "srcnn_955": s + k + 0.5, "tdsrnet_imported": s + k + 0.7,
             **({"tdsrnet_ours": s + k + 0.6} if s == 4 else {})}
            for s in (4, 3, 2) for k, q in ((0.0, "calendar"), (10.0, "city"))]
    spec = plot_results.figure_spec("vid4", {**STAMP, "rows": rows}, "p")
    assert [p["title"] for p in spec["panels"]] == ["Vid4 calendar", "Vid4 city"]
    for k, panel in zip((0.0, 10.0), spec["panels"]):
        assert panel["groups"] == ["x2", "x3", "x4"]
        values = list(panel["series"].values())
        assert values[:3] == [[pytest.approx(s + k + o) for s in (2, 3, 4)] for o in (0, 0.5, 0.7)]
        assert values[3] == [None, None, pytest.approx(4 + k + 0.6)]
        assert len(values) == 4 and not any("SRCNN (single frame, magmasr" in label for label in panel["series"])


def test_transfer_rows_in_table_order_missing_rows_left_out():
    """Known rows in the table's order (whatever the file's), absent rows left out, unknown rows last, a row
    without SSIM a gap; a PSNR panel per domain, then an SSIM panel per domain."""
    rows = {"scratch": {"psnr": 20.0, "ssim": 0.5}, "mystery": {"psnr": 21.0, "ssim": 0.6},
            "bicubic": {"psnr": 22.0}, "finetune_all": {"psnr": 23.0, "ssim": 0.7}}
    doc = {**STAMP, "results": {"a": {"rows": rows}, "b": {"rows": {"bicubic": {"psnr": 1.0, "ssim": 0.1}}}}}
    spec = plot_results.figure_spec("transfer", doc, "p")
    assert spec["ncols"] == 2
    psnr_a, psnr_b, ssim_a, ssim_b = spec["panels"]
    assert psnr_a["groups"] == ssim_a["groups"] == ["bicubic", "scratch", "finetune_all", "mystery"]
    assert psnr_a["series"] == {"PSNR (dB)": [22.0, 20.0, 23.0, 21.0]}
    assert ssim_a["series"] == {"SSIM": [None, 0.5, 0.7, 0.6]}
    assert (psnr_b["groups"], psnr_b["series"], ssim_b["series"]) == (["bicubic"], {"PSNR (dB)": [1.0]},
                                                                      {"SSIM": [0.1]})


def test_transfer_rows_over_several_seeds_get_error_bars():
    """Rows with a *_std (means over seeds) carry it as error bars of their own metric; rows without one (bicubic,
    the pretrained model) a gap; a table without any standard deviation has no error bars at all."""
    rows = {"bicubic": {"psnr": 22.0, "ssim": 0.6}, "scratch": {"psnr": 23.0, "psnr_std": 0.25, "ssim": 0.7,
                                                                  "ssim_std": 0.01},
            "finetune_all": {"psnr": 24.0, "psnr_std": 0.05, "ssim": 0.75, "ssim_std": 0.002}}
    spec = plot_results.figure_spec("transfer", {**STAMP, "results": {"a": {"rows": rows}}}, "p")
    psnr, ssim = spec["panels"]
    assert psnr["errors"] == {"PSNR (dB)": [None, 0.25, 0.05]}
    assert ssim["errors"] == {"SSIM": [None, 0.01, 0.002]}
    single = {k: {m: v for m, v in r.items() if not m.endswith("_std")} for k, r in rows.items()}
    spec = plot_results.figure_spec("transfer", {**STAMP, "results": {"a": {"rows": single}}}, "p")
    assert all("errors" not in panel for panel in spec["panels"])


@pytest.mark.parametrize("name, text, detail", [
    ("srcnn", "{not json", "Expecting property name"),
    ("srcnn", json.dumps({**STAMP}), "missing key 'rows'"),
    ("srcnn", json.dumps({**STAMP, "rows": []}), "'rows' is not a non-empty list"),
    ("vid4", json.dumps({**STAMP, "rows": [{"scale": 2, "sequence": "c", "bicubic": "high"}]}), "not a number"),
    ("transfer", json.dumps({"date": "d", "card": "c", "results": {}}), "missing key 'command'"),
    ("transfer", json.dumps({**STAMP, "results": {"a": {"rows": {"bicubic": {"psnr": True}}}}}), "not a number"),
])
def test_malformed_json_exits_with_the_file_and_the_reason(tmp_path, name, text, detail):
    _write(tmp_path, name, text)
    with pytest.raises(SystemExit) as e:
        plot_results.read_spec(tmp_path / f"{name}.json", "p")
    message = str(e.value.code)
    assert str(tmp_path / f"{name}.json") in message and "malformed" in message and detail in message


def test_folder_without_results_exits(tmp_path):
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(SystemExit, match="none of srcnn.json, vid4.json, transfer.json"):
        plot_results.main(["--results", str(tmp_path)])


def test_malformed_json_draws_nothing(tmp_path):
    """Every JSON is checked before any figure is drawn: no PNG appears when one table is malformed."""
    _write(tmp_path, "srcnn", _srcnn_doc())
    _write(tmp_path, "vid4", {**STAMP})
    with pytest.raises(SystemExit, match="vid4.json: malformed"):
        plot_results.main(["--results", str(tmp_path)])
    assert not list(tmp_path.glob("*.png"))


def test_without_matplotlib_the_message_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import fail
    with pytest.raises(SystemExit, match=r"pip install matplotlib \(or pip install magmasr\[plots\]\)"):
        plot_results.new_figure(2, 2)


# ---------------------------------------------------------------------------------------------------
# plot_results: drawing
# ---------------------------------------------------------------------------------------------------

def test_main_writes_one_png_per_json_at_the_expected_size_and_no_temp_file(tmp_path):
    pytest.importorskip("matplotlib")
    results, out = tmp_path / "results", tmp_path / "out"
    results.mkdir()
    out.mkdir()
    _write(results, "srcnn", _srcnn_doc())
    doc = {**STAMP, "results": {d: {"rows": {"bicubic": {"psnr": 25.0, "ssim": 0.7},
                                             "pretrained": {"psnr": 26.0, "ssim": 0.75}}} for d in "abc"}}
    _write(results, "transfer", doc)
    plot_results.main(["--results", str(results), "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["srcnn.png", "transfer.png"]  # no temp file left behind
    for name, doc in (("srcnn", _srcnn_doc()), ("transfer", doc)):
        w, h = plot_results.figure_inches(plot_results.figure_spec(name, doc, "p"))
        assert _png_shape(out / f"{name}.png")[:2] == (round(h * plot_results.DPI), round(w * plot_results.DPI))
        assert (out / f"{name}.png").stat().st_size < 150_000
    assert _png_shape(out / "transfer.png")[0] > _png_shape(out / "srcnn.png")[0]  # two rows of panels


# ---------------------------------------------------------------------------------------------------
# gallery
# ---------------------------------------------------------------------------------------------------

def test_gallery_row_crops_and_psnr_labels(rng):
    """The crops are the detail window of the modcropped original and of its bicubic / model upscales of the
    MATLAB-downscaled image, and each label is metrics.psnr (Y channel) of those crops."""
    weights = shipped_weights("srcnn", 3)
    if weights is None:
        pytest.skip("no shipped x3 SRCNN weights")
    model = ImageSR.load(weights)
    smooth = np.repeat(np.repeat(rng.integers(0, 256, (14, 17, 3)), 5, axis=0), 5, axis=1)[:67, :80]
    img = smooth.astype(np.uint8)
    img[30:50, 40:62] = rng.integers(0, 256, (20, 22, 3))  # the detailed spot
    row = gallery.gallery_row("synthetic", img, {"bicubic": None, "model": model}, 3, 24)

    original = img[:66, :78]
    lr = im.imresize(original, 1 / 3)
    r, c = row["at"]
    assert (r, c) == im.detail_window(im.rgb2y(original), 24, margin=3)
    assert 30 - 24 <= r <= 50 and 40 - 24 <= c <= 62  # overlaps the detailed spot
    window = (slice(r, r + 24), slice(c, c + 24))
    expected = {"bicubic": im.imresize(lr, 3)[window], "model": model.upscale(lr, 3)[window]}
    np.testing.assert_array_equal(row["crops"]["original"], original[window])
    assert set(row["psnr"]) == set(expected)
    for label, crop in expected.items():
        np.testing.assert_array_equal(row["crops"][label], crop)
        assert row["psnr"][label] == pytest.approx(metrics.psnr(crop, original[window], test_y_channel=True),
                                                   rel=1e-12)


def test_gallery_main_on_a_folder_writes_the_png(tmp_path, rng):
    """--folder: one row per image (gray and RGB), a PNG of the expected size, no temp file left."""
    pytest.importorskip("matplotlib")
    if shipped_weights("srcnn", 2) is None:
        pytest.skip("no shipped x2 SRCNN weights")
    import imageio.v3 as iio

    folder = tmp_path / "images"
    folder.mkdir()
    iio.imwrite(folder / "a.png", rng.integers(0, 256, (40, 44, 3), dtype=np.uint8))
    iio.imwrite(folder / "b.png", rng.integers(0, 256, (36, 50), dtype=np.uint8))
    out = tmp_path / "g.png"
    gallery.main(["--folder", str(folder), "--scale", "2", "--crop", "16", "--out", str(out)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "images"]
    w, h = gallery.gallery_inches(2, 3)
    assert _png_shape(out)[:2] == (round(h * plot_results.DPI), round(w * plot_results.DPI))


def test_a_long_legend_wraps_inside_the_figure():
    """Five or six long labels (the Vid4 table's columns) do not fit in one row of the figure's width: the legend
    wraps into balanced rows and stays inside the figure, clear of the panels; short labels keep one row."""
    pytest.importorskip("matplotlib")
    from matplotlib.patches import Patch

    labels = ["bicubic", "SRCNN 9-5-5 (single frame, authors' weights)", "SRCNN (single frame, magmasr's weights)",
              "3DSRnet (authors' weights)", "3DSRnet (magmasr's weights)", "3DSRnet, the poster's (magmasr's weights)"]
    short = ["bicubic", "9-5-5", "9-1-5", "ours", "published"]
    for names, rows in ((labels[:3], 1), (short, 1), (labels[:5], 2), (labels, 2)):
        n = len(names)
        fig = plot_results.new_figure(*plot_results.figure_inches({"panels": [0, 1], "ncols": 2}))
        ax = fig.subplots(1, 2)[0]
        ax.bar([0], [1])
        plot_results.frame(fig, "title", "footer", {label: Patch() for label in names})
        fig.canvas.draw()
        legend = fig.legends[0]
        box, inside = legend.get_window_extent(), fig.bbox
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and box.y1 <= inside.y1, (n, box, inside)
        assert box.y0 >= ax.get_window_extent().y1, n        # above the panels
        lines = {}                                           # legend rows: entries by the height of their text
        for t in legend.get_texts():
            y = round(t.get_window_extent().y0)
            lines[y] = lines.get(y, 0) + 1
        assert len(lines) == rows and max(lines.values()) == -(-n // rows), (n, lines)   # as few as fit, balanced


def test_reproduce_tables_refuses_weights_other_than_the_checkouts(tmp_path, monkeypatch):
    """The tables are written into the checkout, so they must measure its weight files: a file missing on either
    side or with other bytes in the installed package stops the script before it measures anything."""
    import reproduce_tables

    rng = np.random.default_rng()
    ours, installed = tmp_path / "checkout", tmp_path / "installed"
    ours.mkdir(), installed.mkdir()
    same, other = rng.bytes(64), rng.bytes(64)
    for d in (ours, installed):
        (d / "same.safetensors").write_bytes(same)
    (ours / "changed.safetensors").write_bytes(other)
    (installed / "changed.safetensors").write_bytes(other[:-1] + bytes([other[-1] ^ 1]))
    (ours / "new.safetensors").write_bytes(other)
    (installed / "gone.safetensors").write_bytes(same)
    (ours / "notes.txt").write_text("not a weight file")
    assert reproduce_tables.stale_weights(ours, installed) == ["changed.safetensors", "gone.safetensors",
                                                              "new.safetensors"]
    assert reproduce_tables.stale_weights(ours, ours) == []
    assert reproduce_tables.stale_weights(tmp_path / "no-checkout", installed) == []

    # main(): against an installed folder holding none of the checkout's files, it names them and stops
    monkeypatch.setattr(reproduce_tables, "SHIPPED", installed)
    monkeypatch.setattr(sys, "argv", ["reproduce_tables.py", "--out", str(tmp_path / "out"), "--shared",
                                      str(tmp_path / "no-shared")])
    with pytest.raises(SystemExit,
                       match=r"than this checkout \(.*srcnn_x3\.safetensors.*: reinstall it from the checkout"):
        reproduce_tables.main()
    assert not (tmp_path / "out").exists()
