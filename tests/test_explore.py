"""`zfnet explore`: the site's files against the model's own top-k (our smoke ZFNet, and a
torchvision resnet18 state dict over a folder of photos through the graph deconvnet), the
markdown converter on hand-written cases, and the sites in a real browser (Debian's chromium +
chromedriver through selenium; skipped with the reason where they are not installed)."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from zfnet_cli.cli import app
from zfnet_cli.webpages import html_page, markdown_to_html

runner = CliRunner()


def _data(site: Path, layer: str) -> dict:
    text = (site / "data" / f"{layer}.js").read_text()
    prefix = "window.EXPLORER = "
    assert text.startswith(prefix)
    return json.loads(text[len(prefix):].rstrip().rstrip(";"))


@pytest.fixture(scope="module")
def site(smoke_model, tmp_path_factory):
    """An explorer of the shared smoke model: every unit of layers 1-5, top-9 of 24 images,
    and both kept epochs."""
    root, _ = smoke_model
    out = tmp_path_factory.mktemp("explore")
    res = runner.invoke(app, ["explore", "experiment=smoke", "k=9", f"output_root={out}",
                              f"checkpoint={root / 'train' / 'latest'}"])
    assert res.exit_code == 0, res.output
    folder = (out / "explore" / "latest").resolve()
    assert f"open {folder / 'site' / 'index.html'} in a browser" in res.output
    return folder


def test_site_holds_every_unit_with_its_top9(site, smoke_model):
    import torch

    from zfnet_cli.loading import load_trained
    from zfnet_cli.data.sources import load_split

    metrics = json.loads((site / "metrics.json").read_text())
    loaded = load_trained(str(smoke_model[1]), "unused", torch.device("cpu"))
    assert list(metrics["layers"]) == loaded.deconv.layers  # default: every conv layer
    assert metrics["epochs"] == [1, 2] and metrics["images_scanned"] == 24
    # brute force: every image forward, max over space, the 9 best per unit
    val = load_split(loaded.data, "val", progress=False)
    x = loaded.preprocess()(torch.stack([val[i][0] for i in range(24)]))
    acts = loaded.deconv.forward(x, switches=False).activations
    for layer, units in metrics["layers"].items():
        data = _data(site / "site", layer)
        assert [u["unit"] for u in data["units"]] == list(range(units))
        best = acts[layer].flatten(2).amax(2).T.topk(9, dim=1).values  # (units, 9)
        for u in data["units"]:
            np.testing.assert_allclose(u["values"], best[u["unit"]].numpy(), rtol=1e-4, atol=1e-4)
            assert len(u["proj"]) == len(u["patch"]) == len(u["images"]) == 9
            assert [e["epoch"] for e in u["evolution"]] == [1, 2]
            assert u["distinct"] == len(set(u["classes"]))
            for (y0, x0, y1, x1), patch in zip(u["boxes"], u["patch"]):
                # tiles keep their receptive-field box's shape, scaled to at most `cell` (24)
                w, h = Image.open(site / "site" / patch).size
                s = min(1.0, 24 / max(y1 - y0, x1 - x0))
                assert (h, w) == (max(1, round((y1 - y0) * s)), max(1, round((x1 - x0) * s)))
    files = sum(1 for _ in (site / "site" / "img").rglob("*.png"))
    assert files == sum(metrics["layers"].values()) * (18 + 2)  # units x (18 tiles + 2 epochs)


def test_bad_layer_is_one_line(smoke_model, tmp_path):
    root, _ = smoke_model
    res = runner.invoke(app, ["explore", "experiment=smoke", "--layer", "9",
                              f"output_root={tmp_path}", f"checkpoint={root / 'train' / 'latest'}"])
    assert res.exit_code == 1 and res.output.count("\n") == 1
    assert "--layer 9 is not a conv layer" in res.output


def test_layers_by_number_paper_name_or_module(smoke_model, tmp_path):
    root, _ = smoke_model
    res = runner.invoke(app, ["explore", "experiment=smoke", "--layer", "2", "--layer", "conv4",
                              "--layer", "features.relu4", "max_units=2", "--no-evolution",
                              f"output_root={tmp_path}", f"checkpoint={root / 'train' / 'latest'}"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "explore" / "latest" / "metrics.json").read_text())
    assert list(metrics["layers"]) == ["conv2", "conv4", "features.relu4"]
    assert metrics["units_explored"] == {"conv2": 2, "conv4": 2, "features.relu4": 2}
    assert metrics["deconvnet"] == "Deconvnet"  # a plain stack: the paper's explicit one


def test_markdown_to_html_hand_cases():
    md = ("# Report\n\nRun: `outputs/a<b>`, **bold** and _it_.\n\n## Table 1: x\n\n"
          "| a | b |\n|---|---|\n| 1 ± 2 | <x> |\n\n- one\n- two\n\n![fig 2](figures/f.png)\n")
    out = markdown_to_html(md)
    assert out.splitlines() == [
        '<h1 id="report">Report</h1>',
        "<p>Run: <code>outputs/a&lt;b&gt;</code>, <strong>bold</strong> and <em>it</em>.</p>",
        '<h2 id="table-1-x">Table 1: x</h2>',
        "<table>", "<tr><th>a</th><th>b</th></tr>", "<tr><td>1 ± 2</td><td>&lt;x&gt;</td></tr>",
        "</table>", "<ul><li>one</li><li>two</li></ul>",
        '<p><img alt="fig 2" src="figures/f.png" loading="lazy"></p>']
    page = html_page(md, "t")
    assert '<a href="#table-1-x">Table 1: x</a>' in page and "<script" not in page


# ---------------------------------------------------------------- in a real browser

def _chrome():
    """Headless Debian chromium through its own chromedriver. The driver's path goes to
    ``Service``, so selenium skips Selenium Manager (which would try to download a driver)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium; it is in the test extra)")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("no chromium / chromedriver on the PATH "
                    "(Debian: apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,900"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


@pytest.fixture(scope="module")
def browser():
    d = _chrome()
    yield d
    d.quit()


def _errors(d) -> list:
    return [e for e in d.get_log("browser") if e["level"] == "SEVERE"]


def _all_images_load(d) -> list:
    """Load every image of the page (lazy ones too); returns the src of those that failed."""
    d.execute_script("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; });")
    deadline = time.time() + 30
    while time.time() < deadline and not d.execute_script(
            "return [...document.images].every(i => i.complete);"):
        time.sleep(0.1)
    return d.execute_script("return [...document.images].filter(i => !(i.naturalWidth > 0))"
                            ".map(i => i.getAttribute('src'));")


def test_site_in_a_browser(browser, site):  # browser first: a skip costs no site build
    from selenium.webdriver.support.ui import Select

    d, index = browser, site / "site" / "index.html"
    d.get(index.as_uri())
    layers = list(json.loads((site / "metrics.json").read_text())["layers"])
    links = [a.text for a in d.find_elements("css selector", "table.layers a")]
    assert links == layers and _errors(d) == []

    for layer in layers:
        d.get((site / "site" / f"{layer}.html").as_uri())
        data = _data(site / "site", layer)
        assert len(d.find_elements("css selector", "#grid .card")) == len(data["units"])
        assert _all_images_load(d) == []
        assert _errors(d) == [], layer

    d.get((site / "site" / "conv2.html").as_uri())
    units = {u["unit"]: u for u in _data(site / "site", "conv2")["units"]}

    def shown() -> tuple[int, list[str]]:
        imgs = d.find_elements("css selector", "#detail img.proj, #detail img.patch")
        assert len(imgs) == 18
        unit = int(d.find_element("id", "unit").get_attribute("value"))
        return unit, [td.text for td in d.find_elements("css selector", "#detail td.value")]

    box = d.find_element("id", "unit")  # choose a unit by number
    box.clear()
    box.send_keys("5\n")
    d.execute_script("document.getElementById('unit').dispatchEvent(new Event('change'))")
    unit, values = shown()
    assert unit == 5 and len(values) == 9
    assert [float(v) for v in values] == pytest.approx(units[5]["values"], rel=2e-3, abs=1e-3)
    assert d.find_element("css selector", "#detail h2").text == "conv2 unit 5"
    d.find_element("id", "next").click()
    assert shown()[0] == 6
    d.find_element("id", "prev").click()
    d.find_element("id", "prev").click()
    assert shown()[0] == 4

    # sorting: the cards follow the order, and next / previous walk it
    Select(d.find_element("id", "sort")).select_by_value("value")
    order = [int(c.get_attribute("data-unit")) for c in d.find_elements("css selector", "#grid .card")]
    expected = sorted(units, key=lambda u: (-units[u]["values"][0], u))
    assert order == expected
    d.find_element("id", "next").click()
    assert shown()[0] == expected[(expected.index(4) + 1) % len(expected)]
    Select(d.find_element("id", "sort")).select_by_value("distinct_desc")
    order = [int(c.get_attribute("data-unit")) for c in d.find_elements("css selector", "#grid .card")]
    assert [units[u]["distinct"] for u in order] == sorted((units[u]["distinct"] for u in units),
                                                          reverse=True)
    d.find_elements("css selector", "#grid .card")[-1].click()  # a click chooses a unit
    assert shown()[0] == order[-1]
    assert _errors(d) == []


def test_site_docstring_examples_run():
    import doctest

    import zfnet_cli.webpages

    result = doctest.testmod(zfnet_cli.webpages)
    assert result.attempted >= 5 and result.failed == 0


# ---------------------------------------------------------------- any model

# A photo's file name is text from outside: the pages must show it, never run it.
HOSTILE = "<img src=x onerror=alert(1)>.jpg"


@pytest.fixture(scope="module")
def resnet_site(tmp_path_factory):
    """The README's flow, `zfnet explore --checkpoint resnet18.pth data=folder data.root=photos/`,
    on a torchvision resnet18 with seeded random weights over six photos (one named HOSTILE),
    at 64 px: two layers (a stage and a block), the first 6 units of each, top-3."""
    import torch
    import torchvision

    tmp = tmp_path_factory.mktemp("explore_resnet")
    rng = np.random.default_rng(3)
    for rel, (h, w) in {"car/a.jpg": (80, 100), "car/b.png": (64, 64), "car/c.jpg": (90, 72),
                        "pets/d.jpg": (120, 90), "pets/e.png": (70, 70),
                        f"pets/{HOSTILE}": (96, 128)}.items():
        (tmp / "photos" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp / "photos" / rel)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), tmp / "resnet18.pth")
    res = runner.invoke(app, ["explore", "--checkpoint", str(tmp / "resnet18.pth"), "data=folder",
                              f"data.root={tmp / 'photos'}", "--layer", "layer4", "--layer",
                              "layer3.1", "preprocess.input_size=64", "max_units=6", "k=3",
                              "batch_size=32", "cell=24", "progress=false",
                              f"output_root={tmp / 'out'}"])
    assert res.exit_code == 0, res.output
    return tmp, (tmp / "out" / "explore" / "latest").resolve()


def test_resnet18_site_equals_brute_force_top_k(resnet_site):
    import torch

    from zfnet_cli.loading import load_trained
    from zfnet_cli.data.sources import DataConfig, load_split

    tmp, run = resnet_site
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["layers"] == {"layer4": 512, "layer3.1": 256}
    assert metrics["units_explored"] == {"layer4": 6, "layer3.1": 6}
    assert metrics["deconvnet"] == "GraphDeconvnet" and metrics["epochs"] == []
    assert metrics["images_scanned"] == 6
    # off the paper's networks the default rule is guided backpropagation; the page says so,
    # with what conditions the projections (the ReLU masks, the stem's max-pool) and each
    # unit's image similarity
    assert metrics["rule"] == "guided" and metrics["template_layers"] == []
    for layer in ("layer4", "layer3.1"):
        data = _data(run / "site", layer)
        assert data["rule"] == "guided" and data["warning"] == ""
        assert data["conditioning"]["switches"] == 1 and data["conditioning"]["masks"] > 0
        assert all(-1 <= u["similarity"] <= 1 for u in data["units"])
        assert "guided rule" in (run / "site" / f"{layer}.html").read_text()
    # brute force: each photo through the model (read as zfnet reads it), a hook on the layer,
    # max over space, the 3 best images per unit
    loaded = load_trained(str(tmp / "resnet18.pth"), "unused", torch.device("cpu"),
                          DataConfig(name="folder", root=str(tmp / "photos")),
                          source=_source(input_size=64))
    photos = load_split(loaded.data, "val", progress=False)
    names = [Path(p).name for p, _ in photos.samples]
    x = loaded.preprocess()(torch.stack([photos[i][0] for i in range(len(photos))]))
    for layer in ("layer4", "layer3.1"):
        seen = []
        hook = dict(loaded.model.named_modules())[layer].register_forward_hook(
            lambda m, i, o: seen.append(o.detach().clone()))
        with torch.no_grad():
            loaded.model.eval()(x)
        hook.remove()
        best = seen[0].flatten(2).amax(2).T.topk(3, dim=1)  # (units, 3)
        data = _data(run / "site", layer)
        assert [u["unit"] for u in data["units"]] == list(range(6))
        for u in data["units"]:
            m = u["unit"]
            np.testing.assert_allclose(u["values"], best.values[m].numpy(), rtol=1e-4, atol=1e-5)
            assert u["images"] == [names[i] for i in best.indices[m].tolist()]
            assert set(u["classes"]) <= {"car", "pets"}
            for tile in u["proj"] + u["patch"]:
                w, h = Image.open(run / "site" / tile).size
                assert 0 < w <= 24 and 0 < h <= 24
    files = sum(1 for _ in (run / "site" / "img").rglob("*.png"))
    assert files == 2 * 6 * (3 + 3)  # layers x units x (projections + patches)


def _source(**preprocess):
    from zfnet_cli.loading import ModelSource, Preprocess

    return ModelSource(preprocess=Preprocess(**preprocess))


def test_bad_layer_name_on_a_resnet_is_one_line(resnet_site, tmp_path):
    tmp, run = resnet_site
    before = sorted((tmp / "out" / "explore").glob("20*"))
    res = runner.invoke(app, ["explore", "--checkpoint", str(tmp / "resnet18.pth"), "data=folder",
                              f"data.root={tmp / 'photos'}", "--layer", "layer3.7",
                              "preprocess.input_size=64", f"output_root={tmp / 'out'}"])
    assert res.exit_code == 1 and res.output.count("\n") == 1, res.output
    assert "unknown layer 'layer3.7'" in res.output and "layer3.1" in res.output
    assert "Traceback" not in res.output
    assert sorted((tmp / "out" / "explore").glob("20*")) == before  # the earlier run is kept


def test_a_hostile_file_name_is_data_not_markup(resnet_site):
    """The name reaches the pages' data as the plain string, and no page holds it as markup."""
    _, run = resnet_site
    listed = [n for layer in ("layer4", "layer3.1") for u in _data(run / "site", layer)["units"]
              for n in u["images"]]
    assert HOSTILE in listed  # the case is really exercised: some unit's top-3 holds that photo
    for page in (run / "site").glob("*.html"):
        assert "<img src=x" not in page.read_text(), page.name


def test_resnet_site_in_a_browser(browser, resnet_site):
    """Layer names with dots (layer3.1) make working pages: every tile loads, no errors; a
    photo named like markup is shown as its name on every unit that lists it, and runs nothing."""
    from selenium.common.exceptions import NoAlertPresentException

    _, run = resnet_site
    d = browser
    d.get((run / "site" / "index.html").as_uri())
    assert [a.text for a in d.find_elements("css selector", "table.layers a")] == [
        "layer4", "layer3.1"]
    shown_hostile = 0
    for link in [a.get_attribute("href") for a in d.find_elements("css selector", "table.layers a")]:
        d.get(link)
        assert len(d.find_elements("css selector", "#grid .card")) == 6
        assert _all_images_load(d) == [] and _errors(d) == []
        assert len(d.find_elements("css selector", "#detail img.proj, #detail img.patch")) == 6
        for i in range(6):  # every unit's detail, each listing its images by name
            d.find_elements("css selector", "#grid .card")[i].click()
            names = [td.text for td in d.find_elements("css selector", "#detail td.image")]
            shown_hostile += names.count(HOSTILE)
            assert d.execute_script("return document.querySelectorAll('img[src=\"x\"]').length") == 0
            with pytest.raises(NoAlertPresentException):
                d.switch_to.alert.text
        assert _errors(d) == []
    assert shown_hostile > 0


def test_a_template_layer_page_carries_the_warning(tmp_path):
    from zfnet_cli.sanity import template_note
    from zfnet_cli.webpages import ExplorerSite, UnitRecord

    note = template_note("deconvnet", "_blocks.8", {"switches": 0, "gates": 0, "norms": 0})
    site = ExplorerSite(tmp_path, "t")
    site.add_layer("_blocks.8", (4, 8, 8), rule="deconvnet", warning=note, threshold=0.9,
                   conditioning={"switches": 0, "gates": 0, "norms": 0})
    tile = np.zeros((5, 5, 3), np.uint8)
    site.add_unit("_blocks.8", 0, UnitRecord([1.0, 0.5], ["a", "b"], ["x", "y"], [[1, 1]] * 2,
                                             [[0, 0, 5, 5]] * 2, 0.99), [tile] * 2, [tile] * 2)
    site.finish({})
    page = (tmp_path / "_blocks.8.html").read_text()
    assert 'class="warning"' in page and "template of the unit" in page
    assert "nothing (template)" in (tmp_path / "index.html").read_text()
    assert _data(tmp_path, "_blocks.8")["units"][0]["similarity"] == 0.99
