"""The run report in a real browser: Debian's headless Chromium, driven by playwright.

Two `dfnet train` runs on the digits (an MLP and a small CNN, two epochs each)
write their ``report.html``; each page is opened from disk with every request
that is not ``file:`` or ``data:`` blocked (it must open offline), and must
raise no JavaScript error, draw every figure (heatmap images, line and bar
paths, a nonzero size) and give a full-page screenshot in which each plot's
area is drawn. The screenshot is decoded with zlib and numpy, no imaging library.

Chromium is Debian's package (``/usr/bin/chromium``, installed by ``tests/setup.sh``, README's test command),
never a browser that playwright downloads. Without it these tests fail.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 900}
RUN_HEADINGS = ["Training history", "Confusion matrix", "Per-class metrics", "Test samples"]
CNN_HEADINGS = [*RUN_HEADINGS, "Kernels", "Activation maps"]


def chromium_path(path: Path = CHROMIUM) -> Path:
    """``path`` if it is there; otherwise fail (not skip) the test, saying how to install it."""
    if not path.exists():
        pytest.fail(f"{path} not found: the browser check needs Debian's chromium package "
                    f"(bash tests/setup.sh installs it: apt-get install -y chromium)", pytrace=False)
    return path


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is not installed: pip install -e '.[test]'", pytrace=False)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(executable), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def reports(digits_run, tmp_path_factory):
    """``{kind: report.html}`` of two quick real `dfnet train` runs on the digits: the shared MLP run
    and a CNN run."""
    code, _, err, mlp = digits_run
    assert code == 0, err
    cnn = tmp_path_factory.mktemp("browser") / "cnn"
    code, _, err = run_cli(["train", "--dataset", "digits", "--epochs", "2", "--model", "cnn", "--kernels", "4",
                            "--hidden", "16", "--schedule", "average", "--batch-size", "64", "--no-progress",
                            "--output", str(cnn)])
    assert code == 0, err
    return {"mlp": mlp / "report.html", "cnn": cnn / "report.html"}


# --- the check -----------------------------------------------------------------------

@dataclass
class PageCheck:
    """What a page did in the browser."""

    errors: list[str] = field(default_factory=list)  # uncaught exceptions, console errors
    blocked: list[str] = field(default_factory=list)  # requests that would have left the machine
    rendered: bool = False  # every plot div got its plotly SVG in time
    headings: list[str] = field(default_factory=list)
    plots: list[dict] = field(default_factory=list)  # per plot: size, trace types, drawn elements
    screenshot: bytes = b""


# Per plot: its box on the page and what plotly drew. An image counts when it holds a PNG
# data URL and has an on-screen size; a line when its path has coordinates.
MEASURE_PLOTS = """() => Array.from(document.querySelectorAll('.plotly-graph-div')).map(div => {
    const box = div.getBoundingClientRect();
    const images = Array.from(div.querySelectorAll('.heatmaplayer image')).filter(img => {
        const href = img.getAttribute('href') || img.getAttribute('xlink:href') || '';
        const size = img.getBoundingClientRect();
        return href.startsWith('data:image/png') && href.length > 100 && size.width > 0 && size.height > 0;
    });
    const hasCoordinates = p => /\\d/.test(p.getAttribute('d') || '');
    return {
        x: box.left + window.scrollX, y: box.top + window.scrollY, width: box.width, height: box.height,
        types: (div.data || []).map(t => t.type || 'scatter'),
        svgs: div.querySelectorAll('.main-svg').length,
        images: images.length,
        lines: Array.from(div.querySelectorAll('.scatterlayer path.js-line')).filter(hasCoordinates).length,
        bar_traces: div.querySelectorAll('.barlayer .trace').length,
        bars: Array.from(div.querySelectorAll('.barlayer path')).filter(hasCoordinates).length,
    };
})"""

ALL_PLOTS_DRAWN = """() => Array.from(document.querySelectorAll('.plotly-graph-div'))
    .every(div => div.querySelector('.main-svg') && div._fullLayout)"""


def check_page(browser, url: str, *, timeout_ms: int = 30_000) -> PageCheck:
    """Open ``url`` offline in a new browser context and record what happened.

    Only ``file:`` and ``data:`` requests go through; others are blocked and
    listed. Waits for every ``.plotly-graph-div`` to be drawn (a page without
    plots is done at ``load``), then measures the plots and takes a full-page
    screenshot.
    """
    check = PageCheck()
    context = browser.new_context(viewport=VIEWPORT)
    try:
        def route(r):
            if r.request.url.startswith(("file:", "data:")):
                r.continue_()
            else:
                check.blocked.append(r.request.url)
                r.abort()

        context.route("**/*", route)
        page = context.new_page()
        page.on("pageerror", lambda error: check.errors.append(f"uncaught: {error}"))
        page.on("console", lambda message: check.errors.append(f"console.error: {message.text}")
                if message.type == "error" else None)
        page.goto(url, wait_until="load")
        try:
            page.wait_for_function(ALL_PLOTS_DRAWN, timeout=timeout_ms)
            check.rendered = True
        except Exception as e:  # the assertions report it, next to any script error
            check.errors.append(f"plots not drawn within {timeout_ms} ms: {type(e).__name__}")
        # two frames, so that what was drawn is also painted
        page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
        check.headings = page.eval_on_selector_all("h2", "hs => hs.map(h => h.textContent)")
        check.plots = page.evaluate(MEASURE_PLOTS)
        check.screenshot = page.screenshot(full_page=True)
    finally:
        context.close()
    return check


def decode_png(data: bytes) -> np.ndarray:
    """An 8-bit RGB or RGBA PNG as a ``(height, width, channels)`` uint8 array (stdlib zlib + numpy)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"not a PNG: starts with {data[:8]!r}")
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"PNG chunk {kind!r} at byte {pos} fails its CRC")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in (2, 6) or interlace:
        raise ValueError(f"only 8-bit non-interlaced RGB/RGBA is decoded here, got depth {depth} "
                         f"colour type {colour} interlace {interlace}")
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    if raw.size != height * (stride + 1):
        raise ValueError(f"PNG data holds {raw.size} bytes, {width}x{height} needs {height * (stride + 1)}")
    rows = raw.reshape(height, stride + 1)
    pixels = np.zeros((height, stride), dtype=np.uint8)
    prior = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:]
        if kind == 0:
            current = line.copy()
        elif kind == 1:  # Sub: a running sum per channel
            current = (np.cumsum(line.reshape(width, bpp), axis=0, dtype=np.int64) % 256).astype(np.uint8).ravel()
        elif kind == 2:  # Up
            current = line + prior
        elif kind in (3, 4):  # Average, Paeth: each byte needs the one decoded before it
            out, up = bytearray(line.tobytes()), prior.tolist()
            for i in range(stride):
                left = out[i - bpp] if i >= bpp else 0
                if kind == 3:
                    out[i] = (out[i] + ((left + up[i]) >> 1)) & 255
                    continue
                upper_left = up[i - bpp] if i >= bpp else 0
                p_left, p_up = abs(up[i] - upper_left), abs(left - upper_left)
                p_corner = abs(left + up[i] - 2 * upper_left)
                predictor = left if p_left <= p_up and p_left <= p_corner else (up[i] if p_up <= p_corner
                                                                                 else upper_left)
                out[i] = (out[i] + predictor) & 255
            current = np.frombuffer(bytes(out), dtype=np.uint8)
        else:
            raise ValueError(f"row {y} has PNG filter type {kind}")
        pixels[y] = current
        prior = current
    return pixels.reshape(height, width, bpp)


def assert_report_drawn(check: PageCheck, headings: list[str]) -> np.ndarray:
    """Every assertion on a report page; returns the decoded screenshot."""
    assert check.errors == [], f"JavaScript errors: {check.errors}"
    assert check.blocked == [], f"the report asked the network for {check.blocked}: it must open offline"
    assert check.rendered
    assert check.headings == headings
    assert len(check.plots) == len(headings), f"{len(check.plots)} plots for {len(headings)} figures"
    for heading, plot in zip(headings, check.plots):
        assert plot["svgs"] > 0 and plot["width"] > 100 and plot["height"] > 100, (heading, plot)
        heatmaps = plot["types"].count("heatmap")
        assert plot["images"] == heatmaps, f"{heading}: {plot['images']} heatmap images drawn of {heatmaps}"
        assert plot["lines"] == plot["types"].count("scatter"), f"{heading}: {plot}"
        assert plot["bar_traces"] == plot["types"].count("bar") and (plot["bars"] > 0) == ("bar" in plot["types"]), \
            f"{heading}: {plot}"
        assert plot["images"] + plot["lines"] + plot["bars"] > 0, f"{heading}: nothing drawn: {plot}"

    screenshot = decode_png(check.screenshot)[:, :, :3]
    height, width, _ = screenshot.shape
    assert width == VIEWPORT["width"] and height >= max(p["y"] + p["height"] for p in check.plots) - 1
    for heading, plot in zip(headings, check.plots):
        x, y = int(plot["x"]), int(plot["y"])
        area = screenshot[y:y + int(plot["height"]), x:x + int(plot["width"])].reshape(-1, 3).astype(np.int32)
        colours = np.unique(area[:, 0] << 16 | area[:, 1] << 8 | area[:, 2]).size
        not_white = np.mean(area.min(axis=1) < 235)
        # text and axes alone are a few greys; a drawn plot has colour scales, lines or bars
        assert colours > 50 and not_white > 0.02, \
            f"{heading}: the screenshot's plot area looks empty ({colours} colours, {not_white:.1%} not white)"
    return screenshot


# --- the tests -----------------------------------------------------------------------

def test_mlp_report_renders_without_errors(browser, reports, tmp_path):
    check = check_page(browser, reports["mlp"].as_uri())
    assert_report_drawn(check, RUN_HEADINGS)
    (tmp_path / "mlp.png").write_bytes(check.screenshot)
    # validation lines are drawn too: two series in each of the history's two subplots
    assert check.plots[0]["lines"] == 4


def test_cnn_report_renders_kernels_and_activation_maps(browser, reports, tmp_path):
    check = check_page(browser, reports["cnn"].as_uri())
    assert_report_drawn(check, CNN_HEADINGS)
    (tmp_path / "cnn.png").write_bytes(check.screenshot)
    kernels, activations = check.plots[4], check.plots[5]
    assert kernels["images"] == 4  # one heatmap per kernel
    assert activations["images"] >= 1 + 4  # the input, then at least one row of maps


def test_the_check_catches_script_errors_and_network_requests(browser, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><h2>Broken</h2>\n'
                    '<img src="http://example.invalid/tracker.png">\n'
                    '<script>console.error("logged failure")</script>\n'
                    '<script>throw new Error("deliberate failure")</script>\n</body></html>')
    check = check_page(browser, page.as_uri())
    assert any("uncaught" in e and "deliberate failure" in e for e in check.errors), check.errors
    assert any(e == "console.error: logged failure" for e in check.errors), check.errors
    assert check.blocked == ["http://example.invalid/tracker.png"]
    with pytest.raises(AssertionError, match="JavaScript errors"):
        assert_report_drawn(check, ["Broken"])


def test_the_check_catches_a_plot_that_is_not_drawn(browser, reports, tmp_path):
    """The same report with plotly.js's code cut out: the plot divs stay empty and the check says so."""
    text = reports["mlp"].read_text(encoding="utf-8")
    start = text.index('<script type="text/javascript">') + len('<script type="text/javascript">')
    end = text.index("</script>", start)
    page = tmp_path / "no-plotly.html"
    page.write_text(text[:start] + text[end:], encoding="utf-8")
    check = check_page(browser, page.as_uri(), timeout_ms=2_000)
    assert not check.rendered
    assert any("Plotly is not defined" in e for e in check.errors), check.errors


def test_a_missing_chromium_fails_instead_of_skipping(tmp_path):
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium"):
        chromium_path(tmp_path / "no-chromium")


def test_decode_png_reads_every_filter_type():
    """A 3x5 RGB image written with rows under filters None, Sub, Up, Average and Paeth."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(5, 3, 3), dtype=np.uint8)
    bpp, rows, prior = 3, [], np.zeros(9, dtype=np.int64)
    for kind, line in enumerate(image.reshape(5, 9).astype(np.int64)):
        left = np.concatenate([[0] * bpp, line[:-bpp]])
        upper_left = np.concatenate([[0] * bpp, prior[:-bpp]])
        p = left + prior - upper_left
        paeth = np.where((np.abs(p - left) <= np.abs(p - prior)) & (np.abs(p - left) <= np.abs(p - upper_left)),
                         left, np.where(np.abs(p - prior) <= np.abs(p - upper_left), prior, upper_left))
        predictor = [0, left, prior, (left + prior) // 2, paeth][kind]
        rows.append(bytes([kind]) + bytes(((line - predictor) % 256).astype(np.uint8)))
        prior = line

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 3, 5, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))
    np.testing.assert_array_equal(decode_png(png), image)
    with pytest.raises(ValueError, match="fails its CRC"):
        decode_png(png[:-5] + b"\x00" + png[-4:])
