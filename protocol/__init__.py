"""The wire, both directions: every signaling message and waveform frame, close codes, room kinds.

The bottom layer of medstream: it imports nothing of ours. The server and every Python client
(`monitor-sim`, `publish`, benchmarks, tests) encode and decode through these modules, so nobody
writes a message dict by hand.
"""
