"""The web app in a real browser (headless Debian Chromium driven by Playwright) and through gradio_client.

One app (127.0.0.1, free port, launched in this process) and one browser serve every test of this module; runs
use the bundled prior with the tiny configuration typed into the advanced config editor. The generation test
saves a screenshot of the page with the finished model to $DREAM3D_TEST_ARTIFACTS (default: the temp
folder's dream3d-test-artifacts/) as app_generate.png.
"""

import json
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from app_support import (ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, TINY_YAML, check_glb, close_app, launch_app,
                         need_browser, need_gradio, run_status)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    need_gradio()
    outputs = tmp_path_factory.mktemp("app_outputs")
    demo, url = launch_app(outputs, preview_seconds=1.0, poll_seconds=0.3)
    yield {"url": url, "outputs": outputs, "demo": demo}
    close_app(demo)


@pytest.fixture(scope="module")
def browser():
    need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(app, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    # expect() has its own default of 5 s, which a loaded machine's round trip can exceed
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)
    pg.goto(app["url"])
    pg.locator("#generate-btn").wait_for()
    yield pg
    context.close()


def fill_form(page, prompt: str, steps: int, config: str = TINY_YAML) -> None:
    page.locator("#prompt textarea").fill(prompt)
    page.locator("#steps input").fill(str(steps))
    page.locator("#advanced").get_by_text("Advanced config (YAML)").click()
    editor = page.locator("#config-editor .cm-content")
    editor.wait_for(state="visible")
    # the code editor may still be mounting when the accordion opens and then drop what was typed: type again
    # until the text sticks
    want = config.strip().splitlines()[-1]
    for _ in range(20):
        editor.fill(config)
        page.wait_for_timeout(250)
        if editor.inner_text().strip().splitlines()[-1] == want:
            break
    assert editor.inner_text().strip().splitlines()[-1] == want


def run_dir_of(app, status_text: str) -> Path:
    name = re.search(r"run (\S+)", status_text).group(1)
    return app["outputs"] / name


def image_stats(png: bytes) -> tuple[float, int]:
    """(pixel standard deviation, number of distinct colours) of a PNG."""
    import io

    from PIL import Image

    arr = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return float(arr.std()), len(np.unique(arr.reshape(-1, 3), axis=0))


@pytest.mark.slow
def test_generate_view_download_screenshot(app, page, tmp_path):
    from playwright.sync_api import expect

    fill_form(page, "a red cube", 120)
    page.locator("#generate-btn").click()
    status = page.locator("#gen-status")
    # progress while running: step count with ETA and a progress bar short of its end
    expect(status).to_contain_text(re.compile(r"step \d+/120 · .* ETA \d+:\d\d"),
                                  timeout=240_000)  # the first run may build the C++ hash-grid kernel
    # text and bar read from one snapshot of the status (it is replaced every second while running)
    text, bar_max, bar_value = status.evaluate(
        "el => [el.innerText, el.querySelector('progress')?.getAttribute('max'),"
        " el.querySelector('progress')?.getAttribute('value')]")
    if "ETA" in text:  # still running at that snapshot (not yet the final "done" status)
        assert bar_max == "120" and int(bar_value) < 120, (text, bar_max, bar_value)
    # a preview image (4 views) arrives (timer previews every second); wait until it has loaded
    preview = page.locator("#gen-preview img")
    expect(preview).to_be_visible(timeout=60_000)
    page.wait_for_function("() => { const i = document.querySelector('#gen-preview img');"
                           " return i && i.complete && i.naturalWidth > 0; }", timeout=60_000)
    width = preview.evaluate("img => img.naturalWidth")
    assert width == 4 * 64  # previews are 4 views of 64 px side by side
    expect(status).to_contain_text("done: 120/120 steps", timeout=120_000)
    run = run_dir_of(app, status.inner_text())
    assert run_status(run)["state"] == "done"

    # the 3D viewer draws the GLB: its canvas shows red pixels (a red cube on a white background)
    canvas = page.locator("#gen-model3d canvas")
    expect(canvas).to_be_visible(timeout=60_000)
    deadline, red = time.time() + 30, 0.0
    while time.time() < deadline:
        import io

        from PIL import Image
        arr = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")).astype(int)
        red = float(((arr[..., 0] > 120) & (arr[..., 0] > arr[..., 1] + 60) & (arr[..., 0] > arr[..., 2] + 60)).mean())
        if red > 0.02:
            break
        time.sleep(0.5)
    assert red > 0.02, f"only {red:.1%} red pixels in the 3D viewer"
    expect(page.locator("#gen-video video")).to_have_count(1)

    # downloads: the GLB is the run's file, a valid binary glTF
    with page.expect_download() as dl:
        page.locator("#gen-glb a[download]").click()
    glb = tmp_path / "downloaded.glb"
    dl.value.save_as(glb)
    assert glb.read_bytes() == (run / "export" / "model.glb").read_bytes()
    check_glb(glb)
    with page.expect_download() as dl:
        page.locator("#gen-obj a[download]").click()
    dl.value.save_as(tmp_path / "obj.zip")
    with zipfile.ZipFile(tmp_path / "obj.zip") as z:
        assert {"model.obj", "model.mtl", "model_albedo.png"} <= set(z.namelist())
    with page.expect_download() as dl:
        page.locator("#gen-config a[download]").click()
    dl.value.save_as(tmp_path / "config.yaml")
    assert "prompt: a red cube" in (tmp_path / "config.yaml").read_text()

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "app_generate.png"
    page.screenshot(path=str(shot), full_page=True)
    std, colours = image_stats(shot.read_bytes())
    assert std > 20 and colours > 200, (std, colours)  # not blank


@pytest.mark.slow
def test_stop_keeps_partial_result_in_gallery(app, page):
    from playwright.sync_api import expect

    fill_form(page, "a blue sphere", 20000)
    page.locator("#generate-btn").click()
    status = page.locator("#gen-status")
    expect(status).to_contain_text(re.compile(r"step ([3-9]|\d\d+)/20000"), timeout=90_000)
    t0 = time.time()
    page.locator("#stop-btn").click()
    expect(status).to_contain_text("stopped at step", timeout=30_000)
    seconds = time.time() - t0
    text = status.inner_text()
    assert "checkpoint and export of the state reached kept" in text
    step = int(re.search(r"stopped at step (\d+)/20000", text).group(1))
    run = run_dir_of(app, text)
    meta = json.loads((run / "checkpoint" / "meta.json").read_text())
    assert run_status(run)["state"] == "stopped" and meta["step"] == step and 3 <= step < 20000
    check_glb(run / "export" / "model.glb")
    print(f"\nstop: {seconds:.1f} s from the click to the stopped status (export included), at step {step}")
    assert seconds < 20, f"the stop took {seconds:.1f} s"  # stop after the current step, then a tiny export

    # the partial result is in the gallery and reopens with its 3D model
    page.get_by_role("tab", name="Gallery").click()
    gallery = page.locator("#gallery")
    expect(gallery).to_contain_text(f"generate · a blue sphere · sds · stopped {step}/20000", timeout=30_000)
    gallery.locator("button", has_text=f"stopped {step}/20000").first.click()
    expect(page.locator("#open-status")).to_contain_text(f"{run.name}: generate · 'a blue sphere' · sds · stopped "
                                                         f"at step {step}/20000", timeout=30_000)
    expect(page.locator("#open-model3d canvas")).to_be_visible(timeout=30_000)
    expect(page.locator("#open-glb a[download]")).to_have_count(1)


@pytest.mark.slow
def test_user_mistakes_are_shown_in_the_page(app, page):
    from playwright.sync_api import expect

    status = page.locator("#gen-status")
    page.locator("#generate-btn").click()  # empty prompt
    expect(status.locator(".d3-error")).to_have_text("Error: the prompt is empty; try for example 'a red cube'")

    fill_form(page, "a red cube", 10, "render: {hieght: 16}")
    page.locator("#check-btn").click()
    expect(status).to_have_text("Error: unknown config key 'render.hieght'; did you mean 'render.height'?")
    page.locator("#generate-btn").click()
    expect(status).to_have_text("Error: unknown config key 'render.hieght'; did you mean 'render.height'?")

    page.locator("#config-editor .cm-content").fill(TINY_YAML)
    page.locator("#prior textarea").fill(str(app["outputs"] / "no-such-model"))
    page.locator("#generate-btn").click()
    expect(status.locator(".d3-error")).to_contain_text("is not offered by this app", timeout=60_000)  # --allow-prior

    page.locator("#prior textarea").fill("")
    page.locator("#prompt textarea").fill("a purple dog")  # not a shapes-world prompt, with the bundled prior
    page.locator("#generate-btn").click()
    expect(status.locator(".d3-error")).to_contain_text("Error: unknown word 'dog'", timeout=60_000)
    assert "Traceback" not in page.content()


@pytest.mark.slow
def test_api_streams_previews_and_ends_with_glb(app):
    from gradio_client import Client

    client = Client(app["url"], verbose=False)
    job = client.submit("a green cone", "sds", "", 60, 1, 10.0, TINY_YAML, api_name="/generate")
    streamed_previews, states = [], []
    for out in job:
        state = re.search(r'data-state="(\w+)"', out[0]).group(1)
        states.append(state)
        if state == "running" and isinstance(out[1], str) and out[1].endswith(".png"):
            streamed_previews.append(out[1])
    final = job.result()
    assert "running" in states and streamed_previews, states
    assert 'data-state="done"' in final[0] and "done: 60/60 steps" in final[0]
    assert final[3].endswith("model.glb") and final[4].endswith("model_obj.zip")
    assert final[6].endswith("turntable.mp4")
    check_glb(Path(final[3]))

    # the Edit endpoint: DDS from that run towards a new prompt, streamed the same way
    source = re.search(r"run (\S+?)<", final[0]).group(1)
    edited = client.predict(source, "a blue cone", "", 12, 7.5, "", api_name="/edit")
    assert "done: 12/12 steps" in edited[0], edited[0]
    check_glb(Path(edited[3]))
    cfg = Path(edited[5]).read_text()
    assert "method: dds" in cfg and "prompt: a blue cone" in cfg and "source_prompt: a green cone" in cfg


def test_file_server_and_loss_frame(tmp_path):
    need_gradio()
    from dream3d.app.ui import FileServer, loss_frame

    outputs = tmp_path / "outputs"
    serve = FileServer(outputs)
    f = outputs / "run" / "model.glb"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"glTF....")
    assert serve(f) == str(f.resolve())  # under the temp folder: gradio may serve it as it is
    assert serve(None) is None and serve(outputs / "missing.glb") is None
    secret = tmp_path / "secret.txt"
    secret.write_text("not a run file")
    (f.parent / "link.png").symlink_to(secret)
    assert serve(secret) is None and serve(f.parent / "link.png") is None  # nothing outside the runs folder
    serve.roots = []  # as for an --outputs folder outside the working directory and the temp folder
    staged = Path(serve(f))
    assert staged != f.resolve() and staged.name == "model.glb" and staged.read_bytes() == b"glTF...."
    assert staged.parent.parent == serve.staging and serve.staging.name.startswith("dream3d-app-")
    serve.close()
    assert not staged.exists() and serve.staging is None

    df = loss_frame([(i, float(i) / 2) for i in range(1, 1001)])
    assert len(df) <= 401 and df["step"].iloc[0] == 1 and df["step"].iloc[-1] == 1000
    assert (df["loss"] == df["step"] / 2).all()
    empty = loss_frame([])
    assert len(empty) == 0 and str(empty["step"].dtype) == "int64" and str(empty["loss"].dtype) == "float64"
