"""Which leftover broker queues a test run may delete: only its own and long-abandoned runs'."""

from tests.harness import STALE_AFTER, stale_namespace_queues

NOW = 1_800_000_000.0


def test_only_test_and_bench_queues_of_runs_older_than_the_bound_are_stale() -> None:
    old = int(NOW - STALE_AFTER - 60)
    young = int(NOW - 600)
    names = [
        f"test-{old}-4242.main.llm_tasks.3",           # run.sh's namespace, abandoned
        f"test-{old}-4242.soak-ab12cd.session.x",      # a stack inside it
        f"test-grpc-{old}.main.llm_batch",             # a helper's / bench's naming
        f"bench-{old}.llm_tasks.0",
        f"test-{young}-77.main.llm_tasks.0",           # a run that may still be going
        "test-1a2b3c4d.main.llm_tasks.0",              # no epoch: never guessed at
        f"rafale.llm_tasks.{old}",                     # a deployment's queue, whatever its name
        f"prod-{old}.llm_tasks.0",
    ]
    assert stale_namespace_queues(names, NOW) == names[:4]


def test_a_number_inside_a_longer_number_is_not_an_epoch() -> None:
    assert stale_namespace_queues(["test-917000000000.x"], NOW) == []
