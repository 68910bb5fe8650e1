"""What the settings ask for that this install lacks: the optional extras, named.

``chatcore[server]`` alone runs the embedded default. Redis storage needs ``chatcore[redis]``
and a LiteLLM model ``chatcore[llm]``; the commands check this before they start anything, so
the answer is one line naming the extra instead of a traceback from the start-up. (Importing
the missing adapters raises an ImportError that names the extra too, for code that builds the
app itself.)
"""

from __future__ import annotations

from importlib.util import find_spec

from chatcore_api.settings import ApiSettings


def missing_extras(settings: ApiSettings, *, generates_replies: bool) -> list[str]:
    """One sentence per extra that ``settings`` need and that is not installed.

    ``generates_replies``: this process runs a worker, so it calls the configured model.
    """
    problems = []
    if settings.redis_url is not None and find_spec("redis") is None:
        problems.append(
            "redis_url is set, but redis-py is not installed: pip install 'chatcore[redis]'"
        )
    calls_litellm = (
        generates_replies and not settings.llm.is_demo and settings.worker.llm_factory is None
    )
    if calls_litellm and find_spec("litellm") is None:
        problems.append(
            f"the model {settings.llm.model!r} is called through LiteLLM, which is not "
            "installed: pip install 'chatcore[llm]'"
        )
    return problems
