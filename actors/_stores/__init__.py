"""The stores: what a store is (``_protocol``), the embedded SQLite default, PostgreSQL, the
SQL both of them run (``_sql``), and the registry that maps a ``Config.store`` URL to one.
Above the kernel and beside the journal; the runtime's store actors drive them from worker
threads."""
