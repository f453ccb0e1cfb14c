"""The `tmv serve` page in real Chromium (Selenium + Debian's chromium and chromedriver) against a real
`tmv serve` process on 127.0.0.1: text query, image upload, "more like this", image->text, full image,
keyboard, a bad upload's error, escaping, phone width. Screenshots of the results go to the test's tmp
folder (the paths are printed; `pytest -s` shows them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers.serving import HOSTILE_CAPTION, HOSTILE_NAME, ServerProcess, build_index

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Chromium and chromedriver (Debian: apt-get install chromium "
                                       "chromium-driver; examples/setup.sh installs them)")


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("browser")
    folder, images = build_index(root, tiny_checkpoint)
    process = ServerProcess("--index", str(folder), "--thumbs", str(root / "thumbs"))
    yield process.url, images, root
    process.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def wait(driver, condition, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def open_page(driver, url: str) -> None:
    driver.set_window_size(1280, 900)
    driver.get(url)
    wait(driver, lambda d: "images" in d.find_element("css selector", "#info summary").text)


def cards(driver):
    return driver.find_elements("css selector", "#grid figure")


def status(driver) -> str:
    return driver.find_element("id", "status").text


def upload(driver, path: Path) -> None:
    driver.find_element("id", "file").send_keys(str(path))


def show_weaker(driver) -> int:
    """Unfold the weaker results (if any were folded); returns how many were."""
    button = driver.find_element("id", "weaker")
    if not button.is_displayed():
        return 0
    folded = int(button.text.split()[1])
    button.click()
    wait(driver, lambda d: not d.find_element("id", "weaker").is_displayed())
    return folded


def api_search(url: str, query: str) -> dict:
    import json
    import urllib.parse
    import urllib.request

    with urllib.request.urlopen(f"{url}api/search?" + urllib.parse.urlencode({"q": query})) as response:
        return json.load(response)


def test_text_query_shows_thumbnails_captions_and_escaped_names(server, browser, tmp_path):
    from selenium.webdriver.common.keys import Keys

    url, images, _ = server
    open_page(browser, url)
    summary = browser.find_element("css selector", "#info summary").text
    assert summary == "Index: 9 images, 3 captions"
    browser.find_element("tag name", "body").send_keys("/")  # keyboard: / focuses the query box
    assert browser.switch_to.active_element.get_attribute("id") == "q"
    browser.switch_to.active_element.send_keys("red + square", Keys.ENTER)
    wait(browser, lambda d: len(cards(d)) == 9 and "for red + square" in status(d))
    show_weaker(browser)
    wait(browser, lambda d: "9 images for red + square" in status(d))
    # every thumbnail decoded (naturalWidth > 0), scores shown
    wait(browser, lambda d: d.execute_script(
        "return [...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth > 0)"))
    assert all("·" in c.find_element("css selector", ".score").text for c in cards(browser))
    assert not browser.find_element("id", "query-image").is_displayed()  # a text query has no query image
    names = [c.find_element("tag name", "figcaption").text for c in cards(browser)]
    assert any(HOSTILE_NAME in name for name in names)  # shown as text...
    captions = [li.text for li in browser.find_elements("css selector", "#caption-list li")]
    assert len(captions) == 3 and any(HOSTILE_CAPTION in c for c in captions)
    assert browser.execute_script("return window.pwned === undefined")  # ...never run as markup
    shot = tmp_path / "results-desktop.png"
    browser.save_screenshot(str(shot))
    print(f"\nscreenshot: {shot}")

    browser.set_window_size(390, 844)  # a phone: two columns, nothing wider than the screen
    wait(browser, lambda d: d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"))
    columns = browser.execute_script(
        "return getComputedStyle(document.getElementById('grid')).gridTemplateColumns.split(' ').length")
    assert columns == 2
    shot = tmp_path / "results-phone.png"
    browser.save_screenshot(str(shot))
    print(f"screenshot: {shot}")


def test_image_upload_more_like_this_and_full_image(server, browser, tmp_path):
    from selenium.webdriver.common.keys import Keys

    url, images, _ = server
    open_page(browser, url)
    upload(browser, images / "blue.png")
    wait(browser, lambda d: "images for image blue.png" in status(d))
    first = cards(browser)[0]
    assert first.find_element("tag name", "figcaption").text.endswith("blue.png")
    assert "1.000" in first.find_element("css selector", ".score").text
    assert browser.find_element("id", "query-image").is_displayed()
    shot = tmp_path / "results-image-query.png"
    browser.save_screenshot(str(shot))
    print(f"\nscreenshot: {shot}")

    show_weaker(browser)
    cards(browser)[1].find_element("css selector", ".like").click()  # "more like this" on the second hit
    wait(browser, lambda d: " images for more like" in status(d))
    liked = status(browser).rsplit("more like ", 1)[1].split(" · ")[0]
    assert cards(browser)[0].find_element("tag name", "figcaption").text.endswith(liked)
    assert "1.000" in cards(browser)[0].find_element("css selector", ".score").text

    cards(browser)[0].find_element("css selector", ".open").click()  # the full image, by id
    wait(browser, lambda d: d.execute_script(
        "const i = document.getElementById('full'); return document.getElementById('viewer').open && "
        "i.complete && i.naturalWidth === 48"))
    assert liked in browser.find_element("id", "full-label").text
    browser.save_screenshot(str(tmp_path / "full-image.png"))
    browser.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
    wait(browser, lambda d: d.find_element("id", "viewer").get_attribute("data-index") == "1")
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait(browser, lambda d: not d.execute_script("return document.getElementById('viewer').open"))


def test_image_to_text(server, browser):
    from selenium.webdriver.support.ui import Select

    url, images, _ = server
    open_page(browser, url)
    Select(browser.find_element("id", "kind")).select_by_value("captions")
    upload(browser, images / "green.png")
    wait(browser, lambda d: status(d) == "3 captions for image green.png")
    assert len(browser.find_elements("css selector", "#caption-list li")) == 3
    assert cards(browser) == [] and browser.find_element("id", "captions").is_displayed()


def test_bad_upload_shows_an_error(server, browser):
    url, _, root = server
    fake = root / "not-really.png"
    fake.write_bytes(b"this is text, not a PNG")
    open_page(browser, url)
    upload(browser, fake)
    wait(browser, lambda d: "error" in d.find_element("id", "status").get_attribute("class"))
    assert status(browser) == "error: the upload is not an image: send a JPEG, PNG, WebP, HEIC, AVIF, GIF, BMP or TIFF file"
    assert browser.find_element("id", "status").get_attribute("role") == "alert"


def test_the_address_holds_the_search(server, browser):
    """/?q=... runs that search on load; each search gets its own address, and back / forward restore
    the searches (query box, filters and results) without reloading the page."""
    from selenium.webdriver.common.keys import Keys

    url, _, _ = server
    browser.set_window_size(1280, 900)
    browser.get(url + "?q=a+plain+blue+square")
    wait(browser, lambda d: "for a plain blue square" in status(d))
    assert browser.find_element("id", "q").get_attribute("value") == "a plain blue square"
    assert len(cards(browser)) == 9
    browser.execute_script("window.sameDocument = true")  # gone if anything below reloads the page
    box = browser.find_element("id", "q")
    box.clear()
    box.send_keys("green", Keys.ENTER)
    wait(browser, lambda d: "for green" in status(d) and d.current_url == url + "?q=green")
    browser.find_element("id", "folder").send_keys("nowhere")
    box.clear()
    box.send_keys("red", Keys.ENTER)
    wait(browser, lambda d: status(d) == "no images match red, in nowhere")
    assert browser.current_url == url + "?q=red&folder=nowhere"
    browser.back()
    wait(browser, lambda d: "for green" in status(d) and d.find_element("id", "q").get_attribute("value") == "green")
    assert browser.find_element("id", "folder").get_attribute("value") == ""
    browser.back()
    wait(browser, lambda d: "for a plain blue square" in status(d))
    browser.forward()
    browser.forward()
    wait(browser, lambda d: status(d) == "no images match red, in nowhere")
    assert browser.find_element("id", "folder").get_attribute("value") == "nowhere"
    assert browser.execute_script("return window.sameDocument === true")


def test_weaker_results_are_folded_and_captions_sit_beside_the_grid(server, browser, tmp_path):
    url, _, _ = server
    expected = api_search(url, "red square")  # the server's own cut-off for this query
    weak = [r for r in expected["results"] if r["score"] < expected["cutoff"]]
    assert 0 < len(weak) < 9  # half-way from the median up to the best: some, never all, fall below
    browser.set_window_size(1400, 900)
    browser.get(url + "?q=red+square")
    wait(browser, lambda d: status(d) == f"{9 - len(weak)} images for red square · {len(weak)} weaker hidden")
    visible = [c for c in cards(browser) if c.is_displayed()]
    assert len(visible) == 9 - len(weak)
    assert browser.find_element("id", "weaker").text == f"Show {len(weak)} weaker result" + "s" * (len(weak) > 1)
    grid = browser.find_element("id", "grid").rect
    captions = browser.find_element("id", "captions").rect
    assert captions["x"] >= grid["x"] + grid["width"] and abs(captions["y"] - grid["y"]) < 80  # beside, not below
    browser.save_screenshot(str(tmp_path / "wide.png"))
    assert show_weaker(browser) == len(weak)
    assert all(c.is_displayed() for c in cards(browser)) and status(browser) == "9 images for red square"
    browser.set_window_size(700, 900)  # narrow: the captions go below the grid
    wait(browser, lambda d: d.find_element("id", "captions").rect["y"] > d.find_element("id", "grid").rect["y"]
         + d.find_element("id", "grid").rect["height"] - 1)


@pytest.fixture(scope="module")
def library_server(tmp_path_factory, tiny_checkpoint):
    """Three photos, one of them imported twice (a byte copy in another folder)."""
    from PIL import Image
    from skimage import data
    from tinymvlm.index import Index

    from tinymvlm.inference.runtime import Runtime

    root = tmp_path_factory.mktemp("library-browser")
    photos = root / "photos"
    (photos / "again").mkdir(parents=True)
    Image.fromarray(data.astronaut()).save(photos / "astronaut.jpg")
    shutil.copyfile(photos / "astronaut.jpg", photos / "again" / "astronaut.jpg")
    Image.fromarray(data.coffee()).save(photos / "coffee.jpg")
    with Index(root / "index", checkpoint=tiny_checkpoint, runtime=Runtime(device="cpu")) as index:
        index.add([photos], runtime=Runtime(workers=0, device="cpu"))
    process = ServerProcess("--index", str(root / "index"), "--thumbs", str(root / "thumbs"))
    yield process.url, photos
    process.stop()


def test_duplicates_view_and_similar_counts(library_server, browser, tmp_path):
    pytest.importorskip("skimage", reason="scikit-image's sample photos (a dev dependency)")
    url, photos = library_server
    browser.set_window_size(1280, 900)
    browser.get(url + "?view=duplicates")  # the view has an address too
    wait(browser, lambda d: status(d) == "1 group of near-duplicates, 1 extra copy")
    figures = browser.find_elements("css selector", "#dupe-groups figure")
    assert [f.find_element("tag name", "figcaption").get_attribute("title") for f in figures] == [
        str(photos / "again" / "astronaut.jpg"), str(photos / "astronaut.jpg")]  # same size and date: first path
    assert "keep" in figures[0].text and "keep" not in figures[1].text
    assert not browser.find_element("id", "results").is_displayed()
    browser.save_screenshot(str(tmp_path / "duplicates.png"))
    box = browser.find_element("id", "q")
    box.send_keys("a photo\n")
    wait(browser, lambda d: "for a photo" in status(d))
    show_weaker(browser)
    similar = {c.find_element("tag name", "figcaption").get_attribute("title"): c.find_elements("css selector", ".similar")
               for c in cards(browser)}
    assert {path: [b.text for b in buttons] for path, buttons in similar.items()} == {
        str(photos / "astronaut.jpg"): ["1 similar photo"], str(photos / "again" / "astronaut.jpg"): ["1 similar photo"],
        str(photos / "coffee.jpg"): []}
    similar[str(photos / "astronaut.jpg")][0].click()  # that photo's group alone
    wait(browser, lambda d: status(d) == "1 group of near-duplicates, 1 extra copy" and "view=duplicates&of=" in d.current_url)
    browser.back()
    wait(browser, lambda d: "for a photo" in status(d) and d.find_element("id", "results").is_displayed())
