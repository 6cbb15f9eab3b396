"""The fast tier: pure logic only (no broker, database, network or subprocess), milliseconds a
test. `./run.sh test` runs it first."""
