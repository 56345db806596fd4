"""What the dialogs ask for is data; the app's side has a way to do each kind."""

from __future__ import annotations

from types import SimpleNamespace
from typing import get_args

from aetherflow_tui.request_handler import Requests
from aetherflow_tui.requests import Request, SetKey
from tests.conftest import TEST_KEY


def test_every_kind_of_request_is_carried_out():
    carried = Requests(SimpleNamespace(engine=None))._carry  # type: ignore[arg-type]
    assert set(carried) == set(get_args(Request))


def test_a_key_request_never_shows_the_key():
    request = SetKey("groq", TEST_KEY)
    assert TEST_KEY not in repr(request) and TEST_KEY not in str(request)
    assert request.secret == TEST_KEY
