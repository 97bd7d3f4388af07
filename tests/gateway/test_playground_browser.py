"""The playground in a real browser (Debian's headless Chromium, driven by Selenium) against a real
``execbridge serve``, a real sandbox and the scripted upstream: what a person sees when they chat.

Waits are for conditions in the page (``WebDriverWait``), never for time; the one stream held open is
held by the scripted upstream until the test releases it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from execbridge.testing import FakeUpstream, Reply, Turn, last_tool_result

from .conftest import CLIENT_KEY, Gateway, serve

pytestmark = pytest.mark.browser

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a test extra (scripts/install.sh --test)")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 60  # a ceiling for a busy machine, not a pace: every wait ends as soon as its condition holds

CHART_CODE = """\
import os
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(4, 3))
ax.plot([1, 2, 3, 4], [1, 4, 9, 16])
fig.savefig(os.path.join(os.environ["OUTPUT_DIR"], "squares.png"))
print("saved")
"""

HOSTILE = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"><b>bold</b>'


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/install.sh --test)")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, condition: Any) -> Any:
    return WebDriverWait(driver, WAIT_S).until(condition)


def open_page(driver: Any, url: str, key: str | None) -> None:
    """Load the playground; type ``key`` when the page asks for one; wait for the model list."""
    driver.get(f"{url}/playground")
    wait(driver, lambda d: d.execute_script("return document.body.dataset.ready === 'true'"))
    if key is not None and driver.find_element(By.ID, "key-form").is_displayed():
        driver.find_element(By.ID, "api-key").send_keys(key, Keys.ENTER)
    wait(driver, lambda d: d.find_element(By.ID, "model").get_attribute("value"))


@pytest.fixture
def page(browser: Any, gateway: Gateway, fake: FakeUpstream) -> Any:
    browser.get("about:blank")
    open_page(browser, gateway.url, CLIENT_KEY)
    return browser


def say(driver: Any, text: str, *, ctrl: bool = False) -> None:
    """Type a message and send it with Enter (or Ctrl+Enter)."""
    keys = (Keys.CONTROL, Keys.ENTER, Keys.NULL) if ctrl else (Keys.ENTER,)
    driver.find_element(By.ID, "prompt").send_keys(text, *keys)


def last_answer(driver: Any) -> Any:
    return driver.find_elements(By.CSS_SELECTOR, "article.assistant")[-1]


def answered(driver: Any) -> Any:
    """The last answer once it is finished (its stream ended without an error)."""

    def done(d: Any) -> Any:
        answers = d.find_elements(By.CSS_SELECTOR, "article.assistant")
        return answers and answers[-1].get_attribute("data-state") == "done" and answers[-1]

    return wait(driver, done)


def test_the_page_is_served_under_its_content_security_policy(gateway: Gateway, browser: Any) -> None:
    response = httpx.get(f"{gateway.url}/playground")  # no key
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "unsafe-inline" not in policy
    # And the browser enforces it: a script element with inline code does not run.
    open_page(browser, gateway.url, CLIENT_KEY)
    browser.execute_script(
        "const s = document.createElement('script'); s.textContent = 'window.inlineRan = true';document.body.append(s);"
    )
    assert browser.execute_script("return window.inlineRan === undefined")


def test_a_chart_drawn_by_the_code_shows_as_an_image(page: Any, fake: FakeUpstream) -> None:
    fake.reset([Turn.text("Drawing it.").call("code_execution", code=CHART_CODE), Turn.text("There it is.")])
    say(page, "Plot the squares of 1 to 4.")
    answer = answered(page)
    image = wait(
        page,
        lambda d: d.execute_script(
            "const img = document.querySelector('article.assistant img.output-image');"
            "return img && img.complete && img.naturalWidth > 0 && img;"
        ),
    )
    assert image.get_attribute("src").startswith("blob:")  # the page's own checked copy
    assert image.get_attribute("alt") == "squares.png"
    assert "image/png" in answer.find_element(By.CSS_SELECTOR, "figcaption").text
    assert "saved" in answer.find_element(By.CSS_SELECTOR, ".stdout").text
    assert "There it is." in answer.text
    container = page.find_element(By.ID, "container-id").text
    assert container.startswith("container_")
    assert "squares.png" in page.find_element(By.ID, "container-files").text
    tools = fake.chat_requests[0]["tools"]
    assert any(tool["function"]["name"] == "code_execution" for tool in tools)  # the chosen version's Python


def test_an_upload_reaches_the_container(page: Any, fake: FakeUpstream, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("the treasure is under the third palm tree\n")
    fake.reset(
        [
            Turn.tool_call("bash_code_execution", command="cat /workspace/notes.txt"),
            Turn.text("It is about a treasure."),
        ]
    )
    page.find_element(By.ID, "file-input").send_keys(str(notes))
    attachments = page.find_element(By.ID, "attachments")
    wait(page, lambda d: attachments.text.startswith("notes.txt") and "uploading" not in attachments.text)
    say(page, "What does my file say?")
    answer = answered(page)
    assert "the treasure is under the third palm tree" in answer.find_element(By.CSS_SELECTOR, ".stdout").text
    assert "/workspace/notes.txt" in str(fake.chat_requests[0]["messages"][-1])  # the model was told where
    files = page.find_element(By.ID, "container-files").text
    assert "notes.txt" in files and "uploaded" in files


def test_a_streamed_answer_appears_before_it_is_finished(page: Any, fake: FakeUpstream) -> None:
    release = threading.Event()

    def held(request: dict[str, Any]) -> Reply:
        # Runs in the fake upstream's thread: the gateway's second model call waits here until the test
        # has seen the first part in the page (bounded, so a failed test cannot hang the run).
        release.wait(WAIT_S)
        return Turn.text("Second part, after the release.")

    fake.reset([Turn.text("First part, streamed.").call("bash_code_execution", command="echo step one"), held])
    try:
        say(page, "Go.")
        answer = wait(
            page,
            lambda d: (a := last_answer(d)).find_elements(By.CSS_SELECTOR, ".stdout") and a,
        )
        assert answer.get_attribute("data-state") == "streaming"
        assert "First part, streamed." in answer.text
        assert "step one" in answer.find_element(By.CSS_SELECTOR, ".stdout").text
        assert "Second part" not in answer.text
    finally:
        release.set()
    answer = answered(page)
    assert "Second part, after the release." in answer.text


def test_stop_ends_an_answer_while_it_streams(page: Any, fake: FakeUpstream) -> None:
    release = threading.Event()

    def held(request: dict[str, Any]) -> Reply:
        release.wait(WAIT_S)
        return Turn.text("Never shown.")

    fake.reset([Turn.text("Starting.").call("bash_code_execution", command="echo begun"), held])
    try:
        say(page, "Go.")
        answer = wait(page, lambda d: (a := last_answer(d)).find_elements(By.CSS_SELECTOR, ".stdout") and a)
        page.find_element(By.ID, "stop").click()
        wait(page, lambda d: answer.get_attribute("data-state") == "failed")
    finally:
        release.set()
    assert "Stopped." in answer.text and "Never shown." not in answer.text
    assert page.find_element(By.ID, "send").is_enabled() and not page.find_element(By.ID, "stop").is_displayed()


def test_model_and_program_output_stay_text(page: Any, fake: FakeUpstream) -> None:
    make_files = (
        "printf '%s' '<svg xmlns=\"http://www.w3.org/2000/svg\"><script>window.pwned=3</script></svg>'"
        " > $OUTPUT_DIR/x.svg;"
        " printf '%s' '<html><script>window.pwned=4</script></html>' > $OUTPUT_DIR/fake.png;"
        f" printf '%s' {shlex.quote(HOSTILE)}"
    )
    fake.reset([Turn.text(HOSTILE).call("bash_code_execution", command=make_files), Turn.text("end " + HOSTILE)])
    say(page, "Be hostile.")
    answer = answered(page)
    wait(page, lambda d: len(d.find_elements(By.CSS_SELECTOR, "article.assistant figure.output-file")) == 2)
    texts = [block.text for block in answer.find_elements(By.CSS_SELECTOR, ".block.text")]
    assert texts == [HOSTILE, "end " + HOSTILE]  # shown as the characters the model wrote
    assert answer.find_element(By.CSS_SELECTOR, ".stdout pre").text == HOSTILE
    counts = page.execute_script(
        "const c = document.getElementById('conversation');"
        "return [c.querySelectorAll('script').length, c.querySelectorAll('img').length,"
        " c.querySelectorAll('b, svg, iframe, object, embed').length, window.pwned === undefined];"
    )
    assert counts == [0, 0, 0, True]  # no element came from the output, no image from either file
    captions = " ".join(f.text for f in answer.find_elements(By.CSS_SELECTOR, "figure.output-file"))
    assert "not shown" in captions  # fake.png: named and typed as a PNG, but its bytes are not one
    assert "Download x.svg" in captions and "Download fake.png" in captions  # only offered as downloads


def test_markdown_is_drawn_with_elements_the_page_chooses(page: Any, fake: FakeUpstream) -> None:
    text = (
        "# Result\n\nThe **answer** is `42`.\n\n- one\n- two <img src=x onerror=alert(1)>\n\n"
        "```python\nprint('<b>hi</b>')\n```\n[a link](javascript:alert(1))"
    )
    fake.reset([Turn.text(text)])
    say(page, "Format it.", ctrl=True)
    block = answered(page).find_element(By.CSS_SELECTOR, ".block.text")
    assert block.find_element(By.CSS_SELECTOR, ".heading").text == "Result"
    assert block.find_element(By.CSS_SELECTOR, "strong").text == "answer"
    assert block.find_element(By.CSS_SELECTOR, "p code").text == "42"
    items = [item.text for item in block.find_elements(By.CSS_SELECTOR, "ul li")]
    assert items == ["one", "two <img src=x onerror=alert(1)>"]
    assert block.find_element(By.CSS_SELECTOR, "pre.code").text == "print('<b>hi</b>')"
    assert "[a link](javascript:alert(1))" in block.text  # a link stays its characters: no href from a model
    assert block.find_elements(By.CSS_SELECTOR, "a, img, b, script") == []


def test_the_editor_shows_what_it_wrote_its_diff_and_its_view(page: Any, fake: FakeUpstream) -> None:
    Select(page.find_element(By.ID, "tool-version")).select_by_value("code_execution_20250825")
    editor = "text_editor_code_execution"
    fake.reset(
        [
            Turn.tool_call(editor, command="create", path="notes.md", file_text="alpha\nbeta\n")
            .call(editor, command="str_replace", path="notes.md", old_str="beta", new_str="gamma")
            .call(editor, command="view", path="notes.md"),
            Turn.text("Edited."),
        ]
    )
    say(page, "Write and edit a note.")
    answer = answered(page)
    calls = [
        call.find_element(By.CSS_SELECTOR, ".call-title").text
        for call in answer.find_elements(By.CSS_SELECTOR, ".call")
    ]
    assert calls == ["editor: create notes.md", "editor: str_replace notes.md", "editor: view notes.md"]
    results = answer.find_elements(By.CSS_SELECTOR, ".result")
    assert "File created" in results[0].text
    assert [s.text for s in results[1].find_elements(By.CSS_SELECTOR, ".diff span")] == ["-beta", "+gamma"]
    assert [s.get_attribute("class") for s in results[1].find_elements(By.CSS_SELECTOR, ".diff span")] == ["del", "add"]
    assert results[2].find_element(By.CSS_SELECTOR, "pre").text == "alpha\ngamma"
    offered = {tool["function"]["name"] for tool in fake.chat_requests[0]["tools"]}
    assert offered == {"bash_code_execution", editor}  # the version chosen in the page: no Python


def test_the_conversation_keeps_its_container_until_a_new_one_is_asked_for(page: Any, fake: FakeUpstream) -> None:
    def run(command: str) -> tuple[str, str]:
        fake.reset([Turn.tool_call("bash_code_execution", command=command), Turn.text("ok")])
        say(page, f"Run {command}")
        wait(page, lambda d: len(d.find_elements(By.CSS_SELECTOR, "article.assistant")) > answers and answered(d))
        stdout = last_answer(page).find_element(By.CSS_SELECTOR, ".stdout").text
        return page.find_element(By.ID, "container-id").text, stdout

    answers = 0
    first, _ = run("echo kept > kept.txt && echo made")
    answers = 1
    again, listing = run("ls -a")
    assert again == first and "kept.txt" in listing  # the second message went to the same container
    page.find_element(By.ID, "new-container").click()
    answers = 2
    fresh, listing = run("ls -a")
    assert fresh.startswith("container_") and fresh != first
    assert "kept.txt" not in listing


def test_client_tools_show_the_call_and_take_the_persons_result(page: Any, fake: FakeUpstream) -> None:
    tools = '[{"name": "lookup_weather", "description": "Weather in a city", "input_schema": {"type": "object"}}]'
    page.find_element(By.CSS_SELECTOR, "#side details summary").click()
    page.find_element(By.ID, "client-tools").send_keys(tools)
    fake.reset(
        [
            Turn.tool_call("lookup_weather", city="Paris"),
            lambda request: Turn.text(f"The tool said: {last_tool_result(request)}"),
        ]
    )
    say(page, "Weather in Paris?")
    answer = answered(page)
    assert answer.get_attribute("data-stop-reason") == "tool_use"
    call = answer.find_element(By.CSS_SELECTOR, ".call.client")
    assert "lookup_weather" in call.text and '"city": "Paris"' in call.text
    answer.find_element(By.CSS_SELECTOR, "textarea.tool-result").send_keys("sunny, 21 °C", Keys.ENTER)
    wait(page, lambda d: "The tool said: sunny, 21 °C" in last_answer(d).text and last_answer(d) != answer)
    assert answered(page).get_attribute("data-stop-reason") == "end_turn"
    sent = fake.chat_requests[1]["messages"]
    assert sent[-1]["role"] == "tool" and sent[-1]["content"] == "sunny, 21 °C"


def test_a_paused_turn_continues_on_request(page: Any, fake: FakeUpstream) -> None:
    # The gateway of these tests pauses after 3 rounds of server calls (EXECBRIDGE_MAX_ITERATIONS).
    rounds = [Turn.tool_call("bash_code_execution", command=f"echo round {n}") for n in (1, 2, 3)]
    fake.reset([*rounds, Turn.text("All rounds finished.")])
    say(page, "Work for a while.")
    answer = answered(page)
    assert answer.get_attribute("data-stop-reason") == "pause_turn"
    answer.find_element(By.CSS_SELECTOR, "button.continue").click()
    wait(page, lambda d: last_answer(d) != answer and last_answer(d).get_attribute("data-state") == "done")
    assert "All rounds finished." in last_answer(page).text
    assert fake.remaining == 0


def test_a_paused_turn_can_continue_by_itself(page: Any, fake: FakeUpstream) -> None:
    page.find_element(By.CSS_SELECTOR, "#side details summary").click()
    page.find_element(By.ID, "auto-continue").click()
    rounds = [Turn.tool_call("bash_code_execution", command=f"echo round {n}") for n in (1, 2, 3)]
    fake.reset([*rounds, Turn.text("Finished without a click.")])
    say(page, "Work for a while.")
    wait(page, lambda d: "Finished without a click." in last_answer(d).text)
    answers = page.find_elements(By.CSS_SELECTOR, "article.assistant")
    assert [a.get_attribute("data-stop-reason") for a in answers] == ["pause_turn", "end_turn"]
    assert "continuing automatically" in answers[0].text
    continuation = fake.chat_requests[-1]["messages"]
    assert continuation[-1]["role"] == "tool" and "round 3" in continuation[-1]["content"]  # no new user turn


def test_an_upstream_error_is_shown_in_the_apis_own_words(page: Any, fake: FakeUpstream) -> None:
    fake.reset([Turn.error(400, "This endpoint does not accept prompts about llamas")])
    say(page, "Tell me about llamas.")
    failed = wait(page, lambda d: last_answer(d).get_attribute("data-state") == "failed" and last_answer(d))
    error = failed.find_element(By.CSS_SELECTOR, ".block.error").text
    assert "invalid_request_error" in error and "llamas" in error
    assert "request req_" in error


def test_a_refused_key_is_asked_for_again_with_the_apis_words(page: Any, gateway: Gateway) -> None:
    page.execute_script("sessionStorage.setItem('execbridge.playground.key', 'dapi-not-a-real-token')")
    page.refresh()
    form = page.find_element(By.ID, "key-form")
    wait(page, lambda d: form.is_displayed())
    assert "401 authentication_error" in page.find_element(By.ID, "status").text
    assert page.find_element(By.ID, "api-key").get_attribute("type") == "password"
    page.find_element(By.ID, "api-key").send_keys(CLIENT_KEY, Keys.ENTER)
    wait(page, lambda d: d.find_element(By.ID, "model").get_attribute("value") == "fake-model")
    assert not form.is_displayed()
    assert page.execute_script("return sessionStorage.getItem('execbridge.playground.key')") == CLIENT_KEY


def test_an_open_loopback_gateway_asks_for_no_key(
    browser: Any, fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # The gateway holds the upstream key and has no keys of its own: on loopback it admits everyone.
    with serve(
        fake_upstream, tmp_path_factory.mktemp("open-gateway"), EXECBRIDGE_UPSTREAM_API_KEY=CLIENT_KEY
    ) as open_gateway:
        # A new port is a new origin: the page starts with no key in its sessionStorage.
        open_page(browser, open_gateway.url, key=None)
        assert not browser.find_element(By.ID, "key-form").is_displayed()
        assert browser.find_element(By.ID, "model").get_attribute("value") == "fake-model"
