"""The report's sections beyond the four settings: other losses, the bonus recipe, searches,
ensembles of seeds, ridge and feature runs, other runs, and the best model by validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cifarlin.core.losses import LOSSES
from cifarlin.report import facts
from cifarlin.report.gather import (
    RUN_COLUMNS,
    Found,
    by_setting,
    figure,
    mean_sd,
    name_of,
    run_rows,
    section,
    table,
)
from cifarlin.report.pictures import Pictures
from cifarlin.work.catalog import RunEntry

Section = dict[str, Any]


def losses(runs: list[RunEntry], root: Path, pictures: Pictures) -> Section | None:
    if not runs:
        return None
    figures = []
    for r in runs:
        loss = (r.config or {}).get("loss")
        if loss in LOSSES and LOSSES[loss].probs is not None:
            pics = pictures.of_run(r.folder, ("probs",))
            figures.append(
                figure(f"{name_of(r, root)}: probability of the true class ({loss} loss)", pics.get("probs"))
            )
    return section(
        "losses",
        "Other losses",
        [
            "Runs of gradient descent on a loss other than cross-entropy (svm: multi-class hinge, bce: "
            "binary cross-entropy of sigmoids, mse: squared error, l2svm: squared hinge). Histograms of "
            "the probability given the true class, for right and wrong answers, where the loss gives "
            "probabilities."
        ],
        [table("Other losses", RUN_COLUMNS, run_rows(runs, root))],
        figures,
    )


def recipes(runs: list[RunEntry], root: Path, pictures: Pictures) -> Section | None:
    if not runs:
        return None
    text, figures = [], []
    for r in runs:
        cfg = facts.config_of(r.config or {})
        held = f", validated on the last {cfg.val_size} training images" if cfg.val_size else ""
        text.append(f"{name_of(r, root)} (--setting {cfg.setting}): {cfg.describe()}{held}.")
        pics = pictures.of_run(r.folder, ("curves", "montage"))
        figures += [
            figure(f"{name_of(r, root)}: loss and accuracy per epoch", pics.get("curves")),
            figure(f"{name_of(r, root)}: the weights as images", pics.get("montage")),
        ]
    return section(
        "recipes",
        "The bonus recipe",
        ["The best recipe found for one linear layer on pixels, chosen on validation accuracy alone.", *text],
        [table("The bonus recipe", RUN_COLUMNS, run_rows(runs, root))],
        figures,
    )


TOP_TRIALS = 10  # the best trials of a sweep shown
SHOWN = {"lam": "lambda", "batch_size": "batch", "train_batches": "training batches", "val_size": "val size"}
NUMBERS = ("lam", "eta", "epochs", "batch_size", "init_std", "decay", "eta_min", "eta_max")


def sweeps(found: Found, root: Path, pictures: Pictures) -> Section | None:
    if not found.sweeps:
        return None
    tables, figures, text = [], [], []
    for folder, s in found.sweeps.items():
        name = name_of(RunEntry(folder, "", []), root)
        axes = list((s.get("spec") or {}).get("axes") or {})
        swept = [a for a in axes if len({str(t["config"].get(a)) for t in s["trials"]}) > 1]
        done = [t for t in s["trials"] if t["status"] == "done" and t.get("val_accuracy") is not None]
        done.sort(key=_rank)  # as the sweep ranked them (cifarlin.search.plan.ranked)
        rows = [
            [
                t["name"],
                *(t["config"].get(a) for a in swept),
                t["status"],
                t["val_accuracy"],
                t.get("best_val_accuracy"),
            ]
            for t in done[:TOP_TRIALS]
        ]
        columns = [("trial", "run"), *((SHOWN.get(a, a), "num" if a in NUMBERS else "text") for a in swept)]
        columns += [("status", "text"), ("val acc", "acc"), ("best val acc", "acc")]
        shown = f"the {len(rows)} best" if len(done) > len(rows) else f"the {len(rows)} finished"
        tables.append(
            table(f"{name}: {shown} of {len(s['trials'])} trials by validation accuracy", columns, rows)
        )
        spec = s.get("spec") or {}
        over = ", ".join(f"{k} {v}" for k, v in (spec.get("axes") or {}).items())
        line = f"{name}: a {spec.get('mode', '')} search over {over}; {len(s['trials'])} trials."
        if s.get("best"):
            line += f" Best by validation accuracy: {s['best']}"
            if s.get("best_test_accuracy") is not None:
                line += f", test accuracy {s['best_test_accuracy']:.4f} (measured once, after the selection)"
            line += "."
        text.append(line)
        png = folder / "sweep.png"
        if png.is_file():
            figures.append(figure(f"{name}: validation accuracy over the search", png))
        else:
            found.notes.append(f"{png}: missing (cifarlin sweep draws it; run the sweep again to finish it)")
    return section(
        "sweeps",
        "Hyperparameter searches",
        [
            "Trials are ranked by the validation accuracy of their saved model; the test set was not "
            "used to choose.",
            *text,
        ],
        tables,
        figures,
    )


def _rank(t: dict[str, Any]) -> tuple[float, float, int, str]:
    """Best first: the highest validation accuracy, then the lowest validation cost, then the
    earlier trial (a NaN cost last)."""
    cost = t.get("val_cost")
    return (-t["val_accuracy"], cost if cost is not None else float("inf"), t.get("round") or 0, t["name"])


def ensembles(runs: list[RunEntry], root: Path, pictures: Pictures) -> Section | None:
    rows = []
    for s, members in by_setting(runs).items():
        if len(members) < 2:
            continue
        result = pictures.ensemble([r.folder for r in members])
        if result is None:
            continue
        each = mean_sd(result["members"])
        rows.append([s, len(members), each, result["accuracy"], result["accuracy"] - each[0]])
    if not rows:
        return None
    return section(
        "ensembles",
        "Ensembles of seeds",
        [
            "The models of one setting trained with different seeds, their class probabilities averaged "
            "(the mean of the members' test accuracies beside the ensemble's), measured on the test "
            "images as the report was made."
        ],
        [
            table(
                "Ensembles",
                [
                    ("setting", "int"),
                    ("models", "int"),
                    ("members' test acc", "pm"),
                    ("ensemble test acc", "acc"),
                    ("gain", "pt"),
                ],
                rows,
            )
        ],
        [],
    )


def exact(runs: list[RunEntry], root: Path) -> Section | None:
    if not runs:
        return None
    text = []
    for r in runs:
        c = r.config or {}
        if c.get("solver") == "ridge" and c.get("choose_lam"):
            text.append(f"{name_of(r, root)}: lambda {c.get('lam'):g} chosen on the validation set.")
        if c.get("features"):
            text.append(f"{name_of(r, root)}: trained on the features of {c['features']}{_map_of(r)}.")
    return section(
        "exact",
        "Ridge solutions and feature runs",
        ["The exact minimiser of the squared loss (--solver ridge), and models on k-means features.", *text],
        [table("Ridge and features", RUN_COLUMNS, run_rows(runs, root))],
        [],
    )


def others(runs: list[RunEntry], root: Path) -> Section | None:
    if not runs:
        return None
    return section("other", "Other runs", [], [table("Other runs", RUN_COLUMNS, run_rows(runs, root))], [])


def unfinished(runs: list[RunEntry], root: Path) -> Section | None:
    if not runs:
        return None
    rows = [[*row, r.status] for row, r in zip(run_rows(runs, root), runs, strict=True)]
    return section(
        "unfinished",
        "Runs that did not finish",
        [
            "Interrupted, diverged or still to be resumed (cifarlin train --resume --out RUN): in no "
            "table or average above."
        ],
        [table("Runs that did not finish", [*RUN_COLUMNS, ("status", "text")], rows)],
        [],
    )


def validation_set(r: RunEntry) -> str:
    """The images a run validated on, in words (runs validated on other images do not compare)."""
    c = r.config or {}
    if not c.get("val_size"):
        return "data_batch_2"
    batches = ",".join(map(str, c.get("train_batches") or [1]))
    return f"the last {c['val_size']} training images (batches {batches})"


MAX_BEST = 3  # validation sets whose best model gets figures


def best(runs: list[RunEntry], root: Path, pictures: Pictures) -> Section | None:
    scored = [r for r in runs if r.val_acc is not None and r.status == "complete"]
    if not scored:
        return None
    sets: dict[str, list[RunEntry]] = {}
    for r in scored:
        sets.setdefault(validation_set(r), []).append(r)
    rows, figures, text = [], [], []
    for i, (where, group) in enumerate(sorted(sets.items(), key=lambda kv: -len(kv[1]))):
        top = max(group, key=lambda r: r.val_acc or 0.0)  # the first of equals: the listing's order
        loss = (top.config or {}).get("loss")
        name = name_of(top, root)
        rows.append([where, len(group), name, loss, top.val_acc, top.test_acc])
        text.append(f"Validated on {where}: {name} is the best of {len(group)} complete run(s).")
        if i >= MAX_BEST:
            continue
        probs = loss in LOSSES and LOSSES[loss].probs is not None
        pics = pictures.of_run(top.folder, ("confusion", "samples", *(("probs",) if probs else ())))
        figures += [
            figure(f"{name}: confusion matrix on the test set", pics.get("confusion")),
            figure(f"{name}: misclassified test images", pics.get("samples")),
            figure(f"{name}: probability of the true class", pics.get("probs")),
        ]
    return section(
        "best",
        "The best model by validation accuracy",
        [
            "Validation accuracies compare only between runs validated on the same images: the best "
            "model of each validation set. Its test accuracy is reported once, here, after the "
            "choice; it played no part in it.",
            *text,
        ],
        [
            table(
                "The best model of each validation set",
                [
                    ("validated on", "text"),
                    ("runs", "int"),
                    ("run", "run"),
                    ("loss", "text"),
                    ("val acc", "acc"),
                    ("test acc (reported once)", "acc"),
                ],
                rows,
            )
        ],
        figures,
    )


def _map_of(r: RunEntry) -> str:
    """' (1600 k-means centroids, triangle encoder, 2x2 sums: 6400 features)', read from the
    model file, which carries the map; empty when it cannot be read (the run's note says why)."""
    from cifarlin.errors import CifarlinError
    from cifarlin.store.checkpoint import read_feature_map

    try:
        fmap = read_feature_map(r.folder / "model.h5")
    except CifarlinError:
        return ""
    return f" ({fmap.describe()}: {fmap.n_features} features)" if fmap is not None else ""
