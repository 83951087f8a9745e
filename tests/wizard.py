"""Walking through a procedure with Flask's test client, the way a citizen does with a browser."""
from urllib.parse import urlsplit

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


def answer_all(client, proc, overrides: dict | None = None, headers=None) -> list[str]:
    """Answer every page with valid sample answers (``overrides`` by field name) until the check page.
    Returns the paths of the question pages visited."""
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
    assert path == f"/p/{proc.slug}/check"
    return visited


def submit(client, proc):
    page = client.get(f"/p/{proc.slug}/submit")
    assert page.status_code == 200
    return client.post(f"/p/{proc.slug}/submit", data={"csrf_token": csrf_token(page.text), "consent": "yes"})
