"""Headless Chromium for tests, driven over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages
separated by NUL on file descriptors 3 and 4), so no driver, websocket library or browser download is needed.
`make browser` (scripts/install_browser.sh, run by .ci/run) installs Debian's chromium; `find_chromium()` says why
none is usable otherwise, for the test's skip reason.
"""
from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CANDIDATES = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable')
FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--no-first-run', '--disable-dev-shm-usage', '--hide-scrollbars', '--mute-audio')


def find_chromium() -> tuple[str | None, str]:
    """(executable, '') or (None, why not): CHROMIUM names one, else the first of CANDIDATES on PATH."""
    named = os.environ.get('CHROMIUM')
    if named:
        return (named, '') if shutil.which(named) else (None, f'CHROMIUM={named} is not an executable')
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path, ''
    return None, (f'no headless browser found ({", ".join(CANDIDATES)} not on PATH); install Debian\'s chromium with '
                  '`make browser` (as root; CI does it in .ci/run) or set CHROMIUM=/path/to/chrome')


class Browser:
    """One headless Chromium with a fresh profile; `page()` opens a tab, `close()` ends the browser."""

    def __init__(self, executable: str, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix='chromium-profile-')
        self.log = tempfile.TemporaryFile()   # chromium talks a lot on stderr; a pipe nobody reads would block it
        import fcntl
        # the browser reads commands on fd 3 and writes replies on fd 4; our ends live above them (close-on-exec)
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_child_r, from_child_w)]
        for fd in (to_child_r, from_child_w):
            os.close(fd)

        def wire():   # in the child before exec: dup2 leaves 3 and 4 open across exec, the originals close
            os.dup2(ends[0], 3)
            os.dup2(ends[1], 4)

        self.proc = subprocess.Popen([executable, *FLAGS, '--remote-debugging-pipe', f'--user-data-dir={self.profile}',
                                      'about:blank'], preexec_fn=wire, close_fds=False, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        for fd in ends:
            os.close(fd)
        self._buffer = b''
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        message = {'id': self._next_id, 'method': method, 'params': params or {}}
        if session:
            message['sessionId'] = session
        os.write(self._to_child, json.dumps(message).encode() + b'\0')
        while True:
            reply = self._read()
            if reply.get('id') == self._next_id:
                if 'error' in reply:
                    raise RuntimeError(f'{method}: {reply["error"]}')
                return reply.get('result', {})
            self.events.append(reply)

    def _read(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b'\0' not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_child], [], [], max(0.0, left))
            if not ready:
                raise TimeoutError(f'no reply from chromium within {self.timeout:.0f}s')
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise RuntimeError(f'chromium closed the pipe (exit {self.proc.poll()}): {self.stderr()[-2000:]}')
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b'\0', 1)
        return json.loads(message)

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors='replace')

    def wait_event(self, method: str, session: str) -> dict:
        while True:
            for i, e in enumerate(self.events):
                if e.get('method') == method and e.get('sessionId') == session:
                    return self.events.pop(i)
            self.events.append(self._read())

    def page(self, width: int = 1400, height: int = 1000) -> 'Page':
        target = self.send('Target.createTarget', {'url': 'about:blank'})['targetId']
        session = self.send('Target.attachToTarget', {'targetId': target, 'flatten': True})['sessionId']
        self.send('Page.enable', session=session)
        self.send('Emulation.setDeviceMetricsOverride', {'width': width, 'height': height, 'deviceScaleFactor': 1,
                                                         'mobile': False}, session=session)
        return Page(self, session)

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.send('Browser.close')
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            os.close(fd)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Page:
    def __init__(self, browser: Browser, session: str):
        self.browser, self.session = browser, session

    def open(self, path: str | Path) -> None:
        """Load a local file and wait for its load event (every eager image loaded or failed)."""
        self.browser.send('Page.navigate', {'url': Path(path).resolve().as_uri()}, self.session)
        self.browser.wait_event('Page.loadEventFired', self.session)

    def run(self, expression: str):
        """Evaluate JavaScript (promises awaited) and return its value as JSON."""
        result = self.browser.send('Runtime.evaluate', {'expression': expression, 'returnByValue': True,
                                                        'awaitPromise': True}, self.session)
        if 'exceptionDetails' in result:
            raise RuntimeError(f'JavaScript error: {result["exceptionDetails"]}')
        return result['result'].get('value')

    def screenshot(self, path: str | Path, full_page: bool = True) -> Path:
        params = {'format': 'png'}
        if full_page:
            size = self.run('[document.documentElement.scrollWidth, document.documentElement.scrollHeight]')
            params.update(captureBeyondViewport=True, clip={'x': 0, 'y': 0, 'width': size[0],
                                                            'height': min(size[1], 16000), 'scale': 1})
        data = self.browser.send('Page.captureScreenshot', params, self.session)['data']
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


ARTEFACTS = Path(__file__).resolve().parents[1] / 'build' / 'test-artifacts'

# Every image made eager (the page lazy-loads) and decoded: [src, naturalWidth] per image (0 = failed to load).
LOAD_IMAGES = """Promise.all(Array.from(document.images).map(function (img) {
  img.loading = 'eager';
  return img.decode().then(function () { return [img.getAttribute('src'), img.naturalWidth]; },
                           function () { return [img.getAttribute('src'), 0]; });
}))"""


def load_report(executable: str, index: str | Path, screenshot: str) -> dict:
    """Open report/index.html headless: every image's natural width, the rows, the count line and the page's text,
    and a full-page screenshot saved as build/test-artifacts/<screenshot>."""
    with Browser(executable) as browser:
        page = browser.page()
        page.open(index)
        images = page.run(LOAD_IMAGES)
        info = page.run("""({rows: document.querySelectorAll('tr.row').length,
                             count: document.getElementById('count').textContent,
                             text: document.body.innerText,
                             topics: Array.from(document.querySelectorAll('#topic option')).map(o => o.value),
                             levels: Array.from(document.querySelectorAll('#level option')).map(o => o.value)})""")
        filtered = {}
        for topic in info['topics'][1:]:   # each topic filter: the count line and the visible rows agree
            filtered[topic] = page.run(f"""(function () {{
                var s = document.getElementById('topic'); s.value = {json.dumps(topic)};
                s.dispatchEvent(new Event('change'));
                var shown = Array.from(document.querySelectorAll('tr.row')).filter(r => r.offsetParent !== null);
                return {{count: document.getElementById('count').textContent, shown: shown.length,
                         topics: Array.from(new Set(shown.map(r => r.dataset.topic)))}};
            }})()""")
        page.run("""(function () { var s = document.getElementById('topic'); s.value = '';
                     s.dispatchEvent(new Event('change')); return true; })()""")
        shot = page.screenshot(ARTEFACTS / screenshot)
    return {**info, 'images': images, 'filtered': filtered, 'screenshot': shot}
