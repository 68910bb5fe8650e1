"""The event loop the processes run on (uvloop unless turned off)."""

from __future__ import annotations

import asyncio

import pytest

from chatcore_api import loops


def test_uvloop_is_used_when_installed_and_can_be_turned_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(loops.ENV, raising=False)
    assert loops.loop_name() == "uvloop"  # a dependency of the server
    monkeypatch.setenv(loops.ENV, "asyncio")
    assert loops.loop_name() == "asyncio"
    assert loops.loop_factory() is None
    monkeypatch.setenv(loops.ENV, "fast please")
    with pytest.raises(ValueError, match="CHATCORE_EVENT_LOOP"):
        loops.loop_name()


@pytest.mark.parametrize("choice", ["uvloop", "asyncio"])
def test_run_runs_a_coroutine_on_the_chosen_loop(
    monkeypatch: pytest.MonkeyPatch, choice: str
) -> None:
    monkeypatch.setenv(loops.ENV, choice)

    async def main() -> str:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()).__module__

    module = loops.run(main())
    assert module.startswith("uvloop") == (choice == "uvloop")
