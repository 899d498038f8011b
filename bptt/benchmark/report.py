"""The report as text (the header, one line per row or extra, the summary) and as JSON."""
from __future__ import annotations

import json
import os

import numpy as np

from .problems import TARGETS, TOLERANCE
from .timing import NOISY

# (header, width, right-aligned); every row is printed as soon as it is measured.
_COLUMNS = [("cell", 4, False), ("shape (B,T,I,H)", 26, False), ("bptt ms", 9, True),
            ("torch ms", 9, True), ("torch/bptt ", 11, True), ("rounds", 9, True), ("bptt GF/s", 9, True),
            ("torch GF/s", 10, True), ("%peak", 6, True), ("mem MB", 7, True), ("n", 5, True),
            ("check", 10, False), ("targets", 0, False)]


def _line(values) -> str:
    cells = [f"{v:>{w}}" if right else f"{v:<{w}}" for (_, w, right), v in zip(_COLUMNS, values)]
    return "  ".join(cells).rstrip()


def table_header() -> str:
    head = _line([c[0] for c in _COLUMNS])
    return head + "\n" + "-" * (len(head) + 12)


def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 1000 else f"{v:.0f}"


def _check_text(check) -> str:
    return f"{'ok' if check['passed'] else 'FAIL'} {check['max_rel_err']:.0e}"


def _targets_text(rec) -> str:
    if not rec["targets"]:
        return "-"
    missed = [TARGETS[k][2] for k, met in rec["targets"].items() if not met]
    return "met" if not missed else "missed " + ",".join(missed)


def _slowed_text(rec) -> str:
    plain = rec.get("torch_plain")
    if not plain:
        return ""
    pairs = plain.get("pairs", [])
    again = (" and " + ", ".join(f"{p['ratio']:.1f}x" for p in pairs[1:]) + " timed again") if len(pairs) > 1 else ""
    if plain["slowed"]:
        return (f"  TORCH WORKER SLOWED: {plain['worker_over_plain']:.1f}x a plain torch process "
                f"({_ms(plain['median_ms'])} ms){again}")
    if again:
        return f"  (plain torch {_ms(plain['median_ms'])} ms: {plain['worker_over_plain']:.1f}x{again})"
    return f"  (plain torch {_ms(plain['median_ms'])} ms)"


def rounds_text(rounds) -> str:
    """The lowest and highest torch / bptt of a row's rounds, e.g. ``0.91-1.04``."""
    if not rounds:
        return "-"
    return f"{min(rounds):.2f}-{max(rounds):.2f}"


def format_row(row) -> str:
    shape = f"{row['shape']} ({row['B']},{row['T']},{row['I']},{row['H']})"
    pct = "-" if row["bptt_pct_peak"] is None else f"{row['bptt_pct_peak']:.1f}"
    mem = row["memory"].get("peak_mb")
    ratio = f"{row['ratio']:.2f}" + ("*" if row["noisy"] else " ")
    return _line([row["cell"], shape, _ms(row["bptt_ms"]), _ms(row["torch_ms"]), ratio,
                  rounds_text(row["ratio_rounds"]), f"{row['bptt_gflops']:.1f}", f"{row['torch_gflops']:.1f}", pct,
                  "-" if mem is None else f"{mem:.1f}", str(min(row["bptt"]["n"], row["torch"]["n"])),
                  _check_text(row["check"]), _targets_text(row) + _slowed_text(row)])


def _isa_lines(report) -> list:
    i = report["isa"]
    env = i["torch_env"] or {}
    limits = ", ".join(f"{k}={v}" for k, v in env.items() if v) or "none set"
    if i["torch_restricted_to"]:
        torch_side = f"held to {i['torch_restricted_to']} ({limits})"
    else:
        torch_side = f"its own choice ({limits})"
    lines = [f"ISA: bptt {i['bptt']} ({i['vector_floats']} float32 lanes; from {i['source']}; the host's widest is "
             f"{i['host']}); torch ATen {i['torch_cpu_capability']}, {torch_side}"]
    if not i["targets_apply"]:
        lines.append(_no_targets_why(report) + ": times are shown, no speed target applies")
    return lines


def _no_targets_why(report) -> str:
    if report.get("settings", {}).get("in_process"):
        return ("note: --in-process times both frameworks in this process, where their OpenMP pools "
                "compete (torch's steps can take 100x longer): for diagnosis, not a comparison")
    return f"note: the {report['isa']['bptt']} ISA is for correctness, not timed against torch"


def format_header(report) -> str:
    m = report["machine"]
    return "\n".join([
        f"bptt bench  {m['date']}",
        f"cpu: {m['cpu']} ({m['llvm_cpu']}, {m['simd']}), {m['cores']} cores; threads: {m['threads']} "
        f"(bptt {m['bptt_build']} build"
        + (f", numba threading layer {m['numba_threading_layer']}" if m["numba_threading_layer"] else "")
        + f"; torch {m['torch_threads']})",
        f"bptt {m['bptt']} (git {m['git']}), numpy {m['numpy']}, numba {m['numba']}, torch {m['torch']}, python {m['python']}; "
        f"load average {m['load_avg_1min']}"
        + (" (the machine is busy: timings will be distorted)" if (m["load_avg_1min"] or 0) > 0.5 * m["cores"] else ""),
        *_isa_lines(report),
        f"float32 FMA peak ({report['peak_isa']}: {report['peak_chains']} chains of {report['peak_vector_floats']} "
        f"lanes per thread): {report['peak_gflops']:.1f} GFLOP/s ({report['peak_source']}"
        + (f"; measured {report['peak_threads_gflops']:.1f} on {m['threads']} threads, "
           f"{report['peak_1_thread_gflops']:.1f} on 1" if m["threads"] > 1 or report["peak_source"] == "given" else "")
        + "); FLOPs per step = 3*2*T*B*G*H*(I+H)"
        + (f"\nwarning: {m['threads']} threads reached only {m['core_scaling']:.2f} of {m['threads']}x the "
           f"one-thread peak: other processes hold cores, and timings on {m['threads']} threads will be "
           f"distorted" if m["core_scaling"] < 0.75 else "")
        + (f"\nhand-off: a cache line's round trip between bptt's two threads {m['handoff_ns']:.0f} ns at the start"
           if m.get("handoff_ns") is not None else ""),
        f"step = zero_grad + forward + full BPTT backward (dx, dh0, all weight gradients), float32 (bptt's "
        f"backward sets the gradients, as torch's after its zero_grad sets them to None); "
        f"median of n steps, timed {m['timing']}"
        + (f"; env {' '.join(f'{k}={v}' for k, v in m['env'].items())}" if m["env"] else ""),
        f"command: {report['command']}",
        "",
        table_header(),
    ])


def format_extra(rec) -> str:
    if rec["name"] == "compile":
        return (f"compile: {rec['what']} ({rec['build']} build, {rec['isa']}): cold cache {rec['cold_s']:.2f} s, "
                f"warm cache {rec['warm_s']:.2f} s (import bptt {rec['import_s']:.2f} s)")
    text = (f"{rec['name']}: {rec['what']}: bptt {_ms(rec['bptt_ms'])} ms, torch {_ms(rec['torch_ms'])} ms, "
            f"torch/bptt {rec['ratio']:.2f}{'*' if rec['noisy'] else ''} (rounds {rounds_text(rec['ratio_rounds'])}), "
            f"{rec['bptt_gflops']:.1f} vs {rec['torch_gflops']:.1f} GFLOP/s")
    if "bptt_tokens_per_s" in rec:
        text += f", {rec['bptt_tokens_per_s'] / 1e3:.1f}k vs {rec['torch_tokens_per_s'] / 1e3:.1f}k tok/s"
    return text + f"; check {_check_text(rec['check'])}; targets {_targets_text(rec)}"


SLOW_HANDOFF = 2.0   # a row's hand-off this many times the run's quickest: named in the summary


def handoff_text(report) -> str:
    """The cache line round trips between bptt's two threads measured before and after each row
    and extra (:func:`bptt.benchmark.machine.handoff_ns`), the slower of each pair: their range,
    and the rows at ``SLOW_HANDOFF`` times the quickest or more, whose pipelines and passes
    between cores ran slow. Empty on one thread."""
    def slowest(rec):   # the slower of the readings before and after the row
        vals = [v for v in (rec.get("handoff_ns_before"), rec.get("handoff_ns")) if v is not None]
        return max(vals) if vals else None
    recs = [(f"{r['cell']} {r['shape']}", slowest(r)) for r in report["rows"]]
    recs += [(e["name"], slowest(e)) for e in report["extras"].values() if "check" in e]
    recs = [(name, v) for name, v in recs if v is not None]
    if not recs:
        return ""
    quick = min(v for _, v in recs)
    slow = [f"{name} {v:.0f}" for name, v in recs if v >= SLOW_HANDOFF * quick]
    top = max(v for _, v in recs)
    span = f"{quick:.0f}" if round(top) == round(quick) else f"{quick:.0f}-{top:.0f}"
    text = f"hand-off: a cache line's round trip between bptt's two threads took {span} ns around the rows"
    if slow:
        text += (f"; {SLOW_HANDOFF:g}x the quickest or more around {', '.join(slow)} ns (a spell of slow "
                 f"transfers between the cores: kernels whose threads hand data over, bptt's and torch's, "
                 f"slow down in it)")
    return text


def format_summary(report) -> str:
    rows = report["rows"]
    extras = [e for e in report["extras"].values() if "check" in e]
    failed = [f"{r['cell']} {r['shape']} ({r['check']['worst']})" for r in rows if not r["check"]["passed"]]
    failed += [f"{e['name']} ({e['check']['worst']})" for e in extras if not e["check"]["passed"]]
    lines = []
    if any(r["noisy"] for r in rows + extras):
        lines.append(f"* noisy: the upper quartile of a timing is over {NOISY:g}x its lower quartile "
                     f"(quartiles in the JSON)")
    handoff = handoff_text(report)
    if handoff:
        lines.append(handoff)
    check = report.get("torch_worker_check")
    if check and check["slowed"]:
        lines.append(f"WARNING: the torch worker ran {', '.join(check['rows'])} more than {check['limit']:g}x slower "
                     f"than a plain torch process: its ratios flatter bptt, and all_targets_met is false")
    if report["isa"]["targets_apply"]:
        met = sum(bool(r["all_targets_met"]) for r in rows)
        text = f"targets met on {met}/{len(rows)} rows"
        if extras:
            text += f" and {sum(bool(e['all_targets_met']) for e in extras)}/{len(extras)} extras"
        lines.append(text + f"; all_targets_met: {str(report['all_targets_met']).lower()}")
    else:
        what = ("with --in-process (for diagnosis)" if report.get("settings", {}).get("in_process")
                else f"on the {report['isa']['bptt']} ISA (correctness only)")
        lines.append(f"no speed targets {what}; all_targets_met: null")
    if failed:
        lines.append(f"CORRECTNESS CHECK FAILED (relative error > {TOLERANCE:g}): {', '.join(failed)}")
    return "\n".join(lines)


def write_json(report, path) -> None:
    """Write the report as JSON (NaN and infinity become null, so strict parsers accept it)."""
    def clean(v):
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(clean(report), f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
