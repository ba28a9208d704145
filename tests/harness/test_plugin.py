"""The pytest plugin: loads cheaply, and its fixtures work in a user's test suite."""

import subprocess
import sys

import pytest

pytest_plugins = ["pytester"]


def test_loading_the_plugin_does_not_import_hypothesis() -> None:
    code = (
        "import sys, writebehind.harness.pytest_plugin as p; "
        "print('hypothesis' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]


def test_a_users_test_file_uses_the_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from writebehind import ShardCrashed, StoreUnavailable
        from writebehind.harness import FaultPlan
        from writebehind.harness.pytest_plugin import CacheMachine

        def test_plan(writebehind_fault_plan, writebehind_seed):
            assert isinstance(writebehind_fault_plan, FaultPlan)
            assert writebehind_fault_plan.seed == writebehind_seed == 1234

        async def test_cache(writebehind_cache):
            for i in range(20):
                try:
                    await writebehind_cache.put(f"k{i}", b"v")
                except (ShardCrashed, StoreUnavailable):
                    pass  # uncertain: my code would retry
            await writebehind_cache.flush()

        def test_machine_is_reexported():
            assert CacheMachine.ack == "fsync"
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "trio", "-o", "trio_mode=true", "--writebehind-seed=1234"
    )
    result.assert_outcomes(passed=3)


def test_a_failing_test_prints_the_seed_to_replay(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_fails(writebehind_fault_plan):
            assert False
        """
    )
    result = pytester.runpytest_subprocess("--writebehind-seed=77")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*fault plan seed 77: rerun with --writebehind-seed=77*"])
