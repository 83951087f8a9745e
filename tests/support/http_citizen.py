"""A citizen over HTTP: walks a running station's wizard with sample answers, timing every request.

Used by `make bench` and by the tests that kill the server process; it speaks plain HTTP/1.1 to
the real server, keeps the session cookie, and reads the CSRF token from each page like a browser.
"""
import http.client
import re
import secrets
import time
from urllib.parse import urlencode, urlsplit

from .paper import small_page
from .samples import form_for_page

_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
_CODE = re.compile(r"data-tracking-code>([^<]+)<")


class HttpCitizen:
    def __init__(self, host: str, port: int, timeout: float = 10.0, think_s: float = 0.0):
        self.connection = http.client.HTTPConnection(host, port, timeout=timeout)
        self.think_s = think_s  # a pause before each request, as a person reading the page
        self.cookie = ""
        self.timings: list[tuple[str, float, float | None]] = []   # (step, client ms, server ms)

    def request(self, step: str, method: str, path: str, form: dict | None = None, file: bytes | None = None):
        """One request; with ``file``, the form goes as multipart with the file as its ``page``."""
        headers = {"Cookie": self.cookie} if self.cookie else {}
        if file is not None:
            boundary = secrets.token_hex(12)
            parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                     for k, v in (form or {}).items()]
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="page"; filename="trang.png"\r\n'
                         f"Content-Type: image/png\r\n\r\n".encode() + file + b"\r\n")
            body = b"".join(parts) + f"--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        else:
            body = urlencode(form).encode() if form is not None else None
            if body is not None:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
        if self.think_s:
            time.sleep(self.think_s)
        started = time.perf_counter()
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        text = response.read().decode(errors="replace")  # a picture reads as text too, unused
        elapsed = (time.perf_counter() - started) * 1000
        server = re.search(r"dur=([\d.]+)", response.getheader("Server-Timing") or "")
        self.timings.append((step, elapsed, float(server.group(1)) if server else None))
        cookie = response.getheader("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        if response.status >= 500:
            raise RuntimeError(f"{method} {path}: {response.status}")
        return response.status, response.getheader("Location"), text

    def fill(self, proc) -> str:
        """Answer every question of ``proc`` up to the consent page; returns that page's CSRF token."""
        self.request("start page", "GET", "/")
        _, _, page = self.request("overview", "GET", f"/p/{proc.slug}")
        status, location, _ = self.request("start", "POST", f"/p/{proc.slug}/start",
                                           {"csrf_token": _TOKEN.search(page).group(1)})
        path = urlsplit(location).path
        while "/q/" in path:
            _, _, page = self.request("question (GET)", "GET", path)
            form = {"csrf_token": _TOKEN.search(page).group(1),
                    **form_for_page(proc.page(path.rsplit("/", 1)[1]))}
            status, location, _ = self.request("question (POST)", "POST", path, form)
            if status != 303:
                raise RuntimeError(f"{path}: answer refused ({status})")
            path = urlsplit(location).path
        path = self.papers(path)
        self.request("check answers", "GET", path)
        _, _, page = self.request("consent", "GET", f"/p/{proc.slug}/submit")
        return _TOKEN.search(page).group(1)

    def papers(self, path: str) -> str:
        """The paper steps from ``path``: a page file for a required paper, "I do not have this paper" for
        an optional one, then on; returns where the wizard goes after them."""
        while "/giay-to/" in path:
            _, _, page = self.request("paper (GET)", "GET", path)
            token = _TOKEN.search(page).group(1)
            if 'data-required="yes"' in page and 'data-pages="' not in page:
                status, _, _ = self.request("paper (upload)", "POST", f"{path}/them",
                                            {"csrf_token": token, "source": "file"}, file=small_page())
            elif 'value="not_applicable"' in page:
                status, _, _ = self.request("paper (not held)", "POST", path,
                                            {"csrf_token": token, "action": "not_applicable"})
            else:
                status = 303
            if status != 303:
                raise RuntimeError(f"{path}: paper refused ({status})")
            _, _, page = self.request("paper (GET)", "GET", path)
            status, location, _ = self.request("paper (continue)", "POST", path,
                                               {"csrf_token": _TOKEN.search(page).group(1), "action": "continue"})
            if status != 303:
                raise RuntimeError(f"{path}: continue refused ({status})")
            path = urlsplit(location).path
        return path

    def submit(self, proc, token: str) -> None:
        """Press submit; returns once the station has answered that the dossier is submitted."""
        status, location, _ = self.request("submit", "POST", f"/p/{proc.slug}/submit",
                                           {"csrf_token": token, "consent": "yes"})
        if status != 303 or not location.endswith("/done"):
            raise RuntimeError(f"submit refused ({status})")

    def finish(self) -> str:
        """Read the tracking code on the confirmation page, then end the session."""
        _, _, page = self.request("confirmation", "GET", "/done")
        code = _CODE.search(page).group(1)
        self.request("end", "POST", "/end", {"csrf_token": _TOKEN.search(page).group(1)})
        return code

    def apply(self, proc) -> str:
        """One whole application; returns the tracking code."""
        self.submit(proc, self.fill(proc))
        return self.finish()

    def close(self):
        self.connection.close()
