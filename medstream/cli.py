"""The `medstream` command: one entry point, subcommands dispatched to their owners.

Subcommands that belong to a part of the system (`ecg-eval` to dsp, `monitor-sim` to clients,
`recordings` to recorder) are implemented as `main(argv) -> int` in that part and only routed here,
so each part keeps its own argument parsing next to its code.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

# subcommand -> (module[:function], help). The function (default `main`) is `(argv: list[str]) -> int`.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("medstream.serve", "run the signaling + media server"),
    "demo": ("medstream.demo", "run the server with simulated monitors and print links to open"),
    "token": ("medstream.token", "issue a signed access token for a room"),
    "ecg-eval": ("dsp.ecg_eval", "score the live QRS detector against WFDB reference annotations"),
    "ecg12-eval": ("dsp.ecg12.eval", "measure and triage 12-lead records; agreement with their labels"),
    "alarm-eval": ("dsp.alarm_eval", "stream WFDB records through the live analyzer: alarms, HR, beats"),
    "ecg-summary": ("dsp.summary", "offline summary of a recorded ECG (neurokit2: HRV, quality)"),
    "monitor-sim": ("clients.monitor_sim", "stream a WFDB record or synthetic ECG as a bedside monitor"),
    "ecg12-send": ("clients.ecg12_send", "send a 12-lead ECG (WFDB record) as a cart's snapshot for reading"),
    "publish": ("clients.publish", "publish a video file into a broadcast room"),
    "recordings": ("recorder.library", "list, inspect and prune recorded sessions"),
    "audit": ("signaling.audit", "verify the hash chain of an audit log (`audit verify FILE`)"),
    "room": ("medstream.admin_cli:room_main", "create, list and end rooms through a node's admin API"),
    "participant": ("medstream.admin_cli:participant_main", "list, remove and mute participants (admin API)"),
}


def _usage() -> str:
    lines = ["usage: medstream <command> [options]", "", "commands:"]
    for name, (_, help_text) in SUBCOMMANDS.items():
        lines.append(f"  {name:<12} {help_text}")
    lines.append("")
    lines.append("Run `medstream <command> --help` for a command's options.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch `medstream <command> ...` to the command's module."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if args[0] in ("-V", "--version"):
        from medstream import __version__

        print(__version__)
        return 0
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"medstream: unknown command {name!r}\n", file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 2
    module_name, _, function = SUBCOMMANDS[name][0].partition(":")
    module = importlib.import_module(module_name)
    entry: Callable[[list[str]], int] = getattr(module, function or "main")
    return int(entry(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
