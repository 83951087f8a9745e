"""Walking through a procedure with Flask's test client, the way a citizen does with a browser."""
import functools
import io
import re
from urllib.parse import urlsplit

from tests.support.paper import small_page

from tests.support.samples import form_for_page

from .conftest import csrf_token


def start(client, slug: str) -> str:
    """Open the overview, press start; returns the first question's path."""
    page = client.get(f"/p/{slug}")
    assert page.status_code == 200
    response = client.post(f"/p/{slug}/start", data={"csrf_token": csrf_token(page.text)})
    assert response.status_code == 303
    return urlsplit(response.headers["Location"]).path


def answer(client, path: str, form: dict, headers=None):
    page = client.get(path, headers=headers)
    assert page.status_code == 200, path
    return client.post(path, data={"csrf_token": csrf_token(page.text), **form}, headers=headers)


@functools.lru_cache(maxsize=1)
def add_page(client, step: str, data: bytes | None = None, source: str = "file", name: str = "trang.png",
             headers=None):
    """Post one page file to a paper's step (``step``: its path) the way its form does."""
    page = client.get(step, headers=headers)
    assert page.status_code in (200, 422), step
    return client.post(f"{step}/them", headers=headers, content_type="multipart/form-data",
                       data={"csrf_token": csrf_token(page.text), "source": source,
                             "page": (io.BytesIO(small_page() if data is None else data), name)})


def deal_with_papers(client, path: str, headers=None) -> str:
    """On the paper steps from ``path``: a small page for a required paper, "I do not have this paper" for
    an optional one, then continue; returns where the wizard goes after them."""
    while "/giay-to/" in path:
        page = client.get(path, headers=headers)
        assert page.status_code == 200, path
        if 'data-required="yes"' in page.text and 'data-pages="' not in page.text:
            assert add_page(client, path, headers=headers).status_code == 303
        elif 'value="not_applicable"' in page.text:
            response = client.post(path, headers=headers, data={"csrf_token": csrf_token(page.text),
                                                                "action": "not_applicable"})
            assert response.status_code == 303
        page = client.get(path, headers=headers)
        response = client.post(path, headers=headers, data={"csrf_token": csrf_token(page.text), "action": "continue"})
        assert response.status_code == 303, (path, re.sub(r"\s+", " ", response.text)[:1500])
        path = urlsplit(response.headers["Location"]).path
    return path


def answer_all(client, proc, overrides: dict | None = None, headers=None, papers: bool = True) -> list[str]:
    """Answer every page with valid sample answers (``overrides`` by field name), then, on a station that
    captures pages, deal with each paper's step (``deal_with_papers``), until the check page; with
    ``papers=False``, stop at the first paper's step. Returns the paths of the question pages visited."""
    path, visited = start(client, proc.slug), []
    while "/q/" in path:
        page = proc.page(path.rsplit("/", 1)[1])
        form = form_for_page(page)
        for field in page["fields"]:
            for key in list(form):
                if key == field["name"] or key.startswith(field["name"] + "__"):
                    if overrides and field["name"] in overrides:
                        del form[key]
            if overrides and field["name"] in overrides:
                form.update(overrides[field["name"]])
        response = answer(client, path, form, headers)
        assert response.status_code == 303, (path, response.text[:2000])
        visited.append(path)
        path = urlsplit(response.headers["Location"]).path
        assert len(visited) <= len(proc.pages), "the wizard went in a loop"
    if not papers and "/giay-to/" in path:
        return visited + [path]
    path = deal_with_papers(client, path, headers)
    assert path == f"/p/{proc.slug}/check"
    return visited


def submit(client, proc):
    page = client.get(f"/p/{proc.slug}/submit")
    assert page.status_code == 200
    return client.post(f"/p/{proc.slug}/submit", data={"csrf_token": csrf_token(page.text), "consent": "yes"})


def submit_one(app, catalog, slug="cap-phieu-ly-lich-tu-phap"):
    """One whole application through the test client, its receipt printed (or not) and done with:
    (client, procedure, tracking code)."""
    client = app.test_client()
    proc = catalog[slug]
    answer_all(client, proc)
    assert submit(client, proc).status_code == 303
    app.extensions["receipts"].wait()
    with client.session_transaction() as session:
        code = session["submitted"]["code"]
    return client, proc, code
