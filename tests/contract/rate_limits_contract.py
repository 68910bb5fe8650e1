"""The contract every RateLimits adapter keeps (subclass as ``Test<Adapter>RateLimits``).

The rates are fast (a unit every 0.2 s) so that a wait on Redis, which keeps time itself,
costs a fraction of a second; on a manual clock it costs nothing. Waits the adapter reports
are compared with a margin that covers the real time passing between two calls on Redis.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest

from chatcore.errors import InvalidIdentifier
from chatcore.gcra import Rate, Step
from chatcore.ports import RateLimits

# Five a second, two at once: a unit comes back every 0.2 s.
FAST = Rate(limit=5, period=1.0, burst=2)
MARGIN = 0.06


def fresh(name: str) -> str:
    return f"{name}:{secrets.token_hex(4)}"


class RateLimitsContract:
    # Whether admit() counts nothing when a step refuses (every key in one place).
    atomic_admit = True

    async def make_limits(self) -> RateLimits:
        raise NotImplementedError

    async def close_limits(self, limits: RateLimits) -> None:
        return None

    async def wait(self, seconds: float) -> None:
        """Let ``seconds`` of the adapter's own time pass (real time by default)."""
        await asyncio.sleep(seconds)

    @pytest.fixture
    async def limits(self) -> AsyncIterator[RateLimits]:
        limits = await self.make_limits()
        try:
            yield limits
        finally:
            await self.close_limits(limits)

    async def test_a_burst_is_allowed_at_once_then_one_unit_per_interval(
        self, limits: RateLimits
    ) -> None:
        key = fresh("burst")
        assert await limits.acquire(key, FAST) == 0.0
        assert await limits.acquire(key, FAST) == 0.0
        wait = await limits.acquire(key, FAST)
        assert wait == pytest.approx(0.2, abs=MARGIN)
        await self.wait(wait + 0.01)
        assert await limits.acquire(key, FAST) == 0.0
        assert await limits.acquire(key, FAST) > 0.0

    async def test_a_refusal_counts_nothing(self, limits: RateLimits) -> None:
        key = fresh("refused")
        await limits.acquire(key, FAST)
        await limits.acquire(key, FAST)
        first = await limits.acquire(key, FAST)
        for _ in range(5):
            again = await limits.acquire(key, FAST)
            assert 0.0 < again <= first + 0.001, "refused attempts must not push the wait back"

    async def test_keys_are_independent(self, limits: RateLimits) -> None:
        a, b = fresh("a"), fresh("b")
        await limits.acquire(a, FAST)
        await limits.acquire(a, FAST)
        assert await limits.acquire(a, FAST) > 0.0
        assert await limits.acquire(b, FAST) == 0.0

    async def test_check_answers_like_acquire_and_counts_nothing(self, limits: RateLimits) -> None:
        key = fresh("check")
        for _ in range(5):
            assert await limits.check(key, FAST) == 0.0
        await limits.acquire(key, FAST)
        assert await limits.check(key, FAST) == 0.0
        await limits.acquire(key, FAST)
        wait = await limits.check(key, FAST)
        assert wait == pytest.approx(0.2, abs=MARGIN)
        assert await limits.acquire(key, FAST) == pytest.approx(wait, abs=MARGIN)

    async def test_a_cost_takes_that_many_units(self, limits: RateLimits) -> None:
        key = fresh("cost")
        assert await limits.acquire(key, FAST, cost=2) == 0.0
        assert await limits.acquire(key, FAST, cost=1) == pytest.approx(0.2, abs=MARGIN)
        assert await limits.check(key, FAST, cost=2) == pytest.approx(0.4, abs=MARGIN)

    async def test_a_prepaid_cost_over_the_burst_is_refused_as_an_error(
        self, limits: RateLimits
    ) -> None:
        with pytest.raises(ValueError, match="burst"):
            await limits.acquire(fresh("big"), FAST, cost=3)
        with pytest.raises(ValueError, match="burst"):
            await limits.check(fresh("big"), FAST, cost=3)
        with pytest.raises(ValueError, match="positive"):
            await limits.acquire(fresh("zero"), FAST, cost=0)

    async def test_a_charge_may_go_into_debt_and_blocks_until_it_has_run_off(
        self, limits: RateLimits
    ) -> None:
        key = fresh("charge")
        await limits.charge(key, FAST, 4)  # two units over the burst: 0.4 s of debt
        wait = await limits.check(key, FAST)
        assert wait == pytest.approx(0.6, abs=MARGIN)  # back under the burst, then one unit
        assert await limits.acquire(key, FAST) == pytest.approx(wait, abs=MARGIN)
        await limits.charge(key, FAST, 1)
        assert await limits.check(key, FAST) == pytest.approx(0.8, abs=MARGIN)
        await self.wait(0.85)
        assert await limits.acquire(key, FAST) == 0.0

    async def test_a_key_whose_allowance_is_full_again_is_as_good_as_new(
        self, limits: RateLimits
    ) -> None:
        key = fresh("refill")
        await limits.acquire(key, FAST)
        await limits.acquire(key, FAST)
        await self.wait(0.45)  # two intervals and a bit: the whole burst is back
        assert await limits.acquire(key, FAST) == 0.0
        assert await limits.acquire(key, FAST) == 0.0
        assert await limits.acquire(key, FAST) > 0.0

    async def test_slow_rates_keep_their_precision(self, limits: RateLimits) -> None:
        # 20 a minute, a burst of 5: a unit every 3 s. The 5 units of the burst are all
        # allowed (no rounding of the intervals added up may refuse the last one).
        rate = Rate.per_minute(20, burst=5)
        key = fresh("slow")
        assert [await limits.acquire(key, rate) for _ in range(5)] == [0.0] * 5
        assert await limits.acquire(key, rate) == pytest.approx(3.0, abs=MARGIN)

    async def test_a_budget_of_many_tokens_a_minute_takes_large_charges(
        self, limits: RateLimits
    ) -> None:
        budget = Rate.per_minute(60_000)  # a minute's worth at once
        key = fresh("tokens")
        assert await limits.check(key, budget) == 0.0
        await limits.charge(key, budget, 59_000)
        assert await limits.check(key, budget) == 0.0
        await limits.charge(key, budget, 4_000)  # 3,000 tokens over: three seconds
        assert await limits.check(key, budget) == pytest.approx(3.0, abs=MARGIN)

    async def test_concurrent_takes_never_exceed_the_burst(self, limits: RateLimits) -> None:
        key = fresh("race")
        rate = Rate.per_minute(1, burst=3)
        # One call first, as a running process's client has made many: redis-py 8.1's Cluster
        # client can fail concurrent first commands on a fresh client with an AttributeError
        # (its own race while connecting; any script-running adapter shows it).
        await limits.check(fresh("warm"), rate)
        waits = await asyncio.gather(*(limits.acquire(key, rate) for _ in range(12)))
        assert sum(1 for w in waits if w == 0.0) == 3

    @pytest.mark.parametrize("key", ["", "a b", "x{y}", "*", "k" * 201])
    async def test_an_unsafe_key_is_refused(self, limits: RateLimits, key: str) -> None:
        with pytest.raises(InvalidIdentifier):
            await limits.acquire(key, FAST)
        with pytest.raises(InvalidIdentifier):
            await limits.admit([Step(fresh("fine"), FAST), Step(key, FAST)])

    # --- several limits at once -------------------------------------------------------------

    async def test_admit_counts_every_counting_step_when_all_fit(self, limits: RateLimits) -> None:
        one, two, checked = fresh("one"), fresh("two"), fresh("checked")
        steps = [Step(one, FAST), Step(two, FAST, cost=2), Step(checked, FAST, count=False)]
        assert await limits.admit(steps) is None
        assert await limits.check(one, FAST) == 0.0  # one of its two is left
        assert await limits.check(one, FAST, cost=2) > 0.0
        assert await limits.check(two, FAST) > 0.0  # both taken
        assert await limits.acquire(checked, FAST, cost=2) == 0.0  # a check counts nothing

    async def test_admit_names_the_first_step_that_does_not_fit(self, limits: RateLimits) -> None:
        before, full, after = fresh("before"), fresh("full"), fresh("after")
        assert await limits.acquire(full, FAST, cost=2) == 0.0
        refused = await limits.admit([Step(before, FAST), Step(full, FAST), Step(after, FAST)])
        assert refused is not None and refused.index == 1
        assert refused.retry_after == pytest.approx(0.2, abs=MARGIN)
        assert await limits.acquire(after, FAST, cost=2) == 0.0  # never counted
        if self.atomic_admit:
            assert await limits.acquire(before, FAST, cost=2) == 0.0  # nothing counted
        else:
            assert await limits.check(before, FAST, cost=2) > 0.0  # counted before the refusal

    async def test_a_spent_budget_refuses_before_any_message_is_counted(
        self, limits: RateLimits
    ) -> None:
        budget, messages = fresh("budget"), fresh("messages")
        await limits.charge(budget, FAST, 10)
        refused = await limits.admit([Step(budget, FAST, count=False), Step(messages, FAST)])
        assert refused is not None and refused.index == 0
        assert refused.retry_after == pytest.approx(1.8, abs=MARGIN + 0.05)
        assert await limits.acquire(messages, FAST, cost=2) == 0.0

    async def test_a_key_named_twice_sees_its_earlier_step(self, limits: RateLimits) -> None:
        twice, thrice = fresh("twice"), fresh("thrice")
        assert await limits.admit([Step(twice, FAST), Step(twice, FAST)]) is None
        assert await limits.check(twice, FAST) > 0.0
        refused = await limits.admit([Step(thrice, FAST)] * 3)
        assert refused is not None and refused.index == 2
        if self.atomic_admit:
            assert await limits.acquire(thrice, FAST, cost=2) == 0.0

    async def test_admitting_nothing_is_allowed(self, limits: RateLimits) -> None:
        assert await limits.admit([]) is None
