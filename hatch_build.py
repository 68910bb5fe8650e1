"""Build hook: the wheel carries the built web client, as package data of ``chatcore_api``.

``apps/web/out`` (the Next.js static export that ``scripts/setup`` builds) goes into the wheel
as ``chatcore_api/web_client/``, where ``chatcore_api.settings.default_web_dir`` finds it, so
``pip install 'chatcore[server]'`` and ``chatcore serve`` serve the same page as a checkout.
The sdist carries the same build, so a wheel can be built from it without Node.js.

Building either without the web client built fails and says how to build it: a wheel without
the page would install fine and then serve no client at ``/``. Editable installs (what
``scripts/setup`` does) need no build: a checkout serves ``apps/web/out`` directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

WEB_BUILD = Path("apps", "web", "out")
PACKAGED_AS = "chatcore_api/web_client"


class WebClientHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name == "wheel" and version == "editable":
            return
        built = Path(self.root, WEB_BUILD)
        if not (built / "index.html").is_file():
            raise RuntimeError(
                f"the web client is not built ({WEB_BUILD}/index.html is missing), and the "
                "package must carry it: build it first with scripts/setup (or: cd apps/web "
                "&& npm ci && npm run build), then build the package again"
            )
        if self.target_name != "wheel":
            return  # the sdist takes apps/web/out as it is (see `artifacts` in pyproject.toml)
        for path in sorted(built.rglob("*")):
            relative = path.relative_to(built)
            if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                build_data["force_include"][str(path)] = f"{PACKAGED_AS}/{relative.as_posix()}"
