"""Nothing a page loads or links to may come from outside the station (no CDN, no fonts, no trackers)."""
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

from .wizard import answer_all, submit

ROOT = Path(__file__).resolve().parent.parent
URL_ATTRIBUTES = {"src", "href", "action", "srcset", "poster", "data", "formaction", "hx-get", "hx-post",
                  "hx-put", "hx-delete", "xlink:href", "manifest", "background"}


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in URL_ATTRIBUTES and value:
                self.urls.extend(v.strip().split(" ")[0] for v in value.split(","))
            if name == "style" and value and "url(" in value:
                self.urls.extend(re.findall(r"url\(['\"]?([^'\")]+)", value))


def _external(urls):
    return [u for u in urls if urlsplit(u).scheme not in ("", ) or urlsplit(u).netloc]


def _pages_of_a_whole_application(client, catalog):
    pages = {"/": client.get("/").text, "/track": client.get("/track").text}
    for proc in catalog.values():
        pages[f"/p/{proc.slug}"] = client.get(f"/p/{proc.slug}").text
        for path in answer_all(client, proc):
            pages[path] = client.get(path).text
        pages[f"/p/{proc.slug}/check"] = client.get(f"/p/{proc.slug}/check").text
        pages[f"/p/{proc.slug}/submit"] = client.get(f"/p/{proc.slug}/submit").text
        submit(client, proc)
        pages["/done"] = client.get("/done").text
    pages["/p/khong-co"] = client.get("/p/khong-co").text
    return pages


def test_no_page_references_an_external_url(client, catalog):
    pages = _pages_of_a_whole_application(client, catalog)
    assert len(pages) > 60
    for path, html in pages.items():
        parser = _Links()
        parser.feed(html)
        assert parser.urls, path
        assert _external(parser.urls) == [], path


def test_static_files_reference_nothing_outside():
    for path in (ROOT / "kiosk" / "static").rglob("*"):
        if path.suffix in (".css", ".js") and "vendor" not in path.parts:
            text = path.read_text("utf-8")
            assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import", text), path


def test_the_detector_catches_an_external_url():
    parser = _Links()
    parser.feed('<script src="https://cdn.example/htmx.js"></script><link href="//fonts.example/x.css">'
                '<a href="/p/x">ok</a>')
    assert _external(parser.urls) == ["https://cdn.example/htmx.js", "//fonts.example/x.css"]
