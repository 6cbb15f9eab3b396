"""The fault suite: each scenario drives real processes through one failure (a client's network,
a worker's death, the broker or the database going away, a provider misbehaving) and asserts,
from the fake provider's call log and the bytes the client received, that no answer was lost or
repeated. tests/conftest.py marks every test here `faults` (select with `-m faults`) and `slow`."""
