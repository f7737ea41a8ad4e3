"""medstream: real-time video and waveform streaming for telemedicine."""

__version__ = "0.1.0"
