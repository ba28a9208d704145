"""A hosted partition answers routed calls only while its shard serves (``_hosting.py``):
a shard that crashed, or waits to take its lease again, is unsubscribed until it serves.
Found by the cluster suite: a member fenced out by a skewed peer kept answering "not
serving" for 16 s, and those refusals reached callers before the owner's answers."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from writebehind._cluster._hosting import Hosting, _Hosted


class Shard:
    def __init__(self) -> None:
        self.serving = True
        self._changed = trio.Event()

    def set(self, serving: bool) -> None:
        self.serving = serving
        self._changed.set()
        self._changed = trio.Event()

    async def wait_serving(self, serving: bool = True) -> None:
        while self.serving != serving:
            await self._changed.wait()


class Server:
    def __init__(self) -> None:
        self.subscribed = True
        self.log: list[str] = []

    async def serve(self, partition: int) -> None:
        self.subscribed = True
        self.log.append(f"serve {partition}")

    async def stop_serving(self, partition: int) -> None:
        self.subscribed = False
        self.log.append(f"stop {partition}")


class Cache:
    def __init__(self, shard: Shard, log: list[str]) -> None:
        self.shard = shard
        self.log = log

    def hosted(self, partition: int) -> Shard:
        return self.shard

    async def host(self, partition: int) -> None:
        self.log.append(f"host {partition}")

    async def unhost(self, partition: int) -> None:
        self.log.append(f"unhost {partition}")


class Epochs:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def release(self, partition: int) -> None:
        self.log.append(f"release {partition}")


def test_a_shard_that_stops_serving_is_unsubscribed_until_it_serves_again() -> None:
    shard, server = Shard(), Server()
    hosting: Any = Hosting.__new__(Hosting)
    hosting._cache, hosting.server, hosting.member = Cache(shard, server.log), server, "me"
    hosting.epochs, hosting.handovers, hosting._idle = Epochs(server.log), 0, trio.Event()
    hosting._states = {2: _Hosted(2)}
    state = hosting._states[2]

    async def main() -> None:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(hosting._partition, state)
                await trio.sleep(1)
                assert server.subscribed and server.log == ["host 2", "serve 2"]
                del server.log[:]
                shard.set(False)  # crashed, or fenced out and waiting for its lease
                await trio.sleep(1)
                assert not server.subscribed
                shard.set(True)
                await trio.sleep(1)
                assert server.subscribed
                shard.set(False)
                await trio.sleep(1)
                state.stop.set()  # the hand-over, while it does not serve
            assert server.log == ["stop 2", "serve 2", "stop 2", "stop 2", "unhost 2",
                                  "release 2"]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


class Membership:
    renew_every = 0.5

    def __init__(self, live: set[str]) -> None:
        self.live = live

    async def read(self) -> frozenset[str]:
        return frozenset(self.live)


class HeldElsewhere(Cache):
    """Hosting a partition in ``held`` waits for its lease, which another member keeps."""

    def __init__(self, held: set[int], log: list[str]) -> None:
        super().__init__(Shard(), log)
        self.held = held

    async def host(self, partition: int) -> None:
        await super().host(partition)
        if partition in self.held:
            await trio.sleep_forever()


def test_the_first_share_is_planned_again_while_the_member_waits_for_it() -> None:
    # Found by the cluster suite: a member that planned its first share before a third one
    # joined waited for a partition the third had taken (its lease renewed for good), so
    # its cache opened only once a fault moved that partition, 30-50 s later.
    server = Server()
    membership = Membership({"me", "other"})  # 8 partitions: me 0, 1, 4, 6, 7
    hosting: Any = Hosting.__new__(Hosting)
    hosting.membership, hosting.partitions, hosting.member = membership, 8, "me"
    hosting._cache = HeldElsewhere({1, 4}, server.log)  # "third" joins and takes 1 and 4
    hosting.server, hosting.epochs = server, Epochs(server.log)
    hosting.handovers, hosting._idle, hosting._states = 0, trio.Event(), {}
    hosting._loop = trio.CancelScope()

    async def main() -> None:
        first = trio.Event()
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                hosting._nursery = nursery
                await nursery.start(hosting._run, first)
                await trio.sleep(0.2)
                assert not first.is_set()
                membership.live.add("third")  # now: me 0, 6, 7
                await first.wait()
                assert sorted(p for p, state in hosting._states.items()
                              if not state.stop.is_set()) == [0, 6, 7]
                await trio.sleep(1)  # the given-up ones unhost and release meanwhile
                assert sorted(hosting._states) == [0, 6, 7]
                assert {"release 1", "release 4"} <= set(server.log)
                nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
