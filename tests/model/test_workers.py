"""The sweep's workers: every row once, the caller's thread count and grad mode kept, errors raised."""

import pytest
import torch

from catneuron.model.workers import chunks, run_rows


@pytest.mark.parametrize("count", [1, 7, 25, 183])
def test_chunks_cover_every_row_once_in_order(count):
    pieces = chunks(count)
    assert [y for rows in pieces for y in rows] == list(range(count))
    assert len(pieces) == min(count, 32) and all(len(rows) > 0 for rows in pieces)


def test_rows_run_on_single_threaded_workers_with_the_callers_grad_mode():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = {}

        def job(rows: range) -> None:
            for y in rows:
                seen[y] = (torch.get_num_threads(), torch.is_grad_enabled())

        with torch.no_grad():
            run_rows(job, 40, torch.device("cpu"))
        assert sorted(seen) == list(range(40)) and set(seen.values()) == {(1, False)}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_an_error_in_a_worker_is_raised_and_the_thread_count_restored():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        def job(rows: range) -> None:
            if 5 in rows:
                raise ValueError("row 5")

        with pytest.raises(ValueError, match="row 5"):
            run_rows(job, 20, torch.device("cpu"))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
