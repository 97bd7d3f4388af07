#!/usr/bin/env python3
"""Draw docs/playground.png: the playground in headless Chromium, after a scripted conversation.

Starts the scripted fake upstream (``execbridge.testing``) and a real ``execbridge serve`` on loopback
(holding an upstream key, with no gateway keys: the page asks for none), uploads a CSV through the page,
lets the "model" chart it with matplotlib in the sandbox, and saves a screenshot once the chart shows.
Needs what the browser tests need: ``scripts/install.sh --test`` (Debian's chromium and chromium-driver,
Selenium) and root or an unprivileged sandbox, like ``execbridge serve`` itself.

Usage: .venv/bin/python scripts/screenshot-playground.py [--output docs/playground.png] [--width 1280 --height 1320]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from execbridge.testing import FakeUpstream, Turn
from execbridge.testing.processes import stop_with_parent

ROOT = Path(__file__).resolve().parent.parent
SALES = "month,sales\nJan,120\nFeb,135\nMar,160\nApr,148\nMay,190\nJun,230\n"
CHART_CODE = """\
import csv, os
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

rows = list(csv.DictReader(open("/workspace/sales.csv")))
months = [r["month"] for r in rows]
sales = [float(r["sales"]) for r in rows]
fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(months, sales, color="#2952cc")
ax.set_title("Monthly sales")
ax.set_ylabel("units")
fig.tight_layout()
fig.savefig(os.path.join(os.environ["OUTPUT_DIR"], "sales.png"), dpi=100)
print(f"{len(rows)} months, {sum(sales):.0f} units in all; best month: {months[sales.index(max(sales))]}")
"""
SCRIPT = [
    Turn.text("I'll read the file and draw the monthly totals.").call("code_execution", code=CHART_CODE),
    Turn.text(
        "Sales grew almost every month: 983 units over six months, with June the best at 230 "
        "(nearly double January). The chart is attached above as sales.png."
    ),
]


def chromium(width: int, height: int) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_health(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            return
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"execbridge serve did not start:\n{log.read_text()}") from None
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "playground.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1320)
    args = parser.parse_args()
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not go looking for drivers online
    with tempfile.TemporaryDirectory() as scratch, FakeUpstream(SCRIPT, models=("claude-sonnet-4-5",)) as fake:
        data_dir = Path(scratch) / "data"
        data_dir.mkdir()
        Path(scratch).chmod(0o711)  # the gateway user of the privilege split must reach its data directory
        csv_path = Path(scratch) / "sales.csv"
        csv_path.write_text(SALES)
        log = Path(scratch) / "serve.log"
        port = free_port()
        env = {**os.environ, "EXECBRIDGE_DATA_DIR": str(data_dir), "EXECBRIDGE_SANDBOX__SPARE_CONTAINERS": "0"}
        command = [sys.executable, "-m", "execbridge", "serve", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--upstream", fake.base_url, "--upstream-api-key", "sk-fake-upstream"]
        with log.open("wb") as sink:
            process = subprocess.Popen(
                command, env=env, stdout=sink, stderr=subprocess.STDOUT, preexec_fn=stop_with_parent
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_health(url, process, log)
            driver = chromium(args.width, args.height)
            try:
                converse(driver, url, csv_path)
                args.output.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(args.output))
            finally:
                driver.quit()
        finally:
            process.terminate()
            process.wait(timeout=60)
    print(f"wrote {args.output}")


def converse(driver: webdriver.Chrome, url: str, csv_path: Path) -> None:
    wait = WebDriverWait(driver, 60)
    driver.get(f"{url}/playground")
    wait.until(lambda d: d.find_element(By.ID, "model").get_attribute("value"))
    driver.find_element(By.ID, "file-input").send_keys(str(csv_path))
    wait.until(lambda d: "uploading" not in d.find_element(By.ID, "attachments").text)
    prompt = driver.find_element(By.ID, "prompt")
    prompt.send_keys("Chart the monthly sales in sales.csv and tell me the trend.", Keys.ENTER)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "article.assistant[data-state='done']"))
    wait.until(
        lambda d: d.execute_script(
            "const img = document.querySelector('img.output-image'); return img && img.complete && img.naturalWidth > 0"
        )
    )
    # The end of the exchange: the chart and the answer under it (all of it at the default size).
    driver.execute_script("const c = document.getElementById('conversation'); c.scrollTop = c.scrollHeight")


if __name__ == "__main__":
    main()
