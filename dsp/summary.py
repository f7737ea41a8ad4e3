"""Offline summary of a recorded ECG with neurokit2: mean heart rate, HRV, signal quality.

This is the *offline reference* for a recorded stream, not the live path: neurokit2 cleans the
whole record with zero-phase filters and finds R peaks looking at past and future samples
(Makowski D et al. *NeuroKit2: A Python toolbox for neurophysiological signal processing.*
Behav Res Methods 53:1689-1696 (2021)). HRV metrics are the standard time-domain set (Task Force
of the ESC and NASPE, *Heart rate variability: standards of measurement.* Circulation
93(5):1043-1065 (1996)); quality is neurokit2's ``ecg_quality``: the per-sample "averageQRS"
index averaged over the record, and the Zhao & Zhang 2018 three-level class.

The recorder can call `summarize_ecg` on a finished WFDB recording; ``python -m dsp.summary
RECORD [--json FILE]`` prints one.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dsp.filters import check_sampling_rate

#: shortest recording a summary is computed for (HRV needs a few dozen beats)
MIN_DURATION_S = 10.0


@dataclass(frozen=True)
class EcgSummary:
    """Whole-record summary. Times in ms, rates in beats per minute, quality 0-1.

    ``quality_class`` is neurokit2's Zhao 2018 label: "Excellent", "Barely acceptable" or
    "Unacceptable". HRV fields are None when fewer than 3 beats were found.
    """

    duration_s: float
    sampling_rate_hz: float
    n_beats: int
    mean_hr_bpm: float | None
    mean_nn_ms: float | None
    sdnn_ms: float | None
    rmssd_ms: float | None
    pnn50_pct: float | None
    quality_mean: float
    quality_class: str

    def to_json(self) -> dict[str, object]:
        """Plain dict for JSON (manifests, CLI output)."""
        return asdict(self)


def summarize_ecg(signal_mv: np.ndarray, sampling_rate_hz: float) -> EcgSummary:
    """Summarise one ECG channel (1-D, millivolts) with neurokit2.

    Raises:
        ValueError: if the rate is outside 125-1000 Hz, the signal is not 1-D and finite, or
            it is shorter than `MIN_DURATION_S`.
    """
    import neurokit2 as nk

    fs = check_sampling_rate(sampling_rate_hz)
    x = np.asarray(signal_mv, dtype=np.float64)
    if x.ndim != 1 or not np.isfinite(x).all():
        raise ValueError(f"expected a finite 1-D signal, got shape {x.shape}")
    duration_s = x.size / fs
    if duration_s < MIN_DURATION_S:
        raise ValueError(
            f"recording must be at least {MIN_DURATION_S:g} s to summarise, got {duration_s:.1f} s"
        )
    rate = int(round(fs))
    cleaned = nk.ecg_clean(x, sampling_rate=rate)
    _, info = nk.ecg_peaks(cleaned, sampling_rate=rate)
    peaks = np.asarray(info["ECG_R_Peaks"], dtype=np.int64)
    quality = nk.ecg_quality(cleaned, rpeaks=peaks, sampling_rate=rate, method="averageQRS")
    quality_class = str(
        nk.ecg_quality(cleaned, rpeaks=peaks, sampling_rate=rate, method="zhao2018",
                       approach="fuzzy")
    )
    nn_ms = np.diff(peaks) * 1000.0 / fs
    mean_nn: float | None = None
    sdnn: float | None = None
    rmssd: float | None = None
    pnn50: float | None = None
    mean_hr: float | None = None
    if nn_ms.size >= 2:
        mean_nn = float(nn_ms.mean())
        sdnn = float(nn_ms.std(ddof=1))
        successive = np.diff(nn_ms)
        rmssd = float(np.sqrt(np.mean(successive**2)))
        pnn50 = float(100.0 * np.mean(np.abs(successive) > 50.0))
        mean_hr = 60000.0 / mean_nn
    return EcgSummary(
        duration_s=duration_s,
        sampling_rate_hz=fs,
        n_beats=int(peaks.size),
        mean_hr_bpm=mean_hr,
        mean_nn_ms=mean_nn,
        sdnn_ms=sdnn,
        rmssd_ms=rmssd,
        pnn50_pct=pnn50,
        quality_mean=float(np.nanmean(quality)),
        quality_class=quality_class,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m dsp.summary RECORD [--channel N] [--json FILE]``: print a record's summary."""
    from dsp.records import load_record

    parser = argparse.ArgumentParser(prog="python -m dsp.summary", description=__doc__)
    parser.add_argument("record", help="WFDB record path without extension")
    parser.add_argument("--channel", type=int, default=0)
    parser.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    args = parser.parse_args(argv)
    record = args.record.removesuffix(".hea").removesuffix(".dat").removesuffix(".atr")
    if not Path(record + ".hea").exists():
        parser.error(f"record {record!r}: expected {record}.hea, not found")
    try:
        rec = load_record(record, args.channel)
    except (ValueError, IndexError, FileNotFoundError) as exc:
        parser.error(f"record {record!r}, channel {args.channel}: {exc}")
    summary = summarize_ecg(rec.signal_mv, rec.sampling_rate_hz)
    for key, value in summary.to_json().items():
        print(f"{key:>18}: {value:.2f}" if isinstance(value, float) else f"{key:>18}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary.to_json(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
