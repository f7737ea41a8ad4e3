"""medstream as a cluster on Redis: node registry, room directory and state, placement, waveform journal.

Plain, socket-free decisions (`placement`) apart from the Redis edge (`directory`, `journal`) and
the loop that keeps a node registered (`node`). Imports nothing of ours: the node
(`medstream.cluster_bridge`) hands it what it needs as plain records.
"""
