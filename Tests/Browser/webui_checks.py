#!/usr/bin/env python3
"""Drives the chat page of `lmdeploy serve gradio` in headless Chromium (Debian's chromium +
chromium-driver, Python selenium), as a user would: keyboard first. Run by
Tests/ServeTests/WebUIBrowserTests.swift, which starts the servers and compares what this script
reads from the page with the engine's own answers.

usage: webui_checks.py CONFIG_JSON
  CONFIG_JSON: {"local": URL, "restful": URL, "fake": URL, "artifacts": DIR}
Prints progress lines, then one JSON line with everything read from the pages.
"""
import json
import os
import shutil
import sys
import time

CHROMIUM = os.environ.get("LMDEPLOY_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LMDEPLOY_CHROMEDRIVER", "/usr/bin/chromedriver")

try:
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException, TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError as e:
    sys.exit(f"selenium is not installed in this Python ({sys.executable}): {e}; run Scripts/bootstrap")
for path in (CHROMIUM, CHROMEDRIVER):
    if not (os.path.exists(path) or shutil.which(path)):
        sys.exit(f"{path} is missing: run Scripts/bootstrap (it installs Debian's chromium and chromium-driver)")

config = json.loads(sys.argv[1])
# The two tabs' conversations (WebUIBrowserTests.swift replays them on the engine).
TAB_A = config["tab_a"]
TAB_B = config["tab_b"]
SYSTEM_PROMPT = config["system_prompt"]
ARTIFACTS = config["artifacts"]
os.makedirs(ARTIFACTS, exist_ok=True)
results = {}
T0 = time.monotonic()


def log(*args):
    print(f"[{time.monotonic() - T0:6.2f}s]", *args, flush=True)


def make_driver():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
                "--disable-extensions", "--no-first-run", "--disable-background-networking", "--disable-renderer-backgrounding",
                "--disable-background-timer-throttling", "--disable-backgrounding-occluded-windows"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    return driver


def wait(driver, condition, timeout=60, what="condition"):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.02).until(lambda d: condition(d))
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def js(driver, script, *args):
    return driver.execute_script(script, *args)


def open_page(driver, url):
    driver.get(url)
    wait(driver, lambda d: js(d, "return document.body.dataset.ready === 'true'"), 30, "the page to load /webui/info")
    # Records every change of the last answer while it streams (to see it arrive piece by piece).
    js(driver, """
      window.__streamLog = [];
      new MutationObserver(() => {
        const items = document.querySelectorAll('#transcript .msg.assistant');
        const last = items[items.length - 1];
        if (last) window.__streamLog.push([last.getAttribute('aria-busy') === 'true', last.querySelector('.body').textContent.length]);
      }).observe(document.getElementById('transcript'), {subtree: true, childList: true, characterData: true, attributes: true});
    """)


def set_number(driver, element_id, value):
    el = driver.find_element(By.ID, element_id)
    el.send_keys(Keys.CONTROL, "a")
    el.send_keys(str(value))


def greedy(driver, max_tokens):
    """Keyboard only: Home puts a slider at its minimum (temperature 0 = greedy)."""
    driver.find_element(By.ID, "temperature").send_keys(Keys.HOME)
    set_number(driver, "max-new-tokens", max_tokens)


def state(driver):
    return js(driver, "return document.body.dataset.state || 'idle'")


def answers(driver):
    return js(driver, """
      return [...document.querySelectorAll('#transcript .msg.assistant')].map(m => ({
        raw: m.dataset.raw, finish: m.dataset.finish, tokens: Number(m.dataset.tokens),
        history: Number(m.dataset.historyTokens), first_token_ms: m.dataset.firstTokenMs ? Number(m.dataset.firstTokenMs) : null,
        text: m.querySelector('.body').textContent}));
    """)


def ask(driver, text, wait_done=True, timeout=60):
    box = driver.find_element(By.ID, "prompt")
    box.click()
    box.send_keys(text)
    count = len(driver.find_elements(By.CSS_SELECTOR, "#transcript .msg.assistant"))
    box.send_keys(Keys.ENTER)
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#transcript .msg.assistant")) == count + 1, 10, "the answer to start")
    if wait_done:
        wait(driver, lambda d: state(d) == "idle", timeout, f"the answer to {text!r}")
        return answers(driver)[-1]
    return None


def streamed(driver):
    """How many distinct lengths the last answer showed while it was still streaming."""
    log_ = js(driver, "const l = window.__streamLog; window.__streamLog = []; return l;")
    return len({n for busy, n in log_ if busy and n > 0})


def console_problems(driver):
    entries = driver.get_log("browser")
    return [e["message"] for e in entries
            if e["level"] == "SEVERE" and ("Content Security Policy" in e["message"] or "Uncaught" in e["message"] or "Refused" in e["message"])]


def conversation_checks(driver, url, mode):
    """Two turns, Cancel, Reset, a turn after the reset; returns what the page showed."""
    out = {}
    open_page(driver, url)
    out["model"] = driver.find_element(By.ID, "model").text
    out["session_id"] = int(js(driver, "return document.body.dataset.sessionId"))
    # Keyboard: the message box has the focus on load; Tab order is Send, (Cancel is disabled), Reset.
    out["focus_on_load"] = js(driver, "return document.activeElement.id")
    box = driver.find_element(By.ID, "prompt")
    box.send_keys("line one")
    box.send_keys(Keys.SHIFT, Keys.ENTER)
    box.send_keys("line two")
    out["shift_enter_value"] = box.get_attribute("value")
    out["shift_enter_sent"] = len(driver.find_elements(By.CSS_SELECTOR, "#transcript .msg"))
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    order = []
    for _ in range(3):
        driver.switch_to.active_element.send_keys(Keys.TAB)
        order.append(js(driver, "return document.activeElement.id || document.activeElement.tagName.toLowerCase()"))
    out["tab_order"] = order
    greedy(driver, 40)

    first = ask(driver, "What is the capital of France?")
    first["streamed_updates"] = streamed(driver)
    second = ask(driver, "And of Germany?")
    second["streamed_updates"] = streamed(driver)
    out["turns"] = [first, second]
    log(mode, "two turns:", json.dumps([(a["raw"], a["history"], a["first_token_ms"]) for a in out["turns"]]))
    out["dom"] = js(driver, """
      const items = [...document.querySelectorAll('#transcript > li')];
      return {roles: items.map(li => li.classList.contains('user') ? 'user' : 'assistant'),
              user_texts: items.filter(li => li.classList.contains('user')).map(li => li.querySelector('.body').textContent),
              who: items.map(li => li.querySelector('.who').textContent),
              history_shown: document.getElementById('history').textContent,
              live: document.getElementById('announcer').textContent,
              model_in_title: document.title};
    """)
    shot = os.path.join(ARTIFACTS, f"webui-{mode}-two-turns.png")
    driver.save_screenshot(shot)
    out["screenshot"] = shot

    # Reset from the keyboard (focus the button, press Enter): transcript and session cleared.
    reset = driver.find_element(By.ID, "reset")
    js(driver, "arguments[0].focus()", reset)
    reset.send_keys(Keys.ENTER)
    wait(driver, lambda d: js(d, "return document.body.dataset.resets") == "1", 15, "Reset")
    out["after_reset"] = js(driver, """
      return {items: document.querySelectorAll('#transcript > li').length, history: document.body.dataset.historyTokens,
              empty_shown: !document.getElementById('empty').hidden, focus: document.activeElement.id};
    """)
    set_number(driver, "max-new-tokens", 40)
    out["after_reset_turn"] = ask(driver, "And of Germany?")
    # Cancel during a long answer, with Esc, in a fresh conversation (Reset by click this time).
    driver.find_element(By.ID, "reset").click()
    wait(driver, lambda d: js(d, "return document.body.dataset.resets") == "2", 15, "the second Reset")

    set_number(driver, "max-new-tokens", 400)
    started = time.monotonic()
    ask(driver, "Count from 1 to 300, separated by commas.", wait_done=False)
    wait(driver, lambda d: len(answers(d)[-1]["text"]) >= 8 or state(d) == "idle", 30, "the long answer to stream")
    out["cancel_was_running"] = state(driver) == "answering"
    pressed = time.monotonic()
    driver.find_element(By.ID, "prompt").send_keys(Keys.ESCAPE)
    wait(driver, lambda d: state(d) == "idle", 30, "Cancel to stop the answer")
    out["cancel_seconds"] = time.monotonic() - pressed
    out["cancel_total_seconds"] = time.monotonic() - started
    out["cancelled"] = answers(driver)[-1]
    out["cancel_status"] = driver.find_element(By.ID, "status").text

    out["console_problems"] = console_problems(driver)
    return out


def two_tabs(driver, url):
    """Two tabs answer at the same time; each keeps its own session (the second has a system prompt)."""
    tab_a = driver.current_window_handle
    open_page(driver, url)
    greedy(driver, 100)
    js(driver, "document.getElementById('system').value = ''")
    driver.switch_to.new_window("tab")
    tab_b = driver.current_window_handle
    open_page(driver, url)
    greedy(driver, 40)
    system = driver.find_element(By.ID, "system")
    system.send_keys(Keys.CONTROL, "a")
    system.send_keys(SYSTEM_PROMPT)
    ids = {"b": int(js(driver, "return document.body.dataset.sessionId"))}
    driver.switch_to.window(tab_a)
    ids["a"] = int(js(driver, "return document.body.dataset.sessionId"))
    ask(driver, TAB_A[0], wait_done=False)
    driver.switch_to.window(tab_b)
    ask(driver, TAB_B[0], wait_done=False)
    driver.switch_to.window(tab_a)
    a_still_running = state(driver) == "answering"
    wait(driver, lambda d: state(d) == "idle", 60, "tab A's answer")
    driver.switch_to.window(tab_b)
    wait(driver, lambda d: state(d) == "idle", 60, "tab B's answer")
    # Follow-ups that only make sense with each tab's own history.
    ask(driver, TAB_B[1])
    b = answers(driver)
    driver.close()
    driver.switch_to.window(tab_a)
    ask(driver, TAB_A[1])
    a = answers(driver)
    return {"ids": ids, "a": [x["raw"] for x in a], "b": [x["raw"] for x in b], "overlap": a_still_running}


def fake_checks(driver, url):
    """Against a fake api_server with canned answers: markup and Markdown in model text, busy, full."""
    out = {}
    open_page(driver, url)
    answer = ask(driver, "markup")
    out["raw"] = answer["raw"]
    try:
        alert = driver.switch_to.alert
        out["alert"] = alert.text
        alert.dismiss()
    except NoAlertPresentException:
        out["alert"] = None
    out["dom"] = js(driver, """
      const body = document.querySelector('#transcript .msg.assistant .body');
      return {pwned: window.__pwned === 1, scripts_in_transcript: document.querySelectorAll('#transcript script').length,
              imgs_in_transcript: document.querySelectorAll('#transcript img').length,
              scripts_in_page: document.querySelectorAll('script').length,
              strong: [...body.querySelectorAll('strong')].map(e => e.textContent),
              em: [...body.querySelectorAll('em')].map(e => e.textContent),
              li: [...body.querySelectorAll('ul > li')].map(e => e.textContent),
              ol: [...body.querySelectorAll('ol > li')].map(e => e.textContent),
              code_blocks: [...body.querySelectorAll('.codeblock code')].map(e => e.textContent),
              code_langs: [...body.querySelectorAll('.codeblock code')].map(e => e.dataset.lang || ''),
              inline_code: [...body.querySelectorAll('p code')].map(e => e.textContent),
              links: [...body.querySelectorAll('a')].map(e => e.href),
              paragraphs: [...body.querySelectorAll(':scope > p')].map(e => e.textContent),
              headings: [...body.querySelectorAll('h3, h4')].map(e => e.textContent),
              text: body.textContent};
    """)
    copy = driver.find_element(By.CSS_SELECTOR, "#transcript .codeblock button.copy")
    copy.send_keys(Keys.ENTER)
    wait(driver, lambda d: copy.text != "Copy", 5, "the copy button to answer")
    out["copy_label"] = copy.text
    # Busy: the server answered 429; the message goes back into the box.
    set_number(driver, "max-new-tokens", 16)
    box = driver.find_element(By.ID, "prompt")
    box.send_keys("busy")
    box.send_keys(Keys.ENTER)
    wait(driver, lambda d: d.find_element(By.ID, "notice").is_displayed(), 10, "the busy notice")
    out["busy_notice"] = driver.find_element(By.ID, "notice").text
    out["busy_prompt_back"] = box.get_attribute("value")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    full = ask(driver, "full")
    out["full_finish"] = full["finish"]
    out["full_notice"] = driver.find_element(By.ID, "notice").text
    # A phone-sized viewport: one column, nothing wider than the screen, settings folded.
    driver.set_window_size(390, 844)
    driver.refresh()
    wait(driver, lambda d: js(d, "return document.body.dataset.ready === 'true'"), 30, "the page to reload")
    out["phone"] = js(driver, """
      const send = document.getElementById('send').getBoundingClientRect();
      return {scroll_width: document.documentElement.scrollWidth, inner_width: window.innerWidth,
              settings_open: document.getElementById('settings').open, send_visible: send.right <= window.innerWidth && send.width > 0};
    """)
    ask(driver, "markup")
    driver.save_screenshot(os.path.join(ARTIFACTS, "webui-phone.png"))
    out["console_problems"] = console_problems(driver)
    driver.set_window_size(1280, 900)
    return out


driver = make_driver()
log("browser started:", driver.capabilities.get("browserVersion"))
try:
    results["local"] = conversation_checks(driver, config["local"], "local")
    log("local checks done")
    results["restful"] = conversation_checks(driver, config["restful"], "restful")
    log("restful checks done")
    results["tabs"] = two_tabs(driver, config["local"])
    log("two tabs done")
    results["fake"] = fake_checks(driver, config["fake"])
    log("fake upstream checks done")
finally:
    driver.quit()
results["seconds"] = time.monotonic() - T0
print(json.dumps(results))
