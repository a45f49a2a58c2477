#!/usr/bin/env python3
"""Drives `infer serve`'s web page (src/serve/page.html) in headless Chromium.

What CI (or a developer) installs first, all from Debian's and PyPI's own clients:

    apt-get update && apt-get install -y chromium chromium-driver   # same version, both from Debian
    python3 -m venv /tmp/serve-venv
    /tmp/serve-venv/bin/pip install -r scripts/serve/requirements-browser.txt

then, with a server listening:

    /tmp/serve-venv/bin/python scripts/serve/browser_test.py --url http://127.0.0.1:PORT \
        --photo data/samples/mate-backgrounds__Aqua.jpg [--screenshot OUT.png] [--timeout-s 300]

Selenium talks to Debian's chromedriver, which matches Debian's chromium exactly; nothing is
downloaded at run time. The test loads the page, uploads the photo (or photos: --photo may be
repeated) through the file input, waits for each card to show a score, the five level bars, a
comment and a suggestion (streamed), then does the same in personalize mode (the first photos
rated 5 and 2, the last scored for that person),
checks that the page sent no request to any host but the server's and logged no error, checks
that at 375 px wide nothing overflows horizontally, and writes a full-page screenshot if asked.
Exit 0 on success; 1 with a message naming the failed check otherwise.
"""
import argparse
import json
import math
import os
import shutil
import sys
import time
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

LEVELS = ["bad", "poor", "fair", "good", "excellent"]
DESKTOP = (1100, 900)
PHONE = 375


class Failure(Exception):
    pass


def find_binary(names, extra):
    for path in extra:
        if os.access(path, os.X_OK):
            return path
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def start_browser():
    chrome = find_binary(["chromium", "chromium-browser"], ["/usr/lib/chromium/chromium"])
    driver_path = find_binary(["chromedriver"], ["/usr/lib/chromium/chromedriver", "/usr/bin/chromedriver"])
    if not chrome or not driver_path:
        raise Failure("chromium or chromedriver not found: apt-get install -y chromium chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars", f"--window-size={DESKTOP[0]},{DESKTOP[1]}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)


class Page:
    def __init__(self, driver, base, deadline):
        self.d = driver
        self.base = base
        self.deadline = deadline
        self.requests = []  # (method, url)
        self.mime = {}  # url -> response mime type (last one)
        self.console = []

    def drain_logs(self):
        for entry in self.d.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg["method"] == "Network.requestWillBeSent":
                req = msg["params"]["request"]
                self.requests.append((req["method"], req["url"]))
            elif msg["method"] == "Network.responseReceived":
                resp = msg["params"]["response"]
                self.mime[resp["url"]] = resp.get("mimeType", "")
        for entry in self.d.get_log("browser"):
            self.console.append(entry)

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def wait(self, what, predicate, poll=0.25):
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > self.deadline:
                raise Failure(f"timed out waiting for {what}")
            time.sleep(poll)

    def cards(self):
        return self.d.find_elements(By.CSS_SELECTOR, '[data-testid="card"]')

    def upload(self, testid, paths):
        self.d.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]').send_keys("\n".join(paths))

    def wait_cards(self, count_before, count, kind):
        """Waits for `count` new cards (appended last) to leave `pending`, in order; returns them."""
        self.wait(f"{count} new {kind} card(s)", lambda: len(self.cards()) >= count_before + count)
        cards = self.cards()[count_before:count_before + count]
        for i, card in enumerate(cards):
            if card.get_attribute("data-kind") != kind:
                raise Failure(f"new card {i} is {card.get_attribute('data-kind')!r}, expected {kind!r}")
            state = self.wait(f"{kind} card {i} to finish (data-state done or error)",
                              lambda: (s := card.get_attribute("data-state")) != "pending" and s, poll=0.5)
            if state != "done":
                errors = [e.text for e in card.find_elements(By.CSS_SELECTOR, '[data-testid="error"]')]
                raise Failure(f"{kind} card {i} ended in state {state!r}: " + (" | ".join(errors) or card.text))
        return cards


def text_of(card, testid):
    return card.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]').text.strip()


def check_score(card, what):
    raw = text_of(card, "score")
    try:
        score = float(raw)
    except ValueError:
        raise Failure(f"{what}: score {raw!r} is not a number")
    if not (math.isfinite(score) and 1.0 <= score <= 10.0):
        raise Failure(f"{what}: score {score} is outside 1..10")
    if raw != f"{score:.1f}":
        raise Failure(f"{what}: score {raw!r} is not shown with one decimal")
    return score


def check_assess_card(card):
    score = check_score(card, "assess card")
    levels = card.find_element(By.CSS_SELECTOR, '[data-testid="levels"]')
    bars = levels.find_elements(By.CSS_SELECTOR, '[role="listitem"]')
    labels = [b.get_attribute("aria-label") for b in bars]
    if [l.split(":")[0] for l in labels] != LEVELS:
        raise Failure(f"level bars are {labels}, expected one each for {LEVELS}")
    widths = [b.find_element(By.CSS_SELECTOR, ".fill").size["width"] for b in bars]
    if not any(w > 0 for w in widths):
        raise Failure(f"all level bars are empty: {labels}")
    out = {"score": score, "levels": labels}
    for testid in ["comment", "suggestion"]:
        text = text_of(card, testid)
        if not text or text == "–":
            raise Failure(f"the card's {testid} is empty")
        out[testid] = text
    return out


def check_hosts(page):
    server = urlsplit(page.base)
    own = (server.scheme, server.hostname, server.port or (443 if server.scheme == "https" else 80))
    foreign, seen = [], set()
    for method, url in page.requests:
        u = urlsplit(url)
        if u.scheme in ("data", "blob"):
            continue
        if (u.scheme, u.hostname, u.port or (443 if u.scheme == "https" else 80)) != own:
            foreign.append(f"{method} {url}")
        seen.add((method, u.path))
    if foreign:
        raise Failure("the page made requests to other hosts: " + ", ".join(foreign))
    want = {("GET", "/"), ("GET", "/health"), ("POST", "/v1/score"), ("POST", "/v1/comment"), ("POST", "/v1/suggest")}
    missing = {f"{m} {p}" for m, p in want if not any(s[0] == m and s[1].endswith(p) for s in seen)}
    if missing:
        raise Failure(f"expected requests not seen (is the request log working?): {sorted(missing)}")
    for url, mime in page.mime.items():
        if urlsplit(url).path.endswith(("/v1/comment", "/v1/suggest")) and mime != "text/event-stream":
            raise Failure(f"{url} answered {mime!r}, not a text/event-stream")


def check_console(page):
    bad = [e["message"] for e in page.console if e.get("level") == "SEVERE"]
    if bad:
        raise Failure("the page logged errors: " + " | ".join(bad))


def set_viewport(driver, width, height, mobile=False):
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})


def check_narrow(page):
    set_viewport(page.d, PHONE, 800, mobile=True)
    time.sleep(0.5)
    report = page.js("""
        const w = document.documentElement.clientWidth;
        const over = [];
        for (const e of document.querySelectorAll('body *')) {
          const r = e.getBoundingClientRect();
          if (r.width === 0 || r.height === 0) continue;
          if (getComputedStyle(e).visibility === 'hidden') continue;
          if (r.right > w + 0.5 || r.left < -0.5)
            over.push(`${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}.${e.className} [${r.left.toFixed(0)}, ${r.right.toFixed(0)}]`);
        }
        return {w, scroll: document.documentElement.scrollWidth, inner: window.innerWidth, over: over.slice(0, 10)};
    """)
    if report["w"] != PHONE:
        raise Failure(f"viewport is {report['w']} px wide, not {PHONE}: the width override did not apply")
    if report["scroll"] > report["w"] or report["over"]:
        raise Failure(f"horizontal overflow at {PHONE} px: scrollWidth {report['scroll']} > {report['w']}; "
                      f"elements past the edge: {report['over']}")
    return report


def screenshot(driver, path, width):
    set_viewport(driver, width, 200)  # measure the content, not a taller viewport
    time.sleep(0.3)
    height = driver.execute_script("return Math.ceil(document.documentElement.scrollHeight)")
    set_viewport(driver, width, max(height, 200))
    time.sleep(0.3)
    if not driver.save_screenshot(path):
        raise Failure(f"could not write the screenshot {path}")


def run(args):
    photos = [os.path.abspath(p) for p in args.photo]
    for photo in photos:
        if not os.path.isfile(photo):
            raise Failure(f"no such photo: {photo}")
    base = args.url.rstrip("/") + "/"
    driver = start_browser()
    try:
        page = Page(driver, base, time.monotonic() + args.timeout_s)
        driver.execute_cdp_cmd("Network.enable", {})
        driver.get(base)
        header = driver.find_element(By.TAG_NAME, "h1").text
        if header != "calm: aesthetic assessment":
            raise Failure(f"header reads {header!r}")
        model = page.wait("the model name from /health", lambda: (t := driver.find_element(By.ID, "model").text)
                          != "connecting…" and t)
        if not model.startswith("model: "):
            raise Failure(f"the page could not read /health: {model!r}")
        print(f"page loaded, {model}")

        page.upload("file-input", photos)
        for photo, card in zip(photos, page.wait_cards(0, len(photos), "assess")):
            got = check_assess_card(card)
            print(f"assess {os.path.basename(photo)}: score {got['score']}, levels {got['levels']}")
            print(f"  comment: {got['comment']!r}")
            print(f"  suggestion: {got['suggestion']!r}")

        if not args.skip_personalize:
            driver.find_element(By.CSS_SELECTOR, '[data-testid="mode-personalize"]').click()
            for i, rating in enumerate(("5", "2")):
                page.upload("example-input", [photos[i % len(photos)]])
                select = page.wait("the example's rating control", lambda: driver.find_elements(
                    By.CSS_SELECTOR, '[data-testid="example-score"]')[-1:] or None)[0]
                Select(select).select_by_value(rating)
            before = len(page.cards())
            page.upload("file-input", [photos[-1]])
            pcard = page.wait_cards(before, 1, "personal")[0]
            pscore = check_score(pcard, "personalize card")
            print(f"personalize: score {pscore} {text_of(pcard, 'score-extra')}")

        page.drain_logs()
        check_hosts(page)
        check_console(page)
        print(f"requests: {len(page.requests)}, all to {urlsplit(base).netloc}")

        narrow = check_narrow(page)
        print(f"{PHONE} px: no horizontal overflow (scrollWidth {narrow['scroll']})")
        if args.narrow_screenshot:
            screenshot(driver, args.narrow_screenshot, PHONE)
            print(f"wrote {args.narrow_screenshot}")
        if args.screenshot:
            screenshot(driver, args.screenshot, DESKTOP[0])
            print(f"wrote {args.screenshot}")
        page.drain_logs()
        check_hosts(page)
        check_console(page)
    finally:
        driver.quit()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8080")
    ap.add_argument("--photo", required=True, action="append",
                    help="a JPEG, PNG or WebP photo to upload; repeat it to upload several at once "
                         "(the first two are then the rated photos in personalize mode, the last is scored)")
    ap.add_argument("--screenshot", help="write a full-page screenshot (1100 px wide) here")
    ap.add_argument("--narrow-screenshot", help="write a full-page screenshot 375 px wide here")
    ap.add_argument("--timeout-s", type=float, default=300, help="the whole test's budget for waits")
    ap.add_argument("--skip-personalize", action="store_true", help="test the assess mode only")
    args = ap.parse_args()
    try:
        run(args)
    except Failure as e:
        print(f"browser_test: FAILED: {e}", file=sys.stderr)
        return 1
    except WebDriverException as e:
        print(f"browser_test: FAILED: browser error: {e.msg or e}", file=sys.stderr)
        return 1
    print("browser_test: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
