"""Layouts and styles shared by the widgets of one panel: one model each, not one per widget.

Every ipywidget has a Layout model and most have a Style model, each a comm of its
own.  A configuration panel of ~300 widgets so grew to ~840 models, and a re-run of
its cell (close them all, open the new panel's) sent ~1,700 comm messages in half a
second; in CI the kernel-to-browser pipe dropped 300 of them and the new panel
referred to models the browser never got (issue 15).  Widgets that look the same
share one Layout and one Style here.  A layout that is shown and hidden
(``layout.display``) must stay the widget's own: ask for it with ``W.Layout(...)``.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as W

from ._lifecycle import close_tree


class Looks:
    """The shared Layout and Style instances of one panel, by class and settings."""

    def __init__(self) -> None:
        self._shared: dict[tuple[type, tuple[tuple[str, Any], ...]], W.Widget] = {}

    def widget(self, widget_class: type[W.Widget], *, layout: dict[str, Any] | None = None,
               style: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """``widget_class(**kwargs)`` with the shared layout and (where it has one) style for these settings."""
        kwargs["layout"] = self._get(W.Layout, layout or {})
        style_trait = widget_class.class_traits().get("style")
        if style_trait is not None:  # each widget class has its own Style class
            kwargs["style"] = self._get(style_trait.klass, style or {})
        return widget_class(**kwargs)

    def row(self, *widgets: W.Widget) -> W.HBox:
        """An HBox of ``widgets`` with the shared plain layout (for a row that is never hidden)."""
        return self.widget(W.HBox, children=list(widgets))

    def close(self, roots: list[W.Widget]) -> None:
        """Close ``roots`` and everything they hold except the shared models (other widgets still use them)."""
        shared = {id(m) for m in self._shared.values()}
        for root in roots:
            close_tree(root, keep=shared)

    def _get(self, cls: type, settings: dict[str, Any]) -> Any:
        key = (cls, tuple(sorted(settings.items())))
        if key not in self._shared:
            self._shared[key] = cls(**settings)
        return self._shared[key]


__all__ = ["Looks"]
