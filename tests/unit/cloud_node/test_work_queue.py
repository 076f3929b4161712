"""The compute queue: arrival order, batches of ready generation and session requests, bounded, one job per
session in a batch, and session requests served between a generation's steps."""

from cloud_node.work_queue import Job, WorkQueue


def batchable(name, key="m"):
    return Job(batch_key=key, payload=name)


def plain(name):
    return Job(run=lambda: None, payload=name, between_steps=True)


def session_request(name, session):
    return Job(batch_key="sessions", payload=name, sequence=session, between_steps=True, waits_to_fill=False)


def names(jobs):
    return [job.payload for job in jobs]


def test_generation_requests_queued_together_run_as_one_batch_in_arrival_order():
    queue = WorkQueue(max_batch=8)
    for job in (batchable("a"), plain("x"), batchable("b"), batchable("c")):
        queue.put(job)
    assert names(queue.take(0.1)) == ["a", "b", "c"]
    assert names(queue.take(0.1)) == ["x"]


def test_a_batch_is_bounded_and_the_rest_waits_for_the_next():
    queue = WorkQueue(max_batch=2)
    for name in "abcde":
        queue.put(batchable(name))
    assert [names(queue.take(0.1)) for _ in range(3)] == [["a", "b"], ["c", "d"], ["e"]]


def test_requests_for_another_model_are_not_batched_with_it():
    queue = WorkQueue(max_batch=8)
    for job in (batchable("a", "m1"), batchable("b", "m2"), batchable("c", "m1")):
        queue.put(job)
    assert names(queue.take(0.1)) == ["a", "c"]
    assert names(queue.take(0.1)) == ["b"]


def test_an_older_session_request_runs_before_a_later_batch():
    queue = WorkQueue(max_batch=8)
    queue.put(plain("x"))
    queue.put(batchable("a"))
    assert names(queue.take(0.1)) == ["x"]


def test_session_requests_queued_during_a_batch_are_served_between_its_steps():
    queue = WorkQueue(max_batch=8)
    for job in (plain("x"), batchable("later"), session_request("t1", "s1"), plain("y"), session_request("t2", "s2")):
        queue.put(job)
    assert [names(jobs) for jobs in queue.take_between_steps()] == [["x"], ["t1", "t2"], ["y"]]
    assert names(queue.take(0.1)) == ["later"]


def test_an_empty_queue_times_out_and_none_stops_the_taker():
    queue = WorkQueue(max_batch=8)
    assert queue.take(0.01) == []
    queue.put(None)
    assert queue.take(0.01) is None


def test_a_request_arriving_within_the_window_joins_the_batch():
    import threading

    queue = WorkQueue(max_batch=8, window_s=0.5)
    queue.put(batchable("a"))
    threading.Timer(0.05, lambda: queue.put(batchable("b"))).start()
    assert names(queue.take(1.0)) == ["a", "b"]


def test_a_full_batch_does_not_wait_for_the_window():
    import time

    queue = WorkQueue(max_batch=2, window_s=5.0)
    queue.put(batchable("a"))
    queue.put(batchable("b"))
    started = time.monotonic()
    assert names(queue.take(1.0)) == ["a", "b"] and time.monotonic() - started < 1.0


def test_session_requests_of_many_sessions_batch_without_waiting_but_one_per_session_in_order():
    import time

    queue = WorkQueue(max_batch=3, window_s=5.0)
    for job in (session_request("a1", "a"), session_request("b1", "b"), session_request("a2", "a"),
                session_request("c1", "c"), session_request("d1", "d"), session_request("b2", "b")):
        queue.put(job)
    started = time.monotonic()
    assert names(queue.take(1.0)) == ["a1", "b1", "c1"]  # a2 waits for a1's batch to be done; bounded at 3
    assert time.monotonic() - started < 1.0  # session requests never wait for a batch to fill
    assert names(queue.take(1.0)) == ["a2", "d1", "b2"]


def test_between_steps_a_session_held_back_keeps_its_later_requests_behind():
    queue = WorkQueue(max_batch=2)
    for job in (session_request("a1", "a"), session_request("b1", "b"), session_request("a2", "a"),
                session_request("c1", "c"), batchable("gen")):
        queue.put(job)
    assert [names(jobs) for jobs in queue.take_between_steps()] == [["a1", "b1"]]
    assert [names(jobs) for jobs in queue.take_between_steps()] == [["a2", "c1"]]
    assert names(queue.take(0.1)) == ["gen"]


def unbatched(name):
    return Job(run=lambda: None, payload=name)  # must wait for a running batch to end


def test_generations_queued_while_a_batch_runs_join_it_up_to_its_room():
    queue = WorkQueue(max_batch=8)
    for job in (batchable("a"), session_request("t1", "s1"), batchable("b"), batchable("c")):
        queue.put(job)
    assert names(queue.take_joining("m", limit=2)) == ["a", "b"]  # session requests run between steps anyway
    assert names(queue.take_joining("m", limit=8)) == ["c"]
    assert [names(jobs) for jobs in queue.take_between_steps()] == [["t1"]]
    assert queue.qsize() == 0


def test_a_generation_queued_behind_work_that_waits_for_the_batch_does_not_jump_ahead_of_it():
    queue = WorkQueue(max_batch=8)
    for job in (batchable("a"), unbatched("x"), batchable("b"), batchable("c", "other"), batchable("d")):
        queue.put(job)
    assert names(queue.take_joining("m", limit=8)) == ["a"]  # "b" and "d" would be served before "x" and "c"
    assert names(queue.take(0.1)) == ["x"]
    assert names(queue.take_joining("m", limit=8)) == ["b"]
    assert names(queue.take(0.1)) == ["c"]
    assert names(queue.take(0.1)) == ["d"]
