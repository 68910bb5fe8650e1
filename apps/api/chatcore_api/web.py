"""The web client at ``/``: a Next.js static export served from ``web_dir``.

A request for ``/chat`` is answered by ``chat``, ``chat.html`` or ``chat/index.html``,
whichever exists; the ``.txt`` navigation payloads are plain files; ``/_next/static/`` assets
are content-hashed and cached for a year; everything else is revalidated. A missing page
gets ``404.html`` with status 404. Nothing outside ``web_dir`` can be reached (no ``..``, no
hidden files, no symlinks pointing out).

HTML pages carry a Content-Security-Policy whose ``script-src`` lists the SHA-256 of each
inline script of that very page (Next.js bootstraps with inline scripts), so no other inline
script can run.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path

from starlette.responses import FileResponse, HTMLResponse, Response

LONG_CACHE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
MAX_SCRIPT_HASHES = 200

NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>chatcore</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;
line-height:1.5}code,pre{background:#f3f3f3;padding:.1rem .3rem;border-radius:4px}
pre{padding:.8rem}</style></head>
<body><h1>chatcore is running</h1>
<p>The web client is not built yet. Build it, then restart the server:</p>
<pre>cd apps/web &amp;&amp; npm ci &amp;&amp; npm run build</pre>
<p>Or point <code>CHATCORE_WEB_DIR</code> at a built client. Meanwhile the API is here:
the WebSocket protocol at <code>/ws</code>, the REST API at <a href="/docs">/docs</a>,
health at <a href="/healthz">/healthz</a>.</p></body></html>
"""

NOT_FOUND = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Not found</title>'
    '</head><body><h1>Not found</h1><p><a href="/">Back to the chat</a></p></body></html>'
)


class _InlineScripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.scripts: list[str] = []
        self._current: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script" and not any(name == "src" for name, _ in attrs):
            self._current = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._current is not None:
            self.scripts.append("".join(self._current))
            self._current = None

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._current.append(data)


def inline_script_hashes(page: str) -> list[str] | None:
    """CSP source expressions for the page's inline scripts (``None``: too many to list)."""
    parser = _InlineScripts()
    parser.feed(page)
    parser.close()
    hashes = []
    for script in parser.scripts:
        if not script:
            continue
        digest = hashlib.sha256(script.encode("utf-8")).digest()
        hashes.append(f"'sha256-{base64.b64encode(digest).decode('ascii')}'")
    unique = list(dict.fromkeys(hashes))
    return unique if len(unique) <= MAX_SCRIPT_HASHES else None


def page_csp(script_sources: list[str] | None) -> str:
    scripts = " ".join(["'self'", *(script_sources if script_sources is not None else [])])
    if script_sources is None:
        scripts = "'self' 'unsafe-inline'"
    return (
        "default-src 'self'; "
        f"script-src {scripts}; "
        "style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; "
        "font-src 'self' data:; "
        "connect-src 'self'; "
        "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    )


@lru_cache(maxsize=512)
def _csp_for_file(path: str, mtime_ns: int, size: int) -> str:
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    return page_csp(inline_script_hashes(text))


def csp_for(path: Path) -> str:
    stat = path.stat()
    return _csp_for_file(str(path), stat.st_mtime_ns, stat.st_size)


class WebClient:
    def __init__(self, root: Path | None) -> None:
        self.root = root.resolve() if root is not None else None

    def resolve(self, path: str) -> Path | None:
        """The file that answers ``path``, or ``None``."""
        root = self.root
        if root is None:
            return None
        if "\x00" in path or "\\" in path:
            return None
        parts = [p for p in path.split("/") if p]
        if any(p == ".." or (p.startswith(".") and p != ".well-known") for p in parts):
            return None
        base = root.joinpath(*parts) if parts else root
        candidates = (
            [base / "index.html"]
            if not parts
            else [
                base,
                base.with_name(base.name + ".html"),
                base / "index.html",
            ]
        )
        for candidate in candidates:
            try:
                resolved = candidate.resolve()
            except (OSError, RuntimeError):
                continue
            if resolved.is_relative_to(root) and resolved.is_file():
                return resolved
        return None

    def response(self, path: str) -> Response:
        found = self.resolve(path)
        if found is not None:
            return self._file(found, 200, path)
        if self.root is None:
            if path.strip("/") == "":
                return HTMLResponse(
                    NOT_BUILT,
                    headers={"cache-control": REVALIDATE, "content-security-policy": page_csp([])},
                )
            return self._not_found()
        page = self.root / "404.html"
        if page.is_file():
            return self._file(page.resolve(), 404, "404.html")
        return self._not_found()

    def _file(self, file: Path, status: int, path: str) -> Response:
        headers = {
            "cache-control": LONG_CACHE
            if path.lstrip("/").startswith("_next/static/")
            else REVALIDATE
        }
        media_type = None
        if file.suffix in {".html", ".htm"}:
            headers["content-security-policy"] = csp_for(file)
            media_type = "text/html; charset=utf-8"
        elif file.suffix == ".txt":
            media_type = "text/plain; charset=utf-8"
        return FileResponse(file, status_code=status, headers=headers, media_type=media_type)

    @staticmethod
    def _not_found() -> Response:
        return HTMLResponse(
            NOT_FOUND,
            status_code=404,
            headers={"cache-control": REVALIDATE, "content-security-policy": page_csp([])},
        )
