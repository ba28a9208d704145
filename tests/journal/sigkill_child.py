"""Child process for the SIGKILL test: append forever, print each seq once it is synced."""

from __future__ import annotations

import sys

import trio

from writebehind._journal import Journal, RecordKind


async def main(directory: str) -> None:
    journal = await Journal.open(directory, shard_id=0, segment_bytes=4096)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)

        async def writer(w: int) -> None:
            i = 0
            while True:
                seq = journal.append_nowait(RecordKind.PUT, f"w{w}", str(i).encode() * 10, i)
                await journal.wait_synced(seq)
                print(seq, flush=True)
                i += 1

        for w in range(8):
            nursery.start_soon(writer, w)


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
