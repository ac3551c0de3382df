"""Side by side, in one invocation: the hand-written Optuna + Trainer search against `search run`.

Runs, one after the other, each in its own process on the same space file:

1. ``benchmarks/baseline_trainer.py`` (Optuna + HF Trainer + peft, written as users do today);
2. ``python -m peftsearch run SPACE --pack K`` for each K of ``--pack`` (1 = one trial at a time).

While each runs, a sampler thread reads ``nvidia-smi`` every 200 ms (GPU busy %, memory used);
the process's CPU time comes from ``os.wait4``. Afterwards each study is read back from its
storage (COMPLETE trials only) and one table is printed and written to OUT/results.md, with
OUT/results.json beside it:

- trials/h (wall): completed trials / the process's wall time x 3600; everything a user waits
  for (imports, data loading, model loading) counts. The headline ratio is on this one.
- trials/h (search): completed trials / (last trial's end - first trial's start) x 3600; the
  search loop alone, without process start-up.
- median s/trial: the median ``trial_seconds`` user attr (each tool's wall time of one trial;
  packed trials overlap, so for K > 1 the span-based "s/trial (search)" is the comparable one).
- hypervolume: of the (accuracy, log10 trainable params) points, up to the fixed reference
  (``--hv-metric``, default 0.5 = chance for two balanced classes; log10 of the base model's
  parameter count), with ``peftsearch.reports.figures.hypervolume_2d``. Units: metric x decades.
- peak GPU memory: the larger of the trials' ``peak_gpu_memory_bytes`` (torch's allocator peak)
  and nvidia-smi's peak ``memory.used`` (the whole device, CUDA context included).

No torch import here (this process must not hold GPU memory that nvidia-smi would count), no
plotly: it runs on a GPU host that has only the staged wheels.

    python benchmarks/driver.py --space benchmarks/space_rt_cpu.yaml --pack 1,4 --out runs/bench-cpu
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

try:
    import peftsearch  # noqa: F401
except ImportError:  # a checkout without `pip install -e .` (the GPU host: PYTHONPATH=src)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from peftsearch.reports.figures import hypervolume_2d  # plain Python: no plotly, no torch
from peftsearch.spaces import CategoricalDist, FloatDist, IntDist, load_space

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "baseline"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="benchmarks/space_rt.yaml", help="the space file")
    p.add_argument("--n-trials", type=int, default=None, help="default: the space's n_trials")
    p.add_argument(
        "--pack", default="1,8,16", help="comma list of `search run --pack` sizes (or auto)"
    )
    p.add_argument(
        "--out",
        default=os.environ.get("OUT") or "runs/bench",
        help="results folder (default: $OUT if set, else runs/bench)",
    )
    p.add_argument("--skip-baseline", action="store_true", help="run only `search run`")
    p.add_argument(
        "--hv-metric",
        type=float,
        default=0.5,
        help="metric of the hypervolume reference point (default 0.5)",
    )
    p.add_argument(
        "--force", action="store_true", help="delete earlier results of the same runs in --out"
    )
    return p.parse_args(argv)


# -- sampling the device while a run goes on --------------------------------------------------


class GpuSampler:
    """``nvidia-smi -lms 200`` in the background: GPU utilization % and memory used (MiB)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("nvidia-smi") is not None

    def start(self) -> None:
        if not self.available():
            return
        cmd = [
            "nvidia-smi",
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
            "-lms",
            "200",
        ]
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        if visible:
            cmd += ["-i", visible]  # the GPU the runs use (the first visible one)
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            parts = [x.strip() for x in line.split(",")]
            try:
                self.samples.append((float(parts[0]), float(parts[1])))
            except (ValueError, IndexError):  # "[N/A]", a partial line at kill
                continue

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def busy_pct(self) -> float | None:
        # Samples are evenly spaced, so their mean is the time average over the run.
        return statistics.fmean(u for u, _ in self.samples) if self.samples else None

    def peak_mib(self) -> float | None:
        return max(m for _, m in self.samples) if self.samples else None


@dataclass
class Run:
    name: str
    command: list[str]
    out_dir: Path
    rc: int | None = None
    wall_s: float = 0.0
    cpu_s: float = 0.0  # user + sys of the process and the children it waited for
    max_rss_mib: float | None = None
    gpu_busy_pct: float | None = None
    gpu_mem_peak_mib: float | None = None
    gpu_samples: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


def child_env() -> dict[str, str]:
    """This environment, offline, unbuffered, with the checkout's src/ on PYTHONPATH (kept
    behind what is there already: /tmp/site of the staged wheels on the GPU host)."""
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env["PYTHONUNBUFFERED"] = "1"
    src = str(ROOT / "src")
    if src not in env.get("PYTHONPATH", "").split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join(x for x in (env.get("PYTHONPATH"), src) if x)
    return env


def execute(run: Run) -> None:
    """Run one search as a child process, timing it and sampling the device meanwhile."""
    env = child_env()
    sampler = GpuSampler()
    print(f"\n=== {run.name}: {' '.join(run.command)}", flush=True)
    sampler.start()
    t0 = time.perf_counter()
    proc = subprocess.Popen(run.command, env=env, cwd=ROOT)
    try:
        # wait4: this child's own CPU time and peak RSS (getrusage(RUSAGE_CHILDREN) would mix
        # in every earlier child; its ru_maxrss is a maximum over all of them).
        _, status, usage = os.wait4(proc.pid, 0)
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        sampler.stop()
        raise
    run.wall_s = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    sampler.stop()
    run.rc = proc.returncode
    run.cpu_s = usage.ru_utime + usage.ru_stime
    run.max_rss_mib = usage.ru_maxrss / 1024  # Linux: KiB
    run.gpu_busy_pct = sampler.busy_pct()
    run.gpu_mem_peak_mib = sampler.peak_mib()
    run.gpu_samples = len(sampler.samples)
    print(f"=== {run.name}: exit {run.rc} after {run.wall_s:.1f} s", flush=True)


# -- reading the studies back -----------------------------------------------------------------


def open_study(run: Run, study_name: str | None) -> Any:
    import optuna

    if run.name == BASELINE:
        storage: Any = f"sqlite:///{(run.out_dir / 'baseline.db').resolve()}"
        study_name = "baseline"
    elif (run.out_dir / "study.journal").is_file():
        from optuna.storages.journal import JournalFileBackend

        backend = JournalFileBackend(str(run.out_dir / "study.journal"))
        storage = optuna.storages.JournalStorage(backend)
    elif (run.out_dir / "study.db").is_file():
        storage = f"sqlite:///{(run.out_dir / 'study.db').resolve()}"
    else:
        return None
    names = optuna.get_all_study_names(storage)
    if study_name not in names:
        if len(names) != 1:
            return None
        study_name = names[0]
    return optuna.load_study(study_name=study_name, storage=storage)


def study_stats(study: Any) -> dict[str, Any]:
    """Numbers of the COMPLETE trials of a study (no hypervolume: that needs the reference)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.number)
    out: dict[str, Any] = {
        "trials": len(trials),
        "completed": len(done),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "base_params": study.user_attrs.get("base_params"),
        "points": [[t.values[0], max(float(t.values[1]), 1.0)] for t in done],
    }
    if not done:
        return out

    def med(key: str) -> float | None:
        vals = [t.user_attrs[key] for t in done if t.user_attrs.get(key) is not None]
        return statistics.median(vals) if vals else None

    starts = [t.datetime_start for t in done if t.datetime_start]
    ends = [t.datetime_complete for t in done if t.datetime_complete]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else None
    peaks = [t.user_attrs.get("peak_gpu_memory_bytes") for t in done]
    peaks = [p for p in peaks if p is not None]
    best = max(done, key=lambda t: (t.values[0], -t.values[1]))
    metrics = [t.values[0] for t in done]
    out.update(
        span_s=span,
        median_trial_s=med("trial_seconds"),
        median_train_s=med("train_seconds"),
        torch_peak_mib=max(peaks) / 2**20 if peaks else None,
        best_metric=best.values[0],
        best_params=int(best.values[1]),
        best_config=dict(best.params),
        median_metric=statistics.median(metrics),
        pack_size=med("pack_size"),
    )
    return out


def finish_stats(run: Run, reference: tuple[float, float] | None, cpus: int) -> None:
    s = run.stats
    n = s.get("completed", 0)
    s["wall_s"] = run.wall_s
    s["rc"] = run.rc
    s["trials_per_hour_wall"] = n / run.wall_s * 3600 if run.wall_s > 0 and n else None
    span = s.get("span_s")
    s["trials_per_hour_search"] = n / span * 3600 if span and n else None
    s["s_per_trial_search"] = span / n if span and n else None
    s["cpu_busy_pct"] = 100 * run.cpu_s / (run.wall_s * cpus) if run.wall_s > 0 else None
    s["cpu_seconds"] = run.cpu_s
    s["max_rss_mib"] = run.max_rss_mib
    s["gpu_busy_pct"] = run.gpu_busy_pct
    s["gpu_mem_peak_mib"] = run.gpu_mem_peak_mib
    peaks = [p for p in (s.get("torch_peak_mib"), run.gpu_mem_peak_mib) if p is not None]
    s["peak_gpu_mem_mib"] = max(peaks) if peaks else None
    points = s.get("points") or []
    s["hypervolume"] = (
        hypervolume_2d([(m, math.log10(p)) for m, p in points], reference)
        if reference and points
        else None
    )


# -- the table --------------------------------------------------------------------------------


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return format(value, spec)


ROWS: list[tuple[str, str, str]] = [
    # (label, key in stats, format)
    ("completed / failed trials", "counts", ""),
    ("wall time (s)", "wall_s", ".1f"),
    ("trials/h (wall)", "trials_per_hour_wall", ",.0f"),
    ("ratio trials/h (wall) vs baseline", "ratio_wall", ".2f"),
    ("trials/h (search)", "trials_per_hour_search", ",.0f"),
    ("ratio trials/h (search) vs baseline", "ratio_search", ".2f"),
    ("median s/trial (trial_seconds)", "median_trial_s", ".2f"),
    ("s/trial (search span / trials)", "s_per_trial_search", ".2f"),
    ("median train s/trial", "median_train_s", ".2f"),
    ("median pack size (trial attr)", "pack_size", ".1f"),
    ("GPU busy %", "gpu_busy_pct", ".1f"),
    ("CPU busy %", "cpu_busy_pct", ".1f"),
    ("peak GPU memory (MiB)", "peak_gpu_mem_mib", ",.0f"),
    ("  torch allocator peak (MiB)", "torch_peak_mib", ",.0f"),
    ("  nvidia-smi memory.used peak (MiB)", "gpu_mem_peak_mib", ",.0f"),
    ("peak RSS (MiB)", "max_rss_mib", ",.0f"),
    ("best accuracy", "best_metric", ".4f"),
    ("  its trainable params", "best_params", ","),
    ("median accuracy", "median_metric", ".4f"),
    ("hypervolume", "hypervolume", ".4f"),
]


def table(runs: list[Run]) -> str:
    head = "| | " + " | ".join(r.name for r in runs) + " |"
    lines = [head, "|---|" + "---:|" * len(runs)]
    for label, key, spec in ROWS:
        cells = []
        for r in runs:
            if key == "counts":
                cells.append(f"{r.stats.get('completed', 0)} / {r.stats.get('failed', 0)}")
            else:
                cells.append(_fmt(r.stats.get(key), spec))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe(space: Any, n_trials: int, reference: tuple[float, float] | None) -> str:
    d, p = space.data, space.params
    searched = ", ".join(
        f"{k} {v.choices}"
        if isinstance(v, CategoricalDist)
        else f"{k} [{v.low:g}, {v.high:g}]{' log' if v.log else ''}"
        for k, v in p.items()
        if isinstance(v, CategoricalDist | FloatDist | IntDist)
    )
    ref = (
        f"(accuracy {reference[0]:g}, log10 {10 ** reference[1]:,.0f} params = {reference[1]:.3f})"
        if reference
        else "(none: no base_params recorded)"
    )
    return (
        f"Space `{space.file}` (study {space.study_name}): model {space.model.path}, "
        f"max_length {space.model.max_length}; train {d.train_size} / eval {d.eval_size} rows per "
        f"trial; batch {p.get('batch_size')}, epochs {p.get('epochs')}; searched: {searched}; "
        f"{n_trials} trials, sampler {space.study.sampler} seed {space.study.seed} (baseline: "
        f"optuna TPESampler(seed)). Hypervolume reference {ref}."
    )


def machine() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    if GpuSampler.available():
        try:
            info["gpu"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            info["gpu"] = "nvidia-smi failed"
    names = ("peftsearch", "torch", "transformers", "peft", "optuna", "datasets", "accelerate")
    for name in names:
        try:
            info[name] = version(name)
        except PackageNotFoundError:
            info[name] = "not installed"
    return info


def has_pack_flag() -> bool:
    """Whether this `search run` takes --pack (it came with issue 5)."""
    out = subprocess.run(
        [sys.executable, "-m", "peftsearch", "run", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=child_env(),
    )
    return "--pack" in out.stdout


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    space_file = Path(args.space).resolve()  # the children run in the repo root
    space = load_space(space_file)
    n_trials = args.n_trials or space.study.n_trials
    packs = [x.strip() for x in args.pack.split(",") if x.strip()]
    for k in packs:
        if not (k == "auto" or (k.isdigit() and int(k) >= 1)):
            raise SystemExit(f"--pack takes sizes >= 1 or auto, got {k!r}")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cpus = os.cpu_count() or 1
    pack_flag = has_pack_flag()

    runs: list[Run] = []
    if not args.skip_baseline:
        d = out / BASELINE
        cmd = [sys.executable, str(ROOT / "benchmarks" / "baseline_trainer.py")]
        cmd += ["--space", str(space_file), "--out", str(d), "--n-trials", str(n_trials)]
        runs.append(Run(BASELINE, cmd, d))
    for k in packs:
        d = out / f"peftsearch-pack{k}"
        cmd = [sys.executable, "-m", "peftsearch", "run", str(space_file), "--output", str(d)]
        cmd += ["--n-trials", str(n_trials), "--no-progress"]
        if pack_flag:
            cmd += ["--pack", k]
        elif k != "1":
            raise SystemExit(f"`search run` here has no --pack flag; cannot run --pack {k}")
        runs.append(Run(f"peftsearch-pack{k}", cmd, d))
    for r in runs:  # a study that exists would be resumed and mix old trials into the numbers
        if r.out_dir.exists() and any(r.out_dir.iterdir()):
            if not args.force:
                raise SystemExit(f"{r.out_dir} is not empty; pick another --out or pass --force")
            shutil.rmtree(r.out_dir)

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for r in runs:
        execute(r)
        study = open_study(r, space.study_name)
        r.stats = study_stats(study) if study is not None else {"completed": 0}

    bases = [r.stats.get("base_params") for r in runs if r.stats.get("base_params")]
    reference = (args.hv_metric, math.log10(bases[0])) if bases else None
    for r in runs:
        finish_stats(r, reference, cpus)
    base = next((r for r in runs if r.name == BASELINE), None)
    for r in runs:
        for key, src in (
            ("ratio_wall", "trials_per_hour_wall"),
            ("ratio_search", "trials_per_hour_search"),
        ):
            a, b = r.stats.get(src), base.stats.get(src) if base else None
            r.stats[key] = a / b if a and b else None

    info = machine()
    text = "\n\n".join(
        [
            f"# search run vs hand-written Optuna + Trainer ({started})",
            describe(space, n_trials, reference),
            "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
            table(runs),
        ]
    )
    if not info.get("gpu"):
        text += "\n\nNo nvidia-smi: GPU rows are empty; CPU busy % = CPU seconds / (wall x cores)."
    print("\n" + text, flush=True)
    (out / "results.md").write_text(text + "\n", encoding="utf-8")
    results = {
        "started": started,
        "space": str(space_file),
        "n_trials": n_trials,
        "packs": packs,
        "pack_flag_passed": pack_flag,
        "hypervolume_reference": {
            "metric": reference[0],
            "log10_params": reference[1],
            "params": round(10 ** reference[1]),
        }
        if reference
        else None,
        "machine": info,
        "runs": [
            {"name": r.name, "command": r.command, "gpu_samples": r.gpu_samples, **r.stats}
            for r in runs
        ],
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {out / 'results.md'} and {out / 'results.json'}", flush=True)
    return 0 if all(r.rc == 0 for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
