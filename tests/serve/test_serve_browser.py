"""The search page in a real browser: Debian's chromium driven by chromium-driver
(selenium) against the service on 127.0.0.1. Uploading a built-in dataset image shows
k thumbnails whose ids are the index's own answer; clicking one searches with it.
A screenshot is kept in $WSDHASH_TEST_ARTIFACTS (default: pytest's temporary folder)."""

import os
import shutil
import socket
import tempfile
import threading
import time

import pytest

from wsdhash.service.app import create_app

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
]
WAIT_S = 600  # a loaded CI machine: the page's search runs the model on 2 shared cores


def _browser_paths():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or shutil.which("chromium-driver")
    if not browser or not driver:
        pytest.skip(
            "no browser: Debian's chromium and chromium-driver are not installed "
            "(.ci/run installs them: apt-get install -y chromium chromium-driver)"
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    return browser, driver


@pytest.fixture
def server(engine):
    """The service in a thread of this process, on a free 127.0.0.1 port."""
    import uvicorn

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app(engine), log_level="warning", access_log=False)
    service = uvicorn.Server(config)
    thread = threading.Thread(target=service.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not service.started:  # listening: the browser must not connect before
        assert thread.is_alive() and time.monotonic() < deadline, "the service did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    finally:
        service.should_exit = True
        thread.join()
        listener.close()


@pytest.fixture
def browser(tmp_path):
    chromium, chromedriver = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    try:
        yield driver
    finally:
        driver.quit()


def _wait_for_results(driver, count):
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(d):
        state = d.find_element("tag name", "body").get_attribute("data-state")
        if state == "error":
            raise AssertionError(d.find_element("id", "error").text)
        figures = d.find_elements("css selector", "#results .result")
        loaded = d.execute_script(
            "return [...document.querySelectorAll('#results img')]"
            ".every((i) => i.complete && i.naturalWidth > 0)"
        )
        return state == "done" and len(figures) == count and loaded

    WebDriverWait(driver, WAIT_S).until(ready)
    return driver.find_elements("css selector", "#results .result")


def _artifacts(tmp_path_factory) -> str:
    folder = os.environ.get("WSDHASH_TEST_ARTIFACTS") or str(
        tmp_path_factory.getbasetemp() / "artifacts"
    )
    os.makedirs(folder, exist_ok=True)
    return folder


def test_the_page_shows_the_indexs_answer_and_searches_a_clicked_result(
    browser, server, engine, served_files, tmp_path_factory
):
    from selenium.webdriver.support.ui import Select, WebDriverWait

    _, images, _, _ = served_files
    query = os.path.join(images, sorted(os.listdir(images))[7])
    with open(query, "rb") as f:
        expected = engine.direct_search([f.read()], 10)
    browser.get(server)
    WebDriverWait(browser, WAIT_S).until(
        lambda d: "bits" in d.find_element("id", "info").text  # /info answered
    )
    assert Select(browser.find_element("id", "k")).first_selected_option.text == "10"
    browser.find_element("id", "file").send_keys(query)
    figures = _wait_for_results(browser, 10)
    positions = [int(f.get_attribute("data-position")) for f in figures]
    assert positions == expected.positions[0].tolist()
    assert [f.get_attribute("data-id") for f in figures] == [
        str(engine.index.ids[p]) for p in positions
    ]
    captions = [f.find_element("css selector", ".distance").text for f in figures]
    assert captions == [f"{d} bits" for d in expected.distances[0]]
    assert browser.find_element("id", "query").get_attribute("naturalWidth") != "0"
    screenshot = os.path.join(_artifacts(tmp_path_factory), "serve_page.png")
    assert browser.save_screenshot(screenshot)
    print(f"screenshot: {screenshot}")

    # Clicking a result searches with that database image.
    clicked = positions[4]
    figures[4].click()
    WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_element("id", "query-name").text == engine.item_path(clicked)
    )
    with open(engine.item_file(clicked), "rb") as f:
        again = engine.direct_search([f.read()], 10)
    figures = _wait_for_results(browser, 10)
    assert [int(f.get_attribute("data-position")) for f in figures] == again.positions[0].tolist()
