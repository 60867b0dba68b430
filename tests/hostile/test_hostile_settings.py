"""Malformed VOTIVE_* settings (issue 19, item 6) fail at init with Votive.ConfigError naming the variable, before
the model loads, instead of a 500 on each request: the kernels' VOTIVE_NUM_THREADS and VOTIVE_SPIN_US (read by the
C library when it first loads), and VOTIVE_MAX_INPUTS past what a request could hold."""

from __future__ import annotations

import pytest
from fake_llm import FakeModel

from votive.errors import KernelError, VotiveFault
from votive.handlers import embeddings, generation, settings
from votive.quant import kernel_settings


def _never_load(source, **options):
    raise AssertionError("the model must not load with a malformed setting")


BAD = [
    ("VOTIVE_NUM_THREADS", "abc"),
    ("VOTIVE_NUM_THREADS", "0"),
    ("VOTIVE_NUM_THREADS", "-2"),
    ("VOTIVE_NUM_THREADS", "4096"),  # past the thread pool's 1024
    ("VOTIVE_NUM_THREADS", "9" * 5000),  # past int()'s 4300 digits
    ("VOTIVE_SPIN_US", "-1"),
    ("VOTIVE_SPIN_US", "100001"),
    ("VOTIVE_SPIN_US", "1.5"),
    ("VOTIVE_SPIN_US", "abc"),
    ("VOTIVE_DECODE_STEP", "off"),
    ("VOTIVE_DECODE_STEP", "2"),
]


@pytest.mark.parametrize("name, value", BAD)
@pytest.mark.parametrize("handler_module", [generation, embeddings])
def test_bad_kernel_settings_fail_at_init(handler_module, name, value):
    with pytest.raises(VotiveFault) as caught:
        handler_module.load_handler({"VOTIVE_MODEL": "m", name: value}, load=_never_load)
    assert caught.value.code == VotiveFault.CONFIG_ERROR and name in caught.value.message


@pytest.mark.parametrize("value", ["99999999", "9" * 5000, "²", "1e3"])
def test_oversized_or_odd_max_inputs_fail_at_init(value):
    with pytest.raises(VotiveFault) as caught:
        embeddings.load_handler({"VOTIVE_MODEL": "m", "VOTIVE_MAX_INPUTS": value}, load=_never_load)
    assert caught.value.code == VotiveFault.CONFIG_ERROR and "VOTIVE_MAX_INPUTS" in caught.value.message


def test_good_settings_still_load():
    environ = {"VOTIVE_MODEL": "m", "VOTIVE_NUM_THREADS": "2", "VOTIVE_SPIN_US": "0", "VOTIVE_MAX_TOKENS": "007"}
    generation.load_handler(environ, load=lambda source, n_ctx=None: FakeModel())
    assert embeddings.Settings.from_env({"VOTIVE_MODEL": "m", "VOTIVE_MAX_INPUTS": "100000"}).max_inputs == 100000


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1", "2", "1024", "1.5", " 7 ", "0100", "100000", "100001",
                                   "99999999999", "٣", "²", "+5", "5_0"])
def test_the_handlers_rules_are_no_looser_than_the_kernels(value):
    # what init accepts, the kernel library accepts too when it loads later (the handler may be stricter)
    for name, kernel_check in (("VOTIVE_NUM_THREADS", kernel_settings.configured_threads),
                               ("VOTIVE_SPIN_US", kernel_settings.configured_spin_us)):
        try:
            settings.check_kernel_settings({name: value})
        except VotiveFault:
            continue
        try:
            kernel_check({name: value})
        except KernelError as e:
            raise AssertionError(f"{name}={value!r} passes init but fails in the kernels: {e}") from None
