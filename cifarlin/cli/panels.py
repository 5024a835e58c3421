"""A long command's options grouped under headings in its help (Typer's rich help panels), given
as one table beside the command instead of on every option."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from copy import copy
from typing import Annotated, Any

#: train's headings (one panel of its 30 options was 148 lines at 80 columns)
TRAIN_PANELS = {
    "Reference settings": "setting",
    "Optimisation": "lam eta epochs batch_size seed shuffle init keep patience",
    "Loss and solver": "loss solver",
    "Data": "features train_batches val_size dtype data_dir no_download",
    "Schedule": "schedule decay decay_every eta_min eta_max step_size",
    "Augmentation": "augment",
    "Output": "out resume overwrite no_plots workers json_out quiet",
}


def in_panels(fn: Callable[..., Any], panels: Mapping[str, str]) -> None:
    """Put each option of the command ``fn`` named in ``panels`` ({heading: "param param ..."})
    under its heading; the others stay under "Options". Panels show in the order their first
    option is declared; -h/--help joins the last (see :mod:`cifarlin.cli`)."""
    heading = {name: title for title, names in panels.items() for name in names.split()}
    sig = inspect.signature(fn, eval_str=True)
    params = []
    for p in sig.parameters.values():
        if p.name in heading:
            info = copy(p.annotation.__metadata__[0])
            info.rich_help_panel = heading.pop(p.name)
            p = p.replace(annotation=Annotated[p.annotation.__origin__, info])
        params.append(p)
    if heading:
        raise ValueError(f"{fn.__name__} has no parameters {', '.join(heading)}")
    fn.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
