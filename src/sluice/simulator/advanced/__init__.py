"""The simulator's Coinbase Advanced Trade protocol (``sluice simulate coinbase --api
advanced_trade``): :mod:`.options` (its options and faults), :mod:`.protocol` (its messages and
the JWT check) and :mod:`.session` (one connection)."""
