"""The report's sections, each built from the runs of its kind (:func:`document`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cifarlin.core.config import REFERENCE_TEST_ACCURACY, SETTINGS
from cifarlin.report import beyond, facts
from cifarlin.report.gather import (
    Found,
    by_setting,
    classify,
    figure,
    mean_sd,
    name_of,
    representative,
    section,
    table,
)
from cifarlin.report.pictures import Pictures
from cifarlin.work.catalog import RunEntry

Section = dict[str, Any]


def document(found: Found, pictures: Pictures, title: str) -> dict[str, Any]:
    """The whole report: every section that has runs, in the order of the assignment."""
    groups = classify(found)
    root = found.root
    machine = facts.this_machine()
    builders: list[Callable[[], Section | None]] = [
        lambda: environment(found, machine),
        lambda: gradients(found),
        lambda: reference(groups["reference"], root, pictures),
        lambda: beyond.losses(groups["losses"], root, pictures),
        lambda: beyond.recipes(groups["recipes"], root, pictures),
        lambda: beyond.sweeps(found, root, pictures),
        lambda: beyond.ensembles(groups["reference"], root, pictures),
        lambda: beyond.exact(groups["exact"], root),
        lambda: beyond.others(groups["other"], root),
        lambda: beyond.unfinished(groups["unfinished"], root),
        lambda: beyond.best(found.runs, root, pictures),
    ]
    built = [s for build in builders if (s := build()) is not None]
    pictures.finish()  # the figures asked of the drawing child are there now, or named in a note
    for s in built:
        s["figures"] = [f for f in s["figures"] if pictures.shown(Path(f["file"]))]
    sections = [s for s in built if s["tables"] or s["figures"]]
    return {
        "title": title,
        "root": str(root),
        "machine": machine,
        "notes": found.notes,
        "runs": [r.summary() for r in found.runs],
        "gradchecks": [{"file": str(p), **d} for p, d in found.gradchecks],
        "sweeps": {str(p): s for p, s in found.sweeps.items()},
        "sections": sections,
    }


def environment(found: Found, m: dict[str, str]) -> Section:
    """The versions that made the report and each run, the data, the commands that retrain."""
    this = table(
        "This report was made with",
        [("what", "text"), ("value", "text")],
        [
            ["cifarlin", m["cifarlin"]],
            ["Python", m["python"]],
            ["NumPy", m["numpy"]],
            ["BLAS", f"{m['blas']} ({m['blas_kernel']})" if m["blas_kernel"] else m["blas"]],
            ["platform", m["platform"]],
            ["date (UTC)", m["date"]],
            ["outputs folder", str(found.root)],
        ],
    )
    arithmetic = {facts.arithmetic_text(r.arithmetic) for r in found.runs}
    shared = len(arithmetic) == 1
    rows, unreproducible = [], []
    for r in found.runs:
        try:
            command, missing = facts.train_command(facts.config_of(r.config or {}), str(r.folder))
        except (ValueError, TypeError):
            command, missing = "", ["its configuration cannot be read"]
        own = [] if shared else [facts.arithmetic_text(r.arithmetic)]
        rows.append([name_of(r, found.root), *own, command])
        if missing:
            unreproducible.append(f"{name_of(r, found.root)}: {', '.join(missing)}")
    text = [
        "Every number below is read from the files under the outputs folder. Each run records the "
        "NumPy and BLAS that computed it: a chaotic run (setting 1) depends on the BLAS kernel's last "
        "bits. Each command is the run's recorded configuration as train takes it: with another --out "
        "it trains the run again from nothing (run it where this report was made; give the data folder "
        "with --data-dir or CIFARLIN_DATA_DIR)."
    ]
    if shared and (only := arithmetic.pop()):
        text.append(f"All {len(found.runs)} runs were computed with {only}.")
    text += [
        f"Not reproducible by one train command: {u} (train has no option for it)." for u in unreproducible
    ]
    data = []
    for d in facts.data_folders([r.data for r in found.runs]):
        verdict = {
            True: "the official release's files",
            False: "not the official release's files (their MD5s differ)",
            None: "files the official checksums do not list",
        }[d["official"]]
        changed = f"; {', '.join(d['changed'])} changed between runs" if d["changed"] else ""
        text.append(
            f"Data: {d['folder']} ({d['format']} version), used by {d['runs']} run(s): {verdict}{changed}."
        )
        data.append(
            table(
                f"The files of {d['folder']}",
                [("file", "text"), ("MD5 when trained on", "code"), ("runs", "int"), ("official", "text")],
                [
                    [f["name"], f["md5"], f["runs"], {True: "yes", False: "no", None: "-"}[f["official"]]]
                    for f in d["files"]
                ],
            )
        )
    columns = [("run", "run"), *([] if shared else [("arithmetic", "text")]), ("command", "code")]
    runs = table("Runs and the command that trains each again", columns, rows)
    return section("environment", "Environment and reproduction", text, [this, *data, runs], [])


def _g(v: Any) -> str:
    """A number of a file as ``%g``, or '-' (a field a file of another version may lack)."""
    return f"{v:g}" if type(v) in (int, float) else "-"


GRAD_COLUMNS = [
    ("loss", "text"),
    ("parameter", "text"),
    ("max rel", "sci"),
    ("p99 rel", "sci"),
    ("mean rel", "sci"),
    ("max abs", "sci"),
    ("checked", "int"),
    ("failing", "int"),
    ("verdict", "text"),
]


def gradients(found: Found) -> Section:
    rows, text = [], []
    for path, d in found.gradchecks:
        loss = d.get("loss") or path.stem.removeprefix("gradcheck-")  # an older file: its name
        for p in ("W", "b"):
            e = d[p]
            verdict = "PASS" if e["pass"] else "FAIL"
            rows.append(
                [
                    loss,
                    p,
                    e["max_rel"],
                    e["p99_rel"],
                    e["mean_rel"],
                    e["max_abs"],
                    e["checked"],
                    e["failing"],
                    verdict,
                ]
            )
        inputs = "random inputs" if d.get("inputs") == "random" else f"the first {d.get('n')} training images"
        rule = f"|ga - gn| <= {_g(d.get('atol'))} + {_g(d.get('tol'))} (|ga| + |gn|)"
        text.append(
            f"{loss} ({path.name}): {d.get('method')} differences, h={_g(d.get('h'))}, "
            f"lambda={_g(d.get('lam'))}, {inputs}, {d.get('dims')} input dimensions; an entry passes "
            f"when {rule}: {'PASS' if d.get('pass') else 'FAIL'}."
        )
    return section(
        "gradcheck",
        "Gradient check",
        ["Analytic gradients against numerical ones, every entry of W and b (cifarlin gradcheck).", *text],
        [table("Relative errors |ga - gn| / max(1e-8, |ga| + |gn|)", GRAD_COLUMNS, rows)],
        [],
    )


def reference(runs: list[RunEntry], root: Path, pictures: Pictures) -> Section | None:
    if not runs:
        return None
    rows, figures = [], []
    groups = by_setting(runs)
    for s, members in groups.items():
        cfg = SETTINGS[s]
        tests = [r.test_acc for r in members if r.test_acc is not None]
        vals = [r.val_acc for r in members if r.val_acc is not None]
        ref = REFERENCE_TEST_ACCURACY[s]
        test = mean_sd(tests) if tests else None
        rows.append(
            [
                s,
                cfg["lam"],
                cfg["eta"],
                len(members),
                mean_sd(vals) if vals else None,
                test,
                ref,
                None if test is None else test[0] - ref,
            ]
        )
        rep = representative(members)
        pics = pictures.of_run(rep.folder, ("curves", "montage"))
        label = f"setting {s} (lambda={cfg['lam']:g}, eta={cfg['eta']:g}; {name_of(rep, root)})"
        figures += [
            figure(f"Setting {s}: loss and accuracy per epoch", pics.get("curves"), label),
            figure(f"Setting {s}: the weights as images", pics.get("montage"), label),
        ]
    reps = [representative(m).folder for m in groups.values()]
    if len(reps) >= 2:
        figures.insert(
            0, figure("The settings side by side", pictures.comparison(reps, root / "settings.png"))
        )
    seeds = any(len(m) > 1 for m in groups.values())
    return section(
        "reference",
        "The four reference settings",
        [
            "40 epochs of mini-batch gradient descent, batch 100, trained on data_batch_1, validated on "
            "data_batch_2, tested on test_batch. The original column is the original work's test accuracy."
            + (
                " Settings with several seeds show mean ± sample standard deviation over the seeds."
                if seeds
                else ""
            )
        ],
        [
            table(
                "Accuracy of the reference settings",
                [
                    ("setting", "int"),
                    ("lambda", "num"),
                    ("eta", "num"),
                    ("runs", "int"),
                    ("val acc", "pm"),
                    ("test acc", "pm"),
                    ("original", "acc"),
                    ("difference", "pt"),
                ],
                rows,
            )
        ],
        figures,
    )
