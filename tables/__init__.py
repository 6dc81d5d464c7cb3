"""The worker's state: RocksDB-backed Faust tables with changelog topics."""
