"""Progress on long work: a bar over known items, or a live counter for an open search."""

from __future__ import annotations

__all__ = ["progress", "progress_counter"]


def progress(items, on: bool, label: str):
    """Yield ``items``, with a transient rich progress bar on stderr when ``on``."""
    if not on or len(items) < 1:
        yield from items
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=len(items))
        for item in items:
            yield item
            bar.advance(task)


def progress_counter(on: bool, label: str):
    """A ``tick(count)`` callback showing a live count (``tick(None)`` closes it)."""
    if not on:
        return lambda count: None
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(SpinnerColumn(), TextColumn("{task.description}: {task.completed:,.0f}"),
                   TimeElapsedColumn(), transient=True)
    task = bar.add_task(label, total=None)
    bar.start()

    def tick(count):
        if count is None:
            bar.stop()
        else:
            bar.update(task, completed=count)

    return tick
