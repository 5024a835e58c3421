"""The figures a report shows and the numbers it needs the images for.

Figures are the runs' own PNG files (``curves.png``, ``montage.png``, and ``visualize``'s
``confusion-test.png``, ``samples-test.png``, ``probs-test.png``); one that is missing, or older
than the model it shows, is drawn into the run folder on the way, as ``cifarlin visualize`` would.
Figures of classified images, and ensembles, need the test images: the folder the model was
trained on when it still holds the same files (checked by MD5), else the folder the command was
given; with neither, the figure is left out and a note says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cifarlin.errors import CifarlinError
from cifarlin.work.folder import MODEL

#: The file each figure kind is kept in, in a run folder.
FILES = {
    "curves": "curves.png",
    "montage": "montage.png",
    "confusion": "confusion-test.png",
    "samples": "samples-test.png",
    "probs": "probs-test.png",
}
IMAGES = ("confusion", "samples", "probs")  # the kinds that classify test images
PICK = "errors"  # the sample images shown: misclassified ones


class Pictures:
    """Figures of run folders, found or drawn, and the test images they may need.

    ``data`` gives the data folder of the command (None: only the folders the models record);
    ``notes`` hears what was drawn and what could not be.
    """

    def __init__(
        self,
        data: Callable[[], Any] | None,
        notes: list[str],
        feature_cache: Path | None = None,
        draw: bool = True,
        given_first: bool = False,
        drawer: Any = None,
    ) -> None:
        self.data, self.notes, self.feature_cache, self.draw = data, notes, feature_cache, draw
        self.given_first = given_first  # the data folder given (--data-dir, $CIFARLIN_DATA_DIR) wins
        self.drawn: list[Path] = []
        self.drawer = drawer  # a cifarlin.figures.drawer.FigureDrawer: figures drawn in its child
        self.pending: list[tuple[Any, Any]] = []  # what was asked of it, in order
        self.failed: set[Path] = set()  # figures that could not be drawn (a stale file is not shown)
        self._given_dataset: Any = None  # the command's data folder once looked for (or why not)

    def _dataset(self, folder: Path) -> Any:
        from cifarlin.store.checkpoint import load_snapshot
        from cifarlin.work.evaluation import recorded_dataset

        if self.given_first and self.data is not None:
            return self._given()
        ds = recorded_dataset([load_snapshot(folder / MODEL)], "test")
        if ds is None and self.data is not None:
            ds = self._given()
        if ds is None:
            raise CifarlinError(
                "the test images are needed: the folder the model was trained on is gone or changed; "
                "give --data-dir"
            )
        return ds

    def _given(self) -> Any:
        """The command's data folder, looked for once."""
        if self._given_dataset is None and self.data is not None:
            try:
                self._given_dataset = self.data()
            except CifarlinError as e:
                self._given_dataset = e
        if isinstance(self._given_dataset, CifarlinError):
            raise self._given_dataset
        return self._given_dataset

    def of_run(self, folder: Path, kinds: Sequence[str]) -> dict[str, Path]:
        """The figures ``kinds`` of run ``folder``, each its file: those missing or older than the
        model are drawn, by the drawing child when there is one (their files are there once
        :meth:`finish` returns), else here."""
        model_time = _mtime(folder / MODEL)
        have, missing = {}, []
        for kind in kinds:
            path = folder / FILES[kind]
            t = _mtime(path)
            if t is not None and (model_time is None or t >= model_time):
                have[kind] = path
            else:
                missing.append(kind)
        if missing and self.draw and model_time is not None:
            data = None
            if set(missing) & set(IMAGES):
                try:
                    data = self._dataset(folder)
                except CifarlinError as e:
                    self.notes.append(
                        f"{folder}: {', '.join(k for k in missing if k in IMAGES)} not drawn: {e}"
                    )
                    missing = [k for k in missing if k not in IMAGES]
            if (
                missing
                and self.drawer is not None
                and self.drawer.figures(folder, missing, PICK, data, self.feature_cache)
            ):
                self.pending.append((folder, missing))
                have.update({k: folder / FILES[k] for k in missing})
            elif missing:
                have.update(self._draw_here(folder, missing))
        return {k: have[k] for k in kinds if k in have}

    def _draw_here(self, folder: Path, kinds: list[str]) -> dict[str, Path]:
        from cifarlin.figures.make import draw_figures
        from cifarlin.figures.request import FigureRequest

        try:
            self.drawn += draw_figures(
                folder,
                FigureRequest(kinds=tuple(kinds), pick=PICK),
                lambda: self._dataset(folder),
                feature_cache=self.feature_cache,
            )
        except CifarlinError as e:
            self.notes.append(f"{folder}: {', '.join(kinds)} not drawn: {e}")
            self.failed |= {folder / FILES[k] for k in kinds}
            return {}
        return {k: folder / FILES[k] for k in kinds if _mtime(folder / FILES[k]) is not None}

    def comparison(self, folders: Sequence[Path], path: Path) -> Path | None:
        """The runs side by side (``settings.png``, as ``train --setting all`` draws it): the file
        at ``path`` when it is newer than every run's model, else drawn there."""
        newest = max((_mtime(f / MODEL) or 0.0) for f in folders)
        t = _mtime(path)
        if t is not None and t >= newest:
            return path
        if not self.draw:
            return None
        if self.drawer is not None and self.drawer.compare(folders, path):
            self.pending.append((list(folders), path))
            return path
        return self._compare_here(list(folders), path)

    def _compare_here(self, folders: list[Path], path: Path) -> Path | None:
        from cifarlin.figures import common
        from cifarlin.figures.make import comparison_figure, outcomes_from

        try:
            outcomes, names = outcomes_from(folders)
            common.use_backend()
            self.drawn.append(comparison_figure(outcomes, names, path))
            return path
        except CifarlinError as e:
            self.notes.append(f"{path}: comparison not drawn: {e}")
            self.failed.add(path)
            return None

    def finish(self) -> None:
        """Wait for the figures asked of the drawing child; any it could not draw is drawn here
        (what goes wrong then is a note, and the figure is left out: see :meth:`shown`)."""
        for what, target in self.pending:
            got = self.drawer.answer() if self.drawer is not None else None
            if got is not None:
                self.drawn += got
            elif isinstance(what, list):
                self._compare_here(what, target)
            else:
                self._draw_here(what, target)
        self.pending = []

    def shown(self, path: Path) -> bool:
        """Whether the figure at ``path`` may be shown: there, and not a stale one that failed."""
        return path not in self.failed and path.is_file()

    def ensemble(self, folders: Sequence[Path]) -> dict[str, Any] | None:
        """The test accuracy of the models of ``folders`` averaged (each one's too), or None with
        a note when the images cannot be had."""
        from cifarlin.data.cifar import load_split
        from cifarlin.store.checkpoint import load_snapshot
        from cifarlin.work.evaluation import ensemble, evaluate_split

        try:
            snaps = [load_snapshot(f / MODEL) for f in folders]
            dataset = self._dataset(folders[0])
            loaded = load_split(dataset, snaps[0].config.split, "test")  # the same images for each
            evals = [evaluate_split(s, dataset, "test", self.feature_cache, loaded) for s in snaps]
            losses = [s.config.loss for s in snaps]
            ens = ensemble(evals, losses)
        except CifarlinError as e:
            self.notes.append(f"ensemble of {', '.join(map(str, folders))} not measured: {e}")
            return None
        return {
            "members": [ev.metrics.accuracy for ev in evals],
            "accuracy": ens.metrics.accuracy,
            "loss": ens.metrics.loss,
        }


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime if path.is_file() else None
    except OSError:
        return None
