"""Progress as plain lines, for a stderr that is not a terminal."""

from __future__ import annotations

import time

from rich.progress import Progress, ProgressColumn, TaskID
from rich.text import Text

PLAIN_EVERY_S = 30.0  # a log gets one progress line per task this often (and one when it finishes)


class PlainProgress(Progress):
    """Progress for a stderr that is not a terminal (a log file, a pipe): no live bar, whose redraws
    a log would keep as half-drawn lines, but a plain line now and then with the count, the rate and
    the ETA, and one when a task finishes."""

    def __init__(self, *columns, **kwargs) -> None:
        kwargs.update(disable=True, transient=True)
        super().__init__(*columns, **kwargs)
        self._said: dict[TaskID, float] = {}  # when a task's last line was printed
        self._at: dict[TaskID, float] = {}  # and at what count: an unchanged count is not said again
        self._done: set[TaskID] = set()

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._maybe_say(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._maybe_say(task_id)

    def remove_task(self, task_id: TaskID) -> None:
        self._say_finished(task_id)
        super().remove_task(task_id)

    def stop(self) -> None:
        for task_id in list(self.task_ids):
            self._say_finished(task_id)
        super().stop()

    def _maybe_say(self, task_id: TaskID) -> None:
        task = self._tasks[task_id]
        now = time.monotonic()
        if task.finished:
            self._say_finished(task_id)
        elif (task.completed != self._at.get(task_id)
              and now - self._said.setdefault(task_id, task.start_time or now) >= PLAIN_EVERY_S):
            self._said[task_id], self._at[task_id] = now, task.completed
            self.console.print(self._line(task), markup=False, highlight=False, soft_wrap=True)

    def _say_finished(self, task_id: TaskID) -> None:
        task = self._tasks[task_id]
        if task_id in self._done or not task.completed:
            return
        self._done.add(task_id)
        self.console.print(self._line(task, final=True), markup=False, highlight=False, soft_wrap=True)

    @staticmethod
    def _line(task, final: bool = False) -> str:
        count = f"{task.completed:g}/{task.total:g}" if task.total else f"{task.completed:g}"
        stats = " ".join(Text.from_markup(str(v)).plain for v in task.fields.values() if v)
        speed = f"{task.speed:.1f}/s" if task.speed and "/s" not in stats else ""
        elapsed = task.elapsed or 0.0
        when = (f"in {elapsed:.0f}s" if final and task.finished else f"stopped after {elapsed:.0f}s" if final else
                f"ETA {task.time_remaining:.0f}s" if task.time_remaining is not None else "")
        return "  ".join(part for part in (Text.from_markup(task.description).plain, count, stats, speed, when) if part)


class RateColumn(ProgressColumn):
    """Items per second, for bars whose items are not bytes."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f} {self.unit}/s" if task.speed else "")
