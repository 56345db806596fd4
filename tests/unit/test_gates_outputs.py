"""The movable concurrency cap, and the output checks that unwrap or refuse a model's answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from aetherflow_tui.engine import outputs
from aetherflow_tui.engine.gates import ConcurrencyCap

FENCE = "```"


async def until(condition: Callable[[], bool], rounds: int = 100) -> None:
    """Let the ready tasks run until condition holds. Each round is one pass of the event
    loop, not a wait on time; a condition that never holds fails the test."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def finished(*tasks: asyncio.Task[None]) -> None:
    """Wait for tasks that should end now; a cap that strands them fails instead of hanging."""
    await until(lambda: all(task.done() for task in tasks))
    for task in tasks:
        task.result()


class Holders:
    """Tasks that take a slot and keep it until told to let go, counting who holds one."""

    def __init__(self, cap: ConcurrencyCap) -> None:
        self.cap = cap
        self.holding = 0
        self.peak = 0
        self.tasks: list[asyncio.Task[None]] = []
        self._go: list[asyncio.Event] = []

    def start(self, n: int) -> None:
        for _ in range(n):
            go = asyncio.Event()
            self._go.append(go)
            self.tasks.append(asyncio.create_task(self._hold(go)))

    async def _hold(self, go: asyncio.Event) -> None:
        async with self.cap.slot():
            self.holding += 1
            self.peak = max(self.peak, self.holding)
            await go.wait()
            self.holding -= 1

    def let_go(self, index: int) -> None:
        self._go[index].set()

    def let_all_go(self) -> None:
        for go in self._go:
            go.set()


# --- ConcurrencyCap --------------------------------------------------------------------


async def test_never_more_than_the_limit_hold_a_slot() -> None:
    cap = ConcurrencyCap(3)
    holders = Holders(cap)
    holders.start(10)

    await until(lambda: cap.waiting == 7)
    assert holders.holding == 3
    assert cap.in_use == 3

    for index in range(10):
        holders.let_go(index)
        await finished(holders.tasks[index])
        assert cap.in_use == min(3, 9 - index)
        assert holders.holding <= 3

    assert holders.peak == 3
    assert cap.in_use == 0
    assert cap.waiting == 0


async def test_raising_the_limit_wakes_waiters() -> None:
    cap = ConcurrencyCap(1)
    holders = Holders(cap)
    holders.start(4)
    await until(lambda: cap.waiting == 3)

    cap.set_limit(3)
    await until(lambda: holders.holding == 3)

    assert cap.in_use == 3
    assert cap.waiting == 1
    holders.let_all_go()
    await finished(*holders.tasks)
    assert cap.in_use == 0


async def test_lowering_the_limit_lets_holders_finish_and_admits_under_the_new_limit() -> None:
    cap = ConcurrencyCap(4)
    holders = Holders(cap)
    holders.start(6)
    await until(lambda: cap.waiting == 2)

    cap.set_limit(2)
    assert cap.in_use == 4  # nobody is interrupted

    holders.let_go(0)
    await finished(holders.tasks[0])
    assert cap.in_use == 3
    holders.let_go(1)
    await finished(holders.tasks[1])
    assert cap.in_use == 2
    assert cap.waiting == 2  # at the new limit: nobody admitted yet

    holders.let_go(2)
    await finished(holders.tasks[2])
    assert cap.in_use == 2
    assert cap.waiting == 1
    await until(lambda: holders.holding == 2)

    holders.let_all_go()
    await finished(*holders.tasks)
    assert cap.in_use == 0


async def test_a_limit_below_1_is_raised_to_1() -> None:
    cap = ConcurrencyCap(5)

    cap.set_limit(0)

    assert cap.limit == 1


async def test_a_cancelled_waiter_does_not_keep_a_slot() -> None:
    cap = ConcurrencyCap(1)
    await cap.acquire()
    waiter = asyncio.create_task(cap.acquire())
    await until(lambda: cap.waiting == 1)

    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    assert cap.waiting == 0
    assert cap.in_use == 1
    cap.release()
    assert cap.in_use == 0


async def test_a_waiter_cancelled_just_after_being_granted_hands_its_slot_on() -> None:
    cap = ConcurrencyCap(1)
    await cap.acquire()
    first = asyncio.create_task(cap.acquire())
    second = asyncio.create_task(cap.acquire())
    await until(lambda: cap.waiting == 2)

    cap.release()  # the slot goes to `first`...
    first.cancel()  # ...which is cancelled before it runs again

    with pytest.raises(asyncio.CancelledError):
        await first
    await finished(second)
    assert cap.in_use == 1
    assert cap.waiting == 0
    cap.release()
    assert cap.in_use == 0


async def test_a_granted_then_cancelled_waiter_with_nobody_behind_frees_the_slot() -> None:
    cap = ConcurrencyCap(1)
    await cap.acquire()
    waiter = asyncio.create_task(cap.acquire())
    await until(lambda: cap.waiting == 1)

    cap.release()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    assert cap.in_use == 0
    assert cap.waiting == 0


# --- output checks ---------------------------------------------------------------------


def test_text_passes_through_unchanged() -> None:
    answer = "Some prose.\n\n```python\nx = 1\n```\n"

    checked = outputs.check("text", answer)

    assert checked.ok
    assert checked.value == answer
    assert checked.extension == "md"


def test_empty_text_is_refused() -> None:
    checked = outputs.check("text", "  \n ")

    assert not checked.ok
    assert checked.problem == "the answer is empty"


def test_unfenced_code_is_kept_as_is() -> None:
    checked = outputs.check("code", "def f():\n    return 1\n\n\n")

    assert checked.ok
    assert checked.value == "def f():\n    return 1\n"
    assert checked.extension == "txt"


def test_fenced_code_is_unwrapped() -> None:
    checked = outputs.check("code", f"{FENCE}python\nx = 1\n{FENCE}\n")

    assert checked.ok
    assert checked.value == "x = 1\n"
    assert checked.extension == "py"


def test_one_fence_inside_prose_keeps_the_block() -> None:
    answer = f"Here is the code:\n\n{FENCE}go\nfunc main() {{}}\n{FENCE}\n\nHope this helps."

    checked = outputs.check("code", answer)

    assert checked.ok
    assert checked.value == "func main() {}\n"
    assert checked.extension == "go"


def test_two_fences_inside_prose_are_refused_for_code() -> None:
    answer = (f"First:\n{FENCE}python\na = 1\n{FENCE}\nThen:\n{FENCE}python\nb = 2\n{FENCE}\n")

    checked = outputs.check("code", answer)

    assert not checked.ok
    assert checked.problem == "2 code blocks where one was asked for"
    assert checked.value == answer


def test_two_fences_with_nothing_around_them_are_refused_for_code() -> None:
    answer = f"{FENCE}python\na = 1\n{FENCE}\n\n{FENCE}python\nb = 2\n{FENCE}"

    checked = outputs.check("code", answer)

    assert not checked.ok
    assert checked.problem == "2 code blocks where one was asked for"


@pytest.mark.parametrize(("language", "extension"), [
    ("python", "py"), ("Python", "py"), ("ts", "ts"), ("rust", "rs"), ("c++", "cpp"),
    ("yml", "yaml"), ("shell", "sh"), ("cobol", "txt"), ("", "txt"),
])
def test_the_fence_language_gives_the_extension(language: str, extension: str) -> None:
    checked = outputs.check("code", f"{FENCE}{language}\nbody\n{FENCE}")

    assert checked.ok
    assert checked.extension == extension


def test_an_empty_code_block_is_refused() -> None:
    checked = outputs.check("code", f"{FENCE}python\n\n{FENCE}")

    assert not checked.ok
    assert checked.problem == "the answer has no code"


def test_unfenced_json_is_accepted() -> None:
    checked = outputs.check("json", '  {"a": [1, 2]}\n')

    assert checked.ok
    assert checked.value == '{"a": [1, 2]}'
    assert checked.extension == "json"


def test_fenced_json_is_unwrapped() -> None:
    checked = outputs.check("json", f'{FENCE}json\n{{"ok": true}}\n{FENCE}')

    assert checked.ok
    assert checked.value == '{"ok": true}'


def test_invalid_json_says_where_it_broke() -> None:
    answer = '{"a": [1,}'

    checked = outputs.check("json", answer)

    assert not checked.ok
    assert checked.value == answer
    assert checked.problem.startswith("invalid JSON: ")
    assert "line 1 column 10" in checked.problem


def test_prose_around_json_is_refused() -> None:
    checked = outputs.check("json", 'Here you go: {"a": 1}')

    assert not checked.ok
    assert checked.problem.startswith("invalid JSON: ")


def test_the_repair_prompt_quotes_the_problem() -> None:
    problem = outputs.check("json", '{"a": [1,}').problem

    prompt = outputs.repair_prompt(problem)

    assert problem in prompt
    assert "only the corrected JSON" in prompt
