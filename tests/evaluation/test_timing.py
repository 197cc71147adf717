import os
import time

import pytest
import torch

from evaluation.timing import device_description, machine_load, time_interleaved


def test_jobs_run_in_turns_after_an_untimed_warmup():
    calls = []
    jobs = {
        "slow": lambda: (calls.append("slow"), time.sleep(0.03)),
        "fast": lambda: calls.append("fast"),
    }
    seconds = time_interleaved(jobs, torch.device("cpu"), repeats=3, warmup=2)
    assert calls == ["slow", "fast"] * 5  # 2 warm-up rounds + 3 timed rounds, alternating
    assert len(seconds["slow"]) == len(seconds["fast"]) == 3
    assert min(seconds["slow"]) >= 0.03 and max(seconds["fast"]) < 0.03


def test_bad_repeat_counts_are_refused():
    with pytest.raises(ValueError, match="repeats=0 must be >= 1"):
        time_interleaved({"a": lambda: None}, torch.device("cpu"), repeats=0)


def test_device_is_named_with_its_threads():
    text = device_description(torch.device("cpu"))
    threads = torch.get_num_threads()
    assert text.startswith("cpu: ") and text.endswith(
        f", {threads} torch thread" + ("s" if threads > 1 else "")
    )
    assert len(text) > len("cpu: , 1 torch threads")  # a processor name in between


def test_machine_load_is_the_load_average_and_the_usable_cores():
    load = machine_load()
    assert set(load) == {"timing_load", "timing_cores"}
    assert load["timing_cores"] == len(os.sched_getaffinity(0)) >= 1
    assert load["timing_load"] >= 0 and abs(load["timing_load"] - os.getloadavg()[0]) < 2
