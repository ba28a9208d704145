"""writebehind.chaos: seeded, reproducible chaos suites users run in their CI."""

__all__: list[str] = []
