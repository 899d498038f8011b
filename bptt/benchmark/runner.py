"""The whole run: every row and extra checked, timed, and measured against its targets."""
from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass, field

from .. import jit
from .machine import UNTIMED_ISAS, check_isa, load_avg, machine_info
from .problems import (CELLS, CHAR_LM, EXTRAS, GATES, MLP_SPEC, SHAPES, TARGETS, TOLERANCE, check_job,
                       job_flops, make_data, require_torch)
from .timing import is_noisy, summary
from .workers import _Timers, compile_times, plain_torch_times

RATIO_MIN, TEACH_RATIO_MIN, PEAK_SHARE_MIN = 1.0, 3.0, 55.0   # the thresholds of TARGETS
TORCH_SLOWED = 1.3   # the torch worker's step over a plain torch process's, above which a row is flagged
PLAIN_CHECK = (("rnn", "char"),)   # the rows whose torch step is also timed in a plain process
PLAIN_RECHECKS = 2   # pairs (torch worker, plain process) timed again when the first is over TORCH_SLOWED


@dataclass
class BenchConfig:
    """Everything one benchmark run depends on."""
    cells: tuple = CELLS
    shapes: list = field(default_factory=lambda: list(SHAPES.items()))  # [(name, (B, T, I, H))]
    threads: int | None = None       # None: the current bptt thread count
    repeat: int = 3                  # at least this many timed steps per framework
    warmup: int = 1                  # untimed steps per framework (and at least 0.2 s of them)
    min_time: float = 1.0            # time each framework for at least this long per row
    peak: float | None = None        # GFLOP/s; None: measure
    extras: bool = True              # char-LM, MLP and compile-time reports
    in_process: bool = False         # time both frameworks in this process (for diagnosis)
    seed: int = 0
    isa: str | None = None           # avx512, avx2 or generic for both frameworks; None: see run()

    def command(self) -> str:
        """The `bptt bench` command line that reproduces this configuration."""
        named = [n for n, _ in self.shapes if n in SHAPES]
        custom = [s for n, s in self.shapes if n not in SHAPES]
        args = ["bptt", "bench", "--cells", ",".join(self.cells),
                "--shapes", ",".join(named) if named else "none"]
        for s in custom:
            args += ["--shape", ",".join(map(str, s))]
        args += ["--threads", str(self.threads), "--repeat", str(self.repeat),
                 "--warmup", str(self.warmup), "--min-time", f"{self.min_time:g}"]
        if self.isa:
            args += ["--isa", self.isa]
        if self.peak is not None:
            args += ["--peak", f"{self.peak:g}"]
        if not self.extras:
            args.append("--no-extras")
        if self.in_process:
            args.append("--in-process")
        if self.seed:
            args += ["--seed", str(self.seed)]
        return " ".join(args)


def evaluate_targets(rec: dict, isa=None, in_process: bool = False) -> dict:
    """Every target that applies to a row (by its shape) or an extra (by its name), met or not.

    A record that failed its check meets none; on an ISA in ``UNTIMED_ISAS``, or timed
    ``in_process`` (the two frameworks' thread pools competing: for diagnosis), none applies."""
    if isa in UNTIMED_ISAS or in_process:
        return {}
    pct = rec.get("bptt_pct_peak")
    values = {"ratio_ge_1": rec["ratio"] >= RATIO_MIN, "ratio_ge_3": rec["ratio"] >= TEACH_RATIO_MIN,
              "peak_ge_55": pct is not None and pct >= PEAK_SHARE_MIN}
    name = rec.get("shape", rec.get("name"))
    ok = rec["check"]["passed"]
    return {k: bool(ok and values[k]) for k, (_, names, _) in TARGETS.items() if names is None or name in names}


def _with_targets(rec: dict, isa, in_process: bool) -> dict:
    rec["targets"] = evaluate_targets(rec, isa, in_process)
    rec["all_targets_met"] = all(rec["targets"].values()) if rec["targets"] else None
    return rec


def round_ratios(bptt_slices, torch_slices) -> list:
    """torch / bptt of each round: the median of torch's slice over the median of bptt's slice
    next to it (the slices alternate, so a round's two ran within seconds of each other). Their
    spread shows how far the machine moved the ratio while the row was timed."""
    return [statistics.median(t) / statistics.median(b) for b, t in zip(bptt_slices, torch_slices) if b and t]


def _record(kind, spec, check, timed, peak) -> dict:
    bt, tt = summary(timed["bptt"]["times"]), summary(timed["torch"]["times"])
    flops = job_flops(kind, spec)
    bg = flops / bt["median_ms"] / 1e6
    tg = flops / tt["median_ms"] / 1e6
    rounds = round_ratios(timed["bptt"]["slices"], timed["torch"]["slices"])
    return {"flops": flops, "bptt": bt, "torch": tt, "bptt_ms": bt["median_ms"], "torch_ms": tt["median_ms"],
            "ratio": tt["median_ms"] / bt["median_ms"], "ratio_rounds": rounds, "noisy": is_noisy(bt) or is_noisy(tt),
            "bptt_gflops": bg, "torch_gflops": tg,
            "bptt_pct_peak": 100.0 * bg / peak if peak else None,
            "torch_pct_peak": 100.0 * tg / peak if peak else None, "check": check}


def torch_plain_check(kind, spec, data, cfg: BenchConfig, worker_ms: float, isa=None, timers=None) -> dict:
    """The job's torch step timed in a plain process (:func:`~.workers.plain_torch_times`) and
    compared with the torch worker's median ``worker_ms``: above ``TORCH_SLOWED``× the worker
    was slowed by something of bptt's, and its ratios flatter bptt.

    The plain process runs after the row, and a virtual machine's slow spells come and go within
    seconds: a worker timed in a slow spell and a plain process in a quick one read 1.5× apart
    with nothing of bptt's at work (two runs in eight on a Zen 4, docs/performance.md). So when the
    first pair is over the limit, up to ``PLAIN_RECHECKS`` more pairs are timed, each the torch
    worker alone (``timers``) and right after it a plain process, and the row is flagged only if
    every pair is over the limit: a slowdown bptt causes (the 10× of issue 11) is there in every
    pair. ``worker_over_plain`` is the first pair's; ``pairs`` holds them all."""
    def plain_ms():
        plain = plain_torch_times(kind, spec, data, cfg.threads, isa=isa, repeat=cfg.repeat,
                                  min_time=cfg.min_time, warmup=cfg.warmup)
        return plain, summary(plain["times"])

    plain, s = plain_ms()
    ratio = worker_ms / s["median_ms"]
    pairs = [{"worker_ms": worker_ms, "plain_ms": s["median_ms"], "ratio": ratio}]
    while timers is not None and len(pairs) <= PLAIN_RECHECKS and min(p["ratio"] for p in pairs) > TORCH_SLOWED:
        w = statistics.median(timers.time_alone("torch", kind, spec, data, cfg)) * 1e3
        pl = plain_ms()[1]["median_ms"]
        pairs.append({"worker_ms": w, "plain_ms": pl, "ratio": w / pl})
    return {**s, "what": "torch alone in a fresh process that imports numpy and torch only",
            "imported": plain["imported"], "torch_threads": plain["torch_threads"],
            "worker_over_plain": ratio, "pairs": pairs, "limit": TORCH_SLOWED,
            "slowed": min(p["ratio"] for p in pairs) > TORCH_SLOWED}


def bench_cell(timers, cell: str, shape_name: str, shape, cfg: BenchConfig, peak: float, isa=None,
               plain: bool = False) -> dict:
    """Check, time and measure one cell at one shape; returns the row's record. With ``plain``,
    torch's step is also timed in a plain process (:func:`torch_plain_check`)."""
    B, T, I, H = shape
    spec = {"cell": cell, "B": B, "T": T, "I": I, "H": H}
    data = make_data("cell", spec, cfg.seed)
    check = check_job("cell", spec, data)
    timed = timers.time("cell", spec, data, cfg, memory=True)
    row = {"cell": cell, "shape": shape_name, "B": B, "T": T, "I": I, "H": H, "G": GATES[cell]}
    row.update(_record("cell", spec, check, timed, peak))
    row["memory"] = timed["bptt"].get("memory", {})
    if plain:
        row["torch_plain"] = torch_plain_check("cell", spec, data, cfg, row["torch_ms"], isa, timers)
        row["torch_worker_slowed"] = row["torch_plain"]["slowed"]
    return _with_targets(row, isa, cfg.in_process)


def bench_extra(timers, name: str, cfg: BenchConfig, peak: float, isa=None) -> dict:
    """The char-LM step (Embedding → LSTM → Dense → cross-entropy) or the MLP step, vs torch."""
    spec = CHAR_LM if name == "char_lm" else MLP_SPEC
    data = make_data(name, spec, cfg.seed)
    check = check_job(name, spec, data)
    rec = {"name": name, "spec": spec}
    rec.update(_record(name, spec, check, timers.time(name, spec, data, cfg), peak))
    if name == "char_lm":
        rec["what"] = (f"Embedding({spec['V']},{spec['E']}) > LSTM({spec['H']}) > Dense({spec['H']},{spec['V']})"
                       f" > cross-entropy, B={spec['B']} T={spec['T']}")
        rec["bptt_tokens_per_s"] = spec["B"] * spec["T"] / (rec["bptt_ms"] / 1e3)
        rec["torch_tokens_per_s"] = spec["B"] * spec["T"] / (rec["torch_ms"] / 1e3)
    else:
        rec["what"] = f"MLP({spec['sizes']}, relu) > cross-entropy, B={spec['B']}"
    return _with_targets(rec, isa, cfg.in_process)


def choose_isa(cfg: BenchConfig):
    """(the ISA both frameworks are held to or None, where it came from).

    ``cfg.isa`` if given (refused if the host cannot run it); else ``BPTT_ISA`` if the user set
    it, so that torch is held to the same ISA; else None: bptt's is the host's widest and torch
    picks its own."""
    if jit.ISA_SOURCE == jit.FAMILY_ONLY:
        raise ValueError(f"BPTT_ISA={jit.ISA}@host compiles the {jit.ISA} family for this CPU's own "
                         "instructions, to test its code, not to time it; unset BPTT_ISA to time bptt (--isa to "
                         "choose an ISA this CPU runs)")
    isa = check_isa(cfg.isa)
    if isa is not None:
        source = "--isa"
    elif jit.ISA_SOURCE == "BPTT_ISA":
        isa, source = jit.ISA, "BPTT_ISA"
    else:
        source = "host"
    if cfg.in_process and isa is not None and isa != jit.ISA:
        raise ValueError(f"--isa {isa} with --in-process: this process runs bptt's {jit.ISA} kernels "
                         f"(set BPTT_ISA={isa} before starting it, or drop --in-process)")
    return isa, source


def handoff(timers):
    """A cache line's round trip between bptt's two threads, in ns, measured now in bptt's
    worker (:func:`bptt.benchmark.machine.handoff_ns`; None on one thread). Taken before and
    after each row: a spell of slow hand-offs that starts or ends during a row shows in one of
    the two."""
    return timers.call("bptt", {"what": "handoff"})["handoff_ns"]


def run(cfg: BenchConfig, on_event=None) -> dict:
    """Run the benchmark described by ``cfg``; returns the report (what ``--json`` writes).

    ``on_event(kind, payload)`` is called as results arrive: ``('header', report)`` once the
    machine and peak are known, ``('start', 'cell shape')`` before each row or extra,
    ``('row', row)`` and ``('extra', record)``.
    """
    torch = require_torch()
    emit = on_event or (lambda kind, payload: None)
    isa, isa_source = choose_isa(cfg)
    threads_before = (jit.get_threads(), torch.get_num_threads())
    threads = jit.set_threads(cfg.threads if cfg.threads is not None else jit.get_threads())
    cfg.threads = threads
    torch.set_num_threads(threads)
    tmpdir = tempfile.TemporaryDirectory(prefix="bptt-bench-")
    timers = None
    try:
        timers = _Timers(threads, cfg.in_process, tmpdir.name, isa)
        info = machine_info(threads)
        info.update(timers.call("torch", {"what": "info"}))
        measured = timers.call("bptt", {"what": "peak"})
        info["numba_threading_layer"] = measured["threading_layer"]
        info["handoff_ns"] = handoff(timers)
        # 1.0 when every thread ran at the one-thread peak; well below, other work held cores
        info["core_scaling"] = round(measured["peak"] / (threads * measured["peak_1_thread"]), 4)
        info["timing"] = "in this process" if cfg.in_process else "one worker process per framework"
        # The machine's peak is threads × one thread's unless all threads together did better: on a
        # busy machine the all-threads run loses whole cores, the one-thread run is less affected.
        best = max(measured["peak"], threads * measured["peak_1_thread"])
        peak, source = (float(cfg.peak), "given") if cfg.peak is not None else (best, "measured")
        bptt_isa = measured["isa"]
        report = {
            "tool": "bptt bench", "command": cfg.command(), "machine": info,
            "settings": {"threads": threads, "repeat": cfg.repeat, "warmup": cfg.warmup,
                         "min_time_s": cfg.min_time, "seed": cfg.seed, "dtype": "float32",
                         "tolerance": TOLERANCE, "in_process": cfg.in_process, "isa": cfg.isa},
            "isa": {"bptt": bptt_isa, "source": isa_source, "host": info["host_isa"],
                    "vector_floats": measured["vector_floats"], "torch_restricted_to": isa,
                    "torch_cpu_capability": info["torch_cpu_capability"],
                    "torch_env": info["torch_isa_env"],
                    "targets_apply": bptt_isa not in UNTIMED_ISAS and not cfg.in_process},
            "peak_gflops": peak, "peak_source": source, "peak_threads_gflops": measured["peak"],
            "peak_1_thread_gflops": measured["peak_1_thread"], "peak_isa": bptt_isa,
            "peak_vector_floats": measured["vector_floats"], "peak_chains": measured["chains"],
            "peak_formula": "2*vector_floats*chains*threads*reps/seconds",
            "flops_formula": "3*2*T*B*G*H*(I+H)",
            "targets_spec": {k: {"description": d, "applies_to": list(s) if s else "all rows and extras"}
                             for k, (d, s, _) in TARGETS.items()},
            "torch_worker_check": None,
            "rows": [], "extras": {},
        }
        emit("header", report)
        for name, shape in cfg.shapes:
            for cell in cfg.cells:
                emit("start", f"{cell} {name}")
                before = handoff(timers)
                row = bench_cell(timers, cell, name, shape, cfg, peak, isa, plain=(cell, name) in PLAIN_CHECK)
                row["load_avg_1min"] = load_avg()
                row["handoff_ns_before"], row["handoff_ns"] = before, handoff(timers)
                report["rows"].append(row)
                emit("row", row)
        if cfg.extras:
            for name in EXTRAS + ("compile",):
                emit("start", name)
                if name == "compile":
                    rec = compile_times(threads, isa)
                else:
                    before = handoff(timers)
                    rec = bench_extra(timers, name, cfg, peak, isa)
                    rec["handoff_ns_before"], rec["handoff_ns"] = before, handoff(timers)
                report["extras"][name] = rec
                emit("extra", rec)
        checked = [r for r in report["rows"] if "torch_plain" in r]
        if checked:
            report["torch_worker_check"] = {
                "rows": [f"{r['cell']} {r['shape']}" for r in checked], "limit": TORCH_SLOWED,
                "worker_over_plain": [r["torch_plain"]["worker_over_plain"] for r in checked],
                "slowed": any(r["torch_worker_slowed"] for r in checked)}
        records = report["rows"] + [e for e in report["extras"].values() if "check" in e]
        report["machine"]["load_avg_1min_end"] = load_avg()
        report["all_correct"] = all(r["check"]["passed"] for r in records)
        if report["isa"]["targets_apply"]:
            slowed = bool(report["torch_worker_check"] and report["torch_worker_check"]["slowed"])
            report["all_targets_met"] = all(r["all_targets_met"] for r in records) and not slowed
        else:
            report["all_targets_met"] = None
        return report
    finally:
        if timers is not None:
            timers.close()
        tmpdir.cleanup()
        jit.set_threads(threads_before[0])
        torch.set_num_threads(threads_before[1])
