"""The Gradio demo (zhcoder/demo.py) in real headless Chromium, over a tiny random checkpoint.

The demo runs in a subprocess through `launch()`; Selenium drives Chromium with Debian's chromedriver. Checks:
the page opens; the chat streams (the assistant's text grows in several steps); fill-in-the-middle shows the
highlighted insertion; the language switch relabels the page; the browser's Accept-Language picks the default
language; an empty message gets a friendly warning. Writes docs/demo.png. Skipped without chromium/chromedriver
(Debian: apt-get install chromium chromium-driver).

    python -m pytest tests/test_demo.py
"""

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from zhcoder.checkpoint import save_model
from zhcoder.config import ModelConfig
from zhcoder.model import QwenForCausalLM, init_weights
from zhcoder.tokenizer import Tokenizer

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)")

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "demo.png"
WAIT = 30  # seconds, the longest any one wait in the browser may take


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory):
    """The demo over a tiny random checkpoint, served by `launch()` in a subprocess; stopped afterwards."""
    folder = tmp_path_factory.mktemp("demo")
    config = ModelConfig(model_type="qwen3", vocab_size=151936, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                         torch_dtype="float32")
    model = QwenForCausalLM(config)
    init_weights(model, seed=0)
    save_model(model, folder / "model", tokenizer=Tokenizer.qwen(), chat_template=None)
    port = free_port()
    code = "import sys; from zhcoder.demo import launch; launch(model_dir=sys.argv[1], port=int(sys.argv[2]))"
    log = open(folder / "demo.log", "w+")
    server = subprocess.Popen([sys.executable, "-c", code, str(folder / "model"), str(port)], stdout=log,
                              stderr=subprocess.STDOUT, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"the demo did not start:\n{log.read()}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url, timeout=2).close()
                break
            time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@contextlib.contextmanager
def browser(url: str, language: str):
    """Headless Chromium at 1280x900 whose Accept-Language is `language`, on the loaded demo page."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                     f"--lang={language}"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"intl.accept_languages": language})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.set_page_load_timeout(WAIT)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False})
        driver.get(url)
        # the page's load event fills the model info panel in the language it picked
        wait(driver).until(lambda d: "qwen3" in d.find_element(By.ID, "model-info").text)
        assert driver.title == "zhcoder"
        yield driver
    finally:
        driver.quit()


def wait(driver, seconds: float = WAIT) -> WebDriverWait:
    # elements are looked up afresh on each poll; Gradio replaces some of them as it renders
    return WebDriverWait(driver, seconds, poll_frequency=0.1,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))


def idle(driver, element_id: str) -> bool:
    """Whether Gradio shows no event running on the component (its status tracker is hidden)."""
    tracker = driver.find_element(By.CSS_SELECTOR, f'#{element_id} [data-testid="status-tracker"]')
    return "hide" in tracker.get_attribute("class").split()


def text_of(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text.strip()


# Records each length the last assistant message has had, so the test can see it grow piece by piece.
WATCH_CHAT = """
window.lengths = new Set();
const log = document.getElementById('chatbot');
new MutationObserver(() => {
  const replies = log.querySelectorAll('[data-testid="bot"]');
  if (replies.length) window.lengths.add(replies[replies.length - 1].innerText.trim().length);
}).observe(log, {subtree: true, childList: true, characterData: true});
"""


def test_chinese_browser_chat_streams_fim_highlights_and_language_switches(demo_url):
    with browser(demo_url, "zh-CN,zh") as driver:
        wait(driver).until(lambda d: text_of(d, "send") == "发送")  # relabelled after the load event
        assert text_of(driver, "complete") == "补全"
        assert "层数" in text_of(driver, "model-info")
        tokens = driver.find_element(By.CSS_SELECTOR, "#max-new-tokens input[type=number]")
        tokens.send_keys(Keys.CONTROL, "a")
        tokens.send_keys("48", Keys.TAB)  # short replies keep the test fast

        driver.execute_script(WATCH_CHAT)
        driver.find_element(By.CSS_SELECTOR, "#message textarea").send_keys("写一个计算购物车总价的函数", Keys.ENTER)
        wait(driver).until(lambda d: "购物车" in d.find_element(By.CSS_SELECTOR, '#chatbot [data-testid="user"]').text)
        # streamed: the reply was seen at several lengths (48 new tokens, seed 0)
        wait(driver).until(lambda d: len(d.execute_script("return [...window.lengths].filter(n => n > 0)")) >= 3)
        wait(driver).until(lambda d: idle(d, "chatbot"))
        assert driver.find_element(By.CSS_SELECTOR, '#chatbot [data-testid="bot"]').text.strip()

        driver.find_element(By.CSS_SELECTOR, "#fim-examples tbody tr").click()
        prefix = driver.find_element(By.CSS_SELECTOR, "#prefix textarea")
        wait(driver).until(lambda d: "calc_payable" in prefix.get_attribute("value"))
        driver.find_element(By.ID, "complete").click()
        wait(driver).until(lambda d: d.find_element(By.ID, "fim-middle").text.strip() and idle(d, "fim-result"))
        assert driver.find_element(By.ID, "fim-middle").value_of_css_property("background-color") != "rgba(0, 0, 0, 0)"
        file_text = text_of(driver, "fim-file")
        assert file_text.startswith("def calc_payable(order, coupon=None):")
        assert file_text.endswith("return max(total - discount, 0)")

        driver.execute_script("window.scrollTo(0, 0)")
        SCREENSHOT.parent.mkdir(exist_ok=True)
        # 256 colours: a third of the size, no visible loss on a UI
        Image.open(io.BytesIO(driver.get_screenshot_as_png())).quantize(256).save(SCREENSHOT, optimize=True)

        driver.find_element(By.XPATH, "//*[@id='language']//label[contains(., 'English')]").click()
        wait(driver).until(lambda d: text_of(d, "send") == "Send")
        assert text_of(driver, "complete") == "Complete"
        assert "Layers" in text_of(driver, "model-info")
        assert "code assistant" in driver.find_element(By.TAG_NAME, "h1").text


def test_english_browser_gets_english_ui_and_a_friendly_message_for_an_empty_prompt(demo_url):
    with browser(demo_url, "en-US,en;q=0.9,zh-CN;q=0.8") as driver:
        assert text_of(driver, "send") == "Send"
        assert "Layers" in text_of(driver, "model-info")
        driver.find_element(By.ID, "send").click()
        wait(driver).until(lambda d: "Type a message first." in d.find_element(By.TAG_NAME, "body").text)
        assert not driver.find_elements(By.CSS_SELECTOR, '#chatbot [data-testid="bot"]')
