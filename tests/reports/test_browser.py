"""The report in a real headless browser (Debian's chromium driven by Playwright).

Skipped when chromium or playwright is missing, except under CI (``CI`` set), where that fails:
CI must not pass by skipping. Never runs ``playwright install`` (it downloads browsers).
The screenshot goes to ``$PEFTSEARCH_ARTIFACTS/report.png`` when that is set, else beside the
report in pytest's temporary directory; its path is printed (``pytest -s`` shows it).
"""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from optuna.trial import TrialState

from peftsearch.reports.html import write_report
from peftsearch.searcher import open_study, run_study
from peftsearch.spaces import load_space

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EVIL = "<script>alert(1)</script>"


def _need_browser() -> None:
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install playwright; no `playwright install`)")
    if missing:
        message = "no headless browser: missing " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run this test")
        pytest.skip(message)


def _record_request(url: str, events: list[str]) -> None:
    """Anything but the file itself (and inline data) is a fetch the report must not make."""
    if not url.startswith(("file:", "data:", "blob:")):
        events.append(f"request: {url}")


def png_colours(png: bytes, limit: int = 4096) -> int:
    """How many distinct pixel colours an 8-bit RGB(A) non-interlaced PNG holds (up to limit)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, "unexpected PNG format"
    bpp = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    prev, colours = bytearray(stride), set()
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):  # undo the PNG row filter
            left = line[i - bpp] if i >= bpp else 0
            up, corner = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                line[i] = (line[i] + pred) & 255
        if y % 4 == 0:  # every 4th row is plenty to tell a drawn page from a blank one
            colours.update(bytes(line[i : i + 3]) for i in range(0, stride, bpp))
            if len(colours) >= limit:
                return len(colours)
        prev = line
    return len(colours)


def test_png_colours_counts_a_blank_and_a_two_colour_image() -> None:
    def png(rows: list[bytes], width: int) -> bytes:
        def chunk(kind: bytes, body: bytes) -> bytes:
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", 0)

        header = struct.pack(">IIBBBBB", width, len(rows), 8, 2, 0, 0, 0)
        data = zlib.compress(b"".join(b"\x00" + r for r in rows))
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)

    white = b"\xff\xff\xff" * 4
    assert png_colours(png([white] * 8, 4)) == 1
    assert png_colours(png([b"\x00\x00\x00" * 2 + b"\xff\x00\x00" * 2] * 8, 4)) == 2


def test_report_renders_in_a_headless_browser(write_space, tmp_path: Path) -> None:
    _need_browser()
    from playwright.sync_api import sync_playwright

    templates = {"plain": "{text}", "review": "review : {text}", EVIL: f"{EVIL} {{text}}"}
    space_path = write_space(
        templates=templates,
        params={
            "template": {"type": "categorical", "choices": list(templates)},
            "prompt_length": {"type": "categorical", "choices": [0, 2]},
            "lora_r": {"type": "categorical", "choices": [0, 2]},
            "learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
            "batch_size": 16,
        },
        study={
            "name": f"demo {EVIL}",
            "n_trials": 4,
            "seed": 0,
            "enqueue": [
                {"template": EVIL, "prompt_length": 0, "lora_r": 0, "learning_rate": 0.02},
                {"template": "plain", "prompt_length": 2, "lora_r": 0, "learning_rate": 0.02},
                {"template": "review", "prompt_length": 0, "lora_r": 2, "learning_rate": 0.02},
            ],
        },
    )
    space = load_space(space_path)
    outcome = run_study(space, show_progress=False)
    assert outcome.counts == {"complete": 4}
    study = open_study(space, create=False)
    report = write_report(study, tmp_path / "report.html")

    events: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console",
                lambda m: (
                    events.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda e: events.append(f"page error: {e}"))
            page.on("dialog", lambda d: (events.append(f"dialog: {d.message}"), d.dismiss()))
            page.on("request", lambda r: _record_request(r.url, events))
            page.goto(report.as_uri())
            page.wait_for_function(
                "document.querySelectorAll('.js-plotly-plot').length >= 6", timeout=30_000
            )
            plots = page.evaluate(
                """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(el => ({
                    id: el.id,
                    traces: el.data.map(t => ({name: t.name, meta: t.meta ?? null,
                                               customdata: t.customdata ?? null})),
                    drawn: el.querySelectorAll('.main-svg').length}))"""
            )
            # The template's text is on the page as text; no script element holds its code.
            injected = page.evaluate(
                "Array.from(document.scripts).filter(s => s.textContent.includes('alert(1)')"
                " && !s.textContent.includes('&lt;script&gt;alert(1)')).length"
            )
            title = page.title()
            heading = page.inner_text("h1")
            shot = page.screenshot(full_page=True)
        finally:
            browser.close()

    assert events == []  # no console errors or warnings, page errors, alert() or network fetch
    by_id = {p["id"]: p for p in plots}
    assert {"fig-pareto", "fig-templates", "fig-distribution", "fig-history", "fig-curves"} <= set(
        by_id
    )
    assert all(p["drawn"] > 0 for p in plots), "a figure div has no SVG: plotly did not draw it"
    points = [
        n for t in by_id["fig-pareto"]["traces"] if t["meta"] == "trials" for n in t["customdata"]
    ]
    complete = [t.number for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(points) == complete  # one point per completed trial
    assert injected == 0
    legend = [t["name"] for t in by_id["fig-templates"]["traces"]]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in legend
    assert title == heading == f"peftsearch report: demo {EVIL}"  # shown as text, not run

    out_dir = Path(os.environ.get("PEFTSEARCH_ARTIFACTS") or tmp_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "report.png"
    png.write_bytes(shot)
    print(f"screenshot: {png}")
    assert png_colours(shot) > 50, "the screenshot is (nearly) blank"
    if out_dir != tmp_path:
        shutil.copy(report, out_dir / "report.html")
