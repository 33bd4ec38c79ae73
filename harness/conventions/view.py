"""The conventions document as Markdown: one table of the measured conventions, then the drifts."""
from __future__ import annotations

from dataclasses import dataclass

from fwbench.harness.table import markdown_table

WEIGHTS = {"batch": "the batch", "running": "the running value"}  # what batch norm's momentum multiplies


def _g(value) -> str:
    """A number as %g, or "-" where the probe could not read one."""
    return "-" if value is None else f"{value:g}"


def _same(case: dict) -> str:
    """A "same" case: the side of the odd pixel and the rows' padding, or the refusal."""
    if "refused" in case:
        return f"refused: {case['refused']}"
    top, bottom = case["pads"][:2]
    return f"{case['odd_pixel']} (top {top}, bottom {bottom})"


def _init(found: dict) -> str:
    """An initialiser: its family and scale per fan (fan_in in documents from before the fan was read)."""
    if found["distribution"] == "zeros":
        return "zeros"
    fan, e = found.get("fan", "fan_in"), found.get("fan_exponent", found.get("fan_in_exponent"))
    per = "" if fan == "none" else f"/sqrt({fan})" if e == -0.5 else f" ({fan})^{e:g}"
    if found["distribution"] == "uniform":
        return f"uniform +-{found['bound']:.2f}{per}"
    cut = f", cut at +-{found['bound']:.2f}{per}" if found["distribution"] == "truncated normal" else ""
    return f"{found['distribution']}, std {found['std']:.2f}{per}{cut}"


def _eps_root(found: dict) -> str:
    """eps_root's default and place, or that there is none."""
    if found["eps_root_default"] is None:
        return found["eps_root"]
    return f"{_g(found['eps_root_default'])}, {found['eps_root']}"


# Row label, probe, and the cell made from the probe's reading.
ROWS = [
    ("batch norm: momentum weights", "batchnorm", lambda r: WEIGHTS.get(r["momentum_meaning"], r["momentum_meaning"])),
    ("batch norm: default momentum", "batchnorm", lambda r: _g(r["momentum_default"])),
    ("batch norm: the batch's weight at the default", "batchnorm", lambda r: _g(r["batch_weight_at_default"])),
    ("batch norm: default eps", "batchnorm", lambda r: _g(r["eps_default"])),
    ("batch norm: running variance updated with the batch's", "batchnorm", lambda r: r["running_var"]),
    ("avg pool: default stride", "avgpool",
     lambda r: "= size" if r["default_stride"] == "size" else r["default_stride"]),
    ("avg pool: padding's zeros in the mean (padding 1)", "avgpool", lambda r: r["count_include_pad"]),
    ('"same", kernel 2, stride 1: odd pixel', "same_padding", lambda r: _same(r["k2 s1"])),
    ('"same", kernel 2, stride 2: odd pixel', "same_padding", lambda r: _same(r["k2 s2"])),
    ("Adam: update", "adam", lambda r: f"`{r['placement']}`"),
    ("Adam: default eps", "adam", lambda r: _g(r["eps_default"])),
    ("Adam: eps_root", "adam", _eps_root),
    ("SGD momentum: learning rate", "sgd", lambda r: r["learning_rate"]),
    ("init: dense weight", "init", lambda r: _init(r["dense_weight"])),
    ("init: dense bias", "init", lambda r: _init(r["dense_bias"])),
    ("init: conv weight", "init", lambda r: _init(r["conv_weight"])),
    ("init: conv bias", "init", lambda r: _init(r["conv_bias"])),
    ("dropout: kept units", "dropout", lambda r: f"{r['scaling']} (x{r['kept_scale']:g} at rate 0.5)"),
    ("dropout: seeded again", "dropout", lambda r: "same masks" if r["reseeding_repeats"] else "new masks"),
    ("dropout: two calls in a row", "dropout", lambda r: "differ" if r["consecutive_calls_differ"] else "same mask"),
    ("dropout: unseeded", "dropout", lambda r: r["unseeded"]),
]


def _cell(doc: dict, framework: str, probe: str, make) -> str:
    """One cell: "not installed", "not measured" (an older document), the probe's error, or the readable reading."""
    if framework not in doc["measured"]:
        return "not installed"
    found = doc["measured"][framework].get(probe)
    if found is None:
        return "not measured"
    return f"error: {found['error']}" if "error" in found else make(found)


@dataclass
class Section:
    """One table of the document: a title, its columns and rows of text, and a line under it."""
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


DRIFTS = [("batchnorm", "Batch norm", ("running_mean", "running_var")), ("adam", "Adam", ("parameters",))]


def sections(doc: dict) -> list[Section]:
    """The conventions table (versions under it), then a drift table per kind; both Markdown and HTML use them."""
    names = list(doc["frameworks"])
    versions = [f"{n}: {f['version']}" if f["installed"] else f"{n}: not installed ({', '.join(f['missing'])})"
                for n, f in doc["frameworks"].items()]
    out = [Section("Framework conventions, measured", ["convention", *names],
                   [[label, *(_cell(doc, n, probe, make) for n in names)] for label, probe, make in ROWS],
                   "; ".join(versions) + ".")]
    for kind, title, columns in DRIFTS:
        part = doc["drifts"][kind]
        rows = [[r["framework"], r.get("setting", "-"),
                 *([f"error: {r['error']}", *[""] * (len(columns) - 1)] if "error" in r
                   else (f"{r[c]:.2g}" for c in columns))] for r in part["rows"]]
        out.append(Section(f"Drift from the canonical semantics: {title.lower()}",
                           ["framework", "native setting", *(c.replace("_", " ") for c in columns)], rows,
                           f"{title}: {part['how']}." + ("" if rows else " No framework to compare is installed.")))
    return out


def markdown(doc: dict) -> str:
    """The conventions table, the versions measured, and the drift tables, as Markdown."""
    parts = []
    for section in sections(doc):
        table = markdown_table(section.headers, section.rows, "l" * len(section.headers)) if section.rows else ""
        parts.append("\n\n".join(p for p in (f"## {section.title}", table, section.note) if p))
    return "\n\n".join(parts)
