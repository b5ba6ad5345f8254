"""Text tables for the command line and the generated docs."""

from __future__ import annotations

from .bench import count
from .models import create_model, list_models, model_info


def _fmt(value: float | None, scale: float, digits: int = 2) -> str:
    return "-" if value is None else f"{value / scale:.{digits}f}"


def format_table(rows: list[dict[str, str]]) -> str:
    """A plain aligned text table; numbers right-aligned."""
    headers = list(rows[0])
    widths = {h: max(len(h), *(len(str(r[h])) for r in rows)) for h in headers}

    def cell(h: str, v: str) -> str:
        numeric = v.replace(".", "", 1).replace("-", "", 1).replace("%", "").isdigit() or v == "-"
        return v.rjust(widths[h]) if numeric else v.ljust(widths[h])

    lines = ["  ".join(h.ljust(widths[h]) for h in headers)]
    lines.append("  ".join("-" * widths[h] for h in headers))
    lines += ["  ".join(cell(h, str(r[h])) for h in headers) for r in rows]
    return "\n".join(lines)


def format_markdown(rows: list[dict[str, str]]) -> str:
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(r[h]) for h in headers) + " |" for r in rows]
    return "\n".join(lines)


def models_table(pattern: str | None = None) -> list[dict[str, str]]:
    """One row per model: our params and MACs at its default input beside the paper's figures."""
    rows = []
    for name in list_models(pattern):
        entry = model_info(name)
        counts = count(create_model(name), entry.input_size)
        pub = entry.published
        rows.append({
            "model": name,
            "input": str(entry.input_size),
            "params M": _fmt(counts.params, 1e6, 3),
            "paper params M": _fmt(pub.params if pub else None, 1e6, 3),
            "MACs M": _fmt(counts.macs, 1e6, 1),
            "paper MACs M": _fmt(pub.macs if pub else None, 1e6, 1),
            "paper top-1 %": "-" if not pub or pub.top1 is None else f"{pub.top1:.1f}",
            "source": pub.source if pub else entry.summary,
        })
    return rows


def model_report(name: str, input_size: int | None = None) -> str:
    """Stages with channels, stride, output size, params and MACs, then the totals."""
    entry = model_info(name)
    size = input_size or entry.input_size
    model = create_model(name)
    counts = count(model, size)
    rows = []
    for part in ["stem", *(f.module for f in model.feature_info), "final", "head"]:
        module = model.get_submodule(part)
        info = next((f for f in model.feature_info if f.module == part), None)
        rows.append({
            "part": part,
            "channels": str(info.channels) if info else "-",
            "stride": str(info.stride) if info else "-",
            "output": f"{-(-size // info.stride)}x{-(-size // info.stride)}" if info else "-",
            "params M": _fmt(sum(p.numel() for p in module.parameters()), 1e6, 3),
            "MACs M": _fmt(counts.macs_by_module.get(part, 0), 1e6, 1),
        })
    header = (f"{name}: {entry.summary}\n"
              f"input {size}x{size}, {counts.params:,} parameters, {counts.macs / 1e6:.1f}M MACs")
    pub = entry.published
    if pub:
        header += f"\npaper ({pub.source}): params {_fmt(pub.params, 1e6)}M, MACs {_fmt(pub.macs, 1e6, 0)}M"
        if pub.top1 is not None:
            header += f", ImageNet top-1 {pub.top1}%"
    return header + "\n\n" + format_table(rows)
